//! PyTorch (`torch.save`) checkpoints for Python: which files a path holds (`_pytorch_files`),
//! and the sizes of the state dicts that `devicemap._bin` loads from them on the meta device
//! (`_pytorch_sizes`). Only translation: the checks, the order and the ties are
//! `crate::checkpoint`'s, as for safetensors.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::checkpoint::{sizes_to_dict, PyCheckpointSizes};
use super::dtype::dtype_from_py;
use super::errors::wrong_type;
use super::guard::guard;
use crate::checkpoint::{self, Checkpoint, Layout, PytorchFile};
use crate::dtype::parse_dtype;

/// A path argument (a `str` or `os.PathLike` of one) as the file system names it (any bytes,
/// through `os.fsencode`); `None` for anything else.
pub(super) fn path_bytes(value: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    let os = value.py().import("os")?;
    let Ok(text) = os.call_method1("fspath", (value,)) else {
        return Ok(None);
    };
    if text.cast::<PyString>().is_err() {
        return Ok(None);
    }
    let bytes: Vec<u8> = os.call_method1("fsencode", (text,))?.extract()?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(bytes))))
    }
    #[cfg(not(unix))]
    {
        Ok(String::from_utf8(bytes).ok().map(PathBuf::from))
    }
}

/// The PyTorch checkpoint at `source`, if it is one (a path; a list, a Hub name are not).
fn pytorch_of(source: &Bound<'_, PyAny>) -> PyResult<Option<Checkpoint>> {
    if source.cast::<PyList>().is_ok() {
        return Ok(None);
    }
    let Some(path) = path_bytes(source)? else {
        return Ok(None);
    };
    Ok(source
        .py()
        .detach(|| checkpoint::pytorch_checkpoint(&path))?)
}

fn files_of(checkpoint: &Checkpoint) -> Vec<String> {
    match checkpoint.layout() {
        Layout::Files(files) => files.iter().map(|f| checkpoint.source().show(f)).collect(),
        Layout::Index(index) => vec![checkpoint.source().show(index)],
    }
}

/// The files of the PyTorch checkpoint at `source` (each torch.save's zip archive), or `None`
/// when `source` is not one.
#[pyfunction]
pub fn _pytorch_files(source: &Bound<'_, PyAny>) -> PyResult<Option<Vec<String>>> {
    guard("_pytorch_files", || {
        Ok(pytorch_of(source)?.as_ref().map(files_of))
    })
}

/// One file's tensors from its state dict: name, dtype (by its `str()`), shape and storage
/// of each.
fn file_of(file: &str, state: &Bound<'_, PyAny>) -> PyResult<PytorchFile> {
    let dict = state.cast::<PyDict>().map_err(|_| {
        wrong_type(
            "a PyTorch checkpoint file must hold a dict of tensors",
            state,
        )
    })?;
    let mut tensors = PytorchFile::new(file.to_owned());
    for (key, value) in dict.iter() {
        let name = key
            .cast::<PyString>()
            .map_err(|_| wrong_type("Tensor names must be str", &key))?;
        let name = name.to_str()?;
        if !value.hasattr("dtype")? || !value.hasattr("shape")? {
            let what = format!("{file}: the value of '{name}' must be a tensor");
            return Err(wrong_type(&what, &value).into());
        }
        let dtype = parse_dtype(&value.getattr("dtype")?.str()?.to_string())?;
        let shape: Vec<u64> = value.getattr("shape")?.extract()?;
        let storage = value
            .call_method0("untyped_storage")
            .and_then(|storage| storage.getattr("_cdata")?.extract::<u64>())
            .ok();
        tensors.add(name, dtype, &shape, storage)?;
    }
    Ok(tensors)
}

/// Sizes and tied groups (from `config.json` beside it) of the PyTorch checkpoint at `source`,
/// whose files' state dicts (`states`, one per file of `_pytorch_files`, loaded on the meta
/// device) are given; with `as_dict`, `{name: bytes}` in model order instead.
#[pyfunction]
#[pyo3(signature = (source, states, dtype = None, as_dict = false))]
pub fn _pytorch_sizes<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    states: &Bound<'py, PyList>,
    dtype: Option<&Bound<'py, PyAny>>,
    as_dict: bool,
) -> PyResult<Bound<'py, PyAny>> {
    guard("_pytorch_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let Some(checkpoint) = pytorch_of(source)? else {
            return Err(wrong_type("expected a PyTorch checkpoint path", source).into());
        };
        let files = files_of(&checkpoint);
        if files.len() != states.len() {
            let what = format!("expected {} state dicts, one per file", files.len());
            return Err(wrong_type(&what, states).into());
        }
        let files = files
            .iter()
            .zip(states.iter())
            .map(|(file, state)| file_of(file, &state))
            .collect::<PyResult<Vec<_>>>()?;
        let sizes = checkpoint::sizes_of_files(files, dtype)?.to_vec();
        if as_dict {
            return Ok(sizes_to_dict(py, &sizes)?.into_any());
        }
        let config = checkpoint::config_text(&checkpoint);
        let result = PyCheckpointSizes::with_config(&checkpoint, sizes, config.as_deref())?;
        Ok(result.into_pyobject(py)?.into_any())
    })
}
