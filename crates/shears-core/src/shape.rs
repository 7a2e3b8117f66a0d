//! Shape inference: the per-sample shape of every value, with errors that name the node.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node, Op};
use std::collections::HashMap;

/// Per-sample shape of one value: `[C,H,W]` or `[F]`.
pub type Shape = Vec<usize>;

/// Shapes of the input and of every node output, keyed by value name.
#[derive(Debug, Clone)]
pub struct Shapes {
    map: HashMap<String, Shape>,
}

impl Shapes {
    pub fn get(&self, value: &str) -> &Shape {
        &self.map[value]
    }
    pub fn try_get(&self, value: &str) -> Option<&Shape> {
        self.map.get(value)
    }
}

/// Output length of a sliding window (convolution or pooling) along one axis.
pub fn window_out(
    len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = len + 2 * padding;
    if stride == 0 || kernel == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Infers all shapes; validates the graph first.
pub fn infer_shapes(graph: &Graph) -> Result<Shapes> {
    graph.validate()?;
    let mut map: HashMap<String, Shape> = HashMap::new();
    if graph.input.shape.is_empty()
        || graph.input.shape.contains(&0)
        || !matches!(graph.input.shape.len(), 1 | 3)
    {
        return Err(CoreError::InvalidGraph(format!(
            "input shape {:?} must be [C,H,W] or [F] with no zero dimension",
            graph.input.shape
        )));
    }
    map.insert(graph.input.name.clone(), graph.input.shape.clone());
    for node in &graph.nodes {
        let ins: Vec<&Shape> = node.inputs.iter().map(|i| &map[i.as_str()]).collect();
        let out = node_shape(node, &ins)?;
        map.insert(node.name.clone(), out);
    }
    Ok(Shapes { map })
}

fn chw<'a>(node: &Node, s: &'a Shape) -> Result<(usize, usize, usize)> {
    match s.as_slice() {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(CoreError::shape(
            &node.name,
            format!(
                "{} needs a [C,H,W] feature map, got shape {:?}",
                node.op.kind_name(),
                s
            ),
        )),
    }
}

/// Shape rule of one op given its input shapes.
pub fn node_shape(node: &Node, ins: &[&Shape]) -> Result<Shape> {
    let err = |m: String| CoreError::shape(&node.name, m);
    match node.op {
        Op::Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => {
            let (c, h, w) = chw(node, ins[0])?;
            if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
                return Err(err(format!(
                    "groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
                )));
            }
            if c != in_channels {
                return Err(err(format!(
                    "expects {in_channels} input channels, got {c}"
                )));
            }
            if out_channels == 0 {
                return Err(err("has zero output channels".into()));
            }
            let oh = window_out(h, kernel[0], stride[0], padding[0], dilation[0]);
            let ow = window_out(w, kernel[1], stride[1], padding[1], dilation[1]);
            match (oh, ow) {
                (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![out_channels, oh, ow]),
                _ => Err(err(format!(
                    "kernel {kernel:?} does not fit input {h}x{w} with padding {padding:?}"
                ))),
            }
        }
        Op::Linear {
            in_features,
            out_features,
            ..
        } => match ins[0].as_slice() {
            [f] if *f == in_features => Ok(vec![out_features]),
            [f] => Err(err(format!(
                "expects {in_features} input features, got {f}"
            ))),
            s => Err(err(format!(
                "linear needs a [F] vector (add a flatten), got shape {s:?}"
            ))),
        },
        Op::BatchNorm { channels, eps, .. } => {
            let c = ins[0][0];
            if !(eps > 0.0) {
                return Err(err(format!("eps must be positive, got {eps}")));
            }
            if c != channels {
                return Err(err(format!("expects {channels} channels, got {c}")));
            }
            Ok(ins[0].clone())
        }
        Op::Relu | Op::Dropout { .. } => {
            if let Op::Dropout { p } = node.op
                && !(0.0..1.0).contains(&p)
            {
                return Err(err(format!("dropout p must be in [0,1), got {p}")));
            }
            Ok(ins[0].clone())
        }
        Op::MaxPool {
            kernel,
            stride,
            padding,
        }
        | Op::AvgPool {
            kernel,
            stride,
            padding,
        } => {
            let (c, h, w) = chw(node, ins[0])?;
            if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
                return Err(err(format!(
                    "padding {padding:?} must be at most half the kernel {kernel:?}"
                )));
            }
            let oh = window_out(h, kernel[0], stride[0], padding[0], 1);
            let ow = window_out(w, kernel[1], stride[1], padding[1], 1);
            match (oh, ow) {
                (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![c, oh, ow]),
                _ => Err(err(format!(
                    "pool kernel {kernel:?} does not fit input {h}x{w}"
                ))),
            }
        }
        Op::GlobalAvgPool => {
            let (c, _, _) = chw(node, ins[0])?;
            Ok(vec![c])
        }
        Op::Flatten => Ok(vec![ins[0].iter().product()]),
        Op::Add => {
            let first = ins[0];
            for (i, s) in ins.iter().enumerate().skip(1) {
                if *s != first {
                    return Err(err(format!(
                        "add inputs must have equal shapes: `{}` is {:?} but `{}` is {:?}",
                        node.inputs[0], first, node.inputs[i], s
                    )));
                }
            }
            Ok(first.clone())
        }
        Op::Concat => {
            let first = ins[0];
            let mut channels = 0;
            for (i, s) in ins.iter().enumerate() {
                if s.len() != first.len() || s[1..] != first[1..] {
                    return Err(err(format!(
                        "concat inputs must agree on all but the channel axis: `{}` is {:?} but `{}` is {:?}",
                        node.inputs[0], first, node.inputs[i], s
                    )));
                }
                channels += s[0];
            }
            let mut out = first.clone();
            out[0] = channels;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    #[test]
    fn conv_stride_padding_dilation() {
        let mut b = GraphBuilder::new("t", &[3, 32, 32]);
        let x = b.input();
        let y = b.conv2d_full("c", &x, 8, [3, 3], [2, 2], [1, 1], [1, 1], 1, false);
        let z = b.conv2d_full("d", &y, 8, [3, 3], [1, 1], [2, 2], [2, 2], 8, true);
        let g = b.finish(&z);
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("c"), &vec![8, 16, 16]);
        assert_eq!(s.get("d"), &vec![8, 16, 16]);
    }

    #[test]
    fn pools_flatten_gap_concat_add() {
        let mut b = GraphBuilder::new("t", &[4, 9, 9]);
        let x = b.input();
        let m = b.maxpool("m", &x, 3, 2, 1);
        let a = b.avgpool("a", &x, 3, 2, 1);
        let s = b.add("s", &[&m, &a]);
        let c = b.concat("c", &[&s, &m]);
        let gp = b.global_avg_pool("gp", &c);
        let f = b.flatten("f", &c);
        let g = b.finish(&f);
        let sh = infer_shapes(&g).unwrap();
        assert_eq!(sh.get("m"), &vec![4, 5, 5]);
        assert_eq!(sh.get("c"), &vec![8, 5, 5]);
        assert_eq!(sh.get(&gp), &vec![8]);
        assert_eq!(sh.get("f"), &vec![200]);
    }

    #[test]
    fn mismatched_channels_name_the_node() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let _ = b.conv2d("c1", &x, 4, 3, 1, 1);
        let mut g = b.finish("c1");
        if let Op::Conv2d { in_channels, .. } = &mut g.nodes[0].op {
            *in_channels = 5;
        }
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("c1") && e.contains("expects 5 input channels, got 3"),
            "{e}"
        );
    }

    #[test]
    fn linear_on_a_feature_map_is_an_error() {
        let b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let mut g = b.finish(&x);
        g.nodes.push(Node {
            name: "fc".into(),
            op: Op::Linear {
                in_features: 192,
                out_features: 10,
                bias: true,
            },
            inputs: vec![x.clone()],
        });
        g.output = "fc".into();
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("fc") && e.contains("flatten"), "{e}");
    }

    #[test]
    fn add_shape_mismatch_is_an_error() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let c = b.conv2d("c", &x, 4, 3, 2, 1);
        let mut g = b.finish(&c);
        g.nodes.push(Node {
            name: "s".into(),
            op: Op::Add,
            inputs: vec![x.clone(), c.clone()],
        });
        g.output = "s".into();
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("`s`") && e.contains("equal shapes"), "{e}");
    }

    #[test]
    fn undefined_input_and_bad_arity_are_errors() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let r = b.relu("r", &x);
        let mut g = b.finish(&r);
        g.nodes[0].inputs = vec!["nope".into()];
        assert!(
            infer_shapes(&g)
                .unwrap_err()
                .to_string()
                .contains("`nope` is not defined")
        );
        g.nodes[0].inputs = vec![x.clone(), x.clone()];
        assert!(
            infer_shapes(&g)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
    }

    #[test]
    fn batchnorm_1d_and_dropout_rules() {
        let mut b = GraphBuilder::new("t", &[20]);
        let x = b.input();
        let l = b.linear("l", &x, 7, true);
        let n = b.batchnorm("bn", &l);
        let d = b.dropout("d", &n, 0.5);
        let g = b.finish(&d);
        assert_eq!(infer_shapes(&g).unwrap().get("d"), &vec![7]);
        let mut bad = g.clone();
        bad.nodes[2].op = Op::Dropout { p: 1.5 };
        assert!(
            infer_shapes(&bad)
                .unwrap_err()
                .to_string()
                .contains("dropout p")
        );
        let mut bad = g.clone();
        bad.nodes[1].op = Op::BatchNorm {
            channels: 6,
            eps: 1e-5,
            momentum: 0.1,
        };
        assert!(
            infer_shapes(&bad)
                .unwrap_err()
                .to_string()
                .contains("expects 6 channels, got 7")
        );
    }
}
