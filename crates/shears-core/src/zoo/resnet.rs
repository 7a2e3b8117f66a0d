//! Residual networks: the CIFAR ResNets of He et al. 2016 (20/32/56/110), the CIFAR-style
//! ResNet-18 and the ImageNet ResNet-50 (torchvision v1.5).
//!
//! Node names follow torchvision with `_` for `.`: `conv1`/`bn1`/`relu1` for the stem,
//! `layer{s}_{i}_conv1`, `_bn1`, `_relu1`, `_conv2`, ... inside block `i` of stage `s`,
//! `layer{s}_{i}_shortcut_conv`/`_shortcut_bn` for a projection, `_add` and a final ReLU.

use super::check_image;
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;

/// One stage of residual blocks.
struct Stage {
    /// Output channels of the block's 3x3 convs (basic) or its 1x1 reduction (bottleneck).
    planes: usize,
    blocks: usize,
    /// Stride of the first block.
    stride: usize,
}

/// Bottleneck output channels per `planes`.
const EXPANSION: usize = 4;

/// The shortcut of a block that ends with `out` channels: the identity when the shape is kept,
/// else a 1x1 conv (stride `stride`) + BN projection.
fn shortcut(b: &mut GraphBuilder, prefix: &str, x: &str, out: usize, stride: usize) -> String {
    if stride == 1 && b.channels(x) == out {
        return x.to_string();
    }
    let c = b.conv2d(&format!("{prefix}_shortcut_conv"), x, out, 1, stride, 0);
    b.batchnorm(&format!("{prefix}_shortcut_bn"), &c)
}

/// conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, Add, ReLU. The 1x1 stride-s projection yields
/// the same spatial size as the 3x3 padding-1 stride-s conv, ⌊(H-1)/s⌋+1, for every H ≥ 1.
fn basic_block(
    b: &mut GraphBuilder,
    prefix: &str,
    x: &str,
    planes: usize,
    stride: usize,
) -> String {
    let c1 = b.conv2d(&format!("{prefix}_conv1"), x, planes, 3, stride, 1);
    let n1 = b.batchnorm(&format!("{prefix}_bn1"), &c1);
    let r1 = b.relu(&format!("{prefix}_relu1"), &n1);
    let c2 = b.conv2d(&format!("{prefix}_conv2"), &r1, planes, 3, 1, 1);
    let n2 = b.batchnorm(&format!("{prefix}_bn2"), &c2);
    let s = shortcut(b, prefix, x, planes, stride);
    let a = b.add(&format!("{prefix}_add"), &[&n2, &s]);
    b.relu(&format!("{prefix}_relu2"), &a)
}

/// conv1x1-BN-ReLU, conv3x3 (stride here, v1.5)-BN-ReLU, conv1x1 (x4)-BN, plus shortcut, Add, ReLU.
fn bottleneck(b: &mut GraphBuilder, prefix: &str, x: &str, planes: usize, stride: usize) -> String {
    let c1 = b.conv2d(&format!("{prefix}_conv1"), x, planes, 1, 1, 0);
    let n1 = b.batchnorm(&format!("{prefix}_bn1"), &c1);
    let r1 = b.relu(&format!("{prefix}_relu1"), &n1);
    let c2 = b.conv2d(&format!("{prefix}_conv2"), &r1, planes, 3, stride, 1);
    let n2 = b.batchnorm(&format!("{prefix}_bn2"), &c2);
    let r2 = b.relu(&format!("{prefix}_relu2"), &n2);
    let c3 = b.conv2d(&format!("{prefix}_conv3"), &r2, planes * EXPANSION, 1, 1, 0);
    let n3 = b.batchnorm(&format!("{prefix}_bn3"), &c3);
    let s = shortcut(b, prefix, x, planes * EXPANSION, stride);
    let a = b.add(&format!("{prefix}_add"), &[&n3, &s]);
    b.relu(&format!("{prefix}_relu3"), &a)
}

type Block = fn(&mut GraphBuilder, &str, &str, usize, usize) -> String;

/// Stages `layer1`, `layer2`, ... then GAP and the linear classifier `fc`; returns the logits.
fn stages_and_head(
    b: &mut GraphBuilder,
    mut x: String,
    block: Block,
    stages: &[Stage],
    classes: usize,
) -> String {
    for (s, stage) in stages.iter().enumerate() {
        for i in 0..stage.blocks {
            let stride = if i == 0 { stage.stride } else { 1 };
            x = block(b, &format!("layer{}_{i}", s + 1), &x, stage.planes, stride);
        }
    }
    let x = b.global_avg_pool("gap", &x);
    b.linear("fc", &x, classes, true)
}

/// 3x3 conv (stride 1, padding 1, no bias) → BN → ReLU stem.
fn cifar_stem(b: &mut GraphBuilder, width: usize) -> String {
    let x = b.input();
    let c = b.conv2d("conv1", &x, width, 3, 1, 1);
    let n = b.batchnorm("bn1", &c);
    b.relu("relu1", &n)
}

/// CIFAR ResNet-(6n+2) of He et al. 2016: 3x3 stem 16, three stages of `n` basic blocks with
/// 16/32/64 channels (stride 2 entering stages 2 and 3), GAP, linear.
///
/// Where a block changes shape, the shortcut is option B (1x1 conv stride 2 + BN) rather than the
/// paper's option A (stride-2 subsampling + zero channel padding), because the graph IR has no
/// zero-padding op. That adds 2,752 parameters (16·32 + 32·64 weights, two BNs) and 262,144
/// conv+linear MACs at 32x32 to the option-A counts, and the projections are prunable layers.
pub fn cifar_resnet(model: &str, input: &[usize], classes: usize, n: usize) -> Result<Graph> {
    check_image(model, input, classes, 1)?;
    let mut b = GraphBuilder::new(model, input);
    let x = cifar_stem(&mut b, 16);
    let stages = [(16, 1), (32, 2), (64, 2)].map(|(planes, stride)| Stage {
        planes,
        blocks: n,
        stride,
    });
    let y = stages_and_head(&mut b, x, basic_block, &stages, classes);
    Ok(b.finish(&y))
}

/// ResNet-18, CIFAR style (kuangliu/pytorch-cifar): 3x3 stem 64 with stride 1 and no max-pool,
/// stages of 2 basic blocks with 64/128/256/512 channels, projection shortcuts, GAP, linear.
pub fn resnet_18(model: &str, input: &[usize], classes: usize) -> Result<Graph> {
    check_image(model, input, classes, 1)?;
    let mut b = GraphBuilder::new(model, input);
    let x = cifar_stem(&mut b, 64);
    let stages = [(64, 1), (128, 2), (256, 2), (512, 2)].map(|(planes, stride)| Stage {
        planes,
        blocks: 2,
        stride,
    });
    let y = stages_and_head(&mut b, x, basic_block, &stages, classes);
    Ok(b.finish(&y))
}

/// ResNet-50 as torchvision builds it (v1.5): 7x7/2 conv 64, BN, ReLU, 3x3/2 max-pool (padding 1),
/// bottleneck stages [3,4,6,3] with widths 64/128/256/512 (x4 out), stride on the 3x3 conv,
/// projection shortcut on each stage's first block, GAP, linear.
pub fn resnet_50(model: &str, input: &[usize], classes: usize) -> Result<Graph> {
    // 7x7/2 with padding 3 and 3x3/2 with padding 1 both map any side ≥ 1 to a side ≥ 1.
    check_image(model, input, classes, 1)?;
    let mut b = GraphBuilder::new(model, input);
    let x = b.input();
    let c = b.conv2d("conv1", &x, 64, 7, 2, 3);
    let n = b.batchnorm("bn1", &c);
    let r = b.relu("relu1", &n);
    let x = b.maxpool("maxpool", &r, 3, 2, 1);
    let stages =
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)].map(|(planes, blocks, stride)| Stage {
            planes,
            blocks,
            stride,
        });
    let y = stages_and_head(&mut b, x, bottleneck, &stages, classes);
    Ok(b.finish(&y))
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, Cost, cost};
    use crate::shape::infer_shapes;
    use crate::zoo::build;

    fn cost_of(name: &str, input: &[usize], classes: usize) -> Cost {
        let g = build(name, input, classes).unwrap();
        cost(&g, Convention::ConvLinear).unwrap()
    }

    /// Params and MACs of the option-B projections alone.
    fn shortcut_part(c: &Cost) -> (u64, u64) {
        c.nodes
            .iter()
            .filter(|n| n.name.contains("shortcut"))
            .fold((0, 0), |(p, m), n| (p + n.params, m + n.macs))
    }

    #[test]
    fn cifar_resnet_params() {
        // Option A by hand: stem 432+32, stage 1 n·4672, stage 2 13,952 + (n-1)·18,560,
        // stage 3 55,552 + (n-1)·73,984, fc 650; option B adds 2,752.
        let cases = [
            ("resnet-20", 269_722, 0.27e6),
            ("resnet-32", 464_154, 0.46e6),
            ("resnet-56", 853_018, 0.85e6),
            ("resnet-110", 1_727_962, 1.7e6),
        ];
        for (name, option_a, published) in cases {
            let c = cost_of(name, &[3, 32, 32], 10);
            assert_eq!(c.params, option_a + 2752, "{name}");
            assert_eq!(shortcut_part(&c).0, 2752, "{name}");
            let rel = (c.params as f64 - published) / published;
            assert!(rel.abs() < 0.02, "{name}: {} is {rel:+.4} off", c.params);
        }
    }

    #[test]
    fn resnet_56_macs() {
        // Stem 442,368; stage 1 18 convs of 2,359,296; stages 2 and 3 each 1,179,648 + 17 convs of
        // 2,359,296; fc 640: 125,485,696 without projections (FTWT's thop: 125,485,760).
        // The two projections add 2·131,072.
        let c = cost_of("resnet-56", &[3, 32, 32], 10);
        assert_eq!(c.macs, 125_747_840);
        assert_eq!(shortcut_part(&c).1, 262_144);
        let rel = (c.macs as f64 - 125_485_760.0) / 125_485_760.0;
        assert!(rel.abs() < 0.01, "{rel}");
    }

    #[test]
    fn cifar_resnet_structure_and_names() {
        let g = build("resnet-56", &[3, 32, 32], 10).unwrap();
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("relu1"), &vec![16, 32, 32]);
        assert_eq!(s.get("layer1_8_relu2"), &vec![16, 32, 32]);
        assert_eq!(s.get("layer2_0_conv1"), &vec![32, 16, 16]);
        assert_eq!(s.get("layer2_0_shortcut_bn"), &vec![32, 16, 16]);
        assert_eq!(s.get("layer3_8_bn2"), &vec![64, 8, 8]);
        assert_eq!(s.get("gap"), &vec![64]);
        // Identity shortcuts read the previous block's output directly.
        assert!(g.node("layer1_0_shortcut_conv").is_none());
        assert_eq!(
            g.node("layer1_0_add").unwrap().inputs,
            ["layer1_0_bn2", "relu1"]
        );
        assert_eq!(
            g.node("layer3_1_add").unwrap().inputs,
            ["layer3_1_bn2", "layer3_0_relu2"]
        );
        let convs = g.nodes.iter().filter(|n| n.op.is_weighted_layer()).count();
        assert_eq!(convs, 56 + 2, "55 convs + fc, plus two projections");
        // 110 layers: 1 + 3·18·2 convs + fc.
        let g = build("resnet-110", &[3, 32, 32], 10).unwrap();
        let layers = g.nodes.iter().filter(|n| n.op.is_weighted_layer()).count();
        assert_eq!(layers, 110 + 2);
    }

    #[test]
    fn resnet_18_cifar() {
        let c = cost_of("resnet-18", &[3, 32, 32], 10);
        assert_eq!(c.params, 11_173_962);
        // Stem 1,769,472; layer1 4·37,748,736; layers 2-4 each 2^27 (first conv, three convs,
        // projection); fc 5,120.
        assert_eq!(c.macs, 555_422_720);
        let g = build("resnet-18", &[3, 32, 32], 10).unwrap();
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("layer4_1_relu2"), &vec![512, 4, 4]);
        let projections = g.nodes.iter().filter(|n| n.name.ends_with("shortcut_conv"));
        assert_eq!(projections.count(), 3);
    }

    #[test]
    fn resnet_50_matches_torchvision() {
        assert_eq!(cost_of("resnet-50", &[3, 32, 32], 10).params, 23_528_522);
        let c = cost_of("resnet-50", &[3, 224, 224], 1000);
        assert_eq!(c.params, 25_557_032);
        // torchvision lists 4.09 GFLOPS (multiply-adds) for ResNet50_Weights.IMAGENET1K_V1.
        assert_eq!(c.macs, 4_089_184_256);
        let rel = (c.macs as f64 - 4.09e9) / 4.09e9;
        assert!(rel.abs() < 0.01, "{} MACs, {rel:+.4}", c.macs);
        let g = build("resnet-50", &[3, 224, 224], 1000).unwrap();
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("maxpool"), &vec![64, 56, 56]);
        assert_eq!(s.get("layer1_0_shortcut_bn"), &vec![256, 56, 56]);
        assert_eq!(s.get("layer2_0_conv1"), &vec![128, 56, 56]);
        assert_eq!(s.get("layer2_0_conv2"), &vec![128, 28, 28]);
        assert_eq!(s.get("layer4_2_relu3"), &vec![2048, 7, 7]);
        let projections = g.nodes.iter().filter(|n| n.name.ends_with("shortcut_conv"));
        assert_eq!(projections.count(), 4);
    }
}
