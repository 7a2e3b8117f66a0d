//! VGG with BatchNorm, CIFAR style: the conv stack, global average pooling, one linear classifier
//! (the kuangliu/pytorch-cifar and FTWT layout).

use super::check_image;
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;

/// One entry of a VGG configuration.
#[derive(Clone, Copy)]
pub enum Layer {
    /// 3x3 conv (padding 1, with bias) → BN → ReLU with this many output channels.
    Conv(usize),
    /// 2x2 max-pool, stride 2.
    Pool,
}

use Layer::{Conv as C, Pool as M};

/// VGG-11 ("A"): 8 convs.
#[rustfmt::skip]
pub const VGG11: &[Layer] = &[
    C(64), M, C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M,
];

/// VGG-16 ("D"): 13 convs.
#[rustfmt::skip]
pub const VGG16: &[Layer] = &[
    C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), M,
    C(512), C(512), C(512), M, C(512), C(512), C(512), M,
];

/// VGG-19 ("E"): 16 convs.
#[rustfmt::skip]
pub const VGG19: &[Layer] = &[
    C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), C(256), M,
    C(512), C(512), C(512), C(512), M, C(512), C(512), C(512), C(512), M,
];

/// Builds a VGG from its configuration. Nodes are `conv{i}`/`bn{i}`/`relu{i}` for the i-th conv
/// and `pool{j}` for the j-th pool; a pool is skipped when the map is already below 2x2, so the
/// 32x32 layout also runs on 28x28 (whose map is 1x1 after four pools) and on smaller inputs.
pub fn vgg(model: &str, input: &[usize], classes: usize, config: &[Layer]) -> Result<Graph> {
    check_image(model, input, classes, 1)?;
    let mut b = GraphBuilder::new(model, input);
    let mut x = b.input();
    let (mut convs, mut pools) = (0, 0);
    for layer in config {
        match *layer {
            Layer::Conv(out) => {
                convs += 1;
                let c = b.conv2d_bias(&format!("conv{convs}"), &x, out, 3, 1, 1);
                let n = b.batchnorm(&format!("bn{convs}"), &c);
                x = b.relu(&format!("relu{convs}"), &n);
            }
            Layer::Pool => {
                pools += 1;
                let s = b.shape(&x);
                if s[1] >= 2 && s[2] >= 2 {
                    x = b.maxpool(&format!("pool{pools}"), &x, 2, 2, 0);
                }
            }
        }
    }
    // On the 1x1 map of a 32x32 input this equals the flatten of the original.
    let x = b.global_avg_pool("gap", &x);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;
    use crate::zoo::build;

    fn cost_of(name: &str, input: &[usize], classes: usize) -> (u64, u64) {
        let g = build(name, input, classes).unwrap();
        let c = cost(&g, Convention::ConvLinear).unwrap();
        (c.params, c.macs)
    }

    #[test]
    fn vgg_params_match_the_cifar_references() {
        // Hand sums of conv (with bias) + BN (2 per channel) + linear 512·10+10; VGG-16 is the
        // kuangliu/FTWT count, VGG-19 the Network Slimming "20.04M".
        assert_eq!(cost_of("vgg-11", &[3, 32, 32], 10).0, 9_231_114);
        assert_eq!(cost_of("vgg-16", &[3, 32, 32], 10).0, 14_728_266);
        assert_eq!(cost_of("vgg-19", &[3, 32, 32], 10).0, 20_040_522);
        // CIFAR-100 head: the classifier grows by 512·90+90.
        assert_eq!(cost_of("vgg-19", &[3, 32, 32], 100).0, 20_040_522 + 46_170);
    }

    #[test]
    fn vgg16_macs() {
        // Per resolution: 32² (64·27 + 64·576), 16² (128·576 + 128·1152), 8² (256·1152 + 2·256·2304),
        // 4² (512·2304 + 2·512·4608), 2² (3·512·4608), plus fc 5120 = 313,201,664. FTWT's thop
        // figure 313,478,144 is larger by exactly the 276,480 conv-bias additions thop counts.
        assert_eq!(cost_of("vgg-16", &[3, 32, 32], 10).1, 313_201_664);
        assert_eq!(313_478_144 - 313_201_664, 276_480);
    }

    #[test]
    fn vgg_on_fashion_mnist_skips_the_last_pool() {
        let g = build("vgg-16", &[1, 28, 28], 10).unwrap();
        let s = infer_shapes(&g).unwrap();
        // 28 → 14 → 7 → 3 → 1, and the fifth pool would not fit a 1x1 map.
        assert_eq!(s.get("pool4"), &vec![512, 1, 1]);
        assert!(g.node("pool5").is_none());
        assert_eq!(s.get("relu13"), &vec![512, 1, 1]);
        // Same parameters as at 32x32 but for the 1-channel first conv: (3-1)·64·9 fewer.
        assert_eq!(cost_of("vgg-16", &[1, 28, 28], 10).0, 14_728_266 - 1152);
        let g = build("vgg-16", &[3, 32, 32], 10).unwrap();
        assert_eq!(infer_shapes(&g).unwrap().get("pool5"), &vec![512, 1, 1]);
    }
}
