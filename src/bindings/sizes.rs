//! The one reader of `{tensor name: bytes}` for every binding that takes sizes (`plan`,
//! `stages`, `DeviceMap.summary`): a dict, another mapping (anything with `items()`), or a list
//! of `(name, bytes)` pairs, in its order.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};

use super::errors::{short_repr, wrong_type};
use crate::error::Error;
use crate::plan::PlanError;

/// Sizes read from Python, in their order.
pub struct Sizes<T> {
    pub entries: Vec<(T, u64)>,
    /// Whether the names are known to be distinct without looking: the keys of a dict that are
    /// all exact `str` (a `str` subclass may compare equal to another key).
    pub distinct: bool,
}

/// Reads `source`; `name` turns each name (a `str`) into what the caller keeps.
pub fn read_sizes<'py, T>(
    source: &Bound<'py, PyAny>,
    mut name: impl FnMut(&Bound<'py, PyString>) -> PyResult<T>,
) -> PyResult<Sizes<T>> {
    let mut entries = Vec::new();
    let mut exact = true;
    let mut push = |key: Bound<'py, PyAny>, value: &Bound<'py, PyAny>| -> PyResult<()> {
        let key = key
            .cast_into::<PyString>()
            .map_err(|e| wrong_type("Tensor names must be str", &e.into_inner()))?;
        exact &= key.is_exact_instance_of::<PyString>();
        let bytes = bytes_of(&key, value)?;
        entries.push((name(&key)?, bytes));
        Ok(())
    };
    if let Ok(dict) = source.cast::<PyDict>() {
        for (key, value) in dict.iter() {
            push(key, &value)?;
        }
        return Ok(Sizes {
            entries,
            distinct: exact,
        });
    }
    if let Ok(list) = source.cast::<PyList>() {
        for item in list.iter() {
            let (key, value) = pair(&item)?;
            push(key, &value)?;
        }
    } else if source.hasattr("items")? {
        for item in source.call_method0("items")?.try_iter()? {
            let (key, value) = pair(&item?)?;
            push(key, &value)?;
        }
    } else {
        return Err(wrong_type("expected a mapping of tensor names to bytes", source).into());
    }
    Ok(Sizes {
        entries,
        distinct: false,
    })
}

/// A `(name, bytes)` pair: a tuple of two.
fn pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    match item.cast::<PyTuple>() {
        Ok(tuple) if tuple.len() == 2 => Ok((tuple.get_item(0)?, tuple.get_item(1)?)),
        _ => Err(wrong_type(
            "Each item of a list of sizes must be a (name, bytes) pair",
            item,
        )
        .into()),
    }
}

/// Bytes of a size value: a non-negative `int` (not `bool`).
fn bytes_of(name: &Bound<'_, PyString>, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let name = name.to_str()?;
    if value.cast::<PyInt>().is_err() || value.cast::<PyBool>().is_ok() {
        let expected = format!("Size of tensor '{name}' must be an int (bytes)");
        return Err(wrong_type(&expected, value).into());
    }
    value.extract::<u64>().map_err(|_| {
        Error::from(PlanError::BadSize {
            name: name.to_owned(),
            shown: short_repr(value),
        })
        .into()
    })
}
