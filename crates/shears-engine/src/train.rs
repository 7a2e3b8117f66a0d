//! The training loop: epochs of seeded batches, a progress bar on stderr, evaluation after each
//! epoch, a NaN guard, the method's hooks (gradient edits, loss terms, extra trainable parameters,
//! per-sample gates; see [`crate::hooks`]) and a per-epoch hook that the caller uses for metrics
//! files and checkpoints.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, Mode, to_vec};
use crate::optim::Optimizer;
use crate::schedule::Schedule;
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use shears_data::{DataSplits, Dataset, Loader, LoaderConfig, Normalization};
use std::time::Instant;

/// Hyperparameters of one training phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub schedule: Schedule,
    pub seed: u64,
    /// Random-crop padding in pixels (0 = off).
    pub crop_padding: usize,
    pub flip: bool,
    /// Train on the first N training samples only (quick runs).
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test samples only.
    pub test_limit: Option<usize>,
    /// Recompute the BatchNorm running statistics as exact averages over this many training
    /// batches after every epoch ("precise BN", as pycls and the MaskSparsity code do), so
    /// evaluation sees the statistics of the final weights, not a lagging moving average.
    pub precise_bn_batches: Option<usize>,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(EngineError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr > 0.0) || !self.lr.is_finite() {
            return Err(EngineError::invalid(
                "lr",
                format!("must be a positive number, got {}", self.lr),
            ));
        }
        self.schedule.validate()
    }
}

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub seconds: f64,
}

use crate::hooks::{DynamicGates, ExtraParams, StepInfo};
pub use crate::hooks::{GradientEdit, TrainHooks};

/// Mean cross-entropy of logits against integer labels.
pub fn cross_entropy(logits: Tensor<2>, labels: &[i64]) -> Tensor<1> {
    let [n, classes] = logits.dims();
    let mut onehot = vec![0f32; n * classes];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * classes + l as usize] = 1.0;
    }
    let targets = Tensor::<2>::from_data(TensorData::new(onehot, [n, classes]), &logits.device());
    cross_entropy_with_logits(logits, targets)
}

/// Number of rows whose arg-max equals the label.
pub fn count_correct(logits: &[f32], classes: usize, labels: &[i64]) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, l)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                    if v > acc.1 { (i, v) } else { acc }
                });
            best.0 as i64 == **l
        })
        .count()
}

/// Checks that the data fit the model's input and output.
pub fn check_data_fits(exec: &Executor, data: &Dataset) -> Result<()> {
    let g = exec.graph();
    let per: usize = g.input.shape.iter().product();
    let shape = data.shape();
    if per != shape.iter().product::<usize>()
        || (g.input.shape.len() == 3 && g.input.shape != shape)
    {
        return Err(EngineError::DataMismatch(format!(
            "model `{}` takes inputs of shape {:?} but `{}` has samples of shape {:?} (build the model with --input {})",
            g.name,
            g.input.shape,
            data.name(),
            shape,
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        )));
    }
    let classes = shears_core::infer_shapes(g)?.get(&g.output)[0];
    if classes < data.classes() {
        return Err(EngineError::DataMismatch(format!(
            "model `{}` has {classes} outputs but `{}` has {} classes",
            g.name,
            data.name(),
            data.classes()
        )));
    }
    Ok(())
}

/// Loss and accuracy on a data set, in evaluation mode.
pub fn evaluate(
    exec: &mut Executor,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<(f64, f64)> {
    evaluate_gated(exec, data, norm, batch_size, limit, None, None)
}

/// [`evaluate`] with per-sample gates computed in the forward pass (the network a gated method
/// trains is the gated one, so that is the one its accuracy is measured on).
pub fn evaluate_gated(
    exec: &mut Executor,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
    limit: Option<usize>,
    gates: Option<&dyn DynamicGates>,
    extra: Option<&ExtraParams>,
) -> Result<(f64, f64)> {
    check_data_fits(exec, data)?;
    crate::memory::check_batch_fits(exec.graph(), batch_size.min(data.len()), false)?;
    if let Some(g) = gates {
        exec.check_gates(g)?;
    }
    let loader = Loader::new(
        data,
        LoaderConfig::eval(batch_size)
            .normalized(norm.clone())
            .limited(limit),
    )?;
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for batch in loader.epoch(0) {
        let n = batch.len();
        let x = exec.input_value(batch.images, n)?;
        let logits = match gates {
            Some(g) => exec.forward_gated(x, Mode::Eval, g, extra),
            None => exec.forward(x, Mode::Eval),
        };
        let classes = logits.dims()[1];
        let values = to_vec(logits.clone().reshape([n * classes]));
        correct += count_correct(&values, classes, &batch.labels);
        loss_sum += cross_entropy(logits, &batch.labels).into_scalar::<f32>() as f64 * n as f64;
        seen += n;
    }
    if seen == 0 {
        return Err(EngineError::DataMismatch(format!(
            "`{}` has no samples to evaluate",
            data.name()
        )));
    }
    Ok((loss_sum / seen as f64, correct as f64 / seen as f64))
}

/// Recomputes every BatchNorm's running mean and variance as the exact average over the first
/// `batches` shuffled training batches (train-mode forward passes, no gradient step): batch k
/// enters with momentum 1/(k+1), so the result is the plain mean of the batch statistics.
pub fn precise_bn(
    exec: &mut Executor,
    data: &DataSplits,
    batches: usize,
    batch_size: usize,
    seed: u64,
    gates: Option<&dyn DynamicGates>,
    extra: Option<&ExtraParams>,
) -> Result<()> {
    if let Some(g) = gates {
        exec.check_gates(g)?;
    }
    let loader = Loader::new(
        &data.train,
        LoaderConfig::train(batch_size, seed.wrapping_add(0x5eed))
            .normalized(data.normalization.clone()),
    )?;
    for (k, batch) in loader.epoch(0).take(batches).enumerate() {
        let n = batch.len();
        exec.set_bn_momentum(Some(1.0 / (k as f64 + 1.0)));
        let x = exec.input_value(batch.images, n)?;
        let _ = match gates {
            Some(g) => exec.forward_gated(x, Mode::Train, g, extra),
            None => exec.forward(x, Mode::Train),
        };
    }
    exec.set_bn_momentum(None);
    Ok(())
}

/// Trains `exec` from `start_epoch` (0-based) to `cfg.epochs`. `on_epoch` runs after every epoch
/// (metrics file, checkpoint); its error stops training.
pub fn train(
    exec: &mut Executor,
    data: &DataSplits,
    cfg: &TrainConfig,
    opt: &mut Optimizer,
    start_epoch: usize,
    hooks: &mut TrainHooks<'_>,
    on_epoch: &mut dyn FnMut(&Executor, &Optimizer, &TrainHooks<'_>, &EpochMetrics) -> Result<()>,
) -> Result<Vec<EpochMetrics>> {
    train_observed(exec, data, cfg, opt, start_epoch, hooks, on_epoch, &|_| {
        Ok(())
    })
}

/// Where one training step stands, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// 0-based epoch and the number of epochs.
    pub epoch: usize,
    pub epochs: usize,
    /// Steps done in this epoch, of `steps`.
    pub step: usize,
    pub steps: usize,
    /// Mean training loss of the epoch so far.
    pub loss: f64,
}

/// [`train`], calling `on_step` after every optimiser step: a progress display, and the place a
/// front end stops training between two steps (its error, e.g. [`EngineError::Cancelled`], stops
/// training with the last epoch's checkpoint intact).
#[allow(clippy::too_many_arguments)]
pub fn train_observed(
    exec: &mut Executor,
    data: &DataSplits,
    cfg: &TrainConfig,
    opt: &mut Optimizer,
    start_epoch: usize,
    hooks: &mut TrainHooks<'_>,
    on_epoch: &mut dyn FnMut(&Executor, &Optimizer, &TrainHooks<'_>, &EpochMetrics) -> Result<()>,
    on_step: &dyn Fn(StepProgress) -> Result<()>,
) -> Result<Vec<EpochMetrics>> {
    cfg.validate()?;
    if !exec.device().is_autodiff() {
        return Err(EngineError::invalid(
            "device",
            "training needs an autodiff device",
        ));
    }
    check_data_fits(exec, &data.train)?;
    // One class is nothing to learn: the loss falls to zero and accuracy reads 100 %.
    let first = data.train.labels().first().copied();
    if data.train.labels().iter().all(|&l| Some(l) == first) {
        return Err(EngineError::DataMismatch(format!(
            "the training data `{}` has {} sample(s), all of one class: a classifier needs at least two (an image folder needs a subfolder per class under train/)",
            data.train.name(),
            data.train.len()
        )));
    }
    crate::memory::check_batch_fits(exec.graph(), cfg.batch_size.min(data.train.len()), true)?;
    if let Some(g) = hooks.gates {
        exec.check_gates(g)?;
    }
    let loader = Loader::new(
        &data.train,
        LoaderConfig::train(cfg.batch_size, cfg.seed)
            .normalized(data.normalization.clone())
            .augmented(cfg.crop_padding, cfg.flip)
            .limited(cfg.train_limit),
    )?;
    let mut history = Vec::new();
    for epoch in start_epoch..cfg.epochs {
        let started = Instant::now();
        if let Some(h) = hooks.epoch_start {
            let at = StepInfo {
                epoch,
                epochs: cfg.epochs,
            };
            h.epoch_start(exec, hooks.extra.as_deref_mut(), at)?;
        }
        let lr = cfg.schedule.lr(cfg.lr, epoch, cfg.epochs);
        // Dropout draws from the device RNG: seeding it per epoch makes a resumed run identical.
        exec.device()
            .seed(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let bar = ProgressBar::new(loader.num_batches() as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (step, batch) in loader.epoch(epoch as u64).enumerate() {
            let n = batch.len();
            let x = exec.input_value(batch.images, n)?;
            let logits = match hooks.gates {
                Some(g) => exec.forward_gated(x, Mode::Train, g, hooks.extra.as_deref()),
                None => exec.forward(x, Mode::Train),
            };
            let classes = logits.dims()[1];
            let host_logits = to_vec(logits.clone().inner().reshape([n * classes]));
            let mut loss = cross_entropy(logits, &batch.labels);
            for term in &hooks.terms {
                let at = StepInfo {
                    epoch,
                    epochs: cfg.epochs,
                };
                if let Some(t) = term.loss(exec, hooks.extra.as_deref(), at) {
                    loss = loss + t;
                }
            }
            let loss_value = loss.clone().inner().into_scalar::<f32>() as f64;
            if !loss_value.is_finite() {
                bar.finish_and_clear();
                return Err(EngineError::Diverged {
                    epoch: epoch + 1,
                    step: step + 1,
                    value: loss_value as f32,
                });
            }
            let grads = loss.backward();
            for i in 0..exec.params.len() {
                let Some(mut g) = exec.params[i].grad(&grads) else {
                    continue;
                };
                let value = exec.params[i].clone().inner();
                for e in &hooks.edits {
                    g = e.edit(exec, i, &value, g);
                }
                let new = opt.update(i, value, g, lr);
                exec.replace_param(i, new);
            }
            opt.finish_step();
            if let Some(extra) = hooks.extra.as_deref_mut() {
                extra.step(&grads, lr);
            }
            exec.apply_masks();
            loss_sum += loss_value * n as f64;
            correct += count_correct(&host_logits, classes, &batch.labels);
            seen += n;
            bar.inc(1);
            if step % 10 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
            }
            let observed = on_step(StepProgress {
                epoch,
                epochs: cfg.epochs,
                step: step + 1,
                steps: loader.num_batches(),
                loss: loss_sum / seen as f64,
            });
            if let Err(e) = observed {
                bar.finish_and_clear();
                return Err(e);
            }
        }
        bar.finish_and_clear();
        if let Some(b) = cfg.precise_bn_batches {
            precise_bn(
                exec,
                data,
                b,
                cfg.batch_size,
                cfg.seed.wrapping_add(epoch as u64),
                hooks.gates,
                hooks.extra.as_deref(),
            )?;
        }
        let (test_loss, test_accuracy) = evaluate_gated(
            exec,
            &data.test,
            &data.normalization,
            cfg.batch_size.max(64),
            cfg.test_limit,
            hooks.gates,
            hooks.extra.as_deref(),
        )?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_loss,
            test_accuracy,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "epoch {}/{}: lr {:.4} train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4} ({:.1}s)",
            m.epoch,
            cfg.epochs,
            m.lr,
            m.train_loss,
            m.train_accuracy,
            m.test_loss,
            m.test_accuracy,
            m.seconds
        );
        on_epoch(exec, opt, hooks, &m)?;
        history.push(m);
    }
    Ok(history)
}
