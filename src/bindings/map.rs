//! `DeviceMap` for Python: a mutable mapping whose data lives in Rust.

use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::convert::{
    device_objects, device_value, key_str, map_from_devices, map_from_hf, map_from_strings,
    map_to_strings, OnError,
};
use super::device::{device_repr, device_to_py, PyDevice};
use super::keys::KeyCache;
use crate::map::DeviceMap;

/// The map is shared (copy-on-write) with components made from it and with iterators over it,
/// so a mutation clones only when someone else still holds the old content. `keys` belongs to
/// `inner`'s keys: the two are only ever set together.
#[pyclass(module = "devicemap", name = "DeviceMap")]
pub struct PyDeviceMap {
    pub inner: Arc<DeviceMap>,
    pub keys: KeyCache,
}

impl PyDeviceMap {
    pub fn new_shared(inner: Arc<DeviceMap>, keys: KeyCache) -> Self {
        PyDeviceMap { inner, keys }
    }

    /// A new Python map holding `map`.
    pub fn from_map(map: DeviceMap) -> Self {
        PyDeviceMap::new_shared(Arc::new(map), KeyCache::empty())
    }

    /// The current content, shared (copy-on-write): read it without holding anything.
    /// Every reader outside this file goes through here.
    pub fn snapshot(&self) -> Arc<DeviceMap> {
        self.inner.clone()
    }

    fn replace(&mut self, map: DeviceMap) {
        self.inner = Arc::new(map);
        self.keys = KeyCache::empty();
    }

    /// The map to change. Its key cache is dropped: callers that keep every key in place may
    /// put the old one back (see `__setitem__`).
    fn data(&mut self) -> &mut DeviceMap {
        self.keys = KeyCache::empty();
        Arc::make_mut(&mut self.inner)
    }
}

fn key_error(key: &Bound<'_, PyAny>) -> PyErr {
    // A 1-tuple, so that `None` (or a tuple key) becomes the exception's one argument as in a dict.
    PyKeyError::new_err((key.clone().unbind(),))
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
    #[new]
    #[pyo3(signature = (mapping = None))]
    fn new(mapping: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let map = match mapping {
            Some(mapping) if !mapping.is_none() => map_from_devices(mapping)?,
            _ => DeviceMap::new(),
        };
        Ok(PyDeviceMap::from_map(map))
    }

    fn __getitem__<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDevice>> {
        let py = key.py();
        let found = key
            .cast::<PyString>()
            .ok()
            .map(|k| k.to_str().map(|k| self.inner.get(k)))
            .transpose()?
            .flatten();
        match found {
            Some(device) => device_to_py(py, device),
            None => Err(key_error(key)),
        }
    }

    fn __setitem__(&mut self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = key_str(key)?;
        let device = device_value(key, value)?;
        let keys = self.keys.clone();
        if self.data().insert(key, device).is_some() {
            // An existing key keeps its place: the keys, and so their cache, are unchanged.
            self.keys = keys;
        }
        Ok(())
    }

    fn __delitem__(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let removed = match key.cast::<PyString>() {
            Ok(k) => self.data().remove(k.to_str()?),
            Err(_) => None,
        };
        removed.map(|_| ()).ok_or_else(|| key_error(key))
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        match key.cast::<PyString>() {
            Ok(k) => Ok(self.inner.contains_key(k.to_str()?)),
            Err(_) => Ok(false),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Yields `(key, Device)` pairs, as Haystack's does, so `dict(dm)` works.
    fn __iter__(&self) -> MapIter {
        MapIter::new(self.inner.clone(), IterKind::Items)
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.__getitem__(key) {
            Ok(device) => Ok(Some(device.into_any())),
            Err(e) if e.is_instance_of::<PyKeyError>(key.py()) => Ok(default),
            Err(e) => Err(e),
        }
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.iter().map(|(key, _)| key))
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let devices = device_objects(py, &self.inner)?;
        PyList::new(
            py,
            self.inner
                .iter_slots()
                .map(|(_, slot)| &devices[slot as usize]),
        )
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let devices = device_objects(py, &self.inner)?;
        let pairs = self
            .inner
            .iter_slots()
            .map(|(key, slot)| {
                PyTuple::new(
                    py,
                    [
                        PyString::new(py, key).into_any(),
                        devices[slot as usize].clone().into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &mut self,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = key.py();
        let removed = match key.cast::<PyString>() {
            Ok(k) => self.data().remove(k.to_str()?),
            Err(_) => None,
        };
        match (removed, default.len()) {
            (Some(device), _) => Ok(device_to_py(py, device)?.into_any()),
            (None, 0) => Err(key_error(key)),
            (None, _) => default.get_item(0),
        }
    }

    fn clear(&mut self) {
        self.data().clear();
    }

    /// Sets every entry of `other` (a mapping of `str` to `Device`, or a `DeviceMap`), all or none.
    fn update(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        // Read `other` before borrowing this map mutably: it may be this map or its `mapping` view.
        let incoming = match other.cast::<PyDeviceMap>() {
            Ok(map) => map.borrow().inner.clone(),
            Err(_) => Arc::new(map_from_devices(other)?),
        };
        let mut this = slf.borrow_mut();
        let keys = this.keys.clone();
        let data = this.data();
        let mut all_existed = true;
        for (key, device) in incoming.iter() {
            all_existed &= data.insert(key, device).is_some();
        }
        if all_existed {
            this.keys = keys;
        }
        Ok(())
    }

    fn copy(&self) -> Self {
        PyDeviceMap::new_shared(self.inner.clone(), self.keys.clone())
    }

    fn __copy__(&self) -> Self {
        self.copy()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.copy()
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_strings(py, &self.inner, &self.keys)
    }

    #[getter]
    fn first_device<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDevice>>> {
        self.inner.first().map(|d| device_to_py(py, d)).transpose()
    }

    #[staticmethod]
    #[pyo3(signature = (dict))]
    fn from_dict(dict: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyDeviceMap::from_map(map_from_strings(
            dict,
            OnError::Stop,
        )?))
    }

    #[staticmethod]
    #[pyo3(signature = (hf_device_map))]
    fn from_hf(hf_device_map: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyDeviceMap::from_map(map_from_hf(
            hf_device_map,
            OnError::Stop,
        )?))
    }

    /// A 32-hex-digit content hash, equal for equal maps in any insertion order and stable
    /// across processes. Computed once, then kept up to date by each change.
    fn fingerprint(&self) -> String {
        format!("{:032x}", self.inner.fingerprint())
    }

    /// How many entries each device has, in order of first appearance.
    fn device_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (device, count) in self.inner.device_counts() {
            dict.set_item(device_to_py(py, device)?, count)?;
        }
        Ok(dict)
    }

    /// A live view of the entries as a `MutableMapping[str, Device]`: `dm.mapping` in Haystack
    /// is the underlying dict, and writes through this view reach the map.
    #[getter]
    fn mapping(slf: Bound<'_, Self>) -> MappingView {
        MappingView { map: slf.unbind() }
    }

    #[setter]
    fn set_mapping(slf: &Bound<'_, Self>, mapping: &Bound<'_, PyAny>) -> PyResult<()> {
        // Converted before the mutable borrow: `mapping` may be this map's own view.
        let map = map_from_devices(mapping)?;
        slf.borrow_mut().replace(map);
        Ok(())
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<PyDeviceMap>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.borrow();
        let equal = Arc::ptr_eq(&self.inner, &other.inner) || *self.inner == *other.inner;
        Ok(match op {
            CompareOp::Eq => equal.into_pyobject(py)?.to_owned().into_any().unbind(),
            CompareOp::Ne => (!equal).into_pyobject(py)?.to_owned().into_any().unbind(),
            _ => py.NotImplemented(),
        })
    }

    fn __repr__(&self) -> String {
        map_repr(&self.inner)
    }

    /// `DeviceMap()` then `__setstate__`: works for every pickle protocol (0 and 1 included).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let state = slf.borrow().to_dict(py)?;
        (slf.get_type(), PyTuple::empty(py), state).into_pyobject(py)
    }

    fn __getstate__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.to_dict(py)
    }

    fn __setstate__(slf: &Bound<'_, Self>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let map = map_from_strings(state, OnError::Stop)?;
        slf.borrow_mut().replace(map);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum IterKind {
    Items,
    Keys,
}

/// Iterates a snapshot: changing the map while iterating neither fails nor shows the change.
#[pyclass(module = "devicemap")]
pub struct MapIter {
    map: Arc<DeviceMap>,
    position: usize,
    kind: IterKind,
}

impl MapIter {
    fn new(map: Arc<DeviceMap>, kind: IterKind) -> Self {
        MapIter {
            map,
            position: 0,
            kind,
        }
    }
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some((key, device)) = self.map.get_index(self.position) else {
            return Ok(None);
        };
        self.position += 1;
        Ok(Some(match self.kind {
            IterKind::Keys => PyString::new(py, key).into_any(),
            IterKind::Items => (key, device_to_py(py, device)?)
                .into_pyobject(py)?
                .into_any(),
        }))
    }

    fn __length_hint__(&self) -> usize {
        self.map.len().saturating_sub(self.position)
    }
}

/// `DeviceMap.mapping`: the dict-shaped face of a map (iterating yields keys).
#[pyclass(module = "devicemap", name = "DeviceMapping", frozen)]
pub struct MappingView {
    map: Py<PyDeviceMap>,
}

#[pymethods]
impl MappingView {
    fn __getitem__<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDevice>> {
        self.map.bind(key.py()).borrow().__getitem__(key)
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.map.bind(key.py()).borrow_mut().__setitem__(key, value)
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.map.bind(key.py()).borrow_mut().__delitem__(key)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.map.bind(key.py()).borrow().__contains__(key)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.map.bind(py).borrow().__len__()
    }

    fn __iter__(&self, py: Python<'_>) -> MapIter {
        MapIter::new(self.map.bind(py).borrow().inner.clone(), IterKind::Keys)
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.map.bind(key.py()).borrow().get(key, default)
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.map.bind(py).borrow().keys(py)
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.map.bind(py).borrow().values(py)
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.map.bind(py).borrow().items(py)
    }

    // The rest of `MutableMapping`'s methods, which registering the class does not supply.

    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.map.bind(key.py()).borrow_mut().pop(key, default)
    }

    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDevice>)> {
        let map = self.map.bind(py);
        let last = {
            let inner = &map.borrow().inner;
            inner
                .get_index(inner.len().wrapping_sub(1))
                .map(|(k, d)| (k.to_owned(), d))
        };
        let Some((key, device)) = last else {
            return Err(PyKeyError::new_err("popitem(): DeviceMap is empty"));
        };
        map.borrow_mut().data().remove(&key);
        Ok((key, device_to_py(py, device)?))
    }

    #[pyo3(signature = (key, default = None))]
    fn setdefault<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let map = self.map.bind(key.py());
        if let Some(found) = map.borrow().get(key, None)? {
            return Ok(found);
        }
        let value = default
            .cloned()
            .unwrap_or_else(|| key.py().None().into_bound(key.py()));
        map.borrow_mut().__setitem__(key, &value)?;
        Ok(value)
    }

    fn clear(&self, py: Python<'_>) {
        self.map.bind(py).borrow_mut().clear();
    }

    fn update(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        PyDeviceMap::update(self.map.bind(other.py()), other)
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let mine = PyDict::from_sequence(&self.items(py)?.into_any())?;
        mine.into_any().rich_compare(other, op).map(Bound::unbind)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mine = PyDict::from_sequence(&self.items(py)?.into_any())?;
        Ok(mine.repr()?.to_string())
    }
}

/// `(key, exception type name, message)` of an entry that failed validation.
type BadEntry = (String, String, String);

/// Validates every entry of a map in HF form (`hf=True`) or Haystack's string form, keeping
/// the good ones: returns the map of good entries and `(key, exception type, message)` per bad one.
#[pyfunction]
#[pyo3(signature = (mapping, *, hf))]
pub fn _check_entries(
    mapping: &Bound<'_, PyAny>,
    hf: bool,
) -> PyResult<(PyDeviceMap, Vec<BadEntry>)> {
    let py = mapping.py();
    let mut errors = Vec::new();
    let sink = OnError::Collect(&mut errors);
    let map = if hf {
        map_from_hf(mapping, sink)?
    } else {
        map_from_strings(mapping, sink)?
    };
    let errors = errors
        .into_iter()
        .map(|(key, err)| {
            let kind = err
                .get_type(py)
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            (key, kind, err.value(py).to_string())
        })
        .collect();
    Ok((PyDeviceMap::from_map(map), errors))
}
