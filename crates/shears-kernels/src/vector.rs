//! Dot products and sums of `f32` slices in SIMD registers (AVX2 + FMA when the CPU has them):
//! the mask heads and the channel means of dynamic inference, which the compiler leaves
//! scalar when written as one running sum (the order of an `f32` sum is part of its value).

/// Partial sums kept at once: four AVX registers of eight lanes.
const WIDTH: usize = 32;

/// Σ a·b over the common length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { dot_avx2(a, b) };
    }
    dot_wide(a, b)
}

/// Σ a.
pub fn sum(a: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { sum_avx2(a) };
    }
    sum_wide(a)
}

/// `y += Σ_r scales[r]·rows[r]`, where row `r` is `rows[r·n..(r+1)·n]` and `n = y.len()`;
/// rows with a zero scale are skipped. A matrix-vector product with the matrix transposed, for
/// a mask head whose input has channels switched off upstream.
pub fn add_scaled_rows(rows: &[f32], scales: &[f32], y: &mut [f32]) {
    let n = y.len();
    assert!(
        rows.len() >= scales.len() * n,
        "add_scaled_rows: too few rows"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { add_scaled_rows_avx2(rows, scales, y) };
    }
    add_scaled_rows_plain(rows, scales, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_scaled_rows_avx2(rows: &[f32], scales: &[f32], y: &mut [f32]) {
    add_scaled_rows_plain(rows, scales, y)
}

#[inline(always)]
fn add_scaled_rows_plain(rows: &[f32], scales: &[f32], y: &mut [f32]) {
    let n = y.len();
    for (r, &a) in scales.iter().enumerate() {
        if a != 0.0 {
            // Element by element: no order of a sum to keep, so this vectorises as written.
            y.iter_mut()
                .zip(&rows[r * n..(r + 1) * n])
                .for_each(|(y, x)| *y += a * x);
        }
    }
}

/// The mean of each of the `means.len()` consecutive planes of `plane` values in `x`.
pub fn plane_means(x: &[f32], plane: usize, means: &mut [f32]) {
    assert!(
        x.len() >= means.len() * plane,
        "plane_means: too few values"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { plane_means_avx2(x, plane, means) };
    }
    plane_means_plain(x, plane, means)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_means_avx2(x: &[f32], plane: usize, means: &mut [f32]) {
    plane_means_plain(x, plane, means)
}

#[inline(always)]
fn plane_means_plain(x: &[f32], plane: usize, means: &mut [f32]) {
    for (k, m) in means.iter_mut().enumerate() {
        *m = sum_wide(&x[k * plane..(k + 1) * plane]) / plane as f32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_wide(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(a: &[f32]) -> f32 {
    sum_wide(a)
}

#[inline(always)]
fn dot_wide(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; WIDTH];
    let (ca, cb) = (a.chunks_exact(WIDTH), b.chunks_exact(WIDTH));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..WIDTH {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut acc8 = fold(&acc);
    let (ta, tb) = (ra.chunks_exact(8), rb.chunks_exact(8));
    let tail: f32 = ta
        .remainder()
        .iter()
        .zip(tb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ta.zip(tb) {
        for i in 0..8 {
            acc8[i] = x[i].mul_add(y[i], acc8[i]);
        }
    }
    reduce(acc8) + tail
}

#[inline(always)]
fn sum_wide(a: &[f32]) -> f32 {
    let mut acc = [0f32; WIDTH];
    let ca = a.chunks_exact(WIDTH);
    let rest = ca.remainder();
    for x in ca {
        for i in 0..WIDTH {
            acc[i] += x[i];
        }
    }
    let mut acc8 = fold(&acc);
    let t = rest.chunks_exact(8);
    let tail: f32 = t.remainder().iter().sum();
    for x in t {
        for i in 0..8 {
            acc8[i] += x[i];
        }
    }
    reduce(acc8) + tail
}

/// The `WIDTH` partial sums folded into 8 (three vector adds). Summing the 32 one after another
/// was most of the cost of a short slice (the 49 pixels of a 7x7 channel).
#[inline(always)]
fn fold(acc: &[f32; WIDTH]) -> [f32; 8] {
    let mut out = [0f32; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (acc[i] + acc[i + 8]) + (acc[i + 16] + acc[i + 24]);
    }
    out
}

#[inline(always)]
fn reduce(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_sum_match_f64_sums_at_every_length() {
        for n in [0usize, 1, 7, 31, 32, 33, 100, 513] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 20.0)
                .collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-3, "dot, n = {n}");
            let want: f64 = a.iter().map(|x| *x as f64).sum();
            assert!((sum(&a) as f64 - want).abs() < 1e-3, "sum, n = {n}");
            // Two rows of n: a scaled by 0.5, b skipped (scale 0), onto a.
            let rows: Vec<f32> = a.iter().chain(&b).copied().collect();
            let mut y = a.clone();
            add_scaled_rows(&rows, &[0.5, 0.0], &mut y);
            for i in 0..n {
                assert!((y[i] - 1.5 * a[i]).abs() < 1e-5, "add_scaled_rows, n = {n}");
            }
            if n > 0 {
                let mut m = [0f32; 1];
                plane_means(&a, n, &mut m);
                let want = a.iter().map(|x| *x as f64).sum::<f64>() / n as f64;
                assert!((m[0] as f64 - want).abs() < 1e-5, "plane_means, n = {n}");
            }
        }
    }
}
