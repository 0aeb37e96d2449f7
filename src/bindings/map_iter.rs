//! Iterating a `DeviceMap` or its `mapping` view (docs/design.md, "Iteration"): iterators of
//! CPython's own over ready objects, so each step runs in C with no call into the extension.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString};

use super::component::glue;
use super::convert::device_objects;
use super::keys::KeyCache;
use crate::map::DeviceMap;

/// What each step hands out.
#[derive(Clone, Copy)]
pub(super) enum IterKind {
    /// `(key, device)` pairs: `for k, d in dm`, `dm.mapping.items()`.
    Items,
    /// Keys: `iter(dm.mapping)`, `dm.mapping.keys()`.
    Keys,
    /// Devices: `dm.mapping.values()`.
    Values,
}

/// `zip`, looked up once.
static ZIP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The device object of each entry of `map`, in entry order: one reference per entry to the
/// interned object of its device, nothing made per entry.
fn device_list<'py>(py: Python<'py>, map: &DeviceMap) -> PyResult<Bound<'py, PyList>> {
    let devices = device_objects(py, map)?;
    PyList::new(py, map.slots().map(|slot| &devices[slot as usize]))
}

/// An iterator of `kind` over a snapshot `map` with its key objects `keys`: the list
/// iterator of the shared key objects for keys, of a new list of the entries' devices for
/// devices, and `zip` of the two for pairs, whose tuple a `for k, d in ...` loop reuses.
/// Changing the map while iterating neither fails nor shows the change.
///
/// Whole lists, not batches under `itertools.chain`: `chain` costs about as much per step as
/// the list iterator under it (measured 2-3x a bare list's step), and slicing the key objects
/// per batch touched each key object twice more. The price is paid up front: a loop broken
/// early has made the device list whole (about 3 ns and 8 bytes per entry, freed with the
/// iterator); the key objects are shared, never copied.
pub(super) fn iterate<'py>(
    py: Python<'py>,
    map: Arc<DeviceMap>,
    keys: KeyCache,
    kind: IterKind,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match kind {
        IterKind::Keys => keys.iter(py, &map)?.into_any(),
        IterKind::Values => device_list(py, &map)?.try_iter()?.into_any(),
        IterKind::Items => {
            let key_objects = keys.iter(py, &map)?;
            let devices = device_list(py, &map)?;
            glue(py, &ZIP, "builtins", "zip")?.call1((key_objects, devices))?
        }
    })
}

/// `__iter__` of the `mapping` views (`devicemap._views`): a descriptor that, on a view,
/// gives the bound method `method` of the view's `_mapping`. A `def __iter__` would be
/// Python code that reads the map and then returns to its caller, where the interpreter may
/// switch threads: `dict(dm.mapping)` would then read keys older than writes made meanwhile
/// and fail to find them. Through this descriptor the read happens in C, as a dict's does.
#[pyclass(frozen, module = "devicemap._core", name = "_ViewIter")]
pub struct ViewIter {
    method: Py<PyString>,
}

#[pymethods]
impl ViewIter {
    #[new]
    fn new(method: Bound<'_, PyString>) -> Self {
        ViewIter {
            method: method.unbind(),
        }
    }

    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        instance: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match instance {
            None => Ok(slf.clone().into_any()),
            Some(view) => view
                .getattr(pyo3::intern!(slf.py(), "_mapping"))?
                .getattr(slf.get().method.bind(slf.py())),
        }
    }
}
