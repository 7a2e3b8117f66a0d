//! Max pooling for inference: each output the largest input of its window, padding never
//! chosen (a window that covers only padding, which PyTorch's shape rules rule out, gives -inf).
//! No argmax is kept; training keeps Burn's pooling, whose backward needs it. Burn's flex pooling
//! computes the indices too and was, at batch 1, a third of small-cnn's forward pass.

use rayon::prelude::*;

/// The shape of one max pooling: input `[batch, channels, in_h, in_w]`, output
/// `[batch, channels, out_h, out_w]` (the caller's shape rule decides `out_h`/`out_w`, which
/// `ceil_mode` rounds up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// The input positions `[start, end)` the window of output `o` covers along one axis.
fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let end = (start + k as isize).min(len as isize);
    (start.max(0) as usize, end.max(0) as usize)
}

/// `output = max_pool(input)` per the geometry.
pub fn max_pool2d_forward(g: &PoolGeometry, input: &[f32], output: &mut [f32]) {
    let (ip, op) = (g.in_h * g.in_w, g.out_h * g.out_w);
    assert_eq!(
        input.len(),
        g.batch * g.channels * ip,
        "max pool input length"
    );
    assert_eq!(
        output.len(),
        g.batch * g.channels * op,
        "max pool output length"
    );
    if op == 0 {
        return;
    }
    let plain_2x2 = g.kernel == [2, 2]
        && g.stride == [2, 2]
        && g.padding == [0, 0]
        && g.out_h * 2 <= g.in_h
        && g.out_w * 2 <= g.in_w;
    // Planes in chunks of about 4k outputs, so a small map is not one task per plane.
    let per_task = (4096 / op).max(1);
    output
        .par_chunks_mut(op * per_task)
        .zip(input.par_chunks(ip * per_task))
        .for_each(|(ys, xs)| {
            for (y, x) in ys.chunks_mut(op).zip(xs.chunks(ip)) {
                if plain_2x2 {
                    for (oh, y_row) in y.chunks_mut(g.out_w).enumerate() {
                        let r0 = &x[2 * oh * g.in_w..][..g.in_w];
                        let r1 = &x[(2 * oh + 1) * g.in_w..][..g.in_w];
                        for (ow, v) in y_row.iter_mut().enumerate() {
                            let c = 2 * ow;
                            *v = r0[c].max(r0[c + 1]).max(r1[c].max(r1[c + 1]));
                        }
                    }
                    continue;
                }
                for oh in 0..g.out_h {
                    let (h0, h1) = window(oh, g.kernel[0], g.stride[0], g.padding[0], g.in_h);
                    for ow in 0..g.out_w {
                        let (w0, w1) = window(ow, g.kernel[1], g.stride[1], g.padding[1], g.in_w);
                        let mut m = f32::NEG_INFINITY;
                        for ih in h0..h1 {
                            for &v in &x[ih * g.in_w + w0..ih * g.in_w + w1] {
                                m = m.max(v);
                            }
                        }
                        y[oh * g.out_w + ow] = m;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn naive(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
        let mut y = Vec::new();
        for plane in 0..g.batch * g.channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut m = f32::NEG_INFINITY;
                    for kh in 0..g.kernel[0] {
                        for kw in 0..g.kernel[1] {
                            let ih = (oh * g.stride[0] + kh) as isize - g.padding[0] as isize;
                            let iw = (ow * g.stride[1] + kw) as isize - g.padding[1] as isize;
                            if ih >= 0
                                && iw >= 0
                                && (ih as usize) < g.in_h
                                && (iw as usize) < g.in_w
                            {
                                let i =
                                    plane * g.in_h * g.in_w + ih as usize * g.in_w + iw as usize;
                                m = m.max(x[i]);
                            }
                        }
                    }
                    y.push(m);
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_with_padding_odd_sizes_and_ceil_mode() {
        // (in, kernel, stride, padding, out): plain 2x2, 3x3 /2 pad 1 (ResNet's stem), a ceil-mode
        // last window hanging over the edge, a 1x1 map.
        for (n, c, h, w, k, s, p, oh, ow) in [
            (2, 3, 8, 6, [2, 2], [2, 2], [0, 0], 4, 3),
            (1, 5, 7, 7, [2, 2], [2, 2], [0, 0], 3, 3),
            (1, 4, 9, 11, [3, 3], [2, 2], [1, 1], 5, 6),
            (2, 2, 7, 7, [3, 3], [2, 2], [0, 0], 3, 3),
            (1, 2, 6, 6, [3, 3], [2, 2], [0, 0], 3, 3), // ceil mode: 3 where floor gives 2
            (1, 3, 1, 1, [1, 1], [1, 1], [0, 0], 1, 1),
        ] {
            let g = PoolGeometry {
                batch: n,
                channels: c,
                in_h: h,
                in_w: w,
                out_h: oh,
                out_w: ow,
                kernel: k,
                stride: s,
                padding: p,
            };
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| ((i * 7919) % 101) as f32 - 50.0)
                .collect();
            let mut y = vec![0.0; n * c * oh * ow];
            max_pool2d_forward(&g, &x, &mut y);
            assert_eq!(y, naive(&g, &x), "{g:?}");
        }
    }
}
