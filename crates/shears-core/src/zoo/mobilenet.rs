//! MobileNetV2 (Sandler et al. 2018), torchvision structure adapted to CIFAR.

use super::check_image;
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;

/// Inverted-residual stages as torchvision lists them: expansion t, output channels c,
/// repeats n, stride s of the first block. The CIFAR variant sets the second stage's stride to 1.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Inverted residual `block{i}`: expand 1x1-BN-ReLU (absent when t = 1), depthwise 3x3-BN-ReLU,
/// project 1x1-BN, and an Add with the input when the stride is 1 and the channels are kept.
fn inverted_residual(
    b: &mut GraphBuilder,
    i: usize,
    x: &str,
    expansion: usize,
    out: usize,
    stride: usize,
) -> String {
    let p = format!("block{i}");
    let hidden = b.channels(x) * expansion;
    let h = if expansion == 1 {
        x.to_string()
    } else {
        b.conv_bn_relu(&format!("{p}_expand"), x, hidden, 1, 1, 0)
    };
    let d = b.depthwise(&format!("{p}_dw"), &h, 3, stride, 1);
    let d = b.batchnorm(&format!("{p}_dw_bn"), &d);
    let d = b.relu(&format!("{p}_dw_relu"), &d);
    let y = b.conv2d(&format!("{p}_project"), &d, out, 1, 1, 0);
    let y = b.batchnorm(&format!("{p}_project_bn"), &y);
    if stride == 1 && b.channels(x) == out {
        b.add(&format!("{p}_add"), &[&y, x])
    } else {
        y
    }
}

/// CIFAR MobileNetV2: 3x3 stem 32 with stride 1, the 17 inverted residuals of [`STAGES`], 1x1 conv
/// 1280-BN-ReLU, GAP, dropout 0.2, linear. ReLU stands in for ReLU6, which the IR does not have;
/// parameter and MAC counts are unaffected.
pub fn mobilenet_v2(model: &str, input: &[usize], classes: usize) -> Result<Graph> {
    // Every conv is 3x3 padding 1 or 1x1, so any side ≥ 1 works.
    check_image(model, input, classes, 1)?;
    let mut b = GraphBuilder::new(model, input);
    let x = b.input();
    let mut x = b.conv_bn_relu("stem", &x, 32, 3, 1, 1);
    let mut i = 0;
    for (t, c, n, s) in STAGES {
        for k in 0..n {
            let stride = if k == 0 { s } else { 1 };
            x = inverted_residual(&mut b, i, &x, t, c, stride);
            i += 1;
        }
    }
    let x = b.conv_bn_relu("head", &x, 1280, 1, 1, 0);
    let x = b.global_avg_pool("gap", &x);
    let x = b.dropout("dropout", &x, 0.2);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, cost};
    use crate::graph::Op;
    use crate::ops::{Conv2d, Dropout};
    use crate::shape::infer_shapes;
    use crate::zoo::build;

    #[test]
    fn mobilenet_v2_params_and_structure() {
        let g = build("mobilenet-v2", &[3, 32, 32], 10).unwrap();
        // torchvision mobilenet_v2(num_classes=10): 3,504,872 - 1280·1000-1000 + 1280·10+10.
        let c = cost(&g, Convention::ConvLinear).unwrap();
        assert_eq!(c.params, 2_236_682);
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("stem_relu"), &vec![32, 32, 32]);
        // The t=1 block has no expansion; the 24-channel stage keeps 32x32 on CIFAR.
        assert!(g.node("block0_expand").is_none());
        assert_eq!(s.get("block0_project_bn"), &vec![16, 32, 32]);
        assert_eq!(s.get("block2_project_bn"), &vec![24, 32, 32]);
        assert_eq!(s.get("block16_project_bn"), &vec![320, 4, 4]);
        assert_eq!(s.get("head_relu"), &vec![1280, 4, 4]);
        // Residual adds: within-stage repeats only (1 + 2 + 3 + 2 + 2 of n-1 per stage).
        let adds: Vec<&str> = g
            .nodes
            .iter()
            .filter(|n| n.op == Op::Add)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(adds.len(), 10, "{adds:?}");
        assert!(adds.contains(&"block2_add") && !adds.contains(&"block3_add"));
        match g.node("block1_dw").unwrap().op {
            Op::Conv2d(Conv2d {
                in_channels,
                groups,
                ..
            }) => assert_eq!((in_channels, groups), (96, 96)),
            ref op => panic!("block1_dw is {op:?}"),
        }
        assert_eq!(
            g.node("dropout").unwrap().op,
            Op::Dropout(Dropout { p: 0.2 })
        );
    }
}
