//! Conversions between Python values and maps: every API that reads or writes a map's
//! Python form goes through here. Each distinct device becomes a Python object once per call.

use std::collections::HashMap;

use ahash::RandomState;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use super::device::{device_to_py, device_type_from_py, PyDevice};
use crate::device::{Device, DeviceType};
use crate::error::Error;
use crate::map::{DeviceMap, Slot};
use crate::parse::parse_device;

/// Calls `f(key, value)` for each item of a dict (fast path) or any object with `items()`.
fn for_each_item<'py>(
    mapping: &Bound<'py, PyAny>,
    mut f: impl FnMut(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    if let Ok(dict) = mapping.cast::<PyDict>() {
        for (key, value) in dict.iter() {
            f(&key, &value)?;
        }
        return Ok(());
    }
    if !mapping.hasattr("items")? {
        return Err(Error::Type(format!(
            "expected a mapping (dict), got {} {}",
            mapping.get_type().name()?,
            short_repr(mapping)
        ))
        .into());
    }
    for item in mapping.call_method0("items")?.try_iter()? {
        let (key, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
        f(&key, &value)?;
    }
    Ok(())
}

fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".to_owned());
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

/// A map key: must be a `str`.
pub fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match key.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?),
        Err(_) => Err(Error::Type(format!(
            "DeviceMap keys must be str, got {} {}",
            key.get_type().name()?,
            short_repr(key)
        ))
        .into()),
    }
}

/// Device strings seen in this call, so each distinct string is parsed once.
#[derive(Default)]
struct ParseCache {
    slots: HashMap<Box<str>, Slot, RandomState>,
}

impl ParseCache {
    fn slot(&mut self, map: &mut DeviceMap, text: &str) -> Result<Slot, Error> {
        if let Some(&slot) = self.slots.get(text) {
            return Ok(slot);
        }
        let slot = map.intern(parse_device(text)?);
        self.slots.insert(text.into(), slot);
        Ok(slot)
    }
}

/// `DeviceMap(mapping)`: `str` keys, `Device` values.
pub fn map_from_devices(mapping: &Bound<'_, PyAny>) -> PyResult<DeviceMap> {
    let mut map = DeviceMap::with_capacity(mapping.len().unwrap_or(0));
    for_each_item(mapping, |key, value| {
        let key = key_str(key)?;
        let device = device_value(key, value)?;
        map.insert(key, device);
        Ok(())
    })?;
    Ok(map)
}

/// A value stored into a map: must be a `Device`.
pub fn device_value(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Device> {
    match value.cast::<PyDevice>() {
        Ok(device) => Ok(device.get().inner),
        Err(_) => Err(Error::Type(format!(
            "DeviceMap values must be Device, got {} {}",
            value.get_type().name()?,
            short_repr(value)
        ))
        .for_key(key)
        .into()),
    }
}

/// What to do with a bad entry: stop at the first (the constructors), or collect every one
/// and keep the good entries (`check-map`).
pub enum OnError<'a> {
    Stop,
    Collect(&'a mut Vec<(String, PyErr)>),
}

impl OnError<'_> {
    fn handle(&mut self, key: &Bound<'_, PyAny>, result: PyResult<()>) -> PyResult<()> {
        match (result, self) {
            (Err(err), OnError::Collect(errors)) => {
                let key = key.str().map(|k| k.to_string()).unwrap_or_default();
                errors.push((key, err));
                Ok(())
            }
            (result, _) => result,
        }
    }
}

/// `DeviceMap.from_dict`: `str` keys, device-string values.
pub fn map_from_strings(
    mapping: &Bound<'_, PyAny>,
    mut on_error: OnError<'_>,
) -> PyResult<DeviceMap> {
    let mut map = DeviceMap::with_capacity(mapping.len().unwrap_or(0));
    let mut cache = ParseCache::default();
    for_each_item(mapping, |key_obj, value| {
        let result = (|| -> PyResult<()> {
            let key = key_str(key_obj)?;
            let Ok(text) = value.cast::<PyString>() else {
                return Err(Error::Type(format!(
                    "Device string must be a str, got {} {}",
                    value.get_type().name()?,
                    short_repr(value)
                ))
                .for_key(key)
                .into());
            };
            let slot = cache
                .slot(&mut map, text.to_str()?)
                .map_err(|e| e.for_key(key))?;
            map.insert_slot(key, slot);
            Ok(())
        })();
        on_error.handle(key_obj, result)
    })?;
    Ok(map)
}

/// `DeviceMap.from_hf`: values are GPU ids (`int`), device strings, or `torch.device`.
pub fn map_from_hf(mapping: &Bound<'_, PyAny>, mut on_error: OnError<'_>) -> PyResult<DeviceMap> {
    let py = mapping.py();
    // A torch.device can only exist if torch is imported; never import it here.
    let torch_device = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?
        .get_item("torch")?
        .map(|torch| torch.getattr("device"))
        .transpose()?;
    let mut map = DeviceMap::with_capacity(mapping.len().unwrap_or(0));
    let mut cache = ParseCache::default();
    for_each_item(mapping, |key_obj, value| {
        let result = (|| -> PyResult<()> {
            let key = key_str(key_obj)?;
            let unexpected = || -> PyResult<PyErr> {
                Ok(Error::Type(format!(
                    "Couldn't convert HuggingFace device map - unexpected device '{}' for '{}'",
                    value.str()?,
                    key
                ))
                .into())
            };
            let slot = if let Ok(text) = value.cast::<PyString>() {
                cache
                    .slot(&mut map, text.to_str()?)
                    .map_err(|e| e.for_key(key))?
            } else if value.is_instance_of::<PyInt>() {
                if value.is_instance_of::<PyBool>() {
                    return Err(unexpected()?);
                }
                let id =
                    super::device::id_from_py(Some(value)).map_err(|e| with_key(py, e, key))?;
                map.intern(Device::new(DeviceType::Gpu, id))
            } else if torch_device
                .as_ref()
                .is_some_and(|t| value.is_instance(t).unwrap_or(false))
            {
                let kind = device_type_from_py(&value.getattr("type")?)
                    .map_err(|e| with_key(py, e, key))?;
                let id: Option<u64> = value.getattr("index")?.extract()?;
                map.intern(Device::new(kind, id))
            } else {
                return Err(unexpected()?);
            };
            map.insert_slot(key, slot);
            Ok(())
        })();
        on_error.handle(key_obj, result)
    })?;
    Ok(map)
}

/// Adds the key to a Python error raised while converting its value.
fn with_key(py: Python<'_>, err: PyErr, key: &str) -> PyErr {
    let message = format!("{} (key '{}')", err.value(py), key);
    let ty = err.get_type(py);
    PyErr::from_type(ty, message)
}

/// `to_dict()`: `{key: "cuda:1"}`.
pub fn map_to_strings<'py>(py: Python<'py>, map: &DeviceMap) -> PyResult<Bound<'py, PyDict>> {
    let texts: Vec<Bound<'py, PyString>> = map
        .table()
        .iter()
        .map(|device| PyString::new(py, &device.to_string()))
        .collect();
    let dict = PyDict::new(py);
    for (key, slot) in map.iter_slots() {
        dict.set_item(key, &texts[slot as usize])?;
    }
    Ok(dict)
}

/// HF's form: GPU ids as `int`, everything else as its string.
pub fn hf_value<'py>(py: Python<'py>, device: Device) -> PyResult<Bound<'py, PyAny>> {
    Ok(match (device.kind, device.id) {
        (DeviceType::Gpu, Some(id)) => id.into_pyobject(py)?.into_any(),
        _ => PyString::new(py, &device.to_string()).into_any(),
    })
}

/// `to_hf()` of a map: `{key: 1, other: "cpu"}`.
pub fn map_to_hf<'py>(py: Python<'py>, map: &DeviceMap) -> PyResult<Bound<'py, PyDict>> {
    map.check_gpu_ids("HuggingFace's device map")?;
    let values = map
        .table()
        .iter()
        .map(|&device| hf_value(py, device))
        .collect::<PyResult<Vec<_>>>()?;
    let dict = PyDict::new(py);
    for (key, slot) in map.iter_slots() {
        dict.set_item(key, &values[slot as usize])?;
    }
    Ok(dict)
}

/// `{key: Device}` as Python objects, for `dict(dm)` and friends.
pub fn device_objects<'py>(
    py: Python<'py>,
    map: &DeviceMap,
) -> PyResult<Vec<Bound<'py, PyDevice>>> {
    map.table().iter().map(|&d| device_to_py(py, d)).collect()
}
