//! Compiling a kernel's loops for the CPU's widest vector instructions, chosen at run time.

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function with the same
/// arguments) compiled for the widest vector instructions the CPU has: AVX-512, else AVX2 +
/// FMA, else the baseline. The body's loops are inlined into functions with those features.
macro_rules! with_simd {
    ($name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:ident) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && !crate::direct::avx2_only() {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// The AVX-512 mask of the first `n` lanes of sixteen (all of them from 16 on): a row's tail.
#[cfg(target_arch = "x86_64")]
pub(crate) fn first_lanes(n: usize) -> std::arch::x86_64::__mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as std::arch::x86_64::__mmask16
    }
}
