//! CUDA discovery for Python: `CudaDevice`, `cuda_devices()`, `cuda_device_count()`,
//! `cuda_status()`, and `cuda_discover()` for devices and status from one discovery. The one
//! Python-side step is asking torch for CUDA's order when the order is uncertain and torch has
//! already initialized CUDA in this process.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use super::device::{device_to_py, PyDevice};
use super::errors::user_warning;
use super::guard::guard;
use crate::cuda::{discover, CudaDevice, Discovery};
use crate::device::Device;

#[pyclass(frozen, module = "devicemap", name = "CudaDevice")]
pub struct PyCudaDevice {
    inner: CudaDevice,
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

#[pymethods]
impl PyCudaDevice {
    #[new]
    #[pyo3(signature = (
        ordinal, nvml_index, uuid, name, memory_total, memory_free, memory_used, pci_bus_id,
        compute_capability, is_mig, ordering_certain = true
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        ordinal: u32,
        nvml_index: u32,
        uuid: String,
        name: String,
        memory_total: Option<u64>,
        memory_free: Option<u64>,
        memory_used: Option<u64>,
        pci_bus_id: String,
        compute_capability: Option<(i32, i32)>,
        is_mig: bool,
        ordering_certain: bool,
    ) -> Self {
        PyCudaDevice {
            inner: CudaDevice {
                ordinal,
                nvml_index,
                uuid,
                name,
                memory_total,
                memory_free,
                memory_used,
                pci_bus_id,
                compute_capability,
                is_mig,
                ordering_certain,
            },
        }
    }

    /// The N of `cuda:N` in this process.
    #[getter]
    fn ordinal(&self) -> u32 {
        self.inner.ordinal
    }
    /// NVML's index of the physical GPU (the parent's, for a MIG device).
    #[getter]
    fn nvml_index(&self) -> u32 {
        self.inner.nvml_index
    }
    #[getter]
    fn uuid(&self) -> &str {
        &self.inner.uuid
    }
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    #[getter]
    fn memory_total(&self) -> Option<u64> {
        self.inner.memory_total
    }
    #[getter]
    fn memory_free(&self) -> Option<u64> {
        self.inner.memory_free
    }
    #[getter]
    fn memory_used(&self) -> Option<u64> {
        self.inner.memory_used
    }
    #[getter]
    fn pci_bus_id(&self) -> &str {
        &self.inner.pci_bus_id
    }
    #[getter]
    fn compute_capability(&self) -> Option<(i32, i32)> {
        self.inner.compute_capability
    }
    #[getter]
    fn is_mig(&self) -> bool {
        self.inner.is_mig
    }
    #[getter]
    fn ordering_certain(&self) -> bool {
        self.inner.ordering_certain
    }
    /// `Device.gpu(ordinal)`.
    #[getter]
    fn device<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDevice>> {
        device_to_py(py, Device::gpu(u64::from(self.inner.ordinal)))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let d = &self.inner;
        let text = |s: &str| -> PyResult<String> { Ok(PyString::new(py, s).repr()?.to_string()) };
        let capability = d
            .compute_capability
            .map_or_else(|| "None".to_owned(), |(a, b)| format!("({a}, {b})"));
        Ok(format!(
            "CudaDevice(ordinal={}, nvml_index={}, uuid={}, name={}, memory_total={}, \
             memory_free={}, memory_used={}, pci_bus_id={}, compute_capability={}, \
             is_mig={}, ordering_certain={})",
            d.ordinal,
            d.nvml_index,
            text(&d.uuid)?,
            text(&d.name)?,
            optional(d.memory_total),
            optional(d.memory_free),
            optional(d.memory_used),
            text(&d.pci_bus_id)?,
            capability,
            if d.is_mig { "True" } else { "False" },
            if d.ordering_certain { "True" } else { "False" },
        ))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyCudaDevice>()
            .is_ok_and(|other| other.get().inner == self.inner)
    }

    // PyO3 casts the u64 to Python's hash type and turns -1 (reserved for errors) into -2.
    fn __hash__(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.inner.hash(&mut hasher);
        hasher.finish()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let d = &slf.get().inner;
        let args = (
            d.ordinal,
            d.nvml_index,
            d.uuid.as_str(),
            d.name.as_str(),
            d.memory_total,
            d.memory_free,
            d.memory_used,
            d.pci_bus_id.as_str(),
            d.compute_capability,
            d.is_mig,
            d.ordering_certain,
        )
            .into_pyobject(py)?;
        PyTuple::new(py, [slf.get_type().into_any(), args.into_any()])
    }
}

/// Asks torch for CUDA's order when NVML cannot tell it and torch already initialized CUDA in
/// this process. Torch is never imported here, and any failure leaves the order uncertain.
fn settle_with_torch(py: Python<'_>, discovery: &mut Discovery) {
    if discovery.ordering_certain() || discovery.devices.is_empty() {
        return;
    }
    let uuids = || -> PyResult<Option<Vec<String>>> {
        let modules = py.import("sys")?.getattr("modules")?;
        let torch = modules.call_method1("get", ("torch",))?;
        if torch.is_none() {
            return Ok(None);
        }
        let cuda = torch.getattr("cuda")?;
        if !cuda.call_method0("is_initialized")?.is_truthy()? {
            return Ok(None);
        }
        let count: usize = cuda.call_method0("device_count")?.extract()?;
        let mut uuids = Vec::with_capacity(count);
        for index in 0..count {
            let properties = cuda.call_method1("get_device_properties", (index,))?;
            uuids.push(properties.getattr("uuid")?.str()?.to_string());
        }
        Ok(Some(uuids))
    };
    if let Ok(Some(uuids)) = uuids() {
        discovery.settle_order(&uuids);
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Discovery for this process's environment, with NVML called outside the GIL.
fn run(py: Python<'_>, memory: bool) -> Discovery {
    let visible = env("CUDA_VISIBLE_DEVICES");
    let order = env("CUDA_DEVICE_ORDER");
    let mut discovery = py.detach(|| discover(visible.as_deref(), order.as_deref(), memory));
    settle_with_torch(py, &mut discovery);
    discovery
}

/// Warns (`UserWarning`) when the core says to: once per process, when the order is uncertain.
fn warn_if_uncertain(py: Python<'_>, discovery: &Discovery) -> PyResult<()> {
    if let Some(text) = discovery.order_warning() {
        user_warning(py, &text)?;
    }
    Ok(())
}

fn device_list(py: Python<'_>, devices: Vec<CudaDevice>) -> PyResult<Bound<'_, PyList>> {
    PyList::new(py, devices.into_iter().map(|inner| PyCudaDevice { inner }))
}

/// One discovery's result: the devices and the status, consistent with each other, for callers
/// that need both (`devicemap devices`, `pick_device`) without running discovery twice.
#[pyclass(frozen, module = "devicemap", name = "CudaDiscovery")]
pub struct PyCudaDiscovery {
    devices: Py<PyList>,
    status: String,
    ordering_certain: bool,
    nvml_usable: bool,
}

#[pymethods]
impl PyCudaDiscovery {
    /// The CUDA devices, `cuda:0` first, with memory read when discovery ran (a new list each time).
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Bound<'py, PyAny>> = self.devices.bind(py).iter().collect();
        PyList::new(py, items)
    }
    /// What `cuda_status()` would have said at the same moment.
    #[getter]
    fn status(&self) -> &str {
        &self.status
    }
    #[getter]
    fn ordering_certain(&self) -> bool {
        self.ordering_certain
    }
    /// Whether NVML could be loaded and asked at all.
    #[getter]
    fn nvml_usable(&self) -> bool {
        self.nvml_usable
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "CudaDiscovery(devices={}, status={}, ordering_certain={}, nvml_usable={})",
            self.devices.bind(py).len(),
            PyString::new(py, &self.status).repr()?,
            if self.ordering_certain {
                "True"
            } else {
                "False"
            },
            if self.nvml_usable { "True" } else { "False" },
        ))
    }
}

/// Runs discovery once (memory read now) and returns devices and status together. With
/// `warn`, warns once per process as `cuda_devices()` does when the order is uncertain.
#[pyfunction]
#[pyo3(signature = (*, warn = false))]
pub fn cuda_discover(py: Python<'_>, warn: bool) -> PyResult<PyCudaDiscovery> {
    guard("cuda_discover", || discover_unguarded(py, warn))
}

fn discover_unguarded(py: Python<'_>, warn: bool) -> PyResult<PyCudaDiscovery> {
    let discovery = run(py, true);
    if warn {
        warn_if_uncertain(py, &discovery)?;
    }
    let status = discovery.status_text();
    let (ordering_certain, nvml_usable) = (discovery.ordering_certain(), discovery.nvml_usable());
    Ok(PyCudaDiscovery {
        devices: device_list(py, discovery.devices)?.unbind(),
        status,
        ordering_certain,
        nvml_usable,
    })
}

/// The CUDA devices this process will see, `cuda:0` first, with memory read now.
///
/// Warns once per process (`UserWarning`) when the order is uncertain; see `cuda_status()`.
#[pyfunction]
pub fn cuda_devices(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    guard("cuda_devices", || {
        let discovery = run(py, true);
        warn_if_uncertain(py, &discovery)?;
        device_list(py, discovery.devices)
    })
}

/// How many CUDA devices this process will see (0 when NVML cannot be used).
#[pyfunction]
pub fn cuda_device_count(py: Python<'_>) -> PyResult<usize> {
    guard("cuda_device_count", || Ok(run(py, false).devices.len()))
}

/// In a sentence or a few: what NVML reported, what CUDA will see, and anything that went wrong.
#[pyfunction]
pub fn cuda_status(py: Python<'_>) -> PyResult<Bound<'_, PyString>> {
    guard("cuda_status", || {
        Ok(PyString::new(py, &run(py, true).status_text()))
    })
}
