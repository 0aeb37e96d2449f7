//! Planning for Python: `_plan`, `_stages`, `_module_sizes`, `PlanReport`, and
//! `DeviceMap.to_hf()`. Only translation: the work is in `crate::plan`, done with the GIL
//! released.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use super::checkpoint::PyCheckpointSizes;
use super::convert::map_to_hf;
use super::dtype::dtype_from_py;
use super::errors::{short_repr, wrong_type};
use super::guard::guard;
use super::keys::KeyCache;
use super::lookup::PySummary;
use super::map::PyDeviceMap;
use crate::device::Device;
use crate::dtype;
use crate::error::Error;
use crate::plan::{self, Budgets, Model, NoSplit, Plan, Strategy};

/// Tensor sizes in order, and groups of tied tensor names.
type SizesAndTies = (Vec<(String, u64)>, Vec<Vec<String>>);

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
