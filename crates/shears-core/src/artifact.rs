//! The portable model artifact: `graph.json` + `weights.safetensors` (+ `masks.safetensors`)
//! in one directory. It reloads with no code that built the model. Every file is written
//! atomically (temporary file in the same directory, then rename).

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::shape::infer_shapes;
use crate::weights::{
    Masks, Weights, check_masks, check_weights, masks_from_safetensors, masks_to_safetensors,
    weights_from_safetensors, weights_to_safetensors,
};
use std::io::Write;
use std::path::Path;

pub const GRAPH_FILE: &str = "graph.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const MASKS_FILE: &str = "masks.safetensors";

/// A network with its weights and optional unstructured masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub graph: Graph,
    pub weights: Weights,
    pub masks: Masks,
}

impl Model {
    /// Validates graph, shapes, weights and masks together.
    pub fn check(&self) -> Result<()> {
        infer_shapes(&self.graph)?;
        check_weights(&self.graph, &self.weights)?;
        check_masks(&self.weights, &self.masks)
    }
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    // Created as any new file is (0666 less the umask), not tempfile's private 0600: a runs
    // directory shared with colleagues stays readable to them.
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| CoreError::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| CoreError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| CoreError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| CoreError::io(path, e.error))?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CoreError::io(path, e))
}

/// Saves a model into `dir` (created if needed).
pub fn save_model(dir: &Path, model: &Model) -> Result<()> {
    model.check()?;
    write_atomic(
        &dir.join(WEIGHTS_FILE),
        &weights_to_safetensors(&model.weights)?,
    )?;
    let masks_path = dir.join(MASKS_FILE);
    if model.masks.is_empty() {
        if masks_path.exists() {
            std::fs::remove_file(&masks_path).map_err(|e| CoreError::io(&masks_path, e))?;
        }
    } else {
        write_atomic(&masks_path, &masks_to_safetensors(&model.masks)?)?;
    }
    // The graph goes last: its presence marks a complete artifact.
    write_atomic(&dir.join(GRAPH_FILE), model.graph.to_json().as_bytes())
}

/// True when `dir` holds a saved model.
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join(GRAPH_FILE).is_file() && dir.join(WEIGHTS_FILE).is_file()
}

/// Loads and validates a model saved by [`save_model`].
pub fn load_model(dir: &Path) -> Result<Model> {
    if !dir.is_dir() {
        return Err(CoreError::file(
            dir,
            "is not a directory holding a saved model",
        ));
    }
    let gpath = dir.join(GRAPH_FILE);
    let text = String::from_utf8(read(&gpath)?)
        .map_err(|_| CoreError::file(&gpath, "is not UTF-8 text"))?;
    let graph = Graph::from_json(&text).map_err(|e| CoreError::file(&gpath, e.to_string()))?;
    let wpath = dir.join(WEIGHTS_FILE);
    let weights = weights_from_safetensors(&read(&wpath)?, &wpath)?;
    let mpath = dir.join(MASKS_FILE);
    let masks = if mpath.exists() {
        masks_from_safetensors(&read(&mpath)?, &mpath)?
    } else {
        Masks::new()
    };
    let model = Model {
        graph,
        weights,
        masks,
    };
    model
        .check()
        .map_err(|e| CoreError::file(dir, e.to_string()))?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::weights::init_weights;

    /// Artifacts get the mode any new file gets (0666 less the umask), not a private 0600.
    #[cfg(target_os = "linux")]
    #[test]
    fn artifacts_honour_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let Some(umask) = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        else {
            eprintln!("SKIPPED: no Umask line in /proc/self/status");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.json");
        write_atomic(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}, umask {umask:o}");
    }

    fn model() -> Model {
        let mut b = GraphBuilder::new("t", &[2, 4, 4]);
        let x = b.input();
        let c = b.conv_bn_relu("c", &x, 3, 3, 1, 1);
        let g = b.global_avg_pool("gap", &c);
        let l = b.linear("fc", &g, 2, true);
        let graph = b.finish(&l);
        let weights = init_weights(&graph, 3);
        let mut masks = Masks::new();
        masks.insert("fc.weight".into(), weights["fc.weight"].mapv(|v| v > 0.0));
        Model {
            graph,
            weights,
            masks,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = model();
        save_model(dir.path(), &m).unwrap();
        assert!(is_model_dir(dir.path()));
        assert_eq!(load_model(dir.path()).unwrap(), m);
    }

    #[test]
    fn broken_artifacts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        save_model(dir.path(), &model()).unwrap();
        std::fs::write(dir.path().join(GRAPH_FILE), "{not json").unwrap();
        let e = load_model(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("graph.json") && e.contains("bad graph JSON"),
            "{e}"
        );
        let e = load_model(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        save_model(dir.path(), &model()).unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), [1u8, 2, 3]).unwrap();
        let e = load_model(dir.path()).unwrap_err().to_string();
        assert!(e.contains("weights.safetensors"), "{e}");
    }
}
