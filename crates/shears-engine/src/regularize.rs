//! Sparsity regularisers on BatchNorm scales, applied as gradient edits before the optimiser step.
//!
//! Network Slimming (Liu et al. 2017) trains with `L_task + λ Σ |γ|` over every BatchNorm scale;
//! MaskSparsity (Jiang et al.) puts the same penalty only on the channels a mask `P` marks for
//! pruning, so the channels that will stay train freely. Both add the subgradient
//! `λ·sign(γ)` (`⊙ P`) to `∂L/∂γ` after backward, as the reference implementations do
//! (`netslim/sparse.py: update_bn_by_names[_dict]`), so momentum and weight decay act on it too.
//! `sign(0) = 0`: a scale that is exactly zero gets no push.

use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::train::GradientEdit;
use burn::tensor::{Tensor, TensorData};
use shears_core::graph::{Graph, Op, ParamKind};
use shears_core::ops::{BatchNorm, Conv2d, Dropout, Linear};
use shears_core::structured::{ChannelGroup, ChannelSelection};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// L1 penalty on BatchNorm scales as a gradient edit: `grad(γ) += λ·sign(γ) ⊙ P`, with `P = 1`
/// everywhere (Network Slimming) or a per-BatchNorm channel mask (MaskSparsity).
pub struct BnScaleL1 {
    lambda: f64,
    /// Scale tensor name (`{bn}.weight`) → penalty per channel (1 = penalised, 0 = free);
    /// `None` penalises every channel of every BatchNorm.
    masks: Option<HashMap<String, Vec<f32>>>,
    /// Mask tensors on the parameters' device, by parameter index, built on first use.
    cache: RefCell<HashMap<usize, Tensor<1>>>,
}

fn check_lambda(lambda: f64) -> Result<()> {
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(EngineError::invalid(
            "lambda",
            format!("the L1 strength must be a finite number >= 0, got {lambda}"),
        ));
    }
    Ok(())
}

impl BnScaleL1 {
    /// `λ·sign(γ)` on every channel of every BatchNorm (Network Slimming).
    pub fn all(lambda: f64) -> Result<Self> {
        check_lambda(lambda)?;
        Ok(BnScaleL1 {
            lambda,
            masks: None,
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// `λ·sign(γ) ⊙ P`: `masks[bn][c] = true` penalises channel `c` of BatchNorm node `bn`.
    /// BatchNorm layers absent from `masks` get no penalty (MaskSparsity). Every key must be a
    /// BatchNorm node of `graph` and every mask as long as its channel count.
    pub fn masked(graph: &Graph, lambda: f64, masks: &BTreeMap<String, Vec<bool>>) -> Result<Self> {
        check_lambda(lambda)?;
        let mut out = HashMap::new();
        for (bn, mask) in masks {
            let channels = match graph.node(bn).map(|n| &n.op) {
                Some(Op::BatchNorm(BatchNorm { channels, .. })) => *channels,
                Some(
                    op @ (Op::Conv2d(Conv2d { .. })
                    | Op::Linear(Linear { .. })
                    | Op::Relu
                    | Op::Relu6
                    | Op::Activation(_)
                    | Op::Mul
                    | Op::MaxPool { .. }
                    | Op::AvgPool { .. }
                    | Op::GlobalAvgPool(_)
                    | Op::GlobalMaxPool(_)
                    | Op::Pad(_)
                    | Op::Flatten
                    | Op::Add
                    | Op::Concat
                    | Op::Slice(_)
                    | Op::Affine(_)
                    | Op::LayerNorm(_)
                    | Op::GroupNorm(_)
                    | Op::Resize(_)
                    | Op::ChannelShuffle(_)
                    | Op::Dropout(Dropout { .. })
                    | Op::Tokenize
                    | Op::ClassToken(_)
                    | Op::PositionEmbedding(_)
                    | Op::Attention(_)
                    | Op::SpatialSlice(_)
                    | Op::WindowAttention(_)
                    | Op::TokenPool(_)),
                ) => {
                    return Err(EngineError::invalid(
                        "penalty mask",
                        format!("`{bn}` is a {} node, not a BatchNorm", op.kind_name()),
                    ));
                }
                None => {
                    return Err(EngineError::invalid(
                        "penalty mask",
                        format!("`{bn}` is not a node of model `{}`", graph.name),
                    ));
                }
            };
            if mask.len() != channels {
                return Err(EngineError::invalid(
                    "penalty mask",
                    format!(
                        "`{bn}` has {channels} channels, the mask has {}",
                        mask.len()
                    ),
                ));
            }
            let p = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
            out.insert(format!("{bn}.weight"), p);
        }
        Ok(BnScaleL1 {
            lambda,
            masks: Some(out),
            cache: RefCell::new(HashMap::new()),
        })
    }

    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// True when only masked channels are penalised.
    pub fn is_masked(&self) -> bool {
        self.masks.is_some()
    }
}

impl GradientEdit for BnScaleL1 {
    fn edit(&self, exec: &Executor, param: usize, value: &Tensor<1>, grad: Tensor<1>) -> Tensor<1> {
        let info = &exec.infos[param];
        if info.kind != ParamKind::BnScale || self.lambda == 0.0 {
            return grad;
        }
        let push = value.clone().sign().mul_scalar(self.lambda);
        let Some(masks) = &self.masks else {
            return grad + push;
        };
        let Some(mask) = masks.get(&info.name) else {
            return grad;
        };
        let p = self
            .cache
            .borrow_mut()
            .entry(param)
            .or_insert_with(|| {
                let n = mask.len();
                Tensor::from_data(TensorData::new(mask.clone(), [n]), &value.device())
            })
            .clone();
        grad + push * p
    }
}

/// MaskSparsity's penalty masks from a channel selection: for every group that loses channels,
/// each BatchNorm of the group marks the removed channels (`true` = penalised), keyed by node.
pub fn penalty_masks_from_selection(
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<BTreeMap<String, Vec<bool>>> {
    let mut out: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for (&gid, kept) in &selection.kept {
        let g = groups.get(gid).ok_or_else(|| {
            EngineError::invalid(
                "channel selection",
                format!("names group {gid}, the model has {} groups", groups.len()),
            )
        })?;
        let mut keep = vec![false; g.channels];
        for &k in kept {
            let slot = keep.get_mut(k).ok_or_else(|| {
                EngineError::invalid(
                    "channel selection",
                    format!("group {gid} has {} channels, keeps index {k}", g.channels),
                )
            })?;
            *slot = true;
        }
        for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
            let len = m.indices(g.channels.saturating_sub(1)).end;
            let mask = out.entry(m.node.clone()).or_default();
            if mask.len() < len {
                mask.resize(len, false);
            }
            for (j, &k) in keep.iter().enumerate() {
                if !k {
                    mask[m.indices(j)].fill(true);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::to_vec;
    use burn::tensor::Device;
    use ndarray::{ArrayD, IxDyn};
    use shears_core::builder::GraphBuilder;
    use shears_core::structured::channel_groups;
    use shears_core::weights::{Masks, init_weights};

    /// conv (3 ch) -> bn -> relu -> gap -> fc; γ = [0.5, -2, 0].
    fn exec() -> (Graph, Executor) {
        let mut b = GraphBuilder::new("t", &[1, 4, 4]);
        let x = b.input();
        let c = b.conv_bn_relu("c", &x, 3, 3, 1, 1);
        let p = b.global_avg_pool("gap", &c);
        let fc = b.linear("fc", &p, 2, true);
        let g = b.finish(&fc);
        let mut w = init_weights(&g, 0);
        w.insert(
            "c_bn.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.5, -2.0, 0.0]).unwrap(),
        );
        let e = Executor::new(&g, &w, &Masks::new(), &Device::flex()).unwrap();
        (g, e)
    }

    fn edited(e: &Executor, reg: &BnScaleL1, name: &str, grad: Vec<f32>) -> Vec<f32> {
        let i = e.param_index(name).unwrap();
        let value = e.params[i].clone();
        let n = grad.len();
        let g = Tensor::from_data(TensorData::new(grad, [n]), &value.device());
        to_vec(reg.edit(e, i, &value, g))
    }

    #[test]
    fn slimming_adds_lambda_sign_gamma_to_every_scale() {
        let (_, e) = exec();
        let reg = BnScaleL1::all(0.25).unwrap();
        assert_eq!(
            edited(&e, &reg, "c_bn.weight", vec![1.0, 1.0, 1.0]),
            vec![1.25, 0.75, 1.0]
        );
        // Shifts and weights are not touched.
        assert_eq!(
            edited(&e, &reg, "c_bn.bias", vec![1.0, 2.0, 3.0]),
            vec![1.0, 2.0, 3.0]
        );
        let w = e.param_index("c.weight").unwrap();
        let n = e.params[w].dims()[0];
        assert_eq!(edited(&e, &reg, "c.weight", vec![0.5; n]), vec![0.5; n]);
    }

    #[test]
    fn masked_penalty_leaves_kept_channels_untouched() {
        let (g, e) = exec();
        let mut masks = BTreeMap::new();
        masks.insert("c_bn".to_string(), vec![false, true, false]);
        let reg = BnScaleL1::masked(&g, 0.5, &masks).unwrap();
        // Only channel 1 (γ = -2) is penalised: -0.5 added; kept channels get exactly zero extra.
        assert_eq!(
            edited(&e, &reg, "c_bn.weight", vec![0.1, 0.2, 0.3]),
            vec![0.1, 0.2 - 0.5, 0.3]
        );
        // Twice, so the cached mask tensor is used as well.
        assert_eq!(
            edited(&e, &reg, "c_bn.weight", vec![0.0, 0.0, 0.0]),
            vec![0.0, -0.5, 0.0]
        );
        // A BatchNorm without a mask gets no penalty at all.
        let none = BnScaleL1::masked(&g, 0.5, &BTreeMap::new()).unwrap();
        assert_eq!(
            edited(&e, &none, "c_bn.weight", vec![0.1, 0.2, 0.3]),
            vec![0.1, 0.2, 0.3]
        );
    }

    #[test]
    fn bad_masks_and_lambdas_are_named() {
        let (g, _) = exec();
        let mut m = BTreeMap::new();
        m.insert("c_bn".to_string(), vec![true]);
        let e = BnScaleL1::masked(&g, 0.1, &m).err().unwrap().to_string();
        assert!(e.contains("`c_bn` has 3 channels, the mask has 1"), "{e}");
        let mut m = BTreeMap::new();
        m.insert("c".to_string(), vec![true; 3]);
        let e = BnScaleL1::masked(&g, 0.1, &m).err().unwrap().to_string();
        assert!(e.contains("`c` is a conv2d node"), "{e}");
        let e = BnScaleL1::all(-1.0).err().unwrap().to_string();
        assert!(e.contains("got -1"), "{e}");
        assert!(BnScaleL1::all(f64::NAN).is_err());
    }

    #[test]
    fn penalty_masks_cover_every_bn_of_a_residual_group() {
        let mut b = GraphBuilder::new("t", &[1, 4, 4]);
        let x = b.input();
        let s = b.conv2d("stem", &x, 4, 1, 1, 0);
        let s = b.batchnorm("stem_bn", &s);
        let r = b.conv2d("r", &s, 4, 1, 1, 0);
        let r = b.batchnorm("r_bn", &r);
        let a = b.add("a", &[&s, &r]);
        let p = b.global_avg_pool("gap", &a);
        let fc = b.linear("fc", &p, 2, false);
        let g = b.finish(&fc);
        let groups = channel_groups(&g).unwrap();
        let gid = groups.iter().find(|g| g.producers.len() == 2).unwrap().id;
        let mut sel = ChannelSelection::default();
        sel.kept.insert(gid, vec![0, 2]);
        let m = penalty_masks_from_selection(&groups, &sel).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["stem_bn"], vec![false, true, false, true]);
        assert_eq!(m["r_bn"], vec![false, true, false, true]);
        assert!(BnScaleL1::masked(&g, 0.1, &m).is_ok());
        sel.kept.insert(gid, vec![9]);
        assert!(penalty_masks_from_selection(&groups, &sel).is_err());
    }
}
