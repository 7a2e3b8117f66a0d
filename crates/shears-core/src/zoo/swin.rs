//! A small Swin Transformer (Liu et al. 2021, in torchvision's form) sized for Fashion-MNIST and
//! CIFAR on a CPU: 2x2 patches, three stages of width 48, 96 and 192 with 3, 6 and 12 heads, two
//! blocks each, windows of 7, MLP ratio 4.
//!
//! The residual stream stays a `[C,H,W]` map: torchvision's channels-last Linear layers are 1×1
//! convolutions here, its LayerNorms normalise the channels of each position, and its window
//! attention pads the map to whole windows before the qkv projection and crops it after the
//! output projection, as torchvision does.

use super::{check_image, invalid};
use crate::builder::GraphBuilder;
use crate::error::Result;
use crate::graph::Graph;
use crate::ops::Activation;

/// Hyper-parameters of [`swin`].
pub struct SwinConfig {
    pub patch: usize,
    pub width: usize,
    /// Blocks per stage; each later stage halves the map and doubles the width.
    pub depths: &'static [usize],
    pub heads: &'static [usize],
    pub window: usize,
    pub mlp_ratio: usize,
}

/// `swin-tiny`: patch 2, width 48-96-192, heads 3-6-12, two blocks a stage, window 7.
pub const SWIN_TINY: SwinConfig = SwinConfig {
    patch: 2,
    width: 48,
    depths: &[2, 2, 2],
    heads: &[3, 6, 12],
    window: 7,
    mlp_ratio: 4,
};

/// Patch embedding (a `patch`-strided conv with bias and a LayerNorm), stages of blocks
/// (`x + proj(window_attention(qkv(norm1(x))))`, `x + fc2(gelu(fc1(norm2(x))))`, every second
/// block shifted by half a window) joined by patch merging (four 2x2 subsamples concatenated,
/// LayerNorm, a bias-free 1×1 reduction to twice the width), a final LayerNorm, the mean over
/// positions and a linear classifier `fc`.
pub fn swin(model: &str, input: &[usize], classes: usize, cfg: &SwinConfig) -> Result<Graph> {
    check_image(model, input, classes, cfg.patch)?;
    if cfg.depths.len() != cfg.heads.len() {
        return Err(invalid(model, "needs one head count per stage".into()));
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
    let mut x = b.layer_norm("patch_norm", &x);
    let mut width = cfg.width;
    for (s, (&depth, &heads)) in cfg.depths.iter().zip(cfg.heads).enumerate() {
        if s > 0 {
            x = patch_merging(&mut b, &format!("merge{s}"), &x);
            width *= 2;
        }
        for i in 0..depth {
            let name = format!("stage{s}_block{i}");
            x = block(&mut b, &name, &x, width, heads, cfg, i % 2 == 1);
        }
    }
    let x = b.layer_norm("norm", &x);
    let x = b.global_avg_pool("pool", &x);
    let x = b.linear("fc", &x, classes, true);
    Ok(b.finish(&x))
}

/// One Swin block on a `[width, H, W]` map.
fn block(
    b: &mut GraphBuilder,
    name: &str,
    x: &str,
    width: usize,
    heads: usize,
    cfg: &SwinConfig,
    shifted: bool,
) -> String {
    let (h, w) = (b.shape(x)[1], b.shape(x)[2]);
    let win = cfg.window;
    let (hp, wp) = (h.div_ceil(win) * win, w.div_ceil(win) * win);
    // torchvision's rule: no shift along an axis that one window covers.
    let half = if shifted { win / 2 } else { 0 };
    let shift = [
        if hp > win { half } else { 0 },
        if wp > win { half } else { 0 },
    ];
    let n = b.layer_norm(&format!("{name}_norm1"), x);
    let n = if (hp, wp) != (h, w) {
        b.pad(&format!("{name}_pad"), &n, [0, 0, hp - h, wp - w])
    } else {
        n
    };
    let qkv = b.conv2d_bias(&format!("{name}_qkv"), &n, 3 * width, 1, 1, 0);
    let a = b.window_attention(&format!("{name}_attn"), &qkv, heads, win, shift);
    let mut a = b.conv2d_bias(&format!("{name}_proj"), &a, width, 1, 1, 0);
    if (hp, wp) != (h, w) {
        a = b.spatial_slice(&format!("{name}_crop"), &a, [0, 0], [h, w], [1, 1]);
    }
    let x = b.add(&format!("{name}_add1"), &[x, &a]);
    let n = b.layer_norm(&format!("{name}_norm2"), &x);
    let m = b.conv2d_bias(&format!("{name}_fc1"), &n, cfg.mlp_ratio * width, 1, 1, 0);
    let m = b.activation(&format!("{name}_gelu"), &m, Activation::Gelu);
    let m = b.conv2d_bias(&format!("{name}_fc2"), &m, width, 1, 1, 0);
    b.add(&format!("{name}_add2"), &[&x, &m])
}

/// torchvision's `PatchMerging`: the map padded to even sizes, the four 2x2 phases (rows and
/// columns offset by (0,0), (1,0), (0,1), (1,1)) concatenated on channels, LayerNorm, and a
/// bias-free 1×1 reduction from four times to twice the width.
fn patch_merging(b: &mut GraphBuilder, name: &str, x: &str) -> String {
    let (c, h, w) = (b.channels(x), b.shape(x)[1], b.shape(x)[2]);
    let x = if h % 2 == 1 || w % 2 == 1 {
        b.pad(&format!("{name}_pad"), x, [0, 0, h % 2, w % 2])
    } else {
        x.to_string()
    };
    let (hp, wp) = (h + h % 2, w + w % 2);
    let phases: Vec<String> = [[0, 0], [1, 0], [0, 1], [1, 1]]
        .iter()
        .enumerate()
        .map(|(k, &start)| b.spatial_slice(&format!("{name}_x{k}"), &x, start, [hp, wp], [2, 2]))
        .collect();
    let refs: Vec<&str> = phases.iter().map(String::as_str).collect();
    let x = b.concat(&format!("{name}_cat"), &refs);
    let x = b.layer_norm(&format!("{name}_norm"), &x);
    b.conv2d(&format!("{name}_reduction"), &x, 2 * c, 1, 1, 0)
}

#[cfg(test)]
mod tests {
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;
    use crate::structured::channel_groups;
    use crate::zoo::build;

    #[test]
    fn swin_tiny_shapes_and_params() {
        let g = build("swin-tiny", &[1, 28, 28], 10).unwrap();
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("patch_norm"), &vec![48, 14, 14]);
        assert_eq!(s.get("stage0_block1_attn"), &vec![48, 14, 14]);
        assert_eq!(s.get("merge1_cat"), &vec![192, 7, 7]);
        // 7x7 is padded to 8x8 for merging, 4x4 to 7x7 for attention.
        assert_eq!(s.get("merge2_cat"), &vec![384, 4, 4]);
        assert_eq!(s.get("stage2_block0_qkv"), &vec![576, 7, 7]);
        assert_eq!(s.get("stage2_block0_crop"), &vec![192, 4, 4]);
        let block = |c: usize, heads: usize| {
            2 * c
                + (3 * c * c + 3 * c)
                + 169 * heads
                + (c * c + c)
                + 2 * c
                + (4 * c * c + 4 * c)
                + (4 * c * c + c)
        };
        let merge = |c: usize| 2 * 4 * c + 4 * c * 2 * c;
        let params = (4 * 48 + 48)
            + 2 * 48
            + 2 * block(48, 3)
            + merge(48)
            + 2 * block(96, 6)
            + merge(96)
            + 2 * block(192, 12)
            + 2 * 192
            + (192 * 10 + 10);
        assert_eq!(
            cost(&g, Convention::ConvLinear).unwrap().params as usize,
            params
        );
        // The second block of a stage is shifted where the map spans several windows.
        let shift = |name: &str| match &g.node(name).unwrap().op {
            crate::graph::Op::WindowAttention(a) => a.shift,
            op => panic!("{op:?}"),
        };
        assert_eq!(shift("stage0_block1_attn"), [3, 3]);
        assert_eq!(shift("stage1_block1_attn"), [0, 0]);
    }

    /// Heads, MLP channels and each stage's width are the prunable groups; a head group carries
    /// its column of the position table.
    #[test]
    fn swin_groups_are_heads_mlp_and_stage_widths() {
        let g = build("swin-tiny", &[1, 28, 28], 10).unwrap();
        let groups = channel_groups(&g).unwrap();
        let prunable: Vec<_> = groups.iter().filter(|g| g.prunable).collect();
        let find = |producer: &str| {
            prunable
                .iter()
                .find(|g| g.producers.iter().any(|p| p == producer))
                .unwrap_or_else(|| panic!("no prunable group produced by {producer}"))
        };
        let heads = find("stage1_block0_qkv");
        assert_eq!(heads.channels, 6);
        let table: Vec<_> = heads
            .members
            .iter()
            .filter(|m| m.tensor == "stage1_block0_attn.bias_table")
            .collect();
        assert_eq!(table.len(), 1, "{table:?}");
        assert_eq!((table[0].axis, table[0].offset, table[0].step), (1, 0, 1));
        assert_eq!(find("stage0_block0_fc1").channels, 192);
        let width = find("patch_embed");
        assert_eq!(width.channels, 48);
        // Stage 0's width reaches merge 1's reduction through all four phases.
        assert_eq!(
            width
                .members
                .iter()
                .filter(|m| m.tensor == "merge1_reduction.weight" && m.axis == 1)
                .count(),
            4
        );
        assert_eq!(find("merge2_reduction").channels, 192);
        // 6 head groups, 6 MLP groups, 3 stage widths.
        assert_eq!(prunable.len(), 15);
    }
}
