//! How work is split over threads, and the per-thread scratch buffers.

use rayon::prelude::*;
use std::cell::RefCell;

/// A raw pointer that threads may share because each writes a disjoint range through it.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// # Safety
    /// The range must be in bounds and no other thread may touch it while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

pub(crate) fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f(item, gemm_parallelism)` for every item in `0..n`. With at least as many items as
/// threads, items run in parallel and each GEMM runs on its own thread; with fewer (a batch of
/// one), items run in order and the GEMM inside splits its tiles over the threads instead.
pub(crate) fn for_each_item(n: usize, f: impl Fn(usize, gemm::Parallelism) + Sync) {
    let t = threads();
    if t > 1 && n >= t {
        (0..n)
            .into_par_iter()
            .for_each(|i| f(i, gemm::Parallelism::None));
    } else {
        let par = if t > 1 {
            gemm::Parallelism::Rayon(t)
        } else {
            gemm::Parallelism::None
        };
        (0..n).for_each(|i| f(i, par));
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static IMAGE_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Lends this thread's scratch buffer with at least `len` elements (contents unspecified: every
/// user writes what it reads). The buffer grows to the largest request and is reused, so a
/// training step allocates no im2col memory after the first.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    lend(&SCRATCH, len, f)
}

/// A second buffer like [`with_scratch`], for an input that a call prepares once and its
/// parallel items then read (the padded image of a single-image convolution): the calling
/// thread also runs items, which borrow [`with_scratch`]'s buffer meanwhile. Reusing it spares
/// an allocation per call, which glibc served from freshly faulted pages.
pub(crate) fn with_image_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    lend(&IMAGE_SCRATCH, len, f)
}

fn lend<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Already lent on this thread: a rayon worker waiting inside a parallel loop can pick
        // up another call's work, which then needs its own buffer.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// ReLU that keeps NaN (as PyTorch and Burn do): `f32::max` would turn a NaN into 0 and hide a
/// diverged network behind finite logits.
#[inline(always)]
pub(crate) fn rectify(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// `out[i] = Σ_r parts[r·len + i]` over the runs in order (the same bits on any thread count),
/// in parallel chunks. Weight gradients are summed per run of images; added on one thread, the
/// runs of VGG-11's 9.2 M weights cost two serial passes over 37 MB every step.
pub(crate) fn sum_runs(parts: &[f32], out: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    let len = out.len();
    assert_eq!(
        parts.len() % len.max(1),
        0,
        "sum_runs: parts are not whole runs"
    );
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, o)| {
        let at = k * CHUNK;
        o.copy_from_slice(&parts[at..at + o.len()]);
        for run in parts.chunks_exact(len).skip(1) {
            o.iter_mut().zip(&run[at..]).for_each(|(d, v)| *d += v);
        }
    });
}

/// A zeroed buffer of `len` values for a kernel's output, zeroed by all threads of the current
/// pool. `vec![0.0; len]` reuses heap memory with one `memset` on the calling thread while the
/// others wait: 5 % of a two-thread ResNet-56 training step went there.
pub fn zeroed(len: usize) -> Vec<f32> {
    const CHUNK: usize = 1 << 15;
    if len < 4 * CHUNK || threads() == 1 {
        return vec![0.0; len];
    }
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the first `len` values were all initialised just above.
    unsafe { v.set_len(len) };
    v
}

/// A buffer of `len` values for a kernel output that the kernel writes in full before anything
/// reads it (each kernel's tests fill its outputs with NaN first, so a value left unwritten
/// fails them). Its contents are not initialised: zeroing it first is a whole extra pass over
/// memory that the two cores share, 4-6 % of a training step (VGG-11 and ResNet-56 at batch 64,
/// two threads). Burn's CPU backend makes its own outputs the same way. Debug builds fill it with
/// NaN, so that a value left unwritten shows.
pub fn uninit_output(len: usize) -> Vec<f32> {
    if cfg!(debug_assertions) {
        return vec![f32::NAN; len];
    }
    let mut v = Vec::with_capacity(len);
    // SAFETY: the values are uninitialised memory until the caller's kernel writes them, which
    // it does for every one before any is read (the contract above; burn-flex's `uninit_vec`
    // is the same). `f32` has no drop, so nothing reads them on the way out either.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

#[cfg(test)]
mod tests {
    use super::zeroed;

    #[test]
    fn zeroed_buffers_are_all_zero_on_one_and_two_threads() {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // Dirty the heap first so a reused block would show through.
            drop(vec![7.0f32; 1 << 20]);
            for len in [0, 1, (1 << 17) - 1, 1 << 17, (1 << 17) + 5, 1 << 20] {
                let v = pool.install(|| zeroed(len));
                assert_eq!(v.len(), len);
                assert!(
                    v.iter().all(|&x| x.to_bits() == 0),
                    "len {len}, {threads} threads"
                );
            }
        }
    }
}
