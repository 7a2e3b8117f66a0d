//! Layer normalisation over the channels at each position (ConvNeXt's `LayerNorm` on the
//! channels-last view, torchvision's `LayerNorm2d`): `(x - mean_c) / sqrt(var_c + eps)`, then a
//! per-channel scale and shift, with the mean and the (biased) variance taken over the channels of
//! one position of one sample.
//!
//! Pruning rule (Torch-Pruning's): the scale and shift are sliced with the channels, and the
//! statistics are then taken over the channels that remain. The gated dense network that
//! compaction must equal therefore normalises over the channels its input gate keeps
//! ([`crate::reference::forward_with_channel_gates`] does so). For effective sparsity every
//! output channel reads every input channel of its position.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamKind, ParamSpec,
    output_channel_axes, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::LayerNorm`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerNorm {
    pub channels: usize,
    pub eps: f64,
}

impl LayerNorm {
    /// Normalises the `channels` values `x[c * stride]` of one position in place; channels whose
    /// `keep` is false (pruned ones in a gated network) are left out of the statistics and set to
    /// zero. `scale` and `shift` are the op's tensors.
    pub fn normalize(
        &self,
        x: &mut [f32],
        stride: usize,
        keep: Option<&[f32]>,
        scale: &[f32],
        shift: &[f32],
    ) {
        let kept = |c: usize| keep.is_none_or(|k| k[c] != 0.0);
        let n = (0..self.channels).filter(|&c| kept(c)).count().max(1) as f64;
        let mean = (0..self.channels)
            .filter(|&c| kept(c))
            .map(|c| x[c * stride] as f64)
            .sum::<f64>()
            / n;
        let var = (0..self.channels)
            .filter(|&c| kept(c))
            .map(|c| (x[c * stride] as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for c in 0..self.channels {
            let v = &mut x[c * stride];
            *v = if kept(c) {
                ((*v as f64 - mean) * inv) as f32 * scale[c] + shift[c]
            } else {
                0.0
            };
        }
    }
}

impl OpRules for LayerNorm {
    fn name(&self) -> &'static str {
        "layernorm"
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
        let s = ins[0];
        if crate::shape::channels(s) != self.channels {
            return Err(CoreError::shape(
                &node.name,
                format!("expects {} channels, got {:?}", self.channels, s),
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(CoreError::shape(
                &node.name,
                format!("eps must be positive, got {}", self.eps),
            ));
        }
        Ok(s.clone())
    }

    /// Statistics and the affine: about four operations per element under `all-ops`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => 4 * out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::MixChannels
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        output_channel_axes(self.param_specs(node))
    }

    fn compacted(&self, _node: &str, _in_channels: usize, out_channels: usize) -> Result<Op> {
        Ok(Op::LayerNorm(LayerNorm {
            channels: out_channels,
            eps: self.eps,
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
        let positions = per_sample / self.channels.max(1);
        // Channels are the last axis of tokens `[N,T,C]` (stride 1), the first of a map.
        let tokens = y.ndim() == 3;
        let data = y
            .as_slice_mut()
            .ok_or_else(|| CoreError::shape(name, "layer norm input is not contiguous"))?;
        for sample in data.chunks_mut(per_sample.max(1)) {
            for pos in 0..positions {
                if tokens {
                    let row = &mut sample[pos * self.channels..];
                    self.normalize(row, 1, call.in_gate, &scale, &shift);
                } else {
                    self.normalize(&mut sample[pos..], positions, call.in_gate, &scale, &shift);
                }
            }
        }
        Ok(y)
    }

    /// ONNX normalises trailing axes: a map goes channels-last and back around it.
    fn onnx(&self, node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut ln = OnnxNode::new(
            "LayerNormalization",
            vec![
                ("axis", OnnxAttr::Int(-1)),
                ("epsilon", OnnxAttr::Float(self.eps as f32)),
            ],
        );
        ln.params = vec![format!("{node}.weight"), format!("{node}.bias")];
        if ins[0].len() == 3 {
            vec![
                OnnxNode::new(
                    "Transpose",
                    vec![("perm", OnnxAttr::Ints(vec![0, 2, 3, 1]))],
                ),
                ln,
                OnnxNode::new(
                    "Transpose",
                    vec![("perm", OnnxAttr::Ints(vec![0, 3, 1, 2]))],
                ),
            ]
        } else {
            vec![ln]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_over_the_kept_channels() {
        let ln = LayerNorm {
            channels: 3,
            eps: 1e-6,
        };
        // Two positions, channel-major: channel c at x[c * 2 + p].
        let mut x = vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        ln.normalize(&mut x[0..], 2, None, &[1.0; 3], &[0.0; 3]);
        let s = (2.0f64 / 3.0).sqrt();
        assert!(
            (x[0] as f64 + 1.0 / s).abs() < 1e-4 && x[2].abs() < 1e-4,
            "{x:?}"
        );
        // Channel 1 gated off: statistics of channels 0 and 2 only, channel 1 zero.
        let mut y = vec![1.0, 5.0, 3.0];
        ln.normalize(&mut y, 1, Some(&[1.0, 0.0, 1.0]), &[2.0; 3], &[0.5; 3]);
        assert!(
            (y[0] - (-2.0 + 0.5)).abs() < 1e-3 && y[1] == 0.0 && (y[2] - 2.5).abs() < 1e-3,
            "{y:?}"
        );
    }
}
