//! `DeviceMap` for Python: a mutable mapping whose data lives in Rust.
//!
//! A map handed to several threads behaves as a `dict` does under the GIL, and stays correct
//! without it: the class is `frozen` and keeps its content behind a mutex. The mutex is held
//! only for pure Rust work (a lookup, an insert, swapping the content): never while calling into
//! Python, so a key's `__eq__`, a value's `__repr__` or building an exception can neither
//! deadlock nor see a half-made change. Long reads (conversions, iteration, equality) take a
//! snapshot (an `Arc` of the content) under the lock and work on it after letting go; a writer
//! that finds the content shared clones it first (copy-on-write), so snapshots never change.

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::component::glue;
use super::convert::{
    device_objects, device_value, key_str, map_from_devices, map_from_hf, map_from_strings,
    map_to_strings, OnError,
};
use super::device::{device_repr, device_to_py, PyDevice};
use super::errors::{missing_key, wrong_type};
use super::guard::guard;
use super::haystack::{haystack_class, Haystack};
use super::keys::KeyCache;
use super::map_iter::{self, IterKind};
use crate::device::Device;
use crate::error::Error;
use crate::map::DeviceMap;

/// The content and the Python key objects that go with it. `keys` belongs to `map`'s keys and
/// order: the two are only ever set together.
#[derive(Clone)]
struct Content {
    map: Arc<DeviceMap>,
    keys: KeyCache,
}

impl Content {
    fn new(map: DeviceMap) -> Self {
        Content {
            map: Arc::new(map),
            keys: KeyCache::empty(),
        }
    }
}

/// A map's content behind its lock, with everything done to it. Shared by the `DeviceMap` and
/// its `mapping` view, so the view needs no reference to the map object (which keeps the view:
/// `dm.mapping` makes no object per access, and no reference cycle is formed).
pub struct MapCell {
    content: Mutex<Content>,
}

#[pyclass(frozen, subclass, weakref, module = "devicemap", name = "DeviceMap")]
pub struct PyDeviceMap {
    cell: Arc<MapCell>,
    /// The `mapping` view, made on first access.
    view: PyOnceLock<Py<MappingView>>,
}

impl std::ops::Deref for PyDeviceMap {
    type Target = MapCell;

    fn deref(&self) -> &MapCell {
        &self.cell
    }
}

impl PyDeviceMap {
    pub fn new_shared(map: Arc<DeviceMap>, keys: KeyCache) -> Self {
        PyDeviceMap {
            cell: Arc::new(MapCell {
                content: Mutex::new(Content { map, keys }),
            }),
            view: PyOnceLock::new(),
        }
    }

    /// The `mapping` view, made on first access and kept.
    fn view(&self, py: Python<'_>) -> PyResult<&Py<MappingView>> {
        self.view.get_or_try_init(py, || {
            Py::new(
                py,
                MappingView {
                    map: self.cell.clone(),
                },
            )
        })
    }

    /// A new Python map holding `map`.
    pub fn from_map(map: DeviceMap) -> Self {
        PyDeviceMap::new_shared(Arc::new(map), KeyCache::empty())
    }
}

impl MapCell {
    /// The lock. A panic while it was held (a bug: nothing under it calls Python or fails on
    /// input) poisons it; the content is still a whole map, so carry on with it.
    fn lock(&self) -> MutexGuard<'_, Content> {
        self.content
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current content, shared (copy-on-write): read it without holding anything.
    /// Every reader outside this file goes through here.
    pub fn snapshot(&self) -> Arc<DeviceMap> {
        self.lock().map.clone()
    }

    /// The content with its key objects, for a `ComponentDevice` made from this map.
    pub fn shared(&self) -> (Arc<DeviceMap>, KeyCache) {
        let content = self.lock().clone();
        (content.map, content.keys)
    }

    /// Reads the current content under the lock: for short, pure-Rust reads, which then make
    /// no snapshot that a writer would have to copy around.
    pub(super) fn read<T>(&self, f: impl FnOnce(&DeviceMap) -> T) -> T {
        f(&self.lock().map)
    }

    /// Changes the content under the lock (copying it first if a snapshot shares it). `f`
    /// returns whether the keys and their order are unchanged, so their Python objects can
    /// be kept. What the old content held is dropped after the lock is released.
    fn write<T>(&self, f: impl FnOnce(&mut DeviceMap) -> (T, bool)) -> T {
        let (result, _old_keys) = {
            let mut content = self.lock();
            let (result, same_keys) = f(Arc::make_mut(&mut content.map));
            let old_keys = if same_keys {
                None
            } else {
                Some(std::mem::replace(&mut content.keys, KeyCache::empty()))
            };
            (result, old_keys)
        };
        result
    }

    /// Replaces the whole content; the old one is dropped after the lock is released.
    fn replace(&self, map: DeviceMap) {
        let new = Content::new(map);
        let _old = std::mem::replace(&mut *self.lock(), new);
    }

    fn get_device(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<Device>> {
        // A `str` that is not UTF-8 (a lone surrogate) cannot be a key: absent, as in a dict.
        match key.cast::<PyString>().ok().and_then(|k| k.to_str().ok()) {
            Some(k) => Ok(self.read(|map| map.get(k))),
            None => Ok(None),
        }
    }

    fn remove(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<Device>> {
        match key.cast::<PyString>().ok().and_then(|k| k.to_str().ok()) {
            Some(k) => Ok(self.write(|map| {
                let removed = map.remove(k);
                let same_keys = removed.is_none();
                (removed, same_keys)
            })),
            None => Ok(None),
        }
    }

    fn set(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = key_str(key)?;
        let device = device_value(key, value)?;
        // An existing key keeps its place: the keys, and so their objects, are unchanged.
        self.write(|map| ((), map.insert(key, device).is_some()));
        Ok(())
    }

    /// `popitem()`: removes and returns the last entry, in one step under the lock.
    fn pop_last(&self) -> Option<(String, Device)> {
        self.write(|map| {
            let last = map.last().map(|(key, device)| (key.to_owned(), device));
            if let Some((key, _)) = &last {
                map.remove(key);
            }
            let same_keys = last.is_none();
            (last, same_keys)
        })
    }

    /// `setdefault(key, default)`: the device at `key`, or `default` stored there, in one step.
    fn set_default(&self, key: &str, default: PyResult<Device>) -> PyResult<Device> {
        self.write(|map| match map.get(key) {
            Some(device) => (Ok(device), true),
            None => match default {
                Ok(device) => {
                    map.insert(key, device);
                    (Ok(device), false)
                }
                Err(err) => (Err(err), true),
            },
        })
    }

    fn items_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (map, keys) = self.shared();
        let devices = device_objects(py, &map)?;
        let pairs = keys
            .slice(py, &map, 0, map.len())?
            .iter()
            .zip(map.slots())
            .map(|(key, slot)| PyTuple::new(py, [key, devices[slot as usize].clone().into_any()]))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    /// An iterator over the current content (see [`map_iter::iterate`]).
    fn iterate<'py>(&self, py: Python<'py>, kind: IterKind) -> PyResult<Bound<'py, PyAny>> {
        let (map, keys) = self.shared();
        map_iter::iterate(py, map, keys, kind)
    }

    fn getitem<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDevice>> {
        match self.get_device(key)? {
            Some(device) => device_to_py(key.py(), device),
            None => Err(missing_key(key)),
        }
    }

    fn delitem(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.remove(key)? {
            Some(_) => Ok(()),
            None => Err(missing_key(key)),
        }
    }

    fn get_or<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.get_device(key)? {
            Some(device) => Ok(Some(device_to_py(key.py(), device)?.into_any())),
            None => Ok(default),
        }
    }

    fn pop_or<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match (self.remove(key)?, default.len()) {
            (Some(device), _) => Ok(device_to_py(key.py(), device)?.into_any()),
            (None, 0) => Err(missing_key(key)),
            (None, _) => default.get_item(0),
        }
    }

    /// Sets every entry of `other` (a mapping of `str` to `Device`, or a `DeviceMap`), all or none.
    fn update_from(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        // Read `other` whole before taking the lock: reading it runs Python code (and it may
        // be this very map or its `mapping` view).
        let incoming = match other.cast::<PyDeviceMap>() {
            Ok(map) => map.get().snapshot(),
            Err(_) => Arc::new(map_from_devices(other)?),
        };
        self.write(|map| {
            let mut all_existed = true;
            for (key, device) in incoming.iter() {
                all_existed &= map.insert(key, device).is_some();
            }
            ((), all_existed)
        });
        Ok(())
    }

    fn to_strings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (map, keys) = self.shared();
        map_to_strings(py, &map, &keys)
    }
}

/// A `DeviceMap` argument, with the key cache that goes with its content: ours (shared), or
/// Haystack's read by value.
pub fn map_arg(value: &Bound<'_, PyAny>, expected: &str) -> PyResult<(Arc<DeviceMap>, KeyCache)> {
    if let Ok(map) = value.cast::<PyDeviceMap>() {
        return Ok(map.get().shared());
    }
    if haystack_class(value) == Some(Haystack::DeviceMap) {
        return Ok((Arc::new(map_from_devices(value)?), KeyCache::empty()));
    }
    Err(wrong_type(expected, value).into())
}

/// Repr like Haystack's dataclass for maps a person can read; a summary past that.
const REPR_MAX_ENTRIES: usize = 32;

pub fn map_repr(map: &DeviceMap) -> String {
    if map.len() > REPR_MAX_ENTRIES {
        let devices: Vec<String> = map
            .device_counts()
            .iter()
            .map(|(device, count)| format!("{device} x {count}"))
            .collect();
        return format!("DeviceMap(<{} entries: {}>)", map.len(), devices.join(", "));
    }
    let entries: Vec<String> = map
        .iter()
        .map(|(key, device)| format!("{}: {}", py_str_repr(key), device_repr(device)))
        .collect();
    format!("DeviceMap(mapping={{{}}})", entries.join(", "))
}

/// Python's repr of a str, for keys in reprs.
fn py_str_repr(text: &str) -> String {
    Python::attach(|py| {
        PyString::new(py, text)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| format!("'{text}'"))
    })
}

#[pymethods]
impl PyDeviceMap {
    /// An empty map; `__init__` fills it, so that subclasses can call `super().__init__(...)`
    /// and calling `__init__` again on a map replaces its content, as on Haystack's dataclass.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(mapping=None)")]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        guard("DeviceMap()", || {
            Ok(PyDeviceMap::from_map(DeviceMap::new()))
        })
    }

    #[pyo3(signature = (mapping = None))]
    fn __init__(&self, mapping: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        guard("DeviceMap.__init__", || {
            let map = match mapping {
                Some(mapping) if !mapping.is_none() => map_from_devices(mapping)?,
                _ => DeviceMap::new(),
            };
            self.replace(map);
            Ok(())
        })
    }

    fn __getitem__<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDevice>> {
        guard("DeviceMap.__getitem__", || self.getitem(key))
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.__setitem__", || self.set(key, value))
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.__delitem__", || self.delitem(key))
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        guard("DeviceMap.__contains__", || {
            Ok(self.get_device(key)?.is_some())
        })
    }

    fn __len__(&self) -> PyResult<usize> {
        guard("DeviceMap.__len__", || Ok(self.read(DeviceMap::len)))
    }

    /// Yields `(key, Device)` pairs, as Haystack's does, so `dict(dm)` works.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.__iter__", || self.iterate(py, IterKind::Items))
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard("DeviceMap.get", || self.get_or(key, default))
    }

    // The live views of `dm.mapping`, as a dict's `keys()`, `values()` and `items()` are.

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.keys", || {
            view(self.view(py)?.bind(py), &KEYS_VIEW, "DeviceMappingKeys")
        })
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.values", || {
            view(self.view(py)?.bind(py), &VALUES_VIEW, "DeviceMappingValues")
        })
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.items", || {
            view(self.view(py)?.bind(py), &ITEMS_VIEW, "DeviceMappingItems")
        })
    }

    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.pop", || self.pop_or(key, default))
    }

    fn clear(&self) -> PyResult<()> {
        guard("DeviceMap.clear", || {
            self.replace(DeviceMap::new());
            Ok(())
        })
    }

    /// Sets every entry of `other` (a mapping of `str` to `Device`, or a `DeviceMap`), all or none.
    fn update(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.update", || self.update_from(other))
    }

    fn copy(&self) -> PyResult<Self> {
        guard("DeviceMap.copy", || {
            Ok({
                let (map, keys) = self.shared();
                PyDeviceMap::new_shared(map, keys)
            })
        })
    }

    fn __copy__(&self) -> PyResult<Self> {
        self.copy()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.copy()
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard("DeviceMap.to_dict", || self.to_strings(py))
    }

    #[getter]
    fn first_device<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDevice>>> {
        guard("DeviceMap.first_device", || {
            self.read(DeviceMap::first)
                .map(|d| device_to_py(py, d))
                .transpose()
        })
    }

    #[staticmethod]
    #[pyo3(signature = (dict))]
    fn from_dict(dict: &Bound<'_, PyAny>) -> PyResult<Self> {
        guard("DeviceMap.from_dict", || {
            Ok(PyDeviceMap::from_map(map_from_strings(
                dict,
                OnError::Stop,
            )?))
        })
    }

    #[staticmethod]
    #[pyo3(signature = (hf_device_map))]
    fn from_hf(hf_device_map: &Bound<'_, PyAny>) -> PyResult<Self> {
        guard("DeviceMap.from_hf", || {
            Ok(PyDeviceMap::from_map(map_from_hf(
                hf_device_map,
                OnError::Stop,
            )?))
        })
    }

    /// A 32-hex-digit content hash, equal for equal maps in any insertion order and stable
    /// across processes. Computed once, then kept up to date by each change.
    fn fingerprint(&self) -> PyResult<String> {
        guard("DeviceMap.fingerprint", || {
            Ok({
                // Under the lock: the first call computes the sum into the content itself (a
                // `OnceLock`), which a snapshot about to be copied by a writer would not keep.
                format!("{:032x}", self.read(DeviceMap::fingerprint))
            })
        })
    }

    /// How many entries each device has, in order of first appearance.
    fn device_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard("DeviceMap.device_counts", || {
            let counts = self.snapshot().device_counts();
            let dict = PyDict::new(py);
            for (device, count) in counts {
                dict.set_item(device_to_py(py, device)?, count)?;
            }
            Ok(dict)
        })
    }

    /// A live view of the entries as a `MutableMapping[str, Device]`: `dm.mapping` in Haystack
    /// is the underlying dict, and writes through this view reach the map.
    #[getter]
    fn mapping(&self, py: Python<'_>) -> PyResult<Py<MappingView>> {
        guard("DeviceMap.mapping", || Ok(self.view(py)?.clone_ref(py)))
    }

    #[setter]
    fn set_mapping(&self, mapping: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.set_mapping", || {
            // Converted before taking the lock: `mapping` may be this map's own view.
            let map = map_from_devices(mapping)?;
            self.replace(map);
            Ok(())
        })
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        guard("DeviceMap.__richcmp__", || {
            let py = other.py();
            let Ok(other) = other.cast::<PyDeviceMap>() else {
                return Ok(py.NotImplemented());
            };
            let (mine, theirs) = (self.snapshot(), other.get().snapshot());
            let equal = Arc::ptr_eq(&mine, &theirs) || py.detach(|| *mine == *theirs);
            Ok(match op {
                CompareOp::Eq => equal.into_pyobject(py)?.to_owned().into_any().unbind(),
                CompareOp::Ne => (!equal).into_pyobject(py)?.to_owned().into_any().unbind(),
                _ => py.NotImplemented(),
            })
        })
    }

    fn __repr__(&self) -> PyResult<String> {
        guard("DeviceMap.__repr__", || Ok(map_repr(&self.snapshot())))
    }

    /// `type(self)()` then `__setstate__`: works for every pickle protocol (0 and 1 included).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        guard("DeviceMap.__reduce__", || {
            let py = slf.py();
            let state = slf.get().to_strings(py)?;
            // A subclass's instance attributes travel too, as they would for a dataclass.
            let attributes = slf.getattr(pyo3::intern!(py, "__dict__")).ok();
            let state = match attributes {
                Some(dict) if dict.len()? > 0 => (state, dict).into_pyobject(py)?.into_any(),
                _ => state.into_any(),
            };
            (slf.get_type(), PyTuple::empty(py), state).into_pyobject(py)
        })
    }

    fn __getstate__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard("DeviceMap.__getstate__", || self.to_strings(py))
    }

    fn __setstate__(slf: &Bound<'_, Self>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.__setstate__", || {
            let (entries, attributes) = match state.cast::<PyTuple>() {
                Ok(pair) if pair.len() == 2 => (pair.get_item(0)?, Some(pair.get_item(1)?)),
                _ => (state.clone(), None),
            };
            let map = map_from_strings(&entries, OnError::Stop)?;
            slf.get().replace(map);
            if let Some(attributes) = attributes {
                slf.getattr(pyo3::intern!(slf.py(), "__dict__"))?
                    .call_method1(pyo3::intern!(slf.py(), "update"), (attributes,))?;
            }
            Ok(())
        })
    }
}

/// The view classes of `devicemap._views`, looked up once.
static KEYS_VIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static VALUES_VIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ITEMS_VIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A new view of `mapping` of the class `name` of `devicemap._views`.
fn view<'py>(
    mapping: &Bound<'py, MappingView>,
    class: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    glue(mapping.py(), class, "devicemap._views", name)?.call1((mapping,))
}

/// `DeviceMap.mapping`: the dict-shaped face of a map (iterating yields keys).
#[pyclass(module = "devicemap", name = "DeviceMapping", frozen)]
pub struct MappingView {
    map: Arc<MapCell>,
}

#[pymethods]
impl MappingView {
    fn __getitem__<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDevice>> {
        guard("DeviceMap.mapping.__getitem__", || self.map.getitem(key))
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.mapping.__setitem__", || self.map.set(key, value))
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.mapping.__delitem__", || self.map.delitem(key))
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        guard("DeviceMap.mapping.__contains__", || {
            Ok(self.map.get_device(key)?.is_some())
        })
    }

    fn __len__(&self) -> PyResult<usize> {
        guard("DeviceMap.mapping.__len__", || {
            Ok(self.map.read(DeviceMap::len))
        })
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.__iter__", || {
            self.map.iterate(py, IterKind::Keys)
        })
    }

    /// The keys last to first, as `reversed()` of a dict gives them (from the keys as they are
    /// now).
    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.__reversed__", || {
            let keys = self.map.iterate(py, IterKind::Keys)?.try_iter()?;
            let keys: Vec<Bound<'py, PyAny>> = keys.collect::<PyResult<_>>()?;
            PyList::new(py, keys.into_iter().rev())?
                .into_any()
                .try_iter()
                .map(Bound::into_any)
        })
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard("DeviceMap.mapping.get", || self.map.get_or(key, default))
    }

    // Live views, as a dict's (`devicemap._views`), iterating through the two methods below.

    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.keys", || {
            view(slf, &KEYS_VIEW, "DeviceMappingKeys")
        })
    }

    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.values", || {
            view(slf, &VALUES_VIEW, "DeviceMappingValues")
        })
    }

    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.items", || {
            view(slf, &ITEMS_VIEW, "DeviceMappingItems")
        })
    }

    // The views' `__iter__` (through `_ViewIter`, see `map_iter.rs`).

    fn _iter_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.keys().__iter__", || {
            self.map.iterate(py, IterKind::Keys)
        })
    }

    fn _iter_values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.values().__iter__", || {
            self.map.iterate(py, IterKind::Values)
        })
    }

    fn _iter_items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.items().__iter__", || {
            self.map.iterate(py, IterKind::Items)
        })
    }

    // The rest of `MutableMapping`'s methods, which registering the class does not supply.

    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard("DeviceMap.mapping.pop", || self.map.pop_or(key, default))
    }

    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDevice>)> {
        guard("DeviceMap.mapping.popitem", || match self.map.pop_last() {
            Some((key, device)) => Ok((key, device_to_py(py, device)?)),
            None => Err(Error::PopFromEmpty.into()),
        })
    }

    #[pyo3(signature = (key, default = None))]
    fn setdefault<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDevice>> {
        guard("DeviceMap.mapping.setdefault", || {
            let py = key.py();
            let text = key_str(key)?;
            let none = py.None().into_bound(py);
            // Checked before taking the lock (no Python code runs), raised only if it is stored.
            let default = device_value(text, default.unwrap_or(&none));
            let device = self.map.set_default(text, default)?;
            device_to_py(py, device)
        })
    }

    fn clear(&self) -> PyResult<()> {
        guard("DeviceMap.mapping.clear", || {
            self.map.replace(DeviceMap::new());
            Ok(())
        })
    }

    fn update(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        guard("DeviceMap.mapping.update", || self.map.update_from(other))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        guard("DeviceMap.mapping.__richcmp__", || {
            let py = other.py();
            let mine = PyDict::from_sequence(&self.map.items_list(py)?.into_any())?;
            mine.into_any().rich_compare(other, op).map(Bound::unbind)
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        guard("DeviceMap.mapping.__repr__", || {
            let mine = PyDict::from_sequence(&self.map.items_list(py)?.into_any())?;
            Ok(mine.repr()?.to_string())
        })
    }
}
