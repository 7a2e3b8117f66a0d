//! ONNX in and out. [`import_onnx`] turns a CNN exported from PyTorch (or any framework) into a
//! model of the graph IR with its weights, ready to be pruned like a zoo model;
//! [`export_onnx`] writes any model (dense, masked or compacted) as an ONNX file that
//! onnxruntime runs. Each op's ONNX export mapping lives in the op's own file in `shears-core`
//! (`Op::onnx`); the importer's mapping from ONNX operators is in [`import`].

pub mod export;
pub mod import;

pub use export::{EXPORT_OPSET, export_onnx, to_onnx_bytes};
pub use import::{SUPPORTED_OPS, import_onnx, import_onnx_bytes};

use shears_core::error::CoreError;
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing ONNX; each names the file, node or op.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a readable ONNX model: {0}")]
    Parse(String),
    #[error("node `{node}` ({op}): {detail}")]
    Unsupported {
        node: String,
        op: String,
        detail: String,
    },
    #[error("{0}")]
    Model(String),
    #[error("writing ONNX: {0}")]
    Encode(String),
    #[error("{path}: {inner}")]
    InFile {
        path: PathBuf,
        #[source]
        inner: Box<OnnxError>,
    },
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl OnnxError {
    /// Prefixes the file name, unless the error already names it.
    fn in_file(self, path: &Path) -> OnnxError {
        match self {
            e @ (OnnxError::Io { .. } | OnnxError::InFile { .. }) => e,
            e => OnnxError::InFile {
                path: path.to_path_buf(),
                inner: Box::new(e),
            },
        }
    }
}
