//! `ComponentDevice` for Python: a frozen value holding one device or a snapshot of a map.

use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::convert::{map_from_strings, map_to_hf, map_to_strings, OnError};
use super::device::{device_arg, device_from_str_obj, device_repr, device_to_py, PyDevice};
use super::errors::short_str;
use super::guard::guard;
use super::haystack::{haystack_class, Haystack};
use super::keys::KeyCache;
use super::map::{map_arg, map_repr, PyDeviceMap};
use crate::component::{ComponentDevice, Target};
use crate::error::Error;

/// `keys` belongs to `inner.multiple` (shared with the `DeviceMap` it came from, if any).
#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "devicemap",
    name = "ComponentDevice"
)]
pub struct PyComponentDevice {
    pub inner: ComponentDevice,
    keys: KeyCache,
}

fn make(py: Python<'_>, inner: ComponentDevice) -> PyResult<Bound<'_, PyComponentDevice>> {
    make_with_keys(py, inner, KeyCache::empty())
}

fn make_with_keys(
    py: Python<'_>,
    inner: ComponentDevice,
    keys: KeyCache,
) -> PyResult<Bound<'_, PyComponentDevice>> {
    Bound::new(py, PyComponentDevice { inner, keys })
}

/// An attribute of a Python module (`devicemap._torch.torch_device`, `itertools.chain`),
/// imported once.
pub(super) fn glue<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(cell
        .get_or_try_init(py, || py.import(module)?.getattr(name).map(Bound::unbind))?
        .bind(py)
        .clone())
}

/// A Haystack `ComponentDevice`, by its two fields (checked later, as ours are).
fn haystack_component(value: &Bound<'_, PyAny>) -> PyResult<(ComponentDevice, KeyCache)> {
    let single = value.getattr("_single_device")?;
    let multiple = value.getattr("_multiple_devices")?;
    let single = (!single.is_none())
        .then(|| device_arg(&single, "ComponentDevice._single_device must be a Device"))
        .transpose()?;
    let (multiple, keys) = if multiple.is_none() {
        (None, KeyCache::empty())
    } else {
        let (map, keys) = map_arg(
            &multiple,
            "ComponentDevice._multiple_devices must be a DeviceMap",
        )?;
        (Some(map), keys)
    };
    Ok((ComponentDevice { single, multiple }, keys))
}

static TORCH_DEVICE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DEFAULT_DEVICE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl PyComponentDevice {
    /// Not validated here, as in Haystack: every operation checks that exactly one is set.
    /// Haystack's `Device` and `DeviceMap` are taken by value.
    #[new]
    #[pyo3(signature = (_single_device = None, _multiple_devices = None))]
    fn new(
        _single_device: Option<&Bound<'_, PyAny>>,
        _multiple_devices: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard("ComponentDevice()", || {
            let single = _single_device
                .filter(|d| !d.is_none())
                .map(|d| device_arg(d, "ComponentDevice _single_device must be a Device or None"))
                .transpose()?;
            let (multiple, keys) = match _multiple_devices.filter(|m| !m.is_none()) {
                Some(map) => {
                    let (map, keys) = map_arg(
                        map,
                        "ComponentDevice _multiple_devices must be a DeviceMap or None",
                    )?;
                    (Some(map), keys)
                }
                None => (None, KeyCache::empty()),
            };
            Ok(PyComponentDevice {
                inner: ComponentDevice { single, multiple },
                keys,
            })
        })
    }

    #[getter]
    fn _single_device<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDevice>>> {
        self.inner.single.map(|d| device_to_py(py, d)).transpose()
    }

    /// A new `DeviceMap` sharing this component's snapshot; changing it leaves the component as is.
    #[getter]
    fn _multiple_devices(&self) -> Option<PyDeviceMap> {
        self.inner
            .multiple
            .clone()
            .map(|map| PyDeviceMap::new_shared(map, self.keys.clone()))
    }

    #[staticmethod]
    fn from_str<'py>(
        py: Python<'py>,
        device_str: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        guard("ComponentDevice.from_str", || {
            make(
                py,
                ComponentDevice::from_single(device_from_str_obj(device_str)?)?,
            )
        })
    }

    #[staticmethod]
    fn from_single<'py>(py: Python<'py>, device: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Self>> {
        guard("ComponentDevice.from_single", || {
            let device = device_arg(device, "ComponentDevice.from_single needs a Device")?;
            make(py, ComponentDevice::from_single(device)?)
        })
    }

    #[staticmethod]
    fn from_multiple<'py>(
        py: Python<'py>,
        device_map: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        guard("ComponentDevice.from_multiple", || {
            // The component shares the map's content, so it shares its key cache too.
            let (map, keys) = map_arg(
                device_map,
                "ComponentDevice.from_multiple needs a DeviceMap",
            )?;
            make_with_keys(py, ComponentDevice::from_multiple(map), keys)
        })
    }

    fn to_torch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("ComponentDevice.to_torch", || {
            let device = self.inner.single_for("PyTorch")?;
            ComponentDevice::check_torch_index(device)?;
            glue(py, &TORCH_DEVICE, "devicemap._torch", "torch_device")?
                .call1((device.to_string(),))
        })
    }

    fn to_torch_str(&self) -> PyResult<String> {
        guard("ComponentDevice.to_torch_str", || {
            Ok(self.inner.to_torch_str()?)
        })
    }

    fn to_spacy(&self) -> PyResult<i64> {
        guard("ComponentDevice.to_spacy", || Ok(self.inner.to_spacy()?))
    }

    fn to_hf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard("ComponentDevice.to_hf", || match self.inner.target()? {
            Target::Single(device) => Ok(PyString::new(py, &device.to_string()).into_any()),
            Target::Multiple(map) => Ok(map_to_hf(py, map, &self.keys)?.into_any()),
        })
    }

    #[pyo3(signature = (hf_kwargs, *, overwrite))]
    fn update_hf_kwargs<'py>(
        &self,
        hf_kwargs: Bound<'py, PyAny>,
        overwrite: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard("ComponentDevice.update_hf_kwargs", || {
            let py = hf_kwargs.py();
            let target = self.inner.target()?;
            if !overwrite && (hf_kwargs.contains("device")? || hf_kwargs.contains("device_map")?) {
                return Ok(hf_kwargs);
            }
            let key = match target {
                Target::Single(_) => "device",
                Target::Multiple(_) => "device_map",
            };
            hf_kwargs.set_item(key, self.to_hf(py)?)?;
            Ok(hf_kwargs)
        })
    }

    #[getter]
    fn has_multiple_devices(&self) -> PyResult<bool> {
        Ok(self.inner.has_multiple_devices()?)
    }

    #[getter]
    fn first_device<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Self>> {
        guard("ComponentDevice.first_device", || {
            make(
                py,
                ComponentDevice::from_single(self.inner.first_device()?)?,
            )
        })
    }

    #[staticmethod]
    #[pyo3(signature = (device = None))]
    fn resolve_device<'py>(
        py: Python<'py>,
        device: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard("ComponentDevice.resolve_device", || match device {
            Some(device) if !device.is_none() => {
                if device.is_instance_of::<PyComponentDevice>() {
                    Ok(device)
                } else if haystack_class(&device) == Some(Haystack::ComponentDevice) {
                    let (inner, keys) = haystack_component(&device)?;
                    Ok(make_with_keys(py, inner, keys)?.into_any())
                } else {
                    Err(Error::NotAComponent {
                        type_name: device.get_type().name()?.to_string(),
                    }
                    .into())
                }
            }
            _ => {
                let chosen =
                    glue(py, &DEFAULT_DEVICE, "devicemap._resolve", "default_device")?.call0()?;
                let device: PyRef<'_, PyDevice> = chosen.extract()?;
                Ok(make(py, ComponentDevice::from_single(device.inner)?)?.into_any())
            }
        })
    }

    /// As Haystack: the single device if set, else the map; empty is a clear error.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard("ComponentDevice.to_dict", || {
            let dict = PyDict::new(py);
            match (&self.inner.single, &self.inner.multiple) {
                (Some(device), _) => {
                    dict.set_item("type", "single")?;
                    dict.set_item("device", device.to_string())?;
                }
                (None, Some(map)) => {
                    dict.set_item("type", "multiple")?;
                    dict.set_item("device_map", map_to_strings(py, map, &self.keys)?)?;
                }
                (None, None) => return Err(Error::InvalidComponent.into()),
            }
            Ok(dict)
        })
    }

    #[staticmethod]
    #[pyo3(signature = (dict))]
    fn from_dict<'py>(dict: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Self>> {
        guard("ComponentDevice.from_dict", || {
            let py = dict.py();
            let kind = dict.get_item("type")?;
            if kind.eq("single")? {
                return Self::from_str(py, &dict.get_item("device")?);
            }
            if kind.eq("multiple")? {
                let map = map_from_strings(&dict.get_item("device_map")?, OnError::Stop)?;
                return make(py, ComponentDevice::from_multiple(Arc::new(map)));
            }
            Err(Error::UnknownComponentType {
                text: short_str(&kind)?,
            }
            .into())
        })
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<PyComponentDevice>() else {
            return Ok(py.NotImplemented());
        };
        let equal = self.inner == other.get().inner;
        Ok(match op {
            CompareOp::Eq => equal.into_pyobject(py)?.to_owned().into_any().unbind(),
            CompareOp::Ne => (!equal).into_pyobject(py)?.to_owned().into_any().unbind(),
            _ => py.NotImplemented(),
        })
    }

    // PyO3 casts the u64 to Python's hash type and turns -1 (reserved for errors) into -2.
    fn __hash__(&self) -> u64 {
        self.inner.content_hash()
    }

    fn __repr__(&self) -> String {
        let single = self
            .inner
            .single
            .map_or_else(|| "None".to_owned(), device_repr);
        let multiple = self
            .inner
            .multiple
            .as_ref()
            .map_or_else(|| "None".to_owned(), |m| map_repr(m));
        format!("ComponentDevice(_single_device={single}, _multiple_devices={multiple})")
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        guard("ComponentDevice.__reduce__", || {
            let py = slf.py();
            let me = slf.get();
            let args = (me._single_device(py)?, me._multiple_devices());
            (slf.get_type(), args).into_pyobject(py)
        })
    }

    fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> Bound<'py, Self> {
        slf
    }
}
