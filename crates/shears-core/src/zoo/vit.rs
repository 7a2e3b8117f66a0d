//! A small vision transformer (Dosovitskiy et al. 2021, in timm's pre-norm form) sized for
//! Fashion-MNIST and CIFAR on a CPU: 4x4 patches, embedding 192, 3 heads of 64, depth 6, MLP 768.

use super::{check_image, invalid};
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;
use crate::ops::{Activation, TokenPoolMode};

/// Hyper-parameters of [`vit`].
pub struct VitConfig {
    pub patch: usize,
    pub width: usize,
    pub heads: usize,
    pub depth: usize,
    pub mlp: usize,
}

/// `vit-tiny`: patch 4, width 192, 3 heads, depth 6, MLP 768.
pub const VIT_TINY: VitConfig = VitConfig {
    patch: 4,
    width: 192,
    heads: 3,
    depth: 6,
    mlp: 768,
};

/// Patch embedding (a `patch`-strided conv with bias), class token, position table, `depth`
/// pre-norm blocks (`x + proj(attention(qkv(norm1(x))))`, `x + fc2(gelu(fc1(norm2(x))))`), a
/// final LayerNorm, the class token and a linear classifier `fc`.
pub fn vit(model: &str, input: &[usize], classes: usize, cfg: &VitConfig) -> Result<Graph> {
    check_image(model, input, classes, cfg.patch)?;
    let (h, w) = (input[1], input[2]);
    if h % cfg.patch != 0 || w % cfg.patch != 0 {
        return Err(invalid(
            model,
            format!(
                "cuts {p}x{p} patches: needs at least {p}x{p} pixels, height and width divisible \
                 by {p}, got {h}x{w}",
                p = cfg.patch
            ),
        ));
    }
    let mut b = GraphBuilder::new(model, input);
    let x = b.input();
    let p = cfg.patch;
    let x = b.conv2d_full(
        "patch_embed",
        &x,
        cfg.width,
        [p, p],
        [p, p],
        [0, 0],
        [1, 1],
        1,
        true,
    );
    let x = b.tokenize("tokens", &x);
    let x = b.class_token("cls_token", &x);
    let mut x = b.position_embedding("pos_embed", &x);
    for i in 0..cfg.depth {
        let n = b.layer_norm(&format!("block{i}_norm1"), &x);
        let qkv = b.linear(&format!("block{i}_qkv"), &n, 3 * cfg.width, true);
        let a = b.attention(&format!("block{i}_attn"), &qkv, cfg.heads);
        let a = b.linear(&format!("block{i}_proj"), &a, cfg.width, true);
        x = b.add(&format!("block{i}_add1"), &[&x, &a]);
        let n = b.layer_norm(&format!("block{i}_norm2"), &x);
        let m = b.linear(&format!("block{i}_fc1"), &n, cfg.mlp, true);
        let m = b.activation(&format!("block{i}_gelu"), &m, Activation::Gelu);
        let m = b.linear(&format!("block{i}_fc2"), &m, cfg.width, true);
        x = b.add(&format!("block{i}_add2"), &[&x, &m]);
    }
    let x = b.layer_norm("norm", &x);
    let x = b.token_pool("pool", &x, TokenPoolMode::Class);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;
    use crate::structured::channel_groups;
    use crate::zoo::build;

    #[test]
    fn vit_tiny_params_macs_and_tokens() {
        let g = build("vit-tiny", &[1, 28, 28], 10).unwrap();
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("tokens"), &vec![49, 192]);
        assert_eq!(s.get("pos_embed"), &vec![50, 192]);
        assert_eq!(s.get("block0_qkv"), &vec![50, 576]);
        let c = cost(&g, Convention::ConvLinear).unwrap();
        let (d, m) = (192usize, 768usize);
        let block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * m + m) + (m * d + d);
        let params = (16 * d + d) + d + 50 * d + 6 * block + 2 * d + (d * 10 + 10);
        assert_eq!(c.params as usize, params);
        let block_macs = 50 * (d * 3 * d + d * d + 2 * d * m) + 2 * 50 * 50 * d;
        assert_eq!(c.macs as usize, 49 * 16 * d + 6 * block_macs + d * 10);
    }

    /// Heads, MLP channels and the embedding width are the prunable groups.
    #[test]
    fn vit_groups_are_heads_mlp_and_the_embedding_width() {
        let g = build("vit-tiny", &[1, 28, 28], 10).unwrap();
        let groups = channel_groups(&g).unwrap();
        let prunable: Vec<_> = groups.iter().filter(|g| g.prunable).collect();
        let find = |producer: &str| {
            prunable
                .iter()
                .find(|g| g.producers.iter().any(|p| p == producer))
                .unwrap_or_else(|| panic!("no prunable group produced by {producer}"))
        };
        let heads = find("block0_qkv");
        assert_eq!(heads.channels, 3);
        assert!(heads.values.iter().all(|v| v.stride_per_channel == 1));
        let mlp = find("block0_fc1");
        assert_eq!(mlp.channels, 768);
        let width = find("patch_embed");
        assert_eq!(width.channels, 192);
        // The residual stream is one group: every block's proj and fc2 produce it too.
        for i in 0..6 {
            for p in [format!("block{i}_proj"), format!("block{i}_fc2")] {
                assert!(width.producers.contains(&p), "{p} missing");
            }
        }
        assert!(
            width
                .members
                .iter()
                .any(|m| m.tensor == "pos_embed.table" && m.axis == 1)
        );
        assert!(width.members.iter().any(|m| m.tensor == "cls_token.token"));
        // 6 head groups, 6 MLP groups, the width; nothing else is prunable.
        assert_eq!(prunable.len(), 13);
    }

    /// Kind normalisation puts every head group in one kind and every MLP group in another: the
    /// mean score over each kind's channels is 1.
    #[test]
    fn kind_normalisation_compares_heads_with_heads_and_mlp_with_mlp() {
        use crate::structured::{ImportanceOptions, Normalization, importance};
        let g = build("vit-tiny", &[1, 8, 8], 10).unwrap();
        let w = crate::weights::init_weights(&g, 1);
        let groups = channel_groups(&g).unwrap();
        let opts = ImportanceOptions {
            normalization: Normalization::Kind,
            ..Default::default()
        };
        let scores = importance(&w, &groups, &opts).unwrap();
        let kind_mean = |channels: usize| {
            let all: Vec<f32> = groups
                .iter()
                .filter(|g| g.prunable && g.channels == channels)
                .flat_map(|g| scores[&g.id].clone())
                .collect();
            assert_eq!(all.len(), 6 * channels);
            all.iter().sum::<f32>() / all.len() as f32
        };
        assert!((kind_mean(3) - 1.0).abs() < 1e-4);
        assert!((kind_mean(768) - 1.0).abs() < 1e-4);
        // Within a kind the groups keep their relative sizes: not every head group averages 1.
        let head_means: Vec<f32> = groups
            .iter()
            .filter(|g| g.prunable && g.channels == 3)
            .map(|g| scores[&g.id].iter().sum::<f32>() / 3.0)
            .collect();
        assert!(
            head_means.iter().any(|m| (m - 1.0).abs() > 1e-3),
            "{head_means:?}"
        );
    }
}
