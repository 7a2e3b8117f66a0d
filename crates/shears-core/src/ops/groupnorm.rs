//! Group normalisation: the channels split into `groups` blocks, each normalised over its
//! channels and every position of one sample, then a per-channel scale and shift. PyTorch
//! exports it as Reshape `[N, G, -1]` → InstanceNormalization → Reshape back → Mul → Add.
//!
//! Pruning rule: a group norm stays one only if every block keeps the same number of channels,
//! so position `b` of every block is tied into one group channel (as a channel shuffle's
//! blocks are), and the statistics of a block are then taken over its kept channels: the
//! gated dense network leaves gated channels out, as compaction removes them. For effective
//! sparsity every output of a block reads every input of that block.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamKind, ParamSpec, chw,
    output_channel_axes, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::GroupNorm`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupNorm {
    pub channels: usize,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    /// Normalises one sample's `[C, positions]` map in place; channels whose `keep` is zero are
    /// left out of their block's statistics and set to zero.
    pub fn normalize(
        &self,
        x: &mut [f32],
        positions: usize,
        keep: Option<&[f32]>,
        scale: &[f32],
        shift: &[f32],
    ) {
        let per = self.channels / self.groups;
        let kept = |c: usize| keep.is_none_or(|k| k[c] != 0.0);
        for g in 0..self.groups {
            let chans: Vec<usize> = (g * per..(g + 1) * per).filter(|&c| kept(c)).collect();
            let n = (chans.len() * positions).max(1) as f64;
            let mut sum = 0.0f64;
            for &c in &chans {
                sum += x[c * positions..(c + 1) * positions]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>();
            }
            let mean = sum / n;
            let mut sq = 0.0f64;
            for &c in &chans {
                sq += x[c * positions..(c + 1) * positions]
                    .iter()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>();
            }
            let inv = 1.0 / (sq / n + self.eps).sqrt();
            for c in g * per..(g + 1) * per {
                let row = &mut x[c * positions..(c + 1) * positions];
                if kept(c) {
                    row.iter_mut()
                        .for_each(|v| *v = ((*v as f64 - mean) * inv) as f32 * scale[c] + shift[c]);
                } else {
                    row.fill(0.0);
                }
            }
        }
    }
}

impl OpRules for GroupNorm {
    fn name(&self) -> &'static str {
        "groupnorm"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        vec![
            param(node, "weight", vec![self.channels], ParamKind::Scale),
            param(node, "bias", vec![self.channels], ParamKind::Shift),
        ]
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (c, _, _) = chw(node, ins[0])?;
        if c != self.channels || self.groups == 0 || c % self.groups != 0 {
            return Err(CoreError::shape(
                &node.name,
                format!(
                    "a group norm of {} channels in {} groups does not fit {:?}",
                    self.channels, self.groups, ins[0]
                ),
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(CoreError::shape(
                &node.name,
                format!("eps must be positive, got {}", self.eps),
            ));
        }
        Ok(ins[0].clone())
    }

    /// Statistics and the affine: about four operations per element under `all-ops`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => 4 * out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::GroupMix {
            groups: self.groups,
        }
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        output_channel_axes(self.param_specs(node))
    }

    fn compacted(&self, node: &str, _in_channels: usize, out_channels: usize) -> Result<Op> {
        if out_channels % self.groups != 0 {
            return Err(CoreError::shape(
                node,
                format!(
                    "compaction left {out_channels} channels, not divisible by the {} groups",
                    self.groups
                ),
            ));
        }
        Ok(Op::GroupNorm(GroupNorm {
            channels: out_channels,
            ..*self
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let weight = call.params.get(&format!("{name}.weight"))?;
        let bias = call.params.get(&format!("{name}.bias"))?;
        let (scale, shift): (Vec<f32>, Vec<f32>) = (
            weight.iter().copied().collect(),
            bias.iter().copied().collect(),
        );
        let mut y = x.as_standard_layout().into_owned();
        let n = y.shape()[0];
        let per_sample = y.len() / n.max(1);
        let data = y
            .as_slice_mut()
            .ok_or_else(|| CoreError::shape(name, "group norm input is not contiguous"))?;
        for sample in data.chunks_mut(per_sample.max(1)) {
            let positions = per_sample / self.channels.max(1);
            self.normalize(sample, positions, call.in_gate, &scale, &shift);
        }
        Ok(y)
    }

    /// Opset 17 has no GroupNormalization: PyTorch's own pattern, with the instance norm's
    /// per-group scale and shift at 1 and 0 and the per-channel affine after it.
    fn onnx(&self, node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        let s = ins[0];
        let g = self.groups as i64;
        let mut split = OnnxNode::new("Reshape", vec![]);
        split.int_consts = vec![("group_shape", vec![0, g, -1])];
        let mut norm = OnnxNode::new(
            "InstanceNormalization",
            vec![("epsilon", OnnxAttr::Float(self.eps as f32))],
        );
        norm.float_tensors = vec![
            ("group_scale", vec![1.0; self.groups]),
            ("group_shift", vec![0.0; self.groups]),
        ];
        let mut merge = OnnxNode::new("Reshape", vec![]);
        merge.int_consts = vec![("map_shape", vec![0, s[0] as i64, s[1] as i64, s[2] as i64])];
        let mut mul = OnnxNode::new("Mul", vec![]);
        mul.map_params = vec![("weight_map", format!("{node}.weight"))];
        let mut add = OnnxNode::new("Add", vec![]);
        add.map_params = vec![("bias_map", format!("{node}.bias"))];
        vec![split, norm, merge, mul, add]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_block_over_its_kept_channels() {
        let gn = GroupNorm {
            channels: 4,
            groups: 2,
            eps: 1e-9,
        };
        // Two positions; block 0 = channels 0, 1 and block 1 = channels 2, 3.
        let mut x = vec![1.0, 3.0, 5.0, 7.0, 0.0, 0.0, 2.0, 2.0];
        gn.normalize(&mut x, 2, None, &[1.0; 4], &[0.0; 4]);
        // Block 0 holds 1 3 5 7: mean 4, std sqrt(5).
        let s5 = 5.0f32.sqrt();
        assert!(
            (x[0] + 3.0 / s5).abs() < 1e-5 && (x[3] - 3.0 / s5).abs() < 1e-5,
            "{x:?}"
        );
        // Block 1 holds 0 0 2 2: mean 1, std 1.
        assert!(
            (x[4] + 1.0).abs() < 1e-5 && (x[7] - 1.0).abs() < 1e-5,
            "{x:?}"
        );
        // Channel 1 gated: block 0 is channel 0 alone (1 and 3: mean 2, std 1).
        let mut y = vec![1.0, 3.0, 5.0, 7.0, 0.0, 0.0, 2.0, 2.0];
        gn.normalize(&mut y, 2, Some(&[1.0, 0.0, 1.0, 1.0]), &[1.0; 4], &[0.0; 4]);
        assert!(
            (y[0] + 1.0).abs() < 1e-5 && y[2] == 0.0 && y[3] == 0.0,
            "{y:?}"
        );
    }
}
