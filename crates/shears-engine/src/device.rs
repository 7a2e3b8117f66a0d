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

/// Threads the CPU backend uses now.
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}
