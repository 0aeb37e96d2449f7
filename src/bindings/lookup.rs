//! Tensor-name lookup on `DeviceMap` for Python: `device_for`, `devices_for`,
//! `group_by_device`, `check`, `coverage`, `explain`, `diff`, `summary`, and their result types.
//! The work is in `crate::lookup`; this file reads names and builds results.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::convert::{device_objects, map_from_devices};
use super::device::{device_to_py, PyDevice};
use super::errors::{short_repr, user_warning, wrong_type};
use super::guard::guard;
use super::map::PyDeviceMap;
use crate::device::Device;
use crate::lookup::{self, Coverage, Diff, Explanation, LookupError, NearMiss, Summary, Unused};
use crate::map::{DeviceMap, Slot};

/// Batches at least this long are looked up without the GIL, so other threads run meanwhile.
const DETACH_AT: usize = 4096;

/// One tensor name: a `str`.
fn name_str<'a>(name: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match name.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?),
        Err(_) => Err(wrong_type("tensor names must be str", name).into()),
    }
}

/// The text of many names, copied end to end into one buffer, for calls whose results do not
/// hand the name objects back. Reading a list's items borrowed and copying their bytes costs
/// less than holding a reference to each (two calls per name on the stable ABI), and the copy
/// can be read without the GIL whatever other threads do to the list meanwhile.
struct NameTexts {
    text: String,
    ends: Vec<usize>,
}

impl NameTexts {
    fn read(names: &Bound<'_, PyAny>) -> PyResult<Self> {
        let hint = names_hint(names);
        let mut out = NameTexts {
            text: String::with_capacity(hint * 48),
            ends: Vec::with_capacity(hint),
        };
        for_each_name(names, |_, _, text| {
            out.text.push_str(text);
            out.ends.push(out.text.len());
            Ok(())
        })?;
        Ok(out)
    }

    fn strs(&self) -> Vec<&str> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let name = &self.text[start..end];
                start = end;
                name
            })
            .collect()
    }
}

/// Calls `each` with every name of a list, tuple or other iterable of `str` and its
/// position, reading list and tuple items borrowed and their text in place (no copy, no
/// reference taken): a batch lookup then reads each name once. `each` must not run Python
/// code or let go of the GIL (nothing may change the list meanwhile); taking a reference to a
/// name (`clone`) is fine.
fn for_each_name<'py>(
    names: &Bound<'py, PyAny>,
    mut each: impl FnMut(usize, &Bound<'py, PyString>, &str) -> PyResult<()>,
) -> PyResult<()> {
    let mut one = |i: usize, value: &Bound<'py, PyAny>| -> PyResult<()> {
        match value.cast::<PyString>() {
            Ok(text) => each(i, text, text.to_str()?),
            Err(_) => Err(not_a_name(i, value)),
        }
    };
    if let Ok(list) = names.cast::<PyList>() {
        let len = list.len();
        for i in 0..len {
            // SAFETY: `i` is below the list's length, and nothing in this loop runs Python code
            // or lets go of the GIL, so the list cannot change under it; the item is only used
            // while the list holds it.
            let item = unsafe {
                if i + PREFETCH_AHEAD < len {
                    let ahead = (i + PREFETCH_AHEAD) as pyo3::ffi::Py_ssize_t;
                    prefetch(pyo3::ffi::PyList_GetItem(list.as_ptr(), ahead));
                }
                let ptr = pyo3::ffi::PyList_GetItem(list.as_ptr(), i as pyo3::ffi::Py_ssize_t);
                pyo3::Borrowed::from_ptr_or_err(list.py(), ptr)?
            };
            one(i, &item)?;
        }
    } else if names.is_instance_of::<PyString>() {
        return Err(wrong_type(
            "expected a sequence of tensor names (str), not one str",
            names,
        )
        .into());
    } else if let Ok(tuple) = names.cast::<PyTuple>() {
        for (i, item) in tuple.iter_borrowed().enumerate() {
            one(i, &item)?;
        }
    } else {
        let iter = names.try_iter().map_err(|_| {
            PyErr::from(wrong_type(
                "expected a sequence of tensor names (str)",
                names,
            ))
        })?;
        for (i, item) in iter.enumerate() {
            one(i, &item?)?;
        }
    }
    Ok(())
}

/// How many items ahead of the one read a list's items are fetched into the cache: names not
/// in the order they were made lie scattered in memory, and a lookup waits for each one.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to bring the first two cache lines of an object (a `str`'s header and the
/// start of its text) into the cache; a hint only, never a read.
#[inline(always)]
fn prefetch(object: *mut pyo3::ffi::PyObject) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let at = object.cast::<i8>().cast_const();
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(at);
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = object;
}

/// How many names a batch will have, where known without reading them.
fn names_hint(names: &Bound<'_, PyAny>) -> usize {
    names.len().unwrap_or(0)
}

fn not_a_name(i: usize, value: &Bound<'_, PyAny>) -> PyErr {
    LookupError::NotAName {
        position: i,
        type_name: value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        repr: short_repr(value),
    }
    .into()
}

/// Runs `f` without the GIL when the batch is big enough to pay for letting go of it.
fn maybe_detached<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_AT {
        py.detach(f)
    } else {
        f()
    }
}

fn device_or_none(py: Python<'_>, device: Option<Device>) -> PyResult<Py<PyAny>> {
    match device {
        Some(device) => Ok(device_to_py(py, device)?.into_any().unbind()),
        None => Ok(py.None()),
    }
}

/// `(key, Device)` pairs as a tuple of tuples.
fn pairs<'py>(py: Python<'py>, items: &[(String, Device)]) -> PyResult<Bound<'py, PyTuple>> {
    let items = items
        .iter()
        .map(|(key, device)| (key.as_str(), device_to_py(py, *device)?).into_pyobject(py))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

#[pymethods]
impl PyDeviceMap {
    /// The device of the key that is the longest prefix of `name` at a dot boundary.
    fn device_for<'py>(&self, name: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDevice>> {
        guard("DeviceMap.device_for", || {
            let name_text = name_str(name)?;
            // Under the lock, as `dm[k]` is: a short, pure-Rust read makes no snapshot.
            let device = self.read(|map| lookup::require_device(map, name_text))?;
            device_to_py(name.py(), device)
        })
    }

    /// `device_for` of each name, in one call.
    ///
    /// With a `default` (`devices_for(names, None)`), a name nothing covers gets `default`
    /// instead of raising `KeyError`, as `dict.pop(key, default)` does: a loader that keeps its
    /// own fallback makes one call, not one per uncovered name.
    #[pyo3(signature = (names, *default))]
    fn devices_for<'py>(
        &self,
        names: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyList>> {
        guard("DeviceMap.devices_for", || {
            let py = names.py();
            if default.len() > 1 {
                let got = default.len() + 1;
                return Err(LookupError::TooManyArguments { got }.into());
            }
            // One pass over the names, each read in place, on one snapshot of the map; the
            // device objects (one per slot) are made after it, so no Python code runs while
            // the names are borrowed.
            let map = self.snapshot();
            let hint = names_hint(names);
            let mut batch = lookup::Batch::new(&map, hint);
            if default.is_empty() {
                let mut slots = Vec::with_capacity(hint);
                for_each_name(names, |_, _, text| {
                    slots.push(batch.require(text)?);
                    Ok(())
                })?;
                batch.finish()?;
                let devices = device_objects(py, &map)?;
                return PyList::new(py, slots.iter().map(|&slot| &devices[slot as usize]));
            }
            let mut slots = Vec::with_capacity(hint);
            for_each_name(names, |_, _, text| {
                slots.push(batch.slot(text)?);
                Ok(())
            })?;
            let devices = device_objects(py, &map)?;
            let fallback = default.get_item(0)?;
            PyList::new(
                py,
                slots.iter().map(|slot| match slot {
                    Some(slot) => devices[*slot as usize].clone().into_any(),
                    None => fallback.clone(),
                }),
            )
        })
    }

    /// The names per device, in order of each device's first name; each list keeps input order.
    fn group_by_device<'py>(&self, names: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        guard("DeviceMap.group_by_device", || {
            let py = names.py();
            let map = self.snapshot();
            // One pass: each name read in place, looked up, and kept (a reference) in its
            // device's group; groups in order of their first name.
            let mut batch = lookup::Batch::new(&map, names_hint(names));
            let mut group_of: Vec<Option<usize>> = vec![None; map.table().len()];
            let mut groups: Vec<(Slot, Vec<Bound<'py, PyString>>)> = Vec::new();
            for_each_name(names, |_, name, text| {
                let slot = batch.require(text)?;
                // An uncovered name gets slot 0, which an empty map does not have (it was an
                // index out of bounds); `finish` then raises the KeyError naming it.
                let Some(entry) = group_of.get_mut(slot as usize) else {
                    return Ok(());
                };
                let group = *entry.get_or_insert_with(|| {
                    groups.push((slot, Vec::new()));
                    groups.len() - 1
                });
                groups[group].1.push(name.clone());
                Ok(())
            })?;
            batch.finish()?;
            let devices = device_objects(py, &map)?;
            let dict = PyDict::new(py);
            for (slot, names) in groups {
                dict.set_item(&devices[slot as usize], PyList::new(py, names)?)?;
            }
            Ok(dict)
        })
    }

    /// Which names no key covers and which keys cover no name, as data.
    fn coverage(&self, names: &Bound<'_, PyAny>) -> PyResult<PyCoverage> {
        guard("DeviceMap.coverage", || {
            let map = self.snapshot();
            let buffer = NameTexts::read(names)?;
            let texts = buffer.strs();
            let coverage =
                maybe_detached(names.py(), texts.len(), || lookup::coverage(&map, &texts))?;
            Ok(PyCoverage::new(map, &texts, coverage))
        })
    }

    /// Raises `ValueError` unless every name is covered; keys covering no name are an error,
    /// a warning or nothing as `unused` says.
    #[pyo3(signature = (names, *, unused = "error"))]
    fn check(&self, names: &Bound<'_, PyAny>, unused: &str) -> PyResult<()> {
        guard("DeviceMap.check", || {
            let py = names.py();
            let unused: Unused = unused.parse()?;
            let map = self.snapshot();
            let buffer = NameTexts::read(names)?;
            let texts = buffer.strs();
            let warning = maybe_detached(py, texts.len(), || lookup::check(&map, &texts, unused))?;
            if let Some(text) = warning {
                user_warning(py, &text)?;
            }
            Ok(())
        })
    }

    /// Which key decides `name`'s device, the shorter keys it shadows, and near misses.
    fn explain(&self, name: &Bound<'_, PyAny>) -> PyResult<PyExplanation> {
        guard("DeviceMap.explain", || {
            let map = self.snapshot();
            let explanation = lookup::explain(&map, name_str(name)?)?;
            Ok(PyExplanation(explanation))
        })
    }

    /// What changed from this map to `other`: keys added, removed, and moved to another device;
    /// and whether the two place every name the same way (on `names` when given).
    #[pyo3(signature = (other, names = None))]
    fn diff(
        &self,
        other: &Bound<'_, PyAny>,
        names: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMapDiff> {
        guard("DeviceMap.diff", || {
            let theirs = match other.cast::<PyDeviceMap>() {
                Ok(map) => map.borrow().snapshot(),
                Err(_) if other.hasattr("items")? => Arc::new(map_from_devices(other)?),
                Err(_) => {
                    return Err(wrong_type(
                        "expected a DeviceMap or a mapping of str to Device",
                        other,
                    )
                    .into())
                }
            };
            let mine = self.snapshot();
            let Some(names) = names.filter(|n| !n.is_none()) else {
                return Ok(PyMapDiff(lookup::diff(&mine, &theirs)));
            };
            let buffer = NameTexts::read(names)?;
            let texts = buffer.strs();
            Ok(PyMapDiff(lookup::diff_on_names(&mine, &theirs, &texts)?))
        })
    }

    /// Entries per device; with `sizes` (tensor name -> bytes, a mapping or `(name, bytes)`
    /// pairs), also tensors and bytes per device.
    #[pyo3(signature = (sizes = None))]
    fn summary(&self, sizes: Option<&Bound<'_, PyAny>>) -> PyResult<PySummary> {
        guard("DeviceMap.summary", || {
            let map = self.snapshot();
            let Some(sizes) = sizes.filter(|s| !s.is_none()) else {
                return Ok(PySummary(lookup::summary(&map)));
            };
            let pairs = read_sizes(sizes)?;
            let texts = pairs
                .iter()
                .map(|(name, bytes)| Ok((name.to_str()?, *bytes)))
                .collect::<PyResult<Vec<_>>>()?;
            let summary = maybe_detached(sizes.py(), texts.len(), || {
                lookup::summary_with_sizes(&map, texts.iter().copied())
            })?;
            Ok(PySummary(summary))
        })
    }
}

/// `(name, bytes)` from a mapping or a list of pairs, by the one sizes reader.
fn read_sizes<'py>(sizes: &Bound<'py, PyAny>) -> PyResult<Vec<(Bound<'py, PyString>, u64)>> {
    Ok(super::sizes::read_sizes(sizes, |name| Ok(name.clone()))?.entries)
}

/// The result of `DeviceMap.coverage(names)`.
#[pyclass(module = "devicemap", name = "Coverage", frozen)]
pub struct PyCoverage {
    names: usize,
    uncovered: Vec<String>,
    unused_keys: Vec<String>,
    text: String,
}

impl PyCoverage {
    fn new(map: Arc<DeviceMap>, names: &[&str], coverage: Coverage) -> Self {
        let text = lookup::coverage_text(&map, names, &coverage, true);
        PyCoverage {
            names: coverage.names,
            uncovered: coverage
                .uncovered
                .iter()
                .map(|&i| names[i].to_owned())
                .collect(),
            unused_keys: coverage
                .unused
                .iter()
                .filter_map(|&p| map.get_index(p))
                .map(|(key, _)| key.to_owned())
                .collect(),
            text,
        }
    }
}

#[pymethods]
impl PyCoverage {
    /// How many names were checked.
    #[getter]
    fn names(&self) -> usize {
        self.names
    }

    /// The names no key covers, in input order.
    #[getter]
    fn uncovered<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.uncovered)
    }

    /// The uncovered names as `(pattern, count)` runs: `("model.layers.{3..60}.mlp.w", 58)`.
    #[getter]
    fn uncovered_groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let groups = lookup::compact(&self.uncovered);
        PyTuple::new(py, groups.into_iter().map(|g| (g.pattern, g.count)))
    }

    /// Keys that cover no name, in map order.
    #[getter]
    fn unused_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.unused_keys)
    }

    /// Whether every name is covered.
    #[getter]
    fn complete(&self) -> bool {
        self.uncovered.is_empty()
    }

    fn __str__(&self) -> String {
        self.text.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Coverage(names={}, uncovered={}, unused_keys={})",
            self.names,
            self.uncovered.len(),
            self.unused_keys.len()
        )
    }
}

/// One key that nearly covers a name, in `Explanation.near_misses`.
#[pyclass(module = "devicemap", name = "NearMiss", frozen)]
pub struct PyNearMiss(NearMiss);

#[pymethods]
impl PyNearMiss {
    #[getter]
    fn key(&self) -> &str {
        &self.0.key
    }

    #[getter]
    fn device<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDevice>> {
        device_to_py(py, self.0.device)
    }

    /// `"no-dot-boundary"`, `"component-differs"` or `"inside-name"`.
    #[getter]
    fn reason(&self) -> &'static str {
        self.0.miss.code()
    }

    /// The reason in words.
    #[getter]
    fn detail(&self) -> String {
        self.0.miss.describe()
    }

    fn __str__(&self) -> String {
        format!(
            "'{}' ({}): {}",
            self.0.key,
            self.0.device,
            self.0.miss.describe()
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "NearMiss(key={:?}, device={}, reason={:?})",
            self.0.key,
            self.0.device,
            self.0.miss.code()
        )
    }
}

/// The result of `DeviceMap.explain(name)`.
#[pyclass(module = "devicemap", name = "Explanation", frozen)]
pub struct PyExplanation(Explanation);

#[pymethods]
impl PyExplanation {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// The key that decides the device, or `None` when no key covers the name.
    #[getter]
    fn key(&self) -> Option<&str> {
        self.0.matched.as_ref().map(|(key, _)| key.as_str())
    }

    #[getter]
    fn device(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        device_or_none(py, self.0.matched.as_ref().map(|(_, device)| *device))
    }

    /// Shorter keys that also cover the name and lose to `key`, longest first, as `(key, Device)`.
    #[getter]
    fn shadowed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        pairs(py, &self.0.shadowed)
    }

    #[getter]
    fn near_misses<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items = self
            .0
            .near_misses
            .iter()
            .map(|near| Bound::new(py, PyNearMiss(near.clone())))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, items)
    }

    /// Near misses beyond those listed in `near_misses`, counted only.
    #[getter]
    fn more_near_misses(&self) -> usize {
        self.0.more_near_misses
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "Explanation(name={}, key={}, device={})",
            lookup::quoted(&self.0.name),
            self.key().map_or_else(|| "None".to_owned(), lookup::quoted),
            self.0
                .matched
                .as_ref()
                .map_or_else(|| "None".to_owned(), |(_, d)| d.to_string())
        )
    }
}

/// The result of `DeviceMap.diff(other)`.
#[pyclass(module = "devicemap", name = "MapDiff", frozen)]
pub struct PyMapDiff(Diff);

#[pymethods]
impl PyMapDiff {
    /// Keys only in the other map, as `(key, Device)`.
    #[getter]
    fn added<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        pairs(py, &self.0.added)
    }

    /// Keys only in this map, as `(key, Device)`.
    #[getter]
    fn removed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        pairs(py, &self.0.removed)
    }

    /// Keys in both whose device changed, as `(key, old Device, new Device)`.
    #[getter]
    fn moved<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items = self
            .0
            .moved
            .iter()
            .map(|(key, old, new)| {
                (
                    key.as_str(),
                    device_to_py(py, *old)?,
                    device_to_py(py, *new)?,
                )
                    .into_pyobject(py)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, items)
    }

    /// Whether the two maps place every name compared (the names given, else every name) the
    /// same way, whatever their keys.
    #[getter]
    fn equivalent(&self) -> bool {
        self.0.equivalent()
    }

    /// The names (or keys, without names) placed differently, as `(name, old Device or None,
    /// new Device or None)`; `None` where the map does not cover it.
    #[getter]
    fn placed_differently<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let device = |d: Option<Device>| d.map(|d| device_to_py(py, d)).transpose();
        let items = self
            .0
            .placement
            .different
            .iter()
            .map(|(name, old, new)| (name.as_str(), device(*old)?, device(*new)?).into_pyobject(py))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, items)
    }

    /// True when any key changed.
    fn __bool__(&self) -> bool {
        !self.0.is_empty()
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "MapDiff(added={}, removed={}, moved={})",
            self.0.added.len(),
            self.0.removed.len(),
            self.0.moved.len()
        )
    }
}

/// The result of `DeviceMap.summary(sizes=None)`.
#[pyclass(module = "devicemap", name = "MapSummary", frozen)]
pub struct PySummary(pub(crate) Summary);

impl PySummary {
    fn per_device<'py>(
        &self,
        py: Python<'py>,
        value: impl Fn(&lookup::DeviceUsage) -> u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for usage in &self.0.devices {
            dict.set_item(device_to_py(py, usage.device)?, value(usage))?;
        }
        Ok(dict)
    }
}

#[pymethods]
impl PySummary {
    /// Map entries per device, in order of each device's first entry.
    #[getter]
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for usage in self.0.devices.iter().filter(|u| u.entries > 0) {
            dict.set_item(device_to_py(py, usage.device)?, usage.entries)?;
        }
        Ok(dict)
    }

    /// Tensors per device, or `None` without sizes.
    #[getter]
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.0
            .sized
            .then(|| self.per_device(py, |u| u.tensors as u64))
            .transpose()
    }

    /// Bytes per device, or `None` without sizes.
    #[getter]
    fn bytes<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.0
            .sized
            .then(|| self.per_device(py, |u| u.bytes))
            .transpose()
    }

    /// Tensors no key covers (0 without sizes).
    #[getter]
    fn uncovered_tensors(&self) -> usize {
        self.0.uncovered_tensors
    }

    /// Their bytes (0 without sizes).
    #[getter]
    fn uncovered_bytes(&self) -> u64 {
        self.0.uncovered_bytes
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "MapSummary(entries={}, bytes={})",
            self.entries(py)?.repr()?,
            match self.bytes(py)? {
                Some(bytes) => bytes.repr()?.to_string(),
                None => "None".to_owned(),
            }
        ))
    }
}
