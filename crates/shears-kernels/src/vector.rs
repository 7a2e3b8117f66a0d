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

/// `y += a·x` over the common length.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { axpy_avx2(a, x, y) };
    }
    axpy_plain(a, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_plain(a, x, y)
}

#[inline(always)]
fn axpy_plain(a: f32, x: &[f32], y: &mut [f32]) {
    // Element by element: no order of a sum to keep, so the compiler vectorises it as it is.
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
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
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..WIDTH {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_wide(a: &[f32]) -> f32 {
    let mut acc = [0f32; WIDTH];
    let ca = a.chunks_exact(WIDTH);
    let tail: f32 = ca.remainder().iter().sum();
    for x in ca {
        for i in 0..WIDTH {
            acc[i] += x[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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
            let mut y = b.clone();
            axpy(0.5, &a, &mut y);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-5, "axpy, n = {n}");
            }
        }
    }
}
