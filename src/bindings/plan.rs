//! Planning for Python: `tensor_sizes`, `example_model`, `_plan`, `_stages`, `_module_sizes`,
//! `PlanReport`, and `DeviceMap.to_hf()`. Only translation: the work is in `crate::plan`,
//! `crate::checkpoint` and `crate::examples`, done with the GIL released.

use std::cell::RefCell;
use std::collections::hash_map::{Entry, HashMap};
use std::path::PathBuf;

use ahash::RandomState;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::convert::{map_to_hf, presized_dict};
use super::errors::{short_repr, wrong_type};
use super::guard::guard;
use super::keys::KeyCache;
use super::lookup::PySummary;
use super::map::PyDeviceMap;
use crate::checkpoint::{self, Checkpoint, CheckpointSizes, Observed};
use crate::device::Device;
use crate::dtype::{self, Dtype};
use crate::error::Error;
use crate::plan::{self, Budgets, Model, NoSplit, Plan, Strategy};

/// Threads for reading headers: one per core, at most 8. Parsing JSON is the work, so more
/// threads than cores would only add start-up and fresh allocator heaps (page faults).
fn reader_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8))
        .unwrap_or(1)
}

/// `None`, a torch dtype or its name: `torch.bfloat16`, `"bfloat16"`, `"BF16"`.
fn dtype_from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Dtype>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Some(dtype::parse_dtype(text.to_str()?)?));
    }
    // A torch.dtype prints as "torch.bfloat16"; anything else is refused by name.
    let type_name = value.get_type().name()?.to_string();
    if type_name == "dtype" {
        return Ok(Some(dtype::parse_dtype(&value.str()?.to_string())?));
    }
    Err(wrong_type(
        "dtype must be a torch.dtype or its name such as 'bfloat16'",
        value,
    )
    .into())
}

fn path_from_py(value: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let os = value.py().import("os")?;
    let text = os
        .call_method1("fspath", (value,))
        .map_err(|_| wrong_type("expected a path (str or os.PathLike)", value))?;
    match text.cast::<PyString>() {
        Ok(s) => Ok(PathBuf::from(s.to_str()?)),
        Err(_) => Err(wrong_type("expected a str path", value).into()),
    }
}

/// A checkpoint path (file, index, directory) or a list of `.safetensors` files.
pub fn checkpoint_from_py(source: &Bound<'_, PyAny>) -> PyResult<Checkpoint> {
    if let Ok(list) = source.cast::<PyList>() {
        let files = list
            .iter()
            .map(|item| path_from_py(&item))
            .collect::<PyResult<Vec<_>>>()?;
        if files.is_empty() {
            return Err(PyValueError::new_err(
                "The list of checkpoint files is empty",
            ));
        }
        return Ok(Checkpoint::Files(files));
    }
    if let Ok(tuple) = source.cast::<PyTuple>() {
        return checkpoint_from_py(&PyList::new(source.py(), tuple.iter())?.into_any());
    }
    let path = path_from_py(source)?;
    Ok(source.py().detach(|| checkpoint::resolve(&path))?)
}

/// One int object per distinct size: a model has a few dozen (every expert's weight is the
/// same size), so a dict of 10^5 sizes holds a few dozen ints instead of one per tensor.
#[derive(Default)]
struct Ints(HashMap<u64, Py<PyInt>, RandomState>);

impl Ints {
    fn get<'a, 'py>(&'a mut self, py: Python<'py>, bytes: u64) -> PyResult<&'a Bound<'py, PyInt>> {
        let int = match self.0.entry(bytes) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => slot.insert(bytes.into_pyobject(py)?.unbind()),
        };
        Ok(int.bind(py))
    }
}

/// `{name: bytes}` from `(name, bytes)` entries, in their order.
fn sizes_dict<'py>(
    py: Python<'py>,
    len: usize,
    entries: impl Iterator<Item = (PyResult<Bound<'py, PyString>>, u64)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = presized_dict(py, len)?;
    let mut ints = Ints::default();
    for (key, bytes) in entries {
        dict.set_item(key?, ints.get(py, bytes)?)?;
    }
    Ok(dict)
}

fn sizes_to_dict<'py>(py: Python<'py>, sizes: &[(String, u64)]) -> PyResult<Bound<'py, PyDict>> {
    let entries = sizes
        .iter()
        .map(|(name, bytes)| (Ok(PyString::new(py, name)), *bytes));
    sizes_dict(py, sizes.len(), entries)
}

/// What `read_checkpoint` calls with each file as it is handed on (with the GIL).
type OnFile<'a> = dyn FnMut(Python<'_>, Observed<'_>) -> PyResult<()> + Send + 'a;

/// A checkpoint's sizes, read with the GIL released. `progress(done, total)` is called (with
/// the GIL) as files are read, and `on_file` with each file as `checkpoint_sizes` hands it on
/// (see `checkpoint::Observed`) while later files are still being read.
fn read_checkpoint(
    py: Python<'_>,
    checkpoint: &Checkpoint,
    dtype: Option<Dtype>,
    progress: Option<&Bound<'_, PyAny>>,
    mut on_file: Option<&mut OnFile<'_>>,
) -> PyResult<CheckpointSizes> {
    let progress = progress
        .filter(|p| !p.is_none())
        .map(|p| p.clone().unbind());
    let mut failure: Option<PyErr> = None;
    let result = py.detach(|| {
        let failure = RefCell::new(&mut failure);
        let mut report = |done: usize, total: usize| {
            let failed = failure.borrow().is_some();
            if let (Some(callback), false) = (&progress, failed) {
                Python::attach(|py| {
                    if let Err(err) = callback.bind(py).call1((done, total)) {
                        **failure.borrow_mut() = Some(err);
                    }
                });
            }
        };
        let mut observe = |observed: Observed<'_>| {
            let failed = failure.borrow().is_some();
            if let (Some(on_file), false) = (on_file.as_deref_mut(), failed) {
                Python::attach(|py| {
                    if let Err(err) = on_file(py, observed) {
                        **failure.borrow_mut() = Some(err);
                    }
                });
            }
        };
        checkpoint::checkpoint_sizes(
            checkpoint,
            dtype,
            reader_threads(),
            &mut report,
            &mut observe,
        )
    });
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(result?)
}

/// The `tensor_sizes` dict, built as the files are handed on while later ones are read:
/// each file's names become Python strings (their hashes computed, and cached in them), and
/// while the files follow the model, their entries go into the result in model order, so that
/// little is left to do after the last file.
struct SizesBuilder {
    dtype: Option<Dtype>,
    /// Every name so far, in file order (`Size::seen`).
    names: Vec<Py<PyString>>,
    /// The result, built file by file while the files follow the model.
    dict: Option<Py<PyDict>>,
    following: bool,
    ints: Ints,
}

impl SizesBuilder {
    fn new(dtype: Option<Dtype>) -> Self {
        SizesBuilder {
            dtype,
            names: Vec::new(),
            dict: None,
            following: true,
            ints: Ints::default(),
        }
    }

    fn add(&mut self, py: Python<'_>, observed: Observed<'_>) -> PyResult<()> {
        let first = self.names.len();
        for (name, _) in observed.header.iter() {
            let name = PyString::new(py, name);
            name.hash()?;
            self.names.push(name.unbind());
        }
        let order = match observed.order {
            Some(order) if self.following => order,
            _ => {
                self.following = false;
                self.dict = None;
                return Ok(());
            }
        };
        let dict = match &self.dict {
            Some(dict) => dict.bind(py).clone(),
            None => {
                // Shards are about the same size.
                let guess = observed.header.len().saturating_mul(observed.files);
                let dict = presized_dict(py, guess.min(1 << 24))?;
                self.dict = Some(dict.clone().unbind());
                dict
            }
        };
        for &at in order {
            let at = at as usize;
            let bytes = checkpoint::loaded_bytes(&observed.header.tensors[at], self.dtype);
            dict.set_item(self.names[first + at].bind(py), self.ints.get(py, bytes)?)?;
        }
        Ok(())
    }

    /// The result: the dict built as files came in when they all followed the model, else one
    /// built now in the order of `sizes`.
    fn finish<'py>(
        mut self,
        py: Python<'py>,
        sizes: &CheckpointSizes,
    ) -> PyResult<Bound<'py, PyDict>> {
        if let Some(dict) = self.dict.take().filter(|_| self.following) {
            let dict = dict.into_bound(py);
            if dict.len() == sizes.len() {
                return Ok(dict);
            }
            return Err(Error::Internal(format!(
                "the sizes built file by file hold {} tensors, not {}",
                dict.len(),
                sizes.len()
            ))
            .into());
        }
        let entries = sizes.iter().map(|(_, size)| {
            let name = self.names.get(size.seen as usize).ok_or_else(|| {
                PyErr::from(Error::Internal(
                    "a tensor name was not converted".to_owned(),
                ))
            });
            (name.map(|n| n.bind(py).clone()), size.bytes)
        });
        sizes_dict(py, sizes.len(), entries)
    }
}

/// Per-tensor bytes from the safetensors headers of `path`, in model order.
#[pyfunction]
#[pyo3(signature = (path, dtype = None, *, progress = None))]
pub fn tensor_sizes<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    guard("tensor_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let checkpoint = checkpoint_from_py(path)?;
        let mut builder = SizesBuilder::new(dtype);
        let mut on_file = |py: Python<'_>, observed: Observed<'_>| builder.add(py, observed);
        let sizes = read_checkpoint(py, &checkpoint, dtype, progress, Some(&mut on_file))?;
        builder.finish(py, &sizes)
    })
}

/// Tensor sizes in order, and groups of tied tensor names.
type SizesAndTies = (Vec<(String, u64)>, Vec<Vec<String>>);

/// A checkpoint's sizes in model order, kept in Rust between reading them and planning with
/// them: `plan(checkpoint)` hands them from `_checkpoint_sizes` to `_plan` without making 10^5
/// Python tuples and reading them back.
#[pyclass(frozen, module = "devicemap._core", name = "_CheckpointSizes")]
pub struct PyCheckpointSizes {
    sizes: Vec<(String, u64)>,
}

#[pymethods]
impl PyCheckpointSizes {
    fn __len__(&self) -> usize {
        self.sizes.len()
    }
}

/// Sizes and tied groups (from `config.json` beside it) of a checkpoint, for `plan`.
#[pyfunction]
#[pyo3(signature = (path, dtype = None, progress = None))]
pub fn _checkpoint_sizes<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<(PyCheckpointSizes, Vec<Vec<String>>)> {
    guard("_checkpoint_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let checkpoint = checkpoint_from_py(path)?;
        let sizes = read_checkpoint(py, &checkpoint, dtype, progress, None)?.to_vec();
        let tied = checkpoint::config_ties(&checkpoint.dir(), &sizes)?;
        Ok((PyCheckpointSizes { sizes }, tied))
    })
}

/// The tensor sizes of a built-in example model.
#[pyfunction]
#[pyo3(signature = (name, dtype = None))]
pub fn example_model<'py>(
    py: Python<'py>,
    name: &str,
    dtype: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    guard("example_model", || {
        let dtype = dtype_from_py(dtype)?;
        let name = name.to_owned();
        let sizes = py.detach(|| crate::examples::sizes(&name, dtype))?;
        sizes_to_dict(py, &sizes)
    })
}

/// The tensors of a built-in example as `(name, safetensors dtype, elements)`, for writing
/// checkpoints with real headers (benchmarks, tests).
#[pyfunction]
pub fn _example_tensors(name: &str) -> PyResult<Vec<(String, String, u64)>> {
    guard("_example_tensors", || {
        Ok(crate::examples::tensors(name)?
            .into_iter()
            .map(|(n, d, e)| (n, d.to_string(), e))
            .collect())
    })
}

/// Bytes of a size value: a non-negative `int` (not `bool`).
fn bytes_from_py(key: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.cast::<PyInt>().is_ok() && value.cast::<PyBool>().is_err() {
        return value.extract::<u64>().map_err(|_| {
            Error::Invalid(format!(
                "Size of tensor '{key}' must be a non-negative int (bytes), got {}",
                short_repr(value)
            ))
            .into()
        });
    }
    Err(wrong_type(
        &format!("Size of tensor '{key}' must be an int (bytes)"),
        value,
    )
    .into())
}

/// `{name: bytes}` (a dict, a mapping, a list of pairs, or a checkpoint's sizes) in its order.
fn sizes_from_py(source: &Bound<'_, PyAny>) -> PyResult<Vec<(String, u64)>> {
    if let Ok(read) = source.cast::<PyCheckpointSizes>() {
        return Ok(read.get().sizes.clone());
    }
    let mut out = Vec::new();
    let mut push = |key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>| -> PyResult<()> {
        let name = match key.cast::<PyString>() {
            Ok(s) => s.to_str()?.to_owned(),
            Err(_) => return Err(wrong_type("Tensor names must be str", key).into()),
        };
        let bytes = bytes_from_py(&name, value)?;
        out.push((name, bytes));
        Ok(())
    };
    if let Ok(dict) = source.cast::<PyDict>() {
        for (key, value) in dict.iter() {
            push(&key, &value)?;
        }
        return Ok(out);
    } else if let Ok(list) = source.cast::<PyList>() {
        for item in list.iter() {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            push(&key, &value)?;
        }
    } else if source.hasattr("items")? {
        for item in source.call_method0("items")?.try_iter()? {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            push(&key, &value)?;
        }
    } else {
        return Err(wrong_type("expected a mapping of tensor names to bytes", source).into());
    }
    // Only a dict guarantees distinct names.
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    for (name, _) in &out {
        if !seen.insert(name.as_str()) {
            return Err(Error::Invalid(format!("Tensor '{name}' is listed twice")).into());
        }
    }
    Ok(out)
}

/// One `max_memory` value: an int (bytes), a finite non-negative float, or a size string.
fn budget_value(key: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let entry = |message: String| -> PyErr {
        Error::Invalid(format!(
            "max_memory[{key}] = {}: {message}",
            short_repr(value)
        ))
        .into()
    };
    if value.cast::<PyBool>().is_ok() {
        return Err(entry(
            "expected bytes (int) or a size such as '20GiB'".into(),
        ));
    }
    if value.cast::<PyInt>().is_ok() {
        return value
            .extract::<u64>()
            .map_err(|_| entry("must be >= 0 bytes".into()));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let f = f.value();
        if !f.is_finite() || f < 0.0 || f >= u64::MAX as f64 {
            return Err(entry("must be a finite number of bytes >= 0".into()));
        }
        return Ok(f as u64);
    }
    if let Ok(text) = value.cast::<PyString>() {
        return plan::parse_size(text.to_str()?).map_err(|e| entry(e.to_string()));
    }
    Err(entry(
        "expected bytes (int) or a size such as '20GiB'".into(),
    ))
}

/// `max_memory` in HF's form: `{0: "70GiB", 1: 70 * 2**30, "cpu": "200GiB", "disk": ...}`.
fn budgets_from_py(max_memory: &Bound<'_, PyAny>) -> PyResult<Budgets> {
    let dict = max_memory
        .cast::<PyDict>()
        .map_err(|_| wrong_type("max_memory must be a dict", max_memory))?;
    let mut devices = Vec::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let shown = short_repr(&key);
        let device = if key.cast::<PyBool>().is_ok() {
            None
        } else if key.cast::<PyInt>().is_ok() {
            key.extract::<u64>().ok().map(Device::gpu)
        } else if let Ok(text) = key.cast::<PyString>() {
            plan::parse_budget_key(text.to_str()?).ok()
        } else {
            None
        };
        let Some(device) = device else {
            return Err(Error::Invalid(format!(
                "Unknown max_memory key {shown}: expected a GPU id (0, 1, ...), 'cpu', 'disk' or 'mps'"
            ))
            .into());
        };
        devices.push((device, budget_value(&shown, &value)?));
    }
    Ok(Budgets::new(devices)?)
}

fn strings(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Vec<String>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if value.cast::<PyString>().is_ok() {
        return Err(wrong_type(&format!("{what} must be a list of str"), value).into());
    }
    let mut out = Vec::new();
    for item in value.try_iter()? {
        let item = item?;
        match item.cast::<PyString>() {
            Ok(s) => out.push(s.to_str()?.to_owned()),
            Err(_) => return Err(wrong_type(&format!("{what} must hold str"), &item).into()),
        }
    }
    Ok(Some(out))
}

fn tied_from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Vec<String>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    let mut groups = Vec::new();
    for group in value.try_iter()? {
        let group = group?;
        groups.push(strings(Some(&group), "each tied group")?.unwrap_or_default());
    }
    Ok(groups)
}

/// The result of planning: the map, and per device what went there and why.
#[pyclass(frozen, module = "devicemap", name = "PlanReport")]
pub struct PyPlanReport {
    plan: Plan,
}

fn device_use_dict<'py>(
    py: Python<'py>,
    used: &plan::DeviceUse,
    entries: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("device", used.device.to_string())?;
    d.set_item("budget", used.budget)?;
    d.set_item("reserved", used.reserved)?;
    d.set_item("bytes", used.bytes)?;
    d.set_item("blocks", used.blocks)?;
    d.set_item("tensors", used.tensors)?;
    d.set_item("entries", entries)?;
    let share = if used.budget == 0 {
        0.0
    } else {
        used.bytes as f64 / used.budget as f64
    };
    d.set_item("share", share)?;
    Ok(d)
}

#[pymethods]
impl PyPlanReport {
    /// The planned map (compact: one entry per module whose tensors share a device).
    #[getter]
    fn device_map(&self) -> PyDeviceMap {
        PyDeviceMap::from_map(self.plan.map.clone())
    }
    /// Whether every tensor was placed.
    #[getter]
    fn fits(&self) -> bool {
        self.plan.fits()
    }
    #[getter]
    fn strategy(&self) -> &'static str {
        self.plan.strategy.as_str()
    }
    #[getter]
    fn total_bytes(&self) -> u64 {
        self.plan.total_bytes
    }
    /// Bytes no device could take (0 when the plan fits).
    #[getter]
    fn missing_bytes(&self) -> u64 {
        self.plan.unplaced_bytes
    }
    #[getter]
    fn tensors(&self) -> usize {
        self.plan.tensors
    }
    #[getter]
    fn blocks(&self) -> usize {
        self.plan.blocks
    }
    #[getter]
    fn largest_block(&self) -> (String, u64) {
        self.plan.largest_block.clone()
    }
    /// Per device, in fill order: `device`, `budget`, `reserved`, `bytes`, `blocks`,
    /// `tensors`, `entries` (of the map), `share` (bytes / budget).
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .plan
            .devices
            .iter()
            .map(|u| {
                let entries = self
                    .plan
                    .summary
                    .devices
                    .iter()
                    .find(|s| s.device == u.device)
                    .map_or(0, |s| s.entries);
                device_use_dict(py, u, entries)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }
    /// `device_map.summary(sizes)`: the planned map looked up for every tensor (map entries,
    /// tensors and bytes per device; tied storage counted once).
    #[getter]
    fn summary(&self) -> PySummary {
        PySummary(self.plan.summary.clone())
    }
    /// Blocks placed off the accelerators: `(name, bytes, device)`.
    #[getter]
    fn spilled(&self) -> Vec<(String, u64, String)> {
        self.plan
            .spilled
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.bytes,
                    p.device.map(|d| d.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }
    /// Blocks no device could take: `(name, bytes)`.
    #[getter]
    fn unplaced(&self) -> Vec<(String, u64)> {
        self.plan
            .unplaced
            .iter()
            .map(|p| (p.name.clone(), p.bytes))
            .collect()
    }
    /// Sentences saying what spilled and why, or by how much the model does not fit.
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.plan.notes.clone()
    }
    /// `ValueError` saying by how much the model does not fit, if it does not.
    fn check(&self) -> PyResult<()> {
        Ok(self.plan.check_fits()?)
    }
    /// Everything above as plain data (JSON-ready).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("strategy", self.strategy())?;
        d.set_item("fits", self.fits())?;
        d.set_item("total_bytes", self.plan.total_bytes)?;
        d.set_item("missing_bytes", self.plan.unplaced_bytes)?;
        d.set_item("tensors", self.plan.tensors)?;
        d.set_item("blocks", self.plan.blocks)?;
        d.set_item("largest_block", self.largest_block())?;
        d.set_item("devices", self.devices(py)?)?;
        d.set_item("spilled", self.spilled())?;
        d.set_item("unplaced", self.unplaced())?;
        d.set_item("notes", self.notes())?;
        d.set_item(
            "device_map",
            map_to_hf(py, &self.plan.map, &KeyCache::empty())?,
        )?;
        Ok(d)
    }
    /// The map in HF's form (what `from_pretrained(device_map=...)` takes).
    fn to_hf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_hf(py, &self.plan.map, &KeyCache::empty())
    }
    fn __str__(&self) -> String {
        self.plan.text()
    }
    fn __repr__(&self) -> String {
        format!(
            "<PlanReport {} {} on {} devices, fits={}>",
            self.plan.strategy.as_str(),
            crate::units::human_bytes(self.plan.total_bytes),
            self.plan.devices.len(),
            if self.plan.fits() { "True" } else { "False" }
        )
    }
}

#[pymethods]
impl PyDeviceMap {
    /// The map in HF's form: GPU ids as `int`, other devices as strings.
    fn to_hf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard("DeviceMap.to_hf", || {
            let map = self.snapshot();
            map_to_hf(py, &map, &KeyCache::empty())
        })
    }
}

fn model_from_py(
    sizes: &Bound<'_, PyAny>,
    no_split: Option<&Bound<'_, PyAny>>,
    tied: Option<&Bound<'_, PyAny>>,
) -> PyResult<Model> {
    let no_split = match strings(no_split, "no_split")? {
        Some(patterns) => Some(NoSplit::new(&patterns)?),
        None => None,
    };
    Ok(Model {
        sizes: sizes_from_py(sizes)?,
        tied: tied_from_py(tied)?,
        no_split,
    })
}

/// Plans `sizes` (`{name: bytes}` in model order) onto `max_memory`.
#[pyfunction]
#[pyo3(signature = (sizes, max_memory, strategy = "balanced", no_split = None, tied = None))]
pub fn _plan(
    py: Python<'_>,
    sizes: &Bound<'_, PyAny>,
    max_memory: &Bound<'_, PyAny>,
    strategy: &str,
    no_split: Option<&Bound<'_, PyAny>>,
    tied: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyPlanReport> {
    guard("_plan", || {
        let strategy = Strategy::parse(strategy)?;
        let budgets = budgets_from_py(max_memory)?;
        let model = model_from_py(sizes, no_split, tied)?;
        let plan = py.detach(|| plan::plan(&model, &budgets, strategy))?;
        Ok(PyPlanReport { plan })
    })
}

/// Splits `sizes` into `n` contiguous byte-balanced stages: per stage, its module names.
#[pyfunction]
#[pyo3(signature = (sizes, n, no_split = None))]
pub fn _stages(
    py: Python<'_>,
    sizes: &Bound<'_, PyAny>,
    n: usize,
    no_split: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Vec<String>>> {
    guard("_stages", || {
        let model = model_from_py(sizes, no_split, None)?;
        Ok(py.detach(|| plan::stages(&model, n))?)
    })
}

/// Sizes of a torch module's parameters and buffers (bytes; floating-point ones re-sized to
/// `dtype` if given), and the groups of names that share one tensor (tied weights).
#[pyfunction]
#[pyo3(signature = (module, dtype = None))]
pub fn _module_sizes(
    module: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<SizesAndTies> {
    guard("_module_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let kwargs = PyDict::new(module.py());
        kwargs.set_item("remove_duplicate", false)?;
        let mut sizes: Vec<(String, u64)> = Vec::new();
        // Tensors seen by identity: a tied weight is one Parameter under several names.
        let mut seen: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        let mut groups: Vec<Vec<String>> = Vec::new();
        let mut group_of: std::collections::HashMap<usize, usize> =
            std::collections::HashMap::new();
        for method in ["named_parameters", "named_buffers"] {
            let items = module.call_method(method, (), Some(&kwargs))?;
            for item in items.try_iter()? {
                let (name, tensor): (String, Bound<'_, PyAny>) = item?.extract()?;
                let id = tensor.as_ptr() as usize;
                if let Some(&first) = seen.get(&id) {
                    let g = *group_of.entry(id).or_insert_with(|| {
                        groups.push(vec![sizes[first].0.clone()]);
                        groups.len() - 1
                    });
                    groups[g].push(name.clone());
                    sizes.push((name, 0));
                    continue;
                }
                // `nbytes` is one attribute read (meta tensors have it too); the dtype override
                // needs the stored dtype (`torch.bfloat16`, named as the dtype table names it)
                // and the element count. A dtype the table lacks (complex128, quantized ints)
                // is never a float a `torch_dtype` converts, so it keeps its bytes.
                let stored = match dtype {
                    Some(_) => {
                        dtype::parse_dtype(&tensor.getattr("dtype")?.str()?.to_string()).ok()
                    }
                    None => None,
                };
                let bytes = match stored {
                    Some(stored) => {
                        let elements: u64 = tensor.call_method0("numel")?.extract()?;
                        dtype::loaded_bytes(stored, elements, dtype)
                    }
                    None => tensor.getattr("nbytes")?.extract()?,
                };
                seen.insert(id, sizes.len());
                sizes.push((name, bytes));
            }
        }
        Ok((sizes, groups))
    })
}

/// Available and total system memory in bytes, where known.
#[pyfunction]
pub fn _system_memory() -> PyResult<(Option<u64>, Option<u64>)> {
    guard("_system_memory", || {
        Ok((plan::available_system_memory(), plan::total_system_memory()))
    })
}
