//! Per-sample augmentation: random crop with zero padding and horizontal flip.

use crate::seed::{TAG_AUGMENT, key};

/// Where a sample's crop window sits and whether it is mirrored.
///
/// Output pixel `(c, y, x)` reads input pixel `(c, y + dy, x' + dx)` with `x' = W-1-x` when
/// flipped, else `x`; reads outside the image give a zero (black) pixel. This is padding by `p`
/// then cropping `H x W` at offset `(dy + p, dx + p)`, then flipping, as torchvision's
/// `RandomCrop(padding=p)` followed by `RandomHorizontalFlip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    pub dy: isize,
    pub dx: isize,
    pub flip: bool,
}

impl Transform {
    /// Leaves the image unchanged.
    pub const IDENTITY: Transform = Transform {
        dy: 0,
        dx: 0,
        flip: false,
    };

    /// The transform of sample `index` in `epoch`: shifts uniform in `[-pad, pad]`, fair flip.
    pub fn sample(seed: u64, epoch: u64, index: usize, pad: usize, flip: bool) -> Transform {
        let h = key(&[TAG_AUGMENT, seed, epoch, index as u64]);
        let span = 2 * pad as u64 + 1;
        // Disjoint bit ranges of one well-mixed word give independent choices; the modulo bias
        // is below 2^-20 for any realistic padding.
        let oy = (h & 0xff_ffff) % span;
        let ox = ((h >> 24) & 0xff_ffff) % span;
        Transform {
            dy: oy as isize - pad as isize,
            dx: ox as isize - pad as isize,
            flip: flip && (h >> 63) == 1,
        }
    }
}

/// Value lookup tables, one per channel: `lut[c][x]` is byte `x` of channel `c` as f32.
pub type Luts = [[f32; 256]];

/// Writes one CHW byte sample into `dst` as f32 through `luts`, applying `t`.
///
/// `src.len()` and `dst.len()` must both be C·H·W for `shape = [C, H, W]`, and `luts` must have
/// C tables; the loader guarantees this.
pub fn write_sample(src: &[u8], shape: [usize; 3], t: Transform, luts: &Luts, dst: &mut [f32]) {
    let [c, h, w] = shape;
    let plane = h * w;
    debug_assert_eq!(src.len(), c * plane);
    debug_assert_eq!(dst.len(), c * plane);
    // Columns x with 0 <= x + dx < w, clamped so huge shifts give an all-zero row.
    let x_lo = (-t.dx).clamp(0, w as isize) as usize;
    let x_hi = (w as isize - t.dx).clamp(x_lo as isize, w as isize) as usize;
    for ch in 0..c {
        let lut = &luts[ch];
        let zero = lut[0];
        let src_plane = &src[ch * plane..(ch + 1) * plane];
        let dst_plane = &mut dst[ch * plane..(ch + 1) * plane];
        for (y, row) in dst_plane.chunks_exact_mut(w).enumerate() {
            let sy = y as isize + t.dy;
            if sy < 0 || sy >= h as isize {
                row.fill(zero);
                continue;
            }
            let sy = sy as usize;
            let src_row = &src_plane[sy * w..(sy + 1) * w];
            row[..x_lo].fill(zero);
            row[x_hi..].fill(zero);
            if x_lo < x_hi {
                let from = (x_lo as isize + t.dx) as usize;
                let to = (x_hi as isize + t.dx) as usize;
                for (d, &s) in row[x_lo..x_hi].iter_mut().zip(&src_row[from..to]) {
                    *d = lut[usize::from(s)];
                }
            }
            if t.flip {
                row.reverse();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables that map byte x to x itself, so outputs read as the input bytes.
    fn raw_luts(c: usize) -> Vec<[f32; 256]> {
        let mut t = [0f32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            *v = i as f32;
        }
        vec![t; c]
    }

    fn run(src: &[u8], shape: [usize; 3], t: Transform) -> Vec<f32> {
        let mut dst = vec![-1.0; src.len()];
        write_sample(src, shape, t, &raw_luts(shape[0]), &mut dst);
        dst
    }

    /// 3x3 image with pixels 1..=9 in row-major order.
    const IMG: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

    #[test]
    fn identity_copies() {
        assert_eq!(
            run(&IMG, [1, 3, 3], Transform::IDENTITY),
            vec![1., 2., 3., 4., 5., 6., 7., 8., 9.]
        );
    }

    #[test]
    fn crop_shift_moves_content_and_fills_zeros() {
        // Pad 1, crop at offset (0, 0): content moves down-right by one, zeros top and left.
        let t = Transform {
            dy: -1,
            dx: -1,
            flip: false,
        };
        assert_eq!(
            run(&IMG, [1, 3, 3], t),
            vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]
        );
        // Offset (2, 1): content moves up by one, zeros on the bottom row.
        let t = Transform {
            dy: 1,
            dx: 0,
            flip: false,
        };
        assert_eq!(
            run(&IMG, [1, 3, 3], t),
            vec![4., 5., 6., 7., 8., 9., 0., 0., 0.]
        );
        // Shift right-to-left by 2: only the last column survives, in the first column.
        let t = Transform {
            dy: 0,
            dx: 2,
            flip: false,
        };
        assert_eq!(
            run(&IMG, [1, 3, 3], t),
            vec![3., 0., 0., 6., 0., 0., 9., 0., 0.]
        );
    }

    #[test]
    fn shifts_beyond_the_image_give_zeros() {
        for (dy, dx) in [(0, 5), (0, -3), (3, 0), (-7, 1)] {
            let t = Transform { dy, dx, flip: true };
            assert_eq!(run(&IMG, [1, 3, 3], t), vec![0.; 9], "dy {dy} dx {dx}");
        }
    }

    #[test]
    fn flip_mirrors_each_row_of_each_channel() {
        // Two channels of 2x3.
        let src = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16];
        let t = Transform {
            dy: 0,
            dx: 0,
            flip: true,
        };
        assert_eq!(
            run(&src, [2, 2, 3], t),
            vec![3., 2., 1., 6., 5., 4., 13., 12., 11., 16., 15., 14.]
        );
    }

    #[test]
    fn flip_applies_after_crop() {
        let t = Transform {
            dy: 0,
            dx: -1,
            flip: true,
        };
        // Crop gives rows [0,1,2],[0,4,5],[0,7,8]; mirroring puts the padding on the right.
        assert_eq!(
            run(&IMG, [1, 3, 3], t),
            vec![2., 1., 0., 5., 4., 0., 8., 7., 0.]
        );
    }

    #[test]
    fn padding_uses_the_tables_zero_entry() {
        let mut lut = [0f32; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = i as f32 * 10.0 - 3.0;
        }
        let mut dst = vec![0.0; 4];
        let t = Transform {
            dy: 1,
            dx: 0,
            flip: false,
        };
        write_sample(&[1, 2, 3, 4], [1, 2, 2], t, &[lut], &mut dst);
        assert_eq!(dst, vec![27., 37., -3., -3.]);
    }

    #[test]
    fn sampled_transforms_are_reproducible_and_cover_the_range() {
        let a: Vec<Transform> = (0..500)
            .map(|i| Transform::sample(7, 3, i, 2, true))
            .collect();
        let b: Vec<Transform> = (0..500)
            .map(|i| Transform::sample(7, 3, i, 2, true))
            .collect();
        assert_eq!(a, b);
        let other_epoch: Vec<Transform> = (0..500)
            .map(|i| Transform::sample(7, 4, i, 2, true))
            .collect();
        assert_ne!(a, other_epoch);
        for shift in -2..=2 {
            assert!(a.iter().any(|t| t.dy == shift), "dy {shift} never drawn");
            assert!(a.iter().any(|t| t.dx == shift), "dx {shift} never drawn");
        }
        assert!(a.iter().all(|t| t.dy.abs() <= 2 && t.dx.abs() <= 2));
        let flips = a.iter().filter(|t| t.flip).count();
        assert!((200..300).contains(&flips), "{flips} flips of 500");
        // Without padding or flipping every draw is the identity.
        assert!((0..50).all(|i| Transform::sample(1, 1, i, 0, false) == Transform::IDENTITY));
    }
}
