//! Latency of a model in onnxruntime, the runtime a pruned network is usually deployed on: the
//! same warm-up, repeats and median as shears' own measurements, one session per model and
//! thread count, the input made once outside the timed runs.
//!
//! The library is opened at run time (`ort`'s `load-dynamic`): from `ORT_DYLIB_PATH`, else the
//! `libonnxruntime` inside the onnxruntime Python package of `SHEARS_PYTHON` (default
//! `python3`). Nothing is downloaded; where there is no library, [`runtime`] says why and
//! callers report that instead of numbers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// Why a measurement in onnxruntime could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrtError {
    /// No onnxruntime library was found (or it would not load); the message says where it
    /// looked and how to name one.
    #[error("onnxruntime is not available: {0}")]
    Unavailable(String),
    /// onnxruntime refused the model or failed to run it.
    #[error("onnxruntime: {0}")]
    Run(String),
}

/// The onnxruntime library this process uses.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub library: PathBuf,
}

/// The library, loaded once per process; the same error every later call when there is none.
pub fn runtime() -> Result<&'static Runtime, OrtError> {
    static RUNTIME: OnceLock<Result<Runtime, OrtError>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let library = find_library()?;
            let path = library.display().to_string();
            // `ort` aborts the call with a panic when the library does not load: an error here.
            let loaded = std::panic::catch_unwind(|| ort::init_from(path.clone()).commit());
            match loaded {
                Ok(Ok(_)) => Ok(Runtime { library }),
                Ok(Err(e)) => Err(OrtError::Unavailable(format!("{path}: {e}"))),
                Err(_) => Err(OrtError::Unavailable(format!("{path} did not load"))),
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `ORT_DYLIB_PATH`, else the library inside the onnxruntime Python package.
fn find_library() -> Result<PathBuf, OrtError> {
    find_library_from(
        std::env::var("ORT_DYLIB_PATH").ok(),
        &std::env::var("SHEARS_PYTHON").unwrap_or_else(|_| "python3".into()),
    )
}

/// [`find_library`] given the variable's value and the Python to ask.
fn find_library_from(dylib: Option<String>, python: &str) -> Result<PathBuf, OrtError> {
    if let Some(p) = dylib {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(OrtError::Unavailable(format!(
                "ORT_DYLIB_PATH names {}, which is not a file",
                p.display()
            )))
        };
    }
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .map_err(|e| OrtError::Unavailable(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        return Err(OrtError::Unavailable(format!(
            "{python} has no onnxruntime package (pip install onnxruntime, or set ORT_DYLIB_PATH \
             to a libonnxruntime)"
        )));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    library_in(&dir).ok_or_else(|| {
        OrtError::Unavailable(format!(
            "no libonnxruntime in {} (set ORT_DYLIB_PATH)",
            dir.display()
        ))
    })
}

/// The `libonnxruntime.so*` (or `.dylib`, `.dll`) in `dir`, the versioned one first.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| {
                (n.starts_with("libonnxruntime.so")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll")
                    && !n.contains("providers")
            })
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// The input every [`Bench`] is fed: `n` fixed values in [-1, 1] (latency does not depend on
/// them; a check against another engine feeds it the same).
pub fn fixed_input(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// Median, 90th percentile, mean and minimum of the timed runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
}

/// One model in one onnxruntime session (all graph optimisations on, `threads` intra-op
/// threads, one inter-op thread), ready to time.
pub struct Bench {
    session: ort::session::Session,
    input: ort::value::Tensor<f32>,
}

impl Bench {
    /// A session of the ONNX `model` fed a fixed batch of `batch` samples of `sample_shape`.
    pub fn new(
        model: &[u8],
        sample_shape: &[usize],
        batch: usize,
        threads: usize,
    ) -> Result<Bench, OrtError> {
        runtime()?;
        let run = |e: ort::Error| OrtError::Run(e.to_string());
        let session = ort::session::Session::builder()
            .map_err(run)?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
            .map_err(run)?
            .with_intra_threads(threads)
            .map_err(run)?
            .with_inter_threads(1)
            .map_err(run)?
            .commit_from_memory(model)
            .map_err(run)?;
        let mut shape = vec![batch as i64];
        shape.extend(sample_shape.iter().map(|&d| d as i64));
        let data = fixed_input(batch * sample_shape.iter().product::<usize>());
        let input = ort::value::Tensor::from_array((shape, data)).map_err(run)?;
        Ok(Bench { session, input })
    }

    /// Runs once and returns the first output's values (for checks against shears' engine).
    pub fn outputs(&mut self) -> Result<Vec<f32>, OrtError> {
        let run = |e: ort::Error| OrtError::Run(e.to_string());
        let out = self.session.run(ort::inputs![&self.input]).map_err(run)?;
        let (_, values) = out[0].try_extract_tensor::<f32>().map_err(run)?;
        Ok(values.to_vec())
    }

    /// `warmup` untimed runs, then the median and p90 of `repeats` timed ones.
    pub fn time(&mut self, warmup: usize, repeats: usize) -> Result<Timing, OrtError> {
        let run = |e: ort::Error| OrtError::Run(e.to_string());
        for _ in 0..warmup {
            self.session.run(ort::inputs![&self.input]).map_err(run)?;
        }
        let mut ms = Vec::with_capacity(repeats.max(1));
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            let out = self.session.run(ort::inputs![&self.input]).map_err(run)?;
            drop(out);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Ok(Timing {
            median_ms: at(0.5),
            p90_ms: at(0.9),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            min_ms: ms[0],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_no_library_is_found_the_error_says_where_it_looked() {
        let missing = std::env::temp_dir().join("shears-ort-no-such-lib.so");
        let e = find_library_from(Some(missing.display().to_string()), "python3")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ORT_DYLIB_PATH") && e.contains("not a file"),
            "{e}"
        );
        let e = find_library_from(None, "/nonexistent/python")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot run /nonexistent/python"), "{e}");
        assert!(library_in(Path::new("/nonexistent-dir")).is_none());
    }
}
