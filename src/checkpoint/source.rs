//! Where a checkpoint's files are: a path resolved to its safetensors files or index.

use std::path::{Path, PathBuf};

use super::error::{bad, CheckpointError, Problem};
use crate::error::Result;

/// The index file transformers writes beside sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// What a checkpoint path names: safetensors files, or an index whose `weight_map` names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    Files(Vec<PathBuf>),
    Index(PathBuf),
}

impl Checkpoint {
    /// A checkpoint of the files given (at least one).
    pub fn files(files: Vec<PathBuf>) -> Result<Checkpoint> {
        if files.is_empty() {
            return Err(CheckpointError::NoFiles.into());
        }
        Ok(Checkpoint::Files(files))
    }

    /// The folder that holds the checkpoint (where `config.json` would be).
    pub fn dir(&self) -> PathBuf {
        let first = match self {
            Checkpoint::Files(files) => files.first(),
            Checkpoint::Index(index) => Some(index),
        };
        first
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Resolves a checkpoint path: a `.safetensors` file, an index file, or a directory holding
/// `model.safetensors.index.json` (or one `*.safetensors.index.json`), `model.safetensors`, or
/// exactly one `*.safetensors` file. Nothing is parsed yet.
pub fn resolve(path: &Path) -> Result<Checkpoint> {
    if path.is_file() {
        if path.to_string_lossy().ends_with(".index.json") {
            return Ok(Checkpoint::Index(path.to_owned()));
        }
        return Ok(Checkpoint::Files(vec![path.to_owned()]));
    }
    if !path.is_dir() {
        return Err(bad(path, None, Problem::NotFound));
    }
    let index = path.join(INDEX_FILE);
    if index.is_file() {
        return Ok(Checkpoint::Index(index));
    }
    let single = path.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(Checkpoint::Files(vec![single]));
    }
    let mut indexes = Vec::new();
    let mut singles = Vec::new();
    let entries =
        std::fs::read_dir(path).map_err(|e| bad(path, None, Problem::CannotList(e.to_string())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors.index.json") {
            indexes.push(entry.path());
        } else if name.ends_with(".safetensors") {
            singles.push(entry.path());
        }
    }
    match (indexes.as_slice(), singles.as_slice()) {
        ([index], _) => Ok(Checkpoint::Index(index.clone())),
        ([], [single]) => Ok(Checkpoint::Files(vec![single.clone()])),
        _ => {
            let problem = Problem::NoCheckpoint {
                indexes: indexes.len(),
                singles: singles.len(),
            };
            Err(bad(path, None, problem))
        }
    }
}
