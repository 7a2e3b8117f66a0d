//! Learning-rate schedules, stepped once per epoch (units: epochs).

use crate::error::{EngineError, Result};
use serde::{Deserialize, Serialize};

/// How the learning rate changes over epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// The same rate every epoch.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step { step_size: usize, gamma: f64 },
    /// Multiply by `gamma` at each listed epoch.
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// Cosine annealing from the base rate to `min_lr` over the run.
    Cosine { min_lr: f64 },
}

impl Schedule {
    /// Checks the parameters; `what` names the config key in errors.
    pub fn validate(&self) -> Result<()> {
        match self {
            Schedule::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err(EngineError::invalid(
                        "schedule",
                        "step_size must be at least 1",
                    ));
                }
                check_gamma(*gamma)
            }
            Schedule::MultiStep { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(EngineError::invalid(
                        "schedule",
                        "milestones must be strictly increasing",
                    ));
                }
                check_gamma(*gamma)
            }
            Schedule::Cosine { min_lr } if !(*min_lr >= 0.0) => Err(EngineError::invalid(
                "schedule",
                format!("min_lr must be >= 0, got {min_lr}"),
            )),
            _ => Ok(()),
        }
    }

    /// Learning rate for `epoch` (0-based) of `epochs`, from `base`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => base * gamma.powi((epoch / step_size) as i32),
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
            }
            Schedule::Cosine { min_lr } => {
                let t = epoch as f64 / epochs.max(1) as f64;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

fn check_gamma(gamma: f64) -> Result<()> {
    if gamma > 0.0 && gamma <= 1.0 {
        Ok(())
    } else {
        Err(EngineError::invalid(
            "schedule",
            format!("gamma must be in (0, 1], got {gamma}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = Schedule::Step {
            step_size: 2,
            gamma: 0.1,
        };
        assert_eq!(s.lr(1.0, 0, 6), 1.0);
        assert!((s.lr(1.0, 2, 6) - 0.1).abs() < 1e-12);
        let m = Schedule::MultiStep {
            milestones: vec![1, 3],
            gamma: 0.5,
        };
        assert_eq!([0, 1, 2, 3].map(|e| m.lr(1.0, e, 4)), [1.0, 0.5, 0.5, 0.25]);
        let c = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(c.lr(0.1, 0, 10), 0.1);
        assert!((c.lr(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!(
            Schedule::Step {
                step_size: 0,
                gamma: 0.1
            }
            .validate()
            .unwrap_err()
            .to_string()
            .contains("step_size")
        );
        assert!(
            Schedule::MultiStep {
                milestones: vec![3, 1],
                gamma: 0.1
            }
            .validate()
            .is_err()
        );
        assert!(
            Schedule::Step {
                step_size: 1,
                gamma: 2.0
            }
            .validate()
            .unwrap_err()
            .to_string()
            .contains("gamma")
        );
    }
}
