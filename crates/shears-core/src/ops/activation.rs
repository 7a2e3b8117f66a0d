//! Pointwise activations beyond ReLU: Sigmoid, HardSigmoid, HardSwish, SiLU, GELU, LeakyReLU,
//! Tanh and Clip with any bounds. One op, [`Op::Activation`], whose payload says which function;
//! every structural rule is ReLU's (no parameters, channels and units pass through), so this file
//! holds the arithmetic too: the reference forward calls [`Activation::apply`].
//!
//! Unlike ReLU, several of these are not zero at zero (`sigmoid(0) = 0.5`). A pruned channel is
//! still exactly zero after compaction because compaction removes the channel; a *gated* dense
//! network reproduces that by gating every value of the channel group, the activation's output
//! included (`ChannelGroup::values`), so the two stay equal.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// Which pointwise function an [`Op::Activation`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fn", rename_all = "snake_case")]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `max(0, min(1, alpha * x + beta))` (ONNX's defaults 0.2 and 0.5; PyTorch's 1/6 and 0.5).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 1/2))` (MobileNetV3).
    HardSwish,
    /// `x * sigmoid(x)` (SiLU, Swish; EfficientNet).
    Silu,
    /// `x * Φ(x)` with the exact normal CDF, `0.5 x (1 + erf(x / √2))`.
    Gelu,
    /// `x` for `x ≥ 0`, `alpha * x` otherwise.
    LeakyRelu {
        alpha: f32,
    },
    Tanh,
    /// `min(max(x, min), max)`; either bound may be infinite.
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    /// The function at one point: the reference semantics every interpreter must match.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Silu => x * sigmoid(x),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2) as f32),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Clip { min, max } => x.max(min).min(max),
        }
    }

    /// Short lowercase name used in tables and errors.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::HardSigmoid { .. } => "hardsigmoid",
            Activation::HardSwish => "hardswish",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::LeakyRelu { .. } => "leakyrelu",
            Activation::Tanh => "tanh",
            Activation::Clip { .. } => "clip",
        }
    }

    /// Checks the attributes: finite slopes, ordered clip bounds.
    fn check(self) -> std::result::Result<(), String> {
        match self {
            Activation::HardSigmoid { alpha, beta } if !(alpha.is_finite() && beta.is_finite()) => {
                Err(format!(
                    "hardsigmoid alpha {alpha} and beta {beta} must be finite"
                ))
            }
            Activation::LeakyRelu { alpha } if !alpha.is_finite() => {
                Err(format!("leakyrelu slope {alpha} must be finite"))
            }
            Activation::Clip { min, max } if min.is_nan() || max.is_nan() || min > max => Err(
                format!("clip bounds [{min}, {max}] must be numbers with min <= max"),
            ),
            _ => Ok(()),
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The error function in double precision (no libm in std): its Maclaurin series below 2.5,
/// the continued fraction of erfc above. Tested against tabulated values to 1e-12.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), bottom-up.
        let mut f = 0.0;
        for k in (1..=60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    if x < 0.0 { -r } else { r }
}

impl OpRules for Activation {
    fn name(&self) -> &'static str {
        Activation::name(*self)
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        self.check().map_err(|m| CoreError::shape(&node.name, m))?;
        Ok(ins[0].clone())
    }

    /// One operation per output element under `all-ops`, none under `conv+linear`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Activation(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        Ok(call.ins[0].mapv(|v| self.apply(v)))
    }

    /// Opset 17 has every one of these as a node except SiLU and GELU (opset 20), which are
    /// written as the patterns exporters write: `x * Sigmoid(x)` and `0.5 x (1 + Erf(x / √2))`.
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let with_consts = |op: &'static str, consts: Vec<(&'static str, f32)>| {
            let mut n = OnnxNode::new(op, vec![]);
            n.consts = consts;
            n
        };
        let times_input = |op: &'static str, consts: Vec<(&'static str, f32)>| {
            let mut n = with_consts(op, consts);
            n.reads_op_input = true;
            n
        };
        match *self {
            Activation::Sigmoid => vec![OnnxNode::new("Sigmoid", vec![])],
            Activation::HardSigmoid { alpha, beta } => vec![OnnxNode::new(
                "HardSigmoid",
                vec![
                    ("alpha", OnnxAttr::Float(alpha)),
                    ("beta", OnnxAttr::Float(beta)),
                ],
            )],
            Activation::HardSwish => vec![OnnxNode::new("HardSwish", vec![])],
            Activation::Silu => vec![OnnxNode::new("Sigmoid", vec![]), times_input("Mul", vec![])],
            Activation::Gelu => vec![
                with_consts("Div", vec![("sqrt2", std::f32::consts::SQRT_2)]),
                OnnxNode::new("Erf", vec![]),
                with_consts("Add", vec![("one", 1.0)]),
                times_input("Mul", vec![]),
                with_consts("Mul", vec![("half", 0.5)]),
            ],
            Activation::LeakyRelu { alpha } => vec![OnnxNode::new(
                "LeakyRelu",
                vec![("alpha", OnnxAttr::Float(alpha))],
            )],
            Activation::Tanh => vec![OnnxNode::new("Tanh", vec![])],
            Activation::Clip { min, max } => {
                vec![with_consts("Clip", vec![("min", min), ("max", max)])]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;

    #[test]
    fn activation_values() {
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(Activation::Sigmoid.apply(0.0), 0.5));
        assert!(close(Activation::HardSwish.apply(-3.0), 0.0));
        assert!(close(Activation::HardSwish.apply(3.0), 3.0));
        assert!(close(
            Activation::HardSwish.apply(1.0),
            1.0 * (1.0 / 6.0 + 0.5)
        ));
        let hs = Activation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        };
        assert!(close(hs.apply(0.0), 0.5) && close(hs.apply(10.0), 1.0));
        assert!(close(
            Activation::Silu.apply(2.0),
            2.0 / (1.0 + (-2.0f32).exp())
        ));
        // GELU(1) = 0.5 * (1 + erf(1/√2)) = 0.841344746...
        assert!(close(Activation::Gelu.apply(1.0), 0.841_344_7));
        assert!(close(Activation::Gelu.apply(-4.0), -4.0 * 3.167_124e-5));
        let lr = Activation::LeakyRelu { alpha: 0.1 };
        assert!(close(lr.apply(-2.0), -0.2) && close(lr.apply(2.0), 2.0));
        let clip = Activation::Clip {
            min: -1.5,
            max: f32::INFINITY,
        };
        assert!(close(clip.apply(-3.0), -1.5) && close(clip.apply(30.0), 30.0));
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.0, -0.842_700_792_949_714_9),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-12,
                "erf({x}) = {} not {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn activation_rules_and_bad_attributes() {
        let mut b = GraphBuilder::new("t", &[4, 3, 3]);
        let x = b.input();
        let y = b.activation("a", &x, Activation::HardSwish);
        let g = b.finish(&y);
        assert_eq!(infer_shapes(&g).unwrap().get("a"), &vec![4, 3, 3]);
        let op = &g.nodes[0].op;
        assert_eq!(op.kind_name(), "hardswish");
        assert_eq!(op.channel_flow(), ChannelFlow::PassThrough);
        assert_eq!(op.compacted("a", 2, 2).unwrap(), *op);
        assert_eq!(cost(&g, Convention::AllOps).unwrap().macs, 36);
        assert_eq!(cost(&g, Convention::ConvLinear).unwrap().macs, 0);

        let mut g = g.clone();
        g.nodes[0].op = Op::Activation(Activation::Clip { min: 2.0, max: 1.0 });
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("`a`") && e.contains("min <= max"), "{e}");
    }

    #[test]
    fn serialises_with_its_function_named() {
        let op = Op::Activation(Activation::LeakyRelu { alpha: 0.1 });
        let json = serde_json::to_string(&op).unwrap();
        assert!(
            json.contains("\"type\":\"activation\"") && json.contains("leaky_relu"),
            "{json}"
        );
        let back: Op = serde_json::from_str(&json).unwrap();
        assert_eq!(back, op);
    }
}
