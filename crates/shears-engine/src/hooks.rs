//! What a method adds to the training step, besides the task loss:
//!
//! - [`GradientEdit`]: edits a graph parameter's gradient before the optimiser step (masks,
//!   Network Slimming's `λ·sign(γ)` subgradient);
//! - [`LossTerm`]: a differentiable term added to the task loss before the backward pass (PAAM's
//!   score penalty, FTWT's mask-prediction loss), which may read the extra parameters;
//! - [`ExtraParams`]: trainable tensors that live outside the graph (attention networks, mask
//!   predictors), with their own optimiser, saved with every checkpoint and restored on resume.
//!
//! - [`DynamicGates`]: per-sample channel gates computed inside the forward pass from a node's
//!   input (FTWT's mask predictors, PAAM's score gates), which may read the extra parameters.
//! - [`EpochStart`]: runs before every epoch (PAAM's budget cut, which changes the gates
//!   between epochs and keeps its state in the extra parameters' buffers).

use crate::error::{EngineError, Result};
use crate::executor::{Executor, ParamInfo, Value, to_vec};
use crate::optim::{Optimizer, OptimizerConfig};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};
use shears_core::artifact::write_atomic;
use shears_core::weights::{Weights, weights_from_safetensors, weights_to_safetensors};
use std::collections::HashMap;
use std::path::Path;

/// Edits a parameter's gradient before the optimiser step (e.g. adds λ·sign(γ) for an L1
/// penalty on BN scales). Gets the inner (non-autodiff) parameter value and gradient.
pub trait GradientEdit {
    /// The edited gradient of graph parameter `param`.
    fn edit(&self, exec: &Executor, param: usize, value: &Tensor<1>, grad: Tensor<1>) -> Tensor<1>;
}

/// A differentiable term added to the task loss of every training step.
pub trait LossTerm {
    /// Short name for logs and metrics.
    fn name(&self) -> &str;
    /// The term's value as a one-element tensor on the executor's (autodiff) device, built from
    /// the executor's parameters and the extra parameters (and what the forward pass of this
    /// step recorded); `None` adds nothing this step.
    fn loss(&self, exec: &Executor, extra: Option<&ExtraParams>, at: StepInfo)
    -> Option<Tensor<1>>;
}

/// Channel gates computed per sample inside the forward pass. For every node it names, the
/// executor multiplies the node's output `[N, C, ...]` by the gate `[N, C]` computed from the
/// first input of the gate's source node (by default the gated node itself), so a gate is
/// differentiable in whatever produced it.
pub trait DynamicGates {
    /// The nodes whose outputs are gated.
    fn gated_nodes(&self) -> Vec<String>;
    /// Called once at the start of every gated forward pass with the parameters that pass
    /// uses (tracked for gradients on a training pass, plain on an evaluation pass). Gates that
    /// are a function of the weights rather than of the data (PAAM's filter scores) compute
    /// them here once, instead of once per gated node.
    fn begin_pass(&self, _params: &PassParams<'_>, _extra: Option<&ExtraParams>) {}
    /// The node whose first input the gate of `node` reads: `node` itself, or a node before it
    /// (FTWT gates a conv's BN/ReLU output from the conv's input).
    fn source(&self, node: &str) -> String {
        node.to_string()
    }
    /// The gate `[N, C]` of `node`'s output for this batch; `input` is the source's first
    /// input and `output` the node's output before gating (self-supervised targets read it).
    /// `None` leaves the output ungated for this batch.
    fn gate(
        &self,
        node: &str,
        input: &Value,
        output: &Value,
        extra: Option<&ExtraParams>,
    ) -> Option<Tensor<2>>;
}

/// The parameters one forward pass uses, by graph name: tracked for gradients on a training
/// pass, plain on an evaluation pass.
pub struct PassParams<'a> {
    pub(crate) values: &'a [Tensor<1>],
    pub(crate) infos: &'a [ParamInfo],
    pub(crate) index: &'a HashMap<String, usize>,
}

impl PassParams<'_> {
    /// Parameter `name` (engine layout, flat) and what it is.
    pub fn get(&self, name: &str) -> Option<(&Tensor<1>, &ParamInfo)> {
        let i = *self.index.get(name)?;
        Some((&self.values[i], &self.infos[i]))
    }
}

/// Where a training step is: what loss terms with a schedule (FTWT's cooldown) need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInfo {
    /// 0-based epoch of the phase.
    pub epoch: usize,
    /// Epochs of the phase.
    pub epochs: usize,
}

/// Runs before the first step of every epoch, a resumed phase's first epoch included, so what
/// it decides must follow from the state the checkpoint holds (the executor and the extra
/// parameters with their buffers).
pub trait EpochStart {
    fn epoch_start(
        &self,
        exec: &Executor,
        extra: Option<&mut ExtraParams>,
        at: StepInfo,
    ) -> Result<()>;
}

/// Everything a method hooks into the training step. The default hooks nothing: plain training.
#[derive(Default)]
pub struct TrainHooks<'a> {
    /// Gradient edits, applied in order to every graph parameter's gradient.
    pub edits: Vec<&'a dyn GradientEdit>,
    /// Loss terms added to the cross-entropy.
    pub terms: Vec<&'a dyn LossTerm>,
    /// Trainable parameters outside the graph, stepped by their own optimiser.
    pub extra: Option<&'a mut ExtraParams>,
    /// Per-sample channel gates computed in the forward pass (they may read `extra`).
    pub gates: Option<&'a dyn DynamicGates>,
    /// Runs before every epoch (it may change `extra`).
    pub epoch_start: Option<&'a dyn EpochStart>,
}

const EXTRA_FILE: &str = "extra.safetensors";
const EXTRA_OPTIMIZER_FILE: &str = "extra-optimizer.safetensors";
/// Buffers are saved next to the parameters under this prefix.
const BUFFER_PREFIX: &str = "buffer/";

/// Named trainable tensors outside the graph with their own optimiser, and named buffers:
/// state that is saved and restored with them but never trained (PAAM's hard budget masks).
pub struct ExtraParams {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    /// Current values on the autodiff device, tracked for gradients.
    tensors: Vec<Tensor<1>>,
    /// Buffers by name: values on the device, never tracked.
    buffers: Vec<(String, Tensor<1>)>,
    /// The optimiser of these tensors only.
    pub opt: Optimizer,
    /// Fixed learning rate; `None` follows the phase's learning-rate schedule.
    pub lr: Option<f64>,
    device: Device,
}

impl ExtraParams {
    /// New parameters `(name, shape, initial values)` on `device` (an autodiff device to train).
    pub fn new(
        device: &Device,
        params: Vec<(String, Vec<usize>, Vec<f32>)>,
        optimizer: OptimizerConfig,
        lr: Option<f64>,
    ) -> Result<ExtraParams> {
        if let Some(lr) = lr
            && !(lr > 0.0 && lr.is_finite())
        {
            return Err(EngineError::invalid(
                "extra parameters",
                format!("lr must be a positive number, got {lr}"),
            ));
        }
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        let mut tensors = Vec::new();
        for (name, shape, values) in params {
            let n: usize = shape.iter().product();
            if values.len() != n || names.contains(&name) {
                return Err(EngineError::invalid(
                    "extra parameters",
                    format!(
                        "`{name}` has {} values for shape {shape:?}, or its name is taken",
                        values.len()
                    ),
                ));
            }
            tensors.push(Self::track(
                Tensor::<1>::from_data(TensorData::new(values, [n]), device),
                device,
            ));
            names.push(name);
            shapes.push(shape);
        }
        let opt = Optimizer::new(optimizer, names.len())?;
        Ok(ExtraParams {
            names,
            shapes,
            tensors,
            buffers: Vec::new(),
            opt,
            lr,
            device: device.clone(),
        })
    }

    fn track(t: Tensor<1>, device: &Device) -> Tensor<1> {
        if device.is_autodiff() {
            t.require_grad()
        } else {
            t
        }
    }

    /// The names, in creation order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The shape parameter `name` was created with.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.shapes[i])
    }

    /// The current value of `name` (flat, tracked for gradients on an autodiff device).
    pub fn get(&self, name: &str) -> Option<Tensor<1>> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(self.tensors[i].clone())
    }

    /// Adds (or replaces) buffer `name`: state saved and restored with the parameters, never
    /// trained. A buffer's name must not be a parameter's.
    pub fn set_buffer(&mut self, name: &str, values: Vec<f32>) -> Result<()> {
        if self.names.iter().any(|n| n == name) {
            return Err(EngineError::invalid(
                "extra parameters",
                format!("buffer `{name}` has the name of a trainable parameter"),
            ));
        }
        let n = values.len();
        let t = Tensor::<1>::from_data(TensorData::new(values, [n]), &self.device);
        match self.buffers.iter_mut().find(|(b, _)| b == name) {
            Some((_, slot)) => *slot = t,
            None => self.buffers.push((name.to_string(), t)),
        }
        Ok(())
    }

    /// Buffer `name` (untracked), if set.
    pub fn buffer(&self, name: &str) -> Option<Tensor<1>> {
        self.buffers
            .iter()
            .find(|(b, _)| b == name)
            .map(|(_, t)| t.clone())
    }

    /// One optimiser step from the gradients of a backward pass; `phase_lr` is used when no
    /// fixed learning rate was set. Parameters the loss did not reach are left unchanged.
    pub fn step(&mut self, grads: &Gradients, phase_lr: f64) {
        let lr = self.lr.unwrap_or(phase_lr);
        for i in 0..self.tensors.len() {
            let Some(g) = self.tensors[i].grad(grads) else {
                continue;
            };
            let value = self.tensors[i].clone().inner();
            let new = self.opt.update(i, value, g, lr);
            self.tensors[i] = Self::track(
                if self.device.is_autodiff() {
                    new.autodiff()
                } else {
                    new
                },
                &self.device,
            );
        }
        self.opt.finish_step();
    }

    /// The current values, by name, in their shapes.
    pub fn values(&self) -> Weights {
        let mut out = Weights::new();
        for (i, name) in self.names.iter().enumerate() {
            let v = to_vec(self.tensors[i].clone().inner());
            out.insert(
                name.clone(),
                ArrayD::from_shape_vec(IxDyn(&self.shapes[i]), v)
                    .expect("shape checked at creation"),
            );
        }
        out
    }

    /// Writes values, buffers and optimiser state into checkpoint directory `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| shears_core::CoreError::io(dir, e))?;
        let mut values = self.values();
        for (name, t) in &self.buffers {
            let v = to_vec(t.clone());
            let n = v.len();
            values.insert(
                format!("{BUFFER_PREFIX}{name}"),
                ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-d"),
            );
        }
        write_atomic(&dir.join(EXTRA_FILE), &weights_to_safetensors(&values)?)?;
        let mut state = Weights::new();
        for (i, name) in self.names.iter().enumerate() {
            for (prefix, buf) in [
                ("first", &self.opt.first[i]),
                ("second", &self.opt.second[i]),
            ] {
                if let Some(t) = buf {
                    let v = to_vec(t.clone());
                    let n = v.len();
                    state.insert(
                        format!("{prefix}/{name}"),
                        ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-d"),
                    );
                }
            }
        }
        let mut steps = Weights::new();
        steps.insert(
            "steps".into(),
            ArrayD::from_shape_vec(IxDyn(&[1]), vec![self.opt.steps as f32]).expect("1-d"),
        );
        state.extend(steps);
        write_atomic(
            &dir.join(EXTRA_OPTIMIZER_FILE),
            &weights_to_safetensors(&state)?,
        )?;
        Ok(())
    }

    /// Restores values, buffers and optimiser state saved by [`ExtraParams::save`] in `dir`;
    /// every parameter must be there with its shape. Buffers are taken as saved.
    pub fn restore(&mut self, dir: &Path) -> Result<()> {
        let read = |file: &str| -> Result<Weights> {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| shears_core::CoreError::io(&path, e))?;
            Ok(weights_from_safetensors(&bytes, &path)?)
        };
        let values = read(EXTRA_FILE)?;
        let state = read(EXTRA_OPTIMIZER_FILE)?;
        for i in 0..self.names.len() {
            let name = &self.names[i];
            let a = values.get(name).ok_or_else(|| {
                EngineError::invalid(
                    "checkpoint",
                    format!("extra parameter `{name}` is missing from {}", dir.display()),
                )
            })?;
            if a.shape() != self.shapes[i].as_slice() {
                return Err(EngineError::invalid(
                    "checkpoint",
                    format!(
                        "extra parameter `{name}` has shape {:?}, expected {:?}",
                        a.shape(),
                        self.shapes[i]
                    ),
                ));
            }
            let v: Vec<f32> = a.iter().copied().collect();
            let n = v.len();
            self.tensors[i] = Self::track(
                Tensor::<1>::from_data(TensorData::new(v, [n]), &self.device),
                &self.device,
            );
            for (prefix, slot) in [
                ("first", &mut self.opt.first[i]),
                ("second", &mut self.opt.second[i]),
            ] {
                *slot = state.get(&format!("{prefix}/{name}")).map(|a| {
                    let v: Vec<f32> = a.iter().copied().collect();
                    let n = v.len();
                    Tensor::<1>::from_data(TensorData::new(v, [n]), &self.device).inner()
                });
            }
        }
        self.buffers = values
            .iter()
            .filter_map(|(name, a)| {
                let name = name.strip_prefix(BUFFER_PREFIX)?;
                let v: Vec<f32> = a.iter().copied().collect();
                let n = v.len();
                Some((
                    name.to_string(),
                    Tensor::<1>::from_data(TensorData::new(v, [n]), &self.device),
                ))
            })
            .collect();
        self.opt.steps = state
            .get("steps")
            .and_then(|a| a.iter().next().copied())
            .unwrap_or(0.0) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Schedule;
    use crate::executor::Mode;
    use crate::executor::to_vec as host;
    use crate::regularize::BnScaleL1;
    use crate::train::{TrainConfig, train};
    use burn::tensor::activation::sigmoid;
    use shears_core::builder::GraphBuilder;
    use shears_core::graph::{Graph, ParamKind};
    use shears_core::weights::{Masks, init_weights};
    use shears_data::{DataSplits, Dataset};

    /// conv a (3 ch) -> bn -> relu -> conv b (4 ch) -> bn -> relu -> gap -> fc (3).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("t", &[1, 6, 6]);
        let x = b.input();
        let a = b.conv2d("a", &x, 3, 3, 1, 1);
        let a = b.batchnorm("a_bn", &a);
        let a = b.relu("a_relu", &a);
        let c = b.conv2d("b", &a, 4, 3, 1, 1);
        let c = b.batchnorm("b_bn", &c);
        let c = b.relu("b_relu", &c);
        let p = b.global_avg_pool("gap", &c);
        let y = b.linear("fc", &p, 3, true);
        b.finish(&y)
    }

    fn data() -> DataSplits {
        let n = 16;
        let images: Vec<u8> = (0..n * 36)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect();
        let labels: Vec<u16> = (0..n).map(|i| (i % 3) as u16).collect();
        let train = Dataset::new("t/train", images.clone(), [1, 6, 6], labels.clone(), 3).unwrap();
        let test = Dataset::new("t/test", images, [1, 6, 6], labels, 3).unwrap();
        DataSplits::with_train_stats(train, test).unwrap()
    }

    fn sgd() -> OptimizerConfig {
        OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    fn cfg() -> TrainConfig {
        TrainConfig {
            epochs: 1,
            batch_size: 8,
            lr: 0.1,
            schedule: Schedule::Constant,
            seed: 1,
            crop_padding: 0,
            flip: false,
            train_limit: None,
            test_limit: None,
            precise_bn_batches: None,
        }
    }

    fn executor() -> Executor {
        let g = graph();
        let w = init_weights(&g, 4);
        let dev = Device::flex().autodiff();
        dev.seed(1);
        Executor::new(&g, &w, &Masks::new(), &dev).unwrap()
    }

    /// λ·Σ|γ| over every BatchNorm scale, as a loss term.
    struct L1Term(f64);
    impl LossTerm for L1Term {
        fn name(&self) -> &str {
            "l1"
        }
        fn loss(&self, exec: &Executor, _: Option<&ExtraParams>, _: StepInfo) -> Option<Tensor<1>> {
            let mut total: Option<Tensor<1>> = None;
            for (i, info) in exec.infos.iter().enumerate() {
                if info.kind == ParamKind::BnScale {
                    let t = exec.params[i].clone().abs().sum().mul_scalar(self.0);
                    total = Some(match total {
                        Some(s) => s + t,
                        None => t,
                    });
                }
            }
            total
        }
    }

    fn run(hooks: &mut TrainHooks<'_>) -> Executor {
        let mut exec = executor();
        let mut opt = Optimizer::new(sgd(), exec.params.len()).unwrap();
        train(
            &mut exec,
            &data(),
            &cfg(),
            &mut opt,
            0,
            hooks,
            &mut |_, _, _, _| Ok(()),
        )
        .unwrap();
        exec
    }

    #[test]
    fn a_loss_term_equals_the_same_penalty_as_a_gradient_edit() {
        let plain = run(&mut TrainHooks::default()).weights();
        let l1 = BnScaleL1::all(0.05).unwrap();
        let edited = run(&mut TrainHooks {
            edits: vec![&l1],
            ..TrainHooks::default()
        })
        .weights();
        let term = L1Term(0.05);
        let termed = run(&mut TrainHooks {
            terms: vec![&term],
            ..TrainHooks::default()
        })
        .weights();
        let gamma = "b_bn.weight";
        let diff = |a: &Weights, b: &Weights| {
            a[gamma]
                .iter()
                .zip(b[gamma].iter())
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        };
        // The penalty moved the scales (two steps of lr·λ = 0.005 each) ...
        assert!(diff(&plain, &edited) > 5e-3, "{}", diff(&plain, &edited));
        // ... and the loss term moved them exactly as the subgradient edit did.
        assert!(diff(&edited, &termed) < 1e-5, "{}", diff(&edited, &termed));
    }

    /// A term pulling extra parameter `p` towards 3.
    struct Pull;
    impl LossTerm for Pull {
        fn name(&self) -> &str {
            "pull"
        }
        fn loss(
            &self,
            _: &Executor,
            extra: Option<&ExtraParams>,
            _: StepInfo,
        ) -> Option<Tensor<1>> {
            let p = extra?.get("p")?;
            Some(p.sub_scalar(3.0).powi_scalar(2).sum())
        }
    }

    #[test]
    fn extra_parameters_train_with_their_own_optimiser_and_resume_exactly() {
        let dev = Device::flex().autodiff();
        let adam = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut extra = ExtraParams::new(
            &dev,
            vec![("p".into(), vec![2], vec![0.0, 1.0])],
            adam.clone(),
            Some(0.5),
        )
        .unwrap();
        run(&mut TrainHooks {
            terms: vec![&Pull],
            extra: Some(&mut extra),
            ..TrainHooks::default()
        });
        let p = extra.values()["p"].clone();
        // Two Adam steps of 0.5 towards 3 (Adam moves by about lr per step).
        assert!(
            (p[[0]] - 1.0).abs() < 0.02 && (p[[1]] - 2.0).abs() < 0.02,
            "{p:?}"
        );
        assert_eq!(extra.opt.steps, 2);
        let tmp = tempfile::tempdir().unwrap();
        extra.save(tmp.path()).unwrap();
        let mut back = ExtraParams::new(
            &dev,
            vec![("p".into(), vec![2], vec![9.0, 9.0])],
            adam.clone(),
            Some(0.5),
        )
        .unwrap();
        back.restore(tmp.path()).unwrap();
        assert_eq!(back.values(), extra.values());
        assert_eq!(back.opt.steps, 2);
        // One more step from the restored state equals one more step from the original.
        for e in [&mut extra, &mut back] {
            run(&mut TrainHooks {
                terms: vec![&Pull],
                extra: Some(e),
                ..TrainHooks::default()
            });
        }
        assert_eq!(back.values(), extra.values());
        // A checkpoint of other parameters is refused with the name of the missing one.
        let mut other =
            ExtraParams::new(&dev, vec![("q".into(), vec![1], vec![0.0])], adam, None).unwrap();
        let e = other.restore(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("`q`"), "{e}");
    }

    /// Records the epochs it starts and writes the epoch into buffer `seen`.
    struct Epochs(std::cell::RefCell<Vec<StepInfo>>);
    impl EpochStart for Epochs {
        fn epoch_start(
            &self,
            _: &Executor,
            extra: Option<&mut ExtraParams>,
            at: StepInfo,
        ) -> Result<()> {
            self.0.borrow_mut().push(at);
            extra
                .expect("extra parameters")
                .set_buffer("seen", vec![at.epoch as f32; 3])
        }
    }

    #[test]
    fn epoch_start_runs_before_every_epoch_and_buffers_are_saved_untrained() {
        let dev = Device::flex().autodiff();
        let mut extra = ExtraParams::new(
            &dev,
            vec![("p".into(), vec![1], vec![0.0])],
            sgd(),
            Some(0.1),
        )
        .unwrap();
        assert!(extra.set_buffer("p", vec![1.0]).is_err());
        let hook = Epochs(Default::default());
        let mut exec = executor();
        let mut opt = Optimizer::new(sgd(), exec.params.len()).unwrap();
        let mut c = cfg();
        c.epochs = 3;
        // A phase resumed after its first epoch starts at epoch 1.
        train(
            &mut exec,
            &data(),
            &c,
            &mut opt,
            1,
            &mut TrainHooks {
                terms: vec![&Pull],
                extra: Some(&mut extra),
                epoch_start: Some(&hook),
                ..TrainHooks::default()
            },
            &mut |_, _, _, _| Ok(()),
        )
        .unwrap();
        let epochs: Vec<usize> = hook.0.borrow().iter().map(|a| a.epoch).collect();
        assert_eq!(epochs, [1, 2]);
        assert!(hook.0.borrow().iter().all(|a| a.epochs == 3));
        // The buffer holds what the last epoch start wrote: the optimiser never touched it.
        assert_eq!(to_vec(extra.buffer("seen").unwrap()), [2.0; 3]);
        let tmp = tempfile::tempdir().unwrap();
        extra.save(tmp.path()).unwrap();
        let mut back = ExtraParams::new(
            &dev,
            vec![("p".into(), vec![1], vec![5.0])],
            sgd(),
            Some(0.1),
        )
        .unwrap();
        back.restore(tmp.path()).unwrap();
        assert_eq!(back.values(), extra.values());
        assert_eq!(to_vec(back.buffer("seen").unwrap()), [2.0; 3]);
    }

    /// Fixed per-sample gates of node `a` (one row per sample).
    struct Fixed(Vec<f32>, usize, usize);
    impl DynamicGates for Fixed {
        fn gated_nodes(&self) -> Vec<String> {
            vec!["a".into()]
        }
        fn gate(
            &self,
            _: &str,
            input: &Value,
            _: &Value,
            _: Option<&ExtraParams>,
        ) -> Option<Tensor<2>> {
            let Value::Map(x) = input else { return None };
            Some(Tensor::from_data(
                TensorData::new(self.0.clone(), [self.1, self.2]),
                &x.device(),
            ))
        }
    }

    #[test]
    fn per_sample_gates_equal_each_sample_gated_on_its_own() {
        let mut exec = executor();
        let d = data();
        let loader = shears_data::Loader::new(
            &d.train,
            shears_data::LoaderConfig::eval(4).normalized(d.normalization.clone()),
        )
        .unwrap();
        let images = loader.epoch(0).next().unwrap().images;
        let per = 36;
        let gates = vec![1.0, 0.0, 0.5, 0.0, 1.0, 1.0];
        let x = exec.input_value(images[..2 * per].to_vec(), 2).unwrap();
        let both = host(
            exec.forward_gated(x, Mode::Eval, &Fixed(gates.clone(), 2, 3), None)
                .inner()
                .reshape([6]),
        );
        for s in 0..2 {
            exec.set_gate("a", Some(&gates[s * 3..s * 3 + 3])).unwrap();
            let x = exec
                .input_value(images[s * per..(s + 1) * per].to_vec(), 1)
                .unwrap();
            let one = host(exec.forward(x, Mode::Eval).inner().reshape([3]));
            for k in 0..3 {
                assert!(
                    (one[k] - both[s * 3 + k]).abs() < 1e-5,
                    "{one:?} vs {both:?}"
                );
            }
        }
        exec.set_gate("a", None).unwrap();
        let x = exec.input_value(images[..per].to_vec(), 1).unwrap();
        let dense = host(exec.forward(x, Mode::Eval).inner().reshape([3]));
        assert!(dense.iter().zip(&both).any(|(a, b)| (a - b).abs() > 1e-4));
    }

    /// Gates `b_relu`'s output from conv `b`'s input (FTWT's placement): one channel per sample
    /// is off, picked from the input's mean; records the ungated output it was shown.
    struct FromConvInput(std::cell::RefCell<Vec<Vec<f32>>>, &'static str);
    impl DynamicGates for FromConvInput {
        fn gated_nodes(&self) -> Vec<String> {
            vec!["b_relu".into()]
        }
        fn source(&self, _: &str) -> String {
            self.1.into()
        }
        fn gate(
            &self,
            _: &str,
            input: &Value,
            output: &Value,
            _: Option<&ExtraParams>,
        ) -> Option<Tensor<2>> {
            let (Value::Map(x), Value::Map(o)) = (input, output) else {
                return None;
            };
            let [n, c, h, w] = x.dims();
            assert_eq!(c, 3, "the gate sees conv b's input, not the ReLU's");
            self.0
                .borrow_mut()
                .push(host(o.clone().inner().reshape([n * 4 * h * w])));
            let mean = host(
                x.clone()
                    .inner()
                    .reshape([n, c * h * w])
                    .mean_dim(1)
                    .reshape([n]),
            );
            let g: Vec<f32> = (0..n * 4)
                .map(|i| f32::from((mean[i / 4] * 1000.0) as usize % 4 != i % 4))
                .collect();
            Some(Tensor::from_data(TensorData::new(g, [n, 4]), &x.device()))
        }
    }

    #[test]
    fn a_gate_reads_its_source_input_and_sees_the_ungated_output() {
        let mut exec = executor();
        let d = data();
        let loader = shears_data::Loader::new(
            &d.train,
            shears_data::LoaderConfig::eval(4).normalized(d.normalization.clone()),
        )
        .unwrap();
        let images = loader.epoch(0).next().unwrap().images;
        let gates = FromConvInput(Default::default(), "b");
        exec.check_gates(&gates).unwrap();
        let x = exec.input_value(images.clone(), 4).unwrap();
        let gated = host(
            exec.forward_gated(x, Mode::Eval, &gates, None)
                .inner()
                .reshape([12]),
        );
        let x = exec.input_value(images.clone(), 4).unwrap();
        let dense = host(exec.forward(x, Mode::Eval).inner().reshape([12]));
        // The output the gate saw is the dense network's b_relu output (non-negative).
        let seen = gates.0.borrow()[0].clone();
        assert!(seen.iter().all(|v| *v >= 0.0) && seen.iter().any(|v| *v > 0.0));
        // Gated per sample = each sample with its gate set statically.
        let mut some_off = false;
        for s in 0..4 {
            let x = exec
                .input_value(images[s * 36..(s + 1) * 36].to_vec(), 1)
                .unwrap();
            let t = FromConvInput(Default::default(), "b");
            let g = host(
                exec.forward_gated(x.clone(), Mode::Eval, &t, None)
                    .inner()
                    .reshape([3]),
            );
            assert!(
                g.iter()
                    .zip(&gated[s * 3..])
                    .all(|(a, b)| (a - b).abs() < 1e-5)
            );
            some_off |= g
                .iter()
                .zip(&dense[s * 3..])
                .any(|(a, b)| (a - b).abs() > 1e-4);
        }
        assert!(some_off, "the gates switched some channel off");
        // In training, too (the BN+ReLU fusion stays on: the gate does not read the ReLU's input).
        let x = exec.input_value(images, 4).unwrap();
        let _ = exec.forward_gated(x, Mode::Train, &gates, None);
        assert_eq!(gates.0.borrow().len(), 2);
    }

    #[test]
    fn gates_with_a_missing_or_later_source_are_refused() {
        let exec = executor();
        let err = exec
            .check_gates(&FromConvInput(Default::default(), "nope"))
            .unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let err = exec
            .check_gates(&FromConvInput(Default::default(), "fc"))
            .unwrap_err();
        assert!(err.to_string().contains("runs after it"), "{err}");
    }

    /// Gates of conv `b` from its input: sigmoid(mean over H, W of the input · W), W extra.
    struct Predicted;
    impl DynamicGates for Predicted {
        fn gated_nodes(&self) -> Vec<String> {
            vec!["b".into()]
        }
        fn gate(
            &self,
            _: &str,
            input: &Value,
            _: &Value,
            extra: Option<&ExtraParams>,
        ) -> Option<Tensor<2>> {
            let Value::Map(x) = input else { return None };
            let [n, c, h, w] = x.dims();
            let pooled = x.clone().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
            let weight = extra?.get("w")?.reshape([c, 4]);
            Some(sigmoid(pooled.matmul(weight)))
        }
    }

    #[test]
    fn gates_computed_in_the_forward_pass_train_their_predictor() {
        let dev = Device::flex().autodiff();
        let init: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) * 0.1).collect();
        let mut extra = ExtraParams::new(
            &dev,
            vec![("w".into(), vec![3, 4], init.clone())],
            sgd(),
            None,
        )
        .unwrap();
        let gates = Predicted;
        run(&mut TrainHooks {
            extra: Some(&mut extra),
            gates: Some(&gates),
            ..TrainHooks::default()
        });
        let w = extra.values()["w"].clone();
        let moved = w
            .iter()
            .zip(&init)
            .filter(|(a, b)| (*a - *b).abs() > 1e-7)
            .count();
        assert!(
            moved > 6,
            "the task loss reached only {moved} of 12 predictor weights"
        );
    }

    #[test]
    fn precise_bn_statistics_forget_the_moving_average() {
        let d = data();
        let stats = |e: &Executor| {
            let w = e.weights();
            (
                w["b_bn.running_mean"].clone(),
                w["b_bn.running_var"].clone(),
            )
        };
        // Two executors with the same weights but different running statistics.
        let mut a = executor();
        let mut b = executor();
        let loader = shears_data::Loader::new(
            &d.train,
            shears_data::LoaderConfig::eval(8).normalized(d.normalization.clone()),
        )
        .unwrap();
        let batch = loader.epoch(0).next().unwrap();
        for _ in 0..3 {
            let x = b.input_value(batch.images.clone(), 8).unwrap();
            let _ = b.forward(x, Mode::Train);
        }
        assert_ne!(stats(&a), stats(&b));
        for e in [&mut a, &mut b] {
            crate::train::precise_bn(e, &d, 2, 8, 0, None, None).unwrap();
        }
        let (ma, va) = stats(&a);
        let (mb, vb) = stats(&b);
        let close = |x: &ndarray::ArrayD<f32>, y: &ndarray::ArrayD<f32>| {
            x.iter().zip(y.iter()).all(|(p, q)| (p - q).abs() < 1e-5)
        };
        assert!(close(&ma, &mb) && close(&va, &vb), "{ma:?} vs {mb:?}");
        // And the layers' own momentum is back: one more train-mode pass moves the statistics.
        let x = b.input_value(batch.images, 8).unwrap();
        let _ = b.forward(x, Mode::Train);
        assert!(!close(&stats(&b).0, &mb));
    }
}
