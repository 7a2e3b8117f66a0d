//! What the kernel examples share.

use std::time::Instant;

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
