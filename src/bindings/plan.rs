//! Planning for Python: `_plan`, `_stages`, `_module_sizes`, `PlanReport`, and
//! `DeviceMap.to_hf()`. Only translation: the work is in `crate::plan`, done with the GIL
//! released.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use super::checkpoint::{module_tensor, PyCheckpointSizes};
use super::convert::map_to_hf;
use super::dtype::{dtype_from_py, dtype_name};
use super::errors::{short_repr, user_warning, wrong_type};
use super::guard::guard;
use super::inference::{config_from_py, count};
use super::keys::KeyCache;
use super::lookup::PySummary;
use super::map::PyDeviceMap;
use super::sizes::read_sizes;
use crate::device::Device;
use crate::error::Error;
use crate::plan::{
    self, BudgetValue, Budgets, Model, NoSplit, Plan, PlanError, Reserve, Strategy, Workload,
};

/// Tensor sizes in order, and groups of tied tensor names.
type SizesAndTies = (Vec<(String, u64)>, Vec<Vec<String>>);

/// One `max_memory` value, read by the core's rules (`plan::budget_bytes`); `key` is the
/// key's repr, for the message.
fn budget_value(key: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    bytes_value(value, |shown, problem| PlanError::BadBudget {
        key: key.to_owned(),
        shown,
        problem,
    })
}

/// A byte count given as `max_memory` values are; `wrong` makes the error from the value's
/// repr and the problem.
fn bytes_value(
    value: &Bound<'_, PyAny>,
    wrong: impl FnOnce(String, plan::BudgetProblem) -> PlanError,
) -> PyResult<u64> {
    let read = if value.cast::<PyBool>().is_ok() {
        BudgetValue::Other
    } else if value.cast::<PyInt>().is_ok() {
        BudgetValue::Int(value.extract::<u64>().ok())
    } else if let Ok(f) = value.cast::<PyFloat>() {
        BudgetValue::Float(f.value())
    } else if let Ok(text) = value.cast::<PyString>() {
        BudgetValue::Text(text.to_str()?)
    } else {
        BudgetValue::Other
    };
    plan::budget_bytes(read)
        .map_err(|problem| Error::from(wrong(short_repr(value), problem)).into())
}

/// `max_memory` in HF's form: `{0: "70GiB", 1: 70 * 2**30, "cpu": "200GiB", "disk": ...}`.
/// Sizes read as bits (a lowercase `b`, accelerate's rule) are warned about, once.
fn budgets_from_py(max_memory: &Bound<'_, PyAny>) -> PyResult<Budgets> {
    let dict = max_memory
        .cast::<PyDict>()
        .map_err(|_| wrong_type("max_memory must be a dict", max_memory))?;
    let mut devices = Vec::with_capacity(dict.len());
    let mut bits = Vec::new();
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
            return Err(Error::from(PlanError::UnknownBudgetKey { shown }).into());
        };
        let bytes = budget_value(&shown, &value)?;
        if let Ok(text) = value.cast::<PyString>() {
            let text = text.to_str()?;
            if plan::size_in_bits(text) {
                bits.push(format!("{}={text}", key.str()?));
            }
        }
        devices.push((shown, device, bytes));
    }
    let budgets = Budgets::keyed(devices).map_err(Error::from)?;
    warn_bits(max_memory.py(), "max_memory", &bits)?;
    Ok(budgets)
}

/// The one warning for sizes of `what` read as bits (`entries` as the caller wrote them), if any.
fn warn_bits(py: Python<'_>, what: &str, entries: &[String]) -> PyResult<()> {
    match plan::bits_warning(what, entries) {
        Some(message) => user_warning(py, &message),
        None => Ok(()),
    }
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
    // A str is iterable (one group per character) and an int is not: both named as given.
    let groups = match value.try_iter() {
        Ok(groups) if !value.is_instance_of::<PyString>() => groups,
        _ => return Err(wrong_type("tied must be a list of groups (lists of str)", value).into()),
    };
    let mut out = Vec::new();
    for group in groups {
        let group = group?;
        out.push(strings(Some(&group), "each tied group")?.unwrap_or_default());
    }
    Ok(out)
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
    d.set_item("cache", used.cache)?;
    d.set_item("activation", used.activation)?;
    d.set_item("spare", used.spare())?;
    d.set_item("blocks", used.blocks)?;
    d.set_item("tensors", used.tensors)?;
    d.set_item("entries", entries)?;
    d.set_item("share", used.share())?;
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
    /// For the command line: what helps when the blocks left over have a KV cache.
    fn _cache_remedy(&self) -> Option<String> {
        self.plan.cache_remedy()
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
    /// Bytes of the KV cache planned for (0 without a context).
    #[getter]
    fn cache_bytes(&self) -> u64 {
        self.plan.cache_bytes
    }
    /// What a plan with `context=` was planned for: `tokens`, `batch`, `kv_dtype`,
    /// `model_type`, `activation`, `layer_list`, `per_layer` (each decoder layer's cache),
    /// `layer_devices` (where each is charged), `cache_bytes`; `None` without a context.
    #[getter]
    fn context<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(context) = &self.plan.context else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("tokens", context.tokens)?;
        d.set_item("batch", context.batch)?;
        d.set_item("kv_dtype", context.dtype.to_string())?;
        d.set_item("model_type", context.model_type)?;
        d.set_item("activation", context.activation)?;
        d.set_item("layer_list", &context.layer_list)?;
        d.set_item("per_layer", context.per_layer.clone())?;
        let devices: Vec<Option<String>> = context
            .layer_device
            .iter()
            .map(|d| d.map(|d| d.to_string()))
            .collect();
        d.set_item("layer_devices", devices)?;
        d.set_item("cache_bytes", context.cache_bytes)?;
        Ok(Some(d))
    }
    /// The longest context (tokens per sequence) for which this plan, under the same budgets,
    /// strategy and headroom, still fits, at `batch` (default: the plan's): it fits, and one more
    /// token does not. `None` when every context fits (a cache that stops growing).
    #[pyo3(signature = (batch = None))]
    fn max_context(
        &self,
        py: Python<'_>,
        batch: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<u64>> {
        self.search(
            py,
            "max_context()",
            ("batch", 1, batch),
            |context, batch| (batch.unwrap_or(context.batch), plan::Fit::max_context),
        )
    }
    /// The largest batch for which this plan still fits at `context` tokens per sequence
    /// (default: the plan's): it fits, and one more sequence does not. `None` when every batch
    /// fits (an empty cache).
    #[pyo3(signature = (context = None))]
    fn max_batch(
        &self,
        py: Python<'_>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<u64>> {
        self.search(
            py,
            "max_batch()",
            // At least 1, as `context=` of a plan is (0 answered "every batch fits").
            ("context", 1, context),
            |planned, tokens| (tokens.unwrap_or(planned.tokens), plan::Fit::max_batch),
        )
    }
    /// The plan split over hosts of `gpus_per_host` GPUs each (GPU `i` is GPU
    /// `i % gpus_per_host` of host `i // gpus_per_host`; cpu and disk belong to host 0): per
    /// host, `host`, `devices` (its GPUs as the plan names them), `bytes`, `modules` (what it
    /// holds, grouped) and `device_map` (its entries, in the host's own GPU names, HF's form).
    /// For engines that load one stage per host, not a `from_pretrained` map.
    fn hosts<'py>(
        &self,
        py: Python<'py>,
        gpus_per_host: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let per_host = count(gpus_per_host, "gpus_per_host", 1)?;
        let hosts = plan::hosts(&self.plan, per_host).map_err(Error::from)?;
        let items = hosts
            .iter()
            .map(|host| {
                let d = PyDict::new(py);
                d.set_item("host", host.index)?;
                let devices: Vec<String> = host.devices.iter().map(|d| d.to_string()).collect();
                d.set_item("devices", devices)?;
                d.set_item("bytes", host.bytes)?;
                let modules: Vec<&str> = host.modules.iter().map(|g| g.pattern.as_str()).collect();
                d.set_item("modules", modules)?;
                d.set_item("device_map", map_to_hf(py, &host.map, &KeyCache::empty())?)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }
    /// `hosts(gpus_per_host)` as text: one line per host, then how the maps are meant to be used.
    fn hosts_text(&self, gpus_per_host: &Bound<'_, PyAny>) -> PyResult<String> {
        let per_host = count(gpus_per_host, "gpus_per_host", 1)?;
        let hosts = plan::hosts(&self.plan, per_host).map_err(Error::from)?;
        Ok(plan::hosts_text(&hosts, per_host))
    }
    /// `ValueError` saying by how much the model does not fit, if it does not.
    fn check(&self) -> PyResult<()> {
        Ok(self.plan.check_fits().map_err(Error::from)?)
    }
    /// Everything above as plain data (JSON-ready).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("strategy", self.strategy())?;
        d.set_item("fits", self.fits())?;
        d.set_item("total_bytes", self.plan.total_bytes)?;
        d.set_item("cache_bytes", self.plan.cache_bytes)?;
        d.set_item("context", self.context(py)?)?;
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
        let context = match &self.plan.context {
            Some(c) => format!(
                " + {} KV cache at {} tokens x batch {}",
                crate::units::human_bytes(c.cache_bytes),
                c.tokens,
                c.batch
            ),
            None => String::new(),
        };
        format!(
            "<PlanReport {} {}{context} on {} devices, fits={}>",
            self.plan.strategy.as_str(),
            crate::units::human_bytes(self.plan.total_bytes),
            self.plan.devices.len(),
            if self.plan.fits() { "True" } else { "False" }
        )
    }
}

/// A search of `plan::Fit` at the plan's context.
type Search = fn(&plan::Fit, u64) -> Result<Option<u64>, PlanError>;

impl PyPlanReport {
    /// Runs the search `pick` chooses on the plan's `Fit`, with the argument `(name, least,
    /// value)` read as a count (`pick` gets `None` when it is not given).
    fn search(
        &self,
        py: Python<'_>,
        what: &'static str,
        (name, least, value): (&'static str, u64, Option<&Bound<'_, PyAny>>),
        pick: impl FnOnce(&plan::Context, Option<u64>) -> (u64, Search),
    ) -> PyResult<Option<u64>> {
        let Some(context) = &self.plan.context else {
            return Err(Error::from(PlanError::NeedsContext { what }).into());
        };
        let given = match value.filter(|v| !v.is_none()) {
            Some(v) => Some(count(v, name, least)?),
            None => None,
        };
        let (argument, run) = pick(context, given);
        // Guarded as every entry point is: a bug in the search is a RuntimeError naming it.
        guard(what, || {
            Ok(py
                .detach(|| run(&context.fit, argument))
                .map_err(Error::from)?)
        })
    }
}

/// The workload of `_plan` and `_stages` from their keyword arguments (`plan::workload`
/// decides what they need).
fn workload_from_py(
    config: Option<&Bound<'_, PyAny>>,
    context: Option<&Bound<'_, PyAny>>,
    batch: Option<&Bound<'_, PyAny>>,
    kv_dtype: Option<&Bound<'_, PyAny>>,
    activation: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Workload>> {
    fn given<'py>(value: Option<&Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
        value.filter(|v| !v.is_none()).cloned()
    }
    let config = match given(config) {
        Some(c) => Some(config_from_py(&c)?),
        None => None,
    };
    let tokens = given(context)
        .map(|c| count(&c, "context", 0))
        .transpose()?;
    let batch = given(batch).map(|b| count(&b, "batch", 1)).transpose()?;
    let dtype = match dtype_name(kv_dtype)? {
        Some(name) => Some(crate::dtype::parse_dtype(&name)?),
        None => None,
    };
    let activation = match given(activation) {
        Some(a) => {
            let bytes = bytes_value(&a, |shown, problem| PlanError::BadActivation {
                shown,
                problem,
            })?;
            if let Ok(text) = a.cast::<PyString>() {
                let text = text.to_str()?;
                if plan::size_in_bits(text) {
                    warn_bits(a.py(), "activation", &[text.to_owned()])?;
                }
            }
            bytes
        }
        None => 0,
    };
    Ok(plan::workload(
        config.as_ref(),
        tokens,
        batch,
        dtype,
        activation,
    )?)
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
        Some(patterns) => Some(NoSplit::new(&patterns).map_err(Error::from)?),
        None => None,
    };
    // A checkpoint's sizes, read already: its tensors are distinct (the reader refuses a
    // name twice).
    let (sizes, names_distinct) = match sizes.cast::<PyCheckpointSizes>() {
        Ok(read) => (read.get().sizes.clone(), true),
        Err(_) => {
            let read = read_sizes(sizes, |name| Ok(name.to_str()?.to_owned()))?;
            (read.entries, read.distinct)
        }
    };
    Ok(Model {
        sizes,
        tied: tied_from_py(tied)?,
        no_split,
        names_distinct,
    })
}

/// Plans `sizes` (`{name: bytes}` in model order) onto `max_memory`; with `context`, for
/// inference (each decoder layer's KV cache from `config`). `note` goes first among the
/// report's notes.
#[pyfunction]
#[pyo3(signature = (sizes, max_memory, strategy = "balanced", no_split = None, tied = None, *, config = None, context = None, batch = None, kv_dtype = None, activation = None, note = None))]
#[allow(clippy::too_many_arguments)]
pub fn _plan(
    py: Python<'_>,
    sizes: &Bound<'_, PyAny>,
    max_memory: &Bound<'_, PyAny>,
    strategy: &str,
    no_split: Option<&Bound<'_, PyAny>>,
    tied: Option<&Bound<'_, PyAny>>,
    config: Option<&Bound<'_, PyAny>>,
    context: Option<&Bound<'_, PyAny>>,
    batch: Option<&Bound<'_, PyAny>>,
    kv_dtype: Option<&Bound<'_, PyAny>>,
    activation: Option<&Bound<'_, PyAny>>,
    note: Option<String>,
) -> PyResult<PyPlanReport> {
    guard("_plan", || {
        let strategy = Strategy::parse(strategy).map_err(Error::from)?;
        let budgets = budgets_from_py(max_memory)?;
        let model = model_from_py(sizes, no_split, tied)?;
        let workload = workload_from_py(config, context, batch, kv_dtype, activation)?;
        let mut plan =
            py.detach(|| plan::plan_for(&model, &budgets, strategy, workload.as_ref()))?;
        // A note on the names planned in (`_checkpoint_names_note`) comes first.
        plan.notes.splice(0..0, note);
        Ok(PyPlanReport { plan })
    })
}

/// Splits `sizes` into `n` contiguous byte-balanced stages: per stage, its module names.
#[pyfunction]
#[pyo3(signature = (sizes, n, no_split = None, *, config = None, context = None, batch = None, kv_dtype = None))]
#[allow(clippy::too_many_arguments)]
pub fn _stages(
    py: Python<'_>,
    sizes: &Bound<'_, PyAny>,
    n: &Bound<'_, PyAny>,
    no_split: Option<&Bound<'_, PyAny>>,
    config: Option<&Bound<'_, PyAny>>,
    context: Option<&Bound<'_, PyAny>>,
    batch: Option<&Bound<'_, PyAny>>,
    kv_dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Vec<String>>> {
    guard("_stages", || {
        // A count past what 64 bits hold is refused by name; `stages_for` refuses 0.
        let n = usize::try_from(count(n, "n", 0)?).unwrap_or(usize::MAX);
        let model = model_from_py(sizes, no_split, None)?;
        let workload = workload_from_py(config, context, batch, kv_dtype, None)?;
        Ok(py.detach(|| plan::stages_for(&model, n, workload.as_ref()))?)
    })
}

/// Sizes of a torch module's parameters and buffers (bytes; floating-point ones re-sized to
/// `dtype` if given), and the groups of names that share one tensor (tied weights). This reads
/// each tensor; `plan::module_sizes` decides the sizes and the ties.
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
        let mut tensors = Vec::new();
        for method in ["named_parameters", "named_buffers"] {
            let items = module.call_method(method, (), Some(&kwargs))?;
            for item in items.try_iter()? {
                let (name, tensor): (String, Bound<'_, PyAny>) = item?.extract()?;
                tensors.push(module_tensor(name, &tensor, dtype.is_some())?);
            }
        }
        Ok(plan::module_sizes(tensors, dtype.map(plan::Resize::To)))
    })
}

/// `plan::largest_conversion` of `sizes` (`{tensor name: bytes}`, in its order) for
/// `converters` (each a list of target patterns): the loader's largest conversion, summed per
/// module; `None` where Python's `re` must decide (a pattern the core does not read as Python
/// does, a name or size that is not a `str` or a non-negative int).
#[pyfunction]
pub fn _largest_conversion(
    sizes: &Bound<'_, PyDict>,
    converters: &Bound<'_, PyAny>,
) -> PyResult<Option<u64>> {
    guard("_largest_conversion", || {
        let Ok(converters) = converters.extract::<Vec<Vec<String>>>() else {
            return Ok(None);
        };
        let mut read = Vec::with_capacity(sizes.len());
        for (name, bytes) in sizes.iter() {
            match (name.cast_into::<PyString>(), bytes.extract::<u64>()) {
                (Ok(name), Ok(bytes)) => read.push((name, bytes)),
                _ => return Ok(None),
            }
        }
        let mut names = Vec::with_capacity(read.len());
        for (name, bytes) in &read {
            let Ok(name) = name.to_str() else {
                return Ok(None); // lone surrogates: not a Rust string
            };
            names.push((name, *bytes));
        }
        Ok(plan::largest_conversion(names.iter().copied(), &converters))
    })
}

/// Available and total system memory in bytes, where known.
#[pyfunction]
pub fn _system_memory() -> PyResult<(Option<u64>, Option<u64>)> {
    guard("_system_memory", || {
        let memory = plan::system_memory();
        Ok((memory.available, memory.total))
    })
}

/// Bytes a machine's budget keeps free on a device with `total` bytes: `reserve` is a fraction
/// of it (a float in [0, 1)) or bytes (an int).
#[pyfunction]
pub fn _headroom(total: u64, reserve: &Bound<'_, PyAny>) -> PyResult<u64> {
    guard("_headroom", || {
        let shown = || short_repr(reserve);
        let read = if reserve.cast::<PyBool>().is_ok() {
            None
        } else if let Ok(f) = reserve.cast::<PyFloat>() {
            Some(Reserve::fraction(f.value(), &shown()).map_err(Error::from)?)
        } else if reserve.cast::<PyInt>().is_ok() {
            match reserve.extract::<u64>() {
                Ok(bytes) => Some(Reserve::Bytes(bytes)),
                Err(_) if reserve.lt(0)? => {
                    return Err(Error::from(PlanError::NegativeReserve { shown: shown() }).into())
                }
                // More bytes than any device has: everything is kept free.
                Err(_) => Some(Reserve::Bytes(u64::MAX)),
            }
        } else {
            None
        };
        let Some(read) = read else {
            let type_name = reserve.get_type().name()?.to_string();
            return Err(Error::Type(format!(
                "reserve must be a fraction (float) or bytes (int), got {type_name}"
            ))
            .into());
        };
        Ok(read.of(total))
    })
}

/// The `config.json` of a built-in example model, as text.
#[pyfunction]
pub fn _example_config(name: &str) -> PyResult<&'static str> {
    guard("_example_config", || Ok(crate::examples::config(name)?))
}

/// `units::human_bytes`: bytes in binary units with one decimal (`1.5 GiB`).
#[pyfunction]
pub fn _human_bytes(bytes: u64) -> String {
    crate::units::human_bytes(bytes)
}
