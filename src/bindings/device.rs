//! `Device` for Python, and the bridge to the Python enum `devicemap.DeviceType`.

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt, PyString, PyTuple};

use super::errors::{expect_str, str_text, wrong_type};
use super::guard::guard;
use super::haystack::{haystack_class, Haystack};
use crate::device::{Device, DeviceType};
use crate::error::Error;
use crate::parse::{parse_device, parse_device_type};

/// `DeviceType` is a real `enum.Enum` defined in Python (`devicemap/_types.py`), because a
/// pyclass enum cannot be iterated, called with a value or pickled as one. Rust refers to its
/// members by position, which both sides keep in the same order.
static MEMBERS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();

fn members(py: Python<'_>) -> PyResult<&'static [Py<PyAny>]> {
    MEMBERS
        .get_or_try_init(py, || {
            let enum_class = py.import("devicemap._types")?.getattr("DeviceType")?;
            DeviceType::ALL
                .iter()
                .map(|kind| enum_class.getattr(kind.name()).map(Bound::unbind))
                .collect()
        })
        .map(Vec::as_slice)
}

pub fn device_type_to_py(py: Python<'_>, kind: DeviceType) -> PyResult<Bound<'_, PyAny>> {
    Ok(members(py)?[kind.index()].bind(py).clone())
}

/// A `DeviceType` member or one of its values (or a member of Haystack's `DeviceType`).
pub fn device_type_from_py(value: &Bound<'_, PyAny>) -> PyResult<DeviceType> {
    let py = value.py();
    if let Some(index) = members(py)?.iter().position(|m| m.bind(py).is(value)) {
        return Ok(DeviceType::ALL[index]);
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(parse_device_type(str_text(text, "Device type string")?)?);
    }
    if haystack_class(value) == Some(Haystack::DeviceType) {
        return haystack_device_type(value);
    }
    Err(wrong_type(
        "Device type must be a DeviceType or one of its values",
        value,
    )
    .into())
}

/// A device id: `None` or a non-negative `int`. `bool` is refused (Haystack takes `True` as 1).
pub fn id_from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(wrong_type("Device id must be an int or None", value).into());
    }
    match value.extract::<u64>() {
        Ok(id) => Ok(Some(id)),
        Err(_) if value.lt(0)? => Err(Error::NegativeId {
            id: value.str()?.to_string(),
        }
        .into()),
        Err(_) => Err(Error::IdTooLarge {
            part: value.str()?.to_string(),
        }
        .into()),
    }
}

/// A device id argument, checked by [`id_from_py`]. Not an `Option` parameter, so that an
/// explicit `None` can differ from the parameter's default. Extraction itself never fails:
/// the check's error is raised by the method, without pyo3's "while processing" note.
pub struct IdArg(pub PyResult<Option<u64>>);

impl<'a, 'py> FromPyObject<'a, 'py> for IdArg {
    type Error = PyErr;

    fn extract(value: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(IdArg(id_from_py(Some(&value.to_owned()))))
    }
}

#[pyclass(frozen, subclass, weakref, module = "devicemap", name = "Device")]
pub struct PyDevice {
    pub inner: Device,
}

/// Python objects for common devices are made once and shared: they are immutable, and a
/// map of a million entries then hands out a handful of objects instead of a million. One cell
/// per device type and id (up to `INTERN_MAX_ID`, and none), found by arithmetic: a lookup is
/// an index and an atomic load, with no lock and no hashing (`dm[k]` used to spend a fifth of
/// its time in a locked `HashMap` here).
const INTERN_MAX_ID: u64 = 1024;
const CELLS_PER_TYPE: usize = INTERN_MAX_ID as usize + 2;
static INTERNED: [PyOnceLock<Py<PyDevice>>; DeviceType::ALL.len() * CELLS_PER_TYPE] =
    [const { PyOnceLock::new() }; DeviceType::ALL.len() * CELLS_PER_TYPE];

#[inline]
fn interned_cell(device: Device) -> Option<&'static PyOnceLock<Py<PyDevice>>> {
    let id = match device.id {
        None => 0,
        Some(id) if id <= INTERN_MAX_ID => id as usize + 1,
        Some(_) => return None,
    };
    INTERNED.get(device.kind.index() * CELLS_PER_TYPE + id)
}

#[inline]
pub fn device_to_py(py: Python<'_>, device: Device) -> PyResult<Bound<'_, PyDevice>> {
    let Some(cell) = interned_cell(device) else {
        return Bound::new(py, PyDevice { inner: device });
    };
    if let Some(object) = cell.get(py) {
        return Ok(object.bind(py).clone());
    }
    // Offered rather than made in `get_or_init`, which lets go of the GIL and takes it back.
    let object = Bound::new(py, PyDevice { inner: device })?;
    let _ = cell.set(py, object.clone().unbind());
    Ok(cell.get(py).map_or(object, |kept| kept.bind(py).clone()))
}

pub fn device_repr(device: Device) -> String {
    let id = device
        .id
        .map_or_else(|| "None".to_owned(), |id| id.to_string());
    format!(
        "Device(type=<DeviceType.{}: '{}'>, id={})",
        device.kind.name(),
        device.kind.as_str(),
        id
    )
}

#[pymethods]
impl PyDevice {
    #[new]
    #[pyo3(signature = (r#type, id = IdArg(Ok(None))), text_signature = "(type, id=None)")]
    fn new(r#type: &Bound<'_, PyAny>, id: IdArg) -> PyResult<Self> {
        guard("Device()", || {
            let kind = device_type_from_py(r#type)?;
            Ok(PyDevice {
                inner: Device::new(kind, id.0?),
            })
        })
    }

    #[getter]
    fn r#type<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        device_type_to_py(py, self.inner.kind)
    }

    #[getter]
    fn id(&self) -> Option<u64> {
        self.inner.id
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("type", "id")
    }

    #[staticmethod]
    fn cpu(py: Python<'_>) -> PyResult<Bound<'_, PyDevice>> {
        device_to_py(py, Device::cpu())
    }

    /// `id` defaults to 0; an explicit `None` gives the id-less `cuda`, as in Haystack.
    #[staticmethod]
    #[pyo3(signature = (id = IdArg(Ok(Some(0)))), text_signature = "(id=0)")]
    fn gpu(py: Python<'_>, id: IdArg) -> PyResult<Bound<'_, PyDevice>> {
        guard("Device.gpu", || {
            device_to_py(py, Device::new(DeviceType::Gpu, id.0?))
        })
    }

    #[staticmethod]
    fn disk(py: Python<'_>) -> PyResult<Bound<'_, PyDevice>> {
        device_to_py(py, Device::disk())
    }

    #[staticmethod]
    fn mps(py: Python<'_>) -> PyResult<Bound<'_, PyDevice>> {
        device_to_py(py, Device::mps())
    }

    #[staticmethod]
    fn xpu(py: Python<'_>) -> PyResult<Bound<'_, PyDevice>> {
        device_to_py(py, Device::xpu())
    }

    #[staticmethod]
    fn from_str<'py>(
        py: Python<'py>,
        string: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDevice>> {
        guard("Device.from_str", || {
            device_to_py(py, device_from_str_obj(string)?)
        })
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        device_repr(self.inner)
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<PyDevice>() else {
            return Ok(py.NotImplemented());
        };
        let equal = self.inner == other.get().inner;
        match op {
            CompareOp::Eq => Ok(PyBool::new(py, equal).to_owned().into_any().unbind()),
            CompareOp::Ne => Ok(PyBool::new(py, !equal).to_owned().into_any().unbind()),
            _ => Ok(py.NotImplemented()),
        }
    }

    // PyO3 casts the u64 to Python's hash type and turns -1 (reserved for errors) into -2.
    fn __hash__(&self) -> u64 {
        let kind = self.inner.kind as u64;
        let id = self.inner.id.map_or(0, |id| id.wrapping_add(1));
        kind.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        guard("Device.__reduce__", || {
            let py = slf.py();
            let device = slf.get().inner;
            let args = (device_type_to_py(py, device.kind)?, device.id);
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

/// A Haystack `DeviceType` member, by its value (`"cuda"`).
fn haystack_device_type(value: &Bound<'_, PyAny>) -> PyResult<DeviceType> {
    device_type_from_py(&value.getattr("value")?)
}

/// A Haystack `Device`, by its `type` and `id`.
pub fn haystack_device(value: &Bound<'_, PyAny>) -> PyResult<Device> {
    let kind = device_type_from_py(&value.getattr("type")?)?;
    let id = id_from_py(Some(&value.getattr("id")?))?;
    Ok(Device::new(kind, id))
}

/// A `Device` argument: ours, or Haystack's read by value.
pub fn device_arg(value: &Bound<'_, PyAny>, expected: &str) -> PyResult<Device> {
    if let Ok(device) = value.cast::<PyDevice>() {
        return Ok(device.get().inner);
    }
    if haystack_class(value) == Some(Haystack::Device) {
        return haystack_device(value);
    }
    Err(wrong_type(expected, value).into())
}

/// `Device.from_str`'s parse of a Python value, which must be a `str`.
pub fn device_from_str_obj(string: &Bound<'_, PyAny>) -> PyResult<Device> {
    Ok(parse_device(expect_str(
        string,
        "Device string",
        "Device string must be a str",
    )?)?)
}

/// `DeviceType.from_str`, exposed for the Python enum so both sides share one parser.
#[pyfunction]
pub fn _device_type_index(string: &Bound<'_, PyAny>) -> PyResult<usize> {
    guard("DeviceType.from_str", || {
        let text = expect_str(
            string,
            "Device type string",
            "Device type string must be a str",
        )?;
        Ok(parse_device_type(text)?.index())
    })
}
