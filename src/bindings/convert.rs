//! Conversions between Python values and maps: every API that reads or writes a map's
//! Python form goes through here. Each distinct device becomes a Python object once per call.

use std::collections::HashMap;

use ahash::RandomState;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use super::device::{device_to_py, device_type_from_py, PyDevice};
use super::errors::{expect_str, wrong_type};
use super::keys::KeyCache;
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
        return Err(wrong_type("expected a mapping (dict)", mapping).into());
    }
    for item in mapping.call_method0("items")?.try_iter()? {
        let (key, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
        f(&key, &value)?;
    }
    Ok(())
}

/// A map key: must be a `str`.
pub fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    expect_str(key, "DeviceMap keys must be str")
}

/// Converts each distinct value once per call. Entries of real maps come in runs of one
/// device, so the previous value is checked first: the same object (accelerate's small ints,
/// interned strings) or the same text (`json.load` makes a new `str` per value) skips the lookup.
struct ValueCache<'py> {
    last_object: Option<(Bound<'py, PyAny>, Slot)>,
    last_text: String,
    last_text_slot: Option<Slot>,
    parsed: HashMap<Box<str>, Slot, RandomState>,
}

impl<'py> ValueCache<'py> {
    fn new() -> Self {
        ValueCache {
            last_object: None,
            last_text: String::new(),
            last_text_slot: None,
            parsed: HashMap::default(),
        }
    }

    /// The slot of the previous value if `value` is that very object.
    #[inline]
    fn same_object(&self, value: &Bound<'py, PyAny>) -> Option<Slot> {
        match &self.last_object {
            Some((last, slot)) if last.is(value) => Some(*slot),
            _ => None,
        }
    }

    #[inline]
    fn remember(&mut self, value: &Bound<'py, PyAny>, slot: Slot) {
        self.last_object = Some((value.clone(), slot));
    }

    /// The slot of a device string, parsing each distinct string once.
    fn text_slot(&mut self, map: &mut DeviceMap, text: &str) -> Result<Slot, Error> {
        if let Some(slot) = self.last_text_slot.filter(|_| self.last_text == text) {
            return Ok(slot);
        }
        let slot = match self.parsed.get(text) {
            Some(&slot) => slot,
            None => {
                let slot = map.intern(parse_device(text)?);
                self.parsed.insert(text.into(), slot);
                slot
            }
        };
        self.last_text.clear();
        self.last_text.push_str(text);
        self.last_text_slot = Some(slot);
        Ok(slot)
    }
}

/// Puts entries into a new map. The keys of a dict are distinct, and for exact `str`s that
/// means distinct text, so they are appended without a lookup; after the first key that is a
/// `str` subclass (which may define equality its own way) or for other mappings, each key is
/// looked up as usual.
struct Appender {
    distinct: bool,
}

impl Appender {
    fn new(mapping: &Bound<'_, PyAny>) -> Self {
        Appender {
            distinct: mapping.is_instance_of::<PyDict>(),
        }
    }

    #[inline]
    fn put(&mut self, map: &mut DeviceMap, key_obj: &Bound<'_, PyAny>, key: &str, slot: Slot) {
        if self.distinct && key_obj.is_exact_instance_of::<PyString>() {
            map.push_new(key, slot);
        } else {
            self.distinct = false;
            map.insert_slot(key, slot);
        }
    }
}

/// `DeviceMap(mapping)`: `str` keys, `Device` values.
pub fn map_from_devices(mapping: &Bound<'_, PyAny>) -> PyResult<DeviceMap> {
    let mut map = DeviceMap::with_capacity(mapping.len().unwrap_or(0));
    let mut appender = Appender::new(mapping);
    for_each_item(mapping, |key_obj, value| {
        let key = key_str(key_obj)?;
        let device = device_value(key, value)?;
        let slot = map.intern(device);
        appender.put(&mut map, key_obj, key, slot);
        Ok(())
    })?;
    map.shrink_to_fit();
    Ok(map)
}

/// A value stored into a map: must be a `Device`.
pub fn device_value(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Device> {
    match value.cast::<PyDevice>() {
        Ok(device) => Ok(device.get().inner),
        Err(_) => Err(wrong_type("DeviceMap values must be Device", value)
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
    #[inline]
    fn handle(&mut self, key: &Bound<'_, PyAny>, result: PyResult<()>) -> PyResult<()> {
        if result.is_ok() {
            return Ok(());
        }
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
    let mut cache = ValueCache::new();
    let mut appender = Appender::new(mapping);
    for_each_item(mapping, |key_obj, value| {
        let result = (|| -> PyResult<()> {
            let key = key_str(key_obj)?;
            let slot = match cache.same_object(value) {
                Some(slot) => slot,
                None => {
                    let Ok(text) = value.cast::<PyString>() else {
                        return Err(wrong_type("Device string must be a str", value)
                            .for_key(key)
                            .into());
                    };
                    let slot = cache
                        .text_slot(&mut map, text.to_str()?)
                        .map_err(|e| e.for_key(key))?;
                    cache.remember(value, slot);
                    slot
                }
            };
            appender.put(&mut map, key_obj, key, slot);
            Ok(())
        })();
        on_error.handle(key_obj, result)
    })?;
    map.shrink_to_fit();
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
        // `sys.modules["torch"] = None` blocks torch; a torch still importing may lack `device`.
        .and_then(|torch| torch.getattr("device").ok());
    let mut map = DeviceMap::with_capacity(mapping.len().unwrap_or(0));
    let mut cache = ValueCache::new();
    let mut appender = Appender::new(mapping);
    for_each_item(mapping, |key_obj, value| {
        let result = (|| -> PyResult<()> {
            let key = key_str(key_obj)?;
            if let Some(slot) = cache.same_object(value) {
                appender.put(&mut map, key_obj, key, slot);
                return Ok(());
            }
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
                    .text_slot(&mut map, text.to_str()?)
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
                // An exact type check (torch.device cannot be subclassed) runs no Python code,
                // which could change the dict being read.
                .is_some_and(|t| value.get_type().is(t))
            {
                let kind = device_type_from_py(&value.getattr("type")?)
                    .map_err(|e| with_key(py, e, key))?;
                let id: Option<u64> = value.getattr("index")?.extract()?;
                map.intern(Device::new(kind, id))
            } else {
                return Err(unexpected()?);
            };
            cache.remember(value, slot);
            appender.put(&mut map, key_obj, key, slot);
            Ok(())
        })();
        on_error.handle(key_obj, result)
    })?;
    map.shrink_to_fit();
    Ok(map)
}

/// Adds the key to a Python error raised while converting its value.
fn with_key(py: Python<'_>, err: PyErr, key: &str) -> PyErr {
    let message = format!("{} (key '{}')", err.value(py), key);
    let ty = err.get_type(py);
    PyErr::from_type(ty, message)
}

/// `to_dict()`: `{key: "cuda:1"}`.
pub fn map_to_strings<'py>(
    py: Python<'py>,
    map: &DeviceMap,
    keys: &KeyCache,
) -> PyResult<Bound<'py, PyDict>> {
    let texts: Vec<Bound<'py, PyAny>> = map
        .table()
        .iter()
        .map(|device| PyString::new(py, &device.to_string()).into_any())
        .collect();
    entries_to_dict(py, map, keys, &texts)
}

/// HF's form: GPU ids as `int`, everything else as its string.
pub fn hf_value<'py>(py: Python<'py>, device: Device) -> PyResult<Bound<'py, PyAny>> {
    Ok(match (device.kind, device.id) {
        (DeviceType::Gpu, Some(id)) => id.into_pyobject(py)?.into_any(),
        _ => PyString::new(py, &device.to_string()).into_any(),
    })
}

/// `to_hf()` of a map: `{key: 1, other: "cpu"}`.
pub fn map_to_hf<'py>(
    py: Python<'py>,
    map: &DeviceMap,
    keys: &KeyCache,
) -> PyResult<Bound<'py, PyDict>> {
    map.check_gpu_ids("HuggingFace's device map")?;
    let values = map
        .table()
        .iter()
        .map(|&device| hf_value(py, device))
        .collect::<PyResult<Vec<_>>>()?;
    entries_to_dict(py, map, keys, &values)
}

/// `{key: values[slot]}` for every entry, in insertion order, with the map's cached key objects.
fn entries_to_dict<'py>(
    py: Python<'py>,
    map: &DeviceMap,
    keys: &KeyCache,
    values: &[Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = presized_dict(py, map.len())?;
    if let Some(cached) = keys.get(py) {
        debug_assert_eq!(
            cached.len(),
            map.len(),
            "a key cache paired with another map"
        );
        for (key, slot) in cached.iter().zip(map.slots()) {
            dict.set_item(key.bind(py), &values[slot as usize])?;
        }
        return Ok(dict);
    }
    // The first conversion makes the key objects, inserting each as it is made, and leaves
    // them for the next.
    let mut made = Vec::with_capacity(map.len());
    for (key, slot) in map.iter_slots() {
        let key = PyString::new(py, key);
        dict.set_item(&key, &values[slot as usize])?;
        made.push(key.unbind());
    }
    keys.offer(py, made);
    Ok(dict)
}

/// An empty dict with room for `len` entries, so filling it never rehashes (about a fifth of
/// the time of `to_dict` on a large map). The stable ABI has no presizing call, so CPython's
/// `_PyDict_NewPresized` is looked up at run time, with a plain `PyDict_New` where it is absent.
pub fn presized_dict(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyDict>> {
    type NewPresized = unsafe extern "C" fn(pyo3::ffi::Py_ssize_t) -> *mut pyo3::ffi::PyObject;
    static NEW_PRESIZED: std::sync::OnceLock<Option<NewPresized>> = std::sync::OnceLock::new();
    const WORTH_IT: usize = 64;
    let new_presized = NEW_PRESIZED.get_or_init(|| {
        let symbol = runtime_symbol(c"_PyDict_NewPresized")?;
        // SAFETY: the symbol is CPython's, with this signature in every version that has it.
        Some(unsafe { std::mem::transmute::<*mut std::ffi::c_void, NewPresized>(symbol) })
    });
    match (new_presized, pyo3::ffi::Py_ssize_t::try_from(len)) {
        (Some(new_presized), Ok(len)) if len as usize >= WORTH_IT => {
            // SAFETY: called with the GIL held; returns a new reference or NULL with an exception set.
            let dict = unsafe { Bound::from_owned_ptr_or_err(py, new_presized(len))? };
            Ok(dict.cast_into::<PyDict>()?)
        }
        _ => Ok(PyDict::new(py)),
    }
}

/// The address of a symbol the interpreter process exports, if any.
#[cfg(unix)]
fn runtime_symbol(name: &std::ffi::CStr) -> Option<*mut std::ffi::c_void> {
    use std::ffi::{c_char, c_void};
    extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    #[cfg(target_os = "macos")]
    const RTLD_DEFAULT: *mut c_void = -2isize as *mut c_void;
    #[cfg(not(target_os = "macos"))]
    const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the symbol tables.
    let address = unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

#[cfg(not(unix))]
fn runtime_symbol(_name: &std::ffi::CStr) -> Option<*mut std::ffi::c_void> {
    None
}

/// `{key: Device}` as Python objects, for `dict(dm)` and friends.
pub fn device_objects<'py>(
    py: Python<'py>,
    map: &DeviceMap,
) -> PyResult<Vec<Bound<'py, PyDevice>>> {
    map.table().iter().map(|&d| device_to_py(py, d)).collect()
}
