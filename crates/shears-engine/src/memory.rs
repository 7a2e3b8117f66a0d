//! Refusing work that cannot fit: a batch whose activations need more memory than the machine
//! has would abort the process inside an allocation (a Rust backtrace, no error). The need is
//! estimated from shape inference before anything is allocated, from below, so a batch that
//! fits is never refused: inference holds at least the largest value and the one it is made
//! from; training keeps every value of the forward pass for the backward.

use crate::error::{EngineError, Result};

/// The global allocator the binaries declare: large blocks start on a cache line, so the
/// kernels' 64-byte vector loads do not straddle two (see `shears_kernels::LineAligned`).
pub use shears_kernels::LineAligned;

/// Asks the C allocator to keep freed memory for reuse instead of handing it back to the system
/// (a process-wide setting: the CLI and the profiling examples call it once at start). A
/// training step frees and allocates the same activation sizes every step; by default glibc
/// serves buffers above a threshold from fresh `mmap`s and trims the heap's top, so each step
/// faults its activations' pages in again (ResNet-56, batch 64, 2 threads, 22 steps: 266k page
/// faults against 76k with this set, and steps up to 7 % slower). The process keeps the heap it
/// peaked at (with the same day's other changes, peak RSS in `bench/compare_pytorch.py` rose
/// 1-17 %, still at most 60 % of PyTorch's). The Python package does not
/// call it: the allocator is its host's. Does nothing on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's thresholds; it is called before the work starts.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts; larger buffers still use mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // A thread's own arena grows in heaps of 64 MiB and unmaps a heap the moment it is
        // empty unless this much padding is asked for above its top: the trim threshold does
        // not cover that (small-cnn, batch 128, one thread in a pool, a run of 12 steps:
        // 195,000 page faults without it, 14,600 more per step, against 23,500 in all with it,
        // and steps 15 % faster). The heaps are address space; pages count only once written
        // (but under strict overcommit, `vm.overcommit_memory=2`, each 64 MiB heap counts).
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
use shears_core::graph::Graph;

/// Bytes the machine can give now: `MemAvailable` plus free swap (Linux), else `None`.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// The fewest bytes a batch of `batch` samples needs: inference, the largest value and the
/// largest input of one node together; training, every value of the forward pass.
pub fn batch_bytes(graph: &Graph, batch: usize, training: bool) -> Result<u64> {
    let shapes = shears_core::infer_shapes(graph)?;
    let floats = |v: &str| shapes.get(v).iter().product::<usize>() as u64;
    let per_sample = if training {
        floats(&graph.input.name) + graph.nodes.iter().map(|n| floats(&n.name)).sum::<u64>()
    } else {
        graph
            .nodes
            .iter()
            .map(|n| floats(&n.name) + n.inputs.iter().map(|i| floats(i)).max().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    Ok(per_sample.saturating_mul(batch as u64).saturating_mul(4))
}

/// An error naming the estimate when `batch` samples cannot fit in the memory available now.
pub fn check_batch_fits(graph: &Graph, batch: usize, training: bool) -> Result<()> {
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    let need = batch_bytes(graph, batch, training)?;
    if need > available {
        return Err(EngineError::invalid(
            "batch size",
            format!(
                "{} of {batch} samples needs at least {:.1} GiB for its activations ({}), more than the {:.1} GiB this machine has available; use a smaller batch",
                graph.name,
                need as f64 / (1u64 << 30) as f64,
                if training {
                    "training keeps every one"
                } else {
                    "inference"
                },
                available as f64 / (1u64 << 30) as f64
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_grows_with_the_batch_and_a_huge_batch_is_refused() {
        let graph = shears_core::zoo::build("small-cnn", &[1, 28, 28], 10).unwrap();
        let one = batch_bytes(&graph, 1, false).unwrap();
        // The largest value is conv1's or conv2's 32x28x28 output, read by the next conv.
        assert_eq!(one, 2 * 32 * 28 * 28 * 4);
        assert_eq!(batch_bytes(&graph, 64, false).unwrap(), 64 * one);
        assert!(batch_bytes(&graph, 1, true).unwrap() > one);
        if available_bytes().is_none() {
            eprintln!("SKIPPED: the refusal (no /proc/meminfo)");
            return;
        }
        assert!(check_batch_fits(&graph, 64, true).is_ok());
        let e = check_batch_fits(&graph, 1 << 40, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs at least") && e.contains("GiB"), "{e}");
    }
}
