//! The quick CNN used by Fashion-MNIST demos and tests: small enough to train in seconds.

use super::check_image;
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;

/// conv-BN-ReLU 32, 32, max-pool 2, conv-BN-ReLU 64, 64, max-pool 2, GAP, linear
/// (3x3 convs, padding 1, no conv bias).
pub fn small_cnn(model: &str, input: &[usize], classes: usize) -> Result<Graph> {
    // Two 2x2 max-pools need at least 4x4 pixels.
    check_image(model, input, classes, 4)?;
    let mut b = GraphBuilder::new(model, input);
    let x = b.input();
    let x = b.conv_bn_relu("conv1", &x, 32, 3, 1, 1);
    let x = b.conv_bn_relu("conv2", &x, 32, 3, 1, 1);
    let x = b.maxpool("pool1", &x, 2, 2, 0);
    let x = b.conv_bn_relu("conv3", &x, 64, 3, 1, 1);
    let x = b.conv_bn_relu("conv4", &x, 64, 3, 1, 1);
    let x = b.maxpool("pool2", &x, 2, 2, 0);
    let x = b.global_avg_pool("gap", &x);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;
    use crate::zoo::build;

    #[test]
    fn small_cnn_params_macs_and_names() {
        let g = build("small-cnn", &[1, 28, 28], 10).unwrap();
        let c = cost(&g, Convention::ConvLinear).unwrap();
        // convs 1·32·9 + 32·32·9 + 32·64·9 + 64·64·9, BN 2·(32+32+64+64), fc 64·10+10
        assert_eq!(c.params, 65_834);
        // MACs: two convs at 28x28, two at 14x14, plus the classifier.
        assert_eq!(c.macs, 784 * (288 + 9216) + 196 * (18_432 + 36_864) + 640);
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("pool2"), &vec![64, 7, 7]);
        for n in ["conv1", "conv1_bn", "conv1_relu", "conv4_bn", "gap", "fc"] {
            assert!(g.node(n).is_some(), "missing {n}");
        }
        // Three input channels add 2·32·9 weights to the first conv.
        let g = build("small-cnn", &[3, 32, 32], 10).unwrap();
        assert_eq!(
            cost(&g, Convention::ConvLinear).unwrap().params,
            65_834 + 576
        );
    }
}
