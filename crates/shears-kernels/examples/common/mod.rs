//! What the kernel examples share.

use std::time::Instant;

/// As the CLI: large buffers on cache lines (`LineAligned`), so the timings are the CLI's.
#[global_allocator]
static ALLOC: shears_kernels::LineAligned = shears_kernels::LineAligned;

/// Best of five calls after one warm-up call, seconds.
pub fn best_of_five(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}
