//! Choosing the Burn device at run time and the CPU thread count.

use crate::error::{EngineError, Result};
use burn::tensor::Device;

/// The device for a backend name: `flex` (CPU, default), `cuda` or `wgpu` when built with them.
pub fn device_by_name(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        other => Err(EngineError::Device(other.to_string())),
    }
}

/// Sets the CPU thread count of the flex backend (rayon's global pool). Only the first call
/// takes effect; later calls with another count are reported, not silently ignored.
pub fn set_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(EngineError::invalid("threads", "must be at least 1"));
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == threads => Ok(()),
        Err(_) => Err(EngineError::invalid(
            "threads",
            format!(
                "the thread pool already runs {} threads",
                rayon::current_num_threads()
            ),
        )),
    }
}

/// [`set_threads`] with the calling thread as the pool's first thread (rayon's default count
/// when `threads` is `None`), for a command-line process whose main thread issues every op.
///
/// Why: a kernel's parallel loop then starts on this thread, which works on it, instead of
/// being handed to a pool thread while this one sleeps, once per op (hundreds per training
/// step: ResNet-56 at batch 64 on one thread, 612 -> 530 ms per step); and the step's tensors
/// come from glibc's main arena, whose freed memory `memory::keep_freed_memory` keeps.
///
/// Only for a thread that lives as long as the process: work sent to the pool from another
/// thread waits for a pool thread, and with one thread this one is the only one. The Python
/// package keeps [`set_threads`].
pub fn set_threads_here(threads: Option<usize>) -> Result<()> {
    if threads == Some(0) {
        return Err(EngineError::invalid("threads", "must be at least 1"));
    }
    // Zero is rayon's default: RAYON_NUM_THREADS, else every CPU.
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .use_current_thread()
        .build_global()
    {
        Ok(()) => Ok(()),
        // A pool that exists already serves a run that names no count (this thread may then
        // not be one of its threads: slower, not wrong).
        Err(_) if threads.is_none_or(|t| rayon::current_num_threads() == t) => {
            if rayon::current_thread_index().is_none() {
                tracing::debug!("the thread pool existed already; this thread hands work to it");
            }
            Ok(())
        }
        Err(_) => Err(EngineError::invalid(
            "threads",
            format!(
                "the thread pool already runs {} threads",
                rayon::current_num_threads()
            ),
        )),
    }
}

/// Threads the CPU backend uses now.
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only the refusal: a test that built the global pool would fix it for every other test
    // in this process (the CLI's tests run `shears train --threads N` in processes of their own).
    #[test]
    fn zero_threads_are_refused_before_any_pool_is_built() {
        for e in [
            set_threads(0).unwrap_err(),
            set_threads_here(Some(0)).unwrap_err(),
        ] {
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
    }
}
