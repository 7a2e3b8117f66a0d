//! The LeNets of the pruning-at-initialisation papers: LeNet-300-100 (MLP) and LeNet-5 (CNN).

use super::{check_common, check_image};
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;

/// flatten → 300 → ReLU → 100 → ReLU → classes; takes any input, flattened channel-major.
pub fn lenet_300_100(model: &str, input: &[usize], classes: usize) -> Result<Graph> {
    check_common(model, input, classes)?;
    let mut b = GraphBuilder::new(model, input);
    let x = b.input();
    let x = b.flatten("flatten", &x);
    let x = b.linear("fc1", &x, 300, true);
    let x = b.relu("relu1", &x);
    let x = b.linear("fc2", &x, 100, true);
    let x = b.relu("relu2", &x);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

/// Two valid 5x5 convs (6, 16, with bias) each followed by ReLU and a 2x2 max-pool, then
/// FC 120 → 84 → classes; the flattened size follows the input (16·5·5 at 32x32, 16·4·4 at 28x28).
pub fn lenet_5(model: &str, input: &[usize], classes: usize) -> Result<Graph> {
    // 16 is the smallest side that leaves a 1x1 map: 16 -conv-> 12 -pool-> 6 -conv-> 2 -pool-> 1.
    check_image(model, input, classes, 16)?;
    let mut b = GraphBuilder::new(model, input);
    let x = b.input();
    let x = b.conv2d_bias("conv1", &x, 6, 5, 1, 0);
    let x = b.relu("relu1", &x);
    let x = b.maxpool("pool1", &x, 2, 2, 0);
    let x = b.conv2d_bias("conv2", &x, 16, 5, 1, 0);
    let x = b.relu("relu2", &x);
    let x = b.maxpool("pool2", &x, 2, 2, 0);
    let x = b.flatten("flatten", &x);
    let x = b.linear("fc1", &x, 120, true);
    let x = b.relu("relu3", &x);
    let x = b.linear("fc2", &x, 84, true);
    let x = b.relu("relu4", &x);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;
    use crate::zoo::build;

    fn params(name: &str, input: &[usize], classes: usize) -> u64 {
        let g = build(name, input, classes).unwrap();
        cost(&g, Convention::ConvLinear).unwrap().params
    }

    #[test]
    fn lenet_300_100_params() {
        // 784·300+300 + 300·100+100 + 100·10+10
        assert_eq!(params("lenet-300-100", &[784], 10), 266_610);
        assert_eq!(params("lenet-300-100", &[1, 28, 28], 10), 266_610);
        // 3072 inputs: only the first layer grows, by (3072-784)·300.
        assert_eq!(
            params("lenet-300-100", &[3, 32, 32], 10),
            266_610 + 2288 * 300
        );
    }

    #[test]
    fn lenet_5_params_and_shapes() {
        // conv1 6·75+6, conv2 16·150+16, fc1 400·120+120, fc2 120·84+84, fc 84·10+10
        assert_eq!(params("lenet-5", &[3, 32, 32], 10), 62_006);
        // 1x28x28: conv1 6·25+6, and fc1 sees 16·4·4 = 256 features.
        assert_eq!(
            params("lenet-5", &[1, 28, 28], 10),
            156 + 2416 + 256 * 120 + 120 + 10_164 + 850
        );
        let g = build("lenet-5", &[3, 32, 32], 10).unwrap();
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("conv1"), &vec![6, 28, 28]);
        assert_eq!(s.get("pool2"), &vec![16, 5, 5]);
        assert_eq!(s.get("flatten"), &vec![400]);
        let g = build("lenet-5", &[1, 16, 16], 10).unwrap();
        assert_eq!(infer_shapes(&g).unwrap().get("pool2"), &vec![16, 1, 1]);
    }
}
