//! Conversions between Python values and maps: every API that reads or writes a map's
//! Python form goes through here. Each distinct device becomes a Python object once per call.

use std::collections::HashMap;

use ahash::RandomState;
use pyo3::exceptions::{PyException, PyOverflowError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString, PyTuple};

use super::device::{device_to_py, device_type_from_py, haystack_device, id_from_py, PyDevice};
use super::errors::{short_repr, short_str, str_text, with_key, wrong_type};
use super::guard::guard;
use super::haystack::{haystack_class, Haystack};
use super::keys::KeyCache;
use crate::device::{Device, DeviceType};
use crate::error::{Error, MAX_ENTRIES};
use crate::map::{DeviceMap, Slot};
use crate::parse::parse_device;

/// Calls `f(key, value)` for each item of a mapping, in the mapping's own order: Haystack runs
/// `for key, value in mapping.items()`, so anything but an exact `dict` (an `OrderedDict`
/// after `move_to_end`, a `dict` subclass overriding `items()`, a `Mapping`) is read through
/// its own `items()`. Only an exact `dict` takes the fast path, whose order is its own.
fn for_each_item<'py>(
    mapping: &Bound<'py, PyAny>,
    mut f: impl FnMut(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    if let Ok(dict) = mapping.cast_exact::<PyDict>() {
        return for_each_dict_item(dict, f);
    }
    let Some(items) = mapping.getattr_opt("items")? else {
        return Err(wrong_type("expected a mapping (dict)", mapping).into());
    };
    for item in items.call0()?.try_iter()? {
        let (key, value) = unpack_pair(&item?)?;
        f(&key, &value)?;
    }
    Ok(())
}

/// Iterates an exact `dict` with `PyDict_Next`. `f` may run Python code (a key's `__str__`
/// or a value's `__repr__` while building an error) that changes the dict: that raises
/// `RuntimeError` as a `for` loop over the dict would, where pyo3's own iterator panics.
fn for_each_dict_item<'py>(
    dict: &Bound<'py, PyDict>,
    mut f: impl FnMut(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    let py = dict.py();
    let len = dict.len();
    let mut position: pyo3::ffi::Py_ssize_t = 0;
    let mut key = std::ptr::null_mut();
    let mut value = std::ptr::null_mut();
    // SAFETY: the GIL is held (`py`); `PyDict_Next` hands out borrowed references, which
    // become owned ones at once, before anything can run that changes the dict.
    while unsafe { pyo3::ffi::PyDict_Next(dict.as_ptr(), &mut position, &mut key, &mut value) } != 0
    {
        let (key, value) = unsafe {
            (
                Bound::from_borrowed_ptr(py, key),
                Bound::from_borrowed_ptr(py, value),
            )
        };
        f(&key, &value)?;
        if dict.len() != len {
            return Err(Error::ChangedDuringIteration { what: "dictionary" }.into());
        }
    }
    Ok(())
}

/// One item of `items()` as `(key, value)`: a 2-tuple, or any iterable of two, as a `for
/// key, value in ...` loop takes it.
fn unpack_pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(pair) = item.cast_exact::<PyTuple>() {
        if pair.len() == 2 {
            return Ok((pair.get_item(0)?, pair.get_item(1)?));
        }
    }
    let Ok(iter) = item.try_iter() else {
        return Err(wrong_type("each item of items() must be a (key, value) pair", item).into());
    };
    let mut parts = Vec::with_capacity(2);
    for part in iter {
        parts.push(part?);
        if parts.len() > 2 {
            return Err(Error::NotAPair {
                what: "items()",
                got: "too many".to_owned(),
            }
            .into());
        }
    }
    match <[Bound<'py, PyAny>; 2]>::try_from(parts) {
        Ok([key, value]) => Ok((key, value)),
        Err(parts) => Err(Error::NotAPair {
            what: "items()",
            got: parts.len().to_string(),
        }
        .into()),
    }
}

/// Entries to reserve for a mapping. An exact `dict` knows its size; another mapping's
/// `__len__` is only a hint (Haystack never calls it), trusted up to a modest size, and one
/// no map could hold (`2**62`) is an `OverflowError` rather than an allocation that aborts.
fn capacity_for(mapping: &Bound<'_, PyAny>) -> PyResult<usize> {
    const HINT_TRUSTED: usize = 1 << 16;
    if let Ok(dict) = mapping.cast_exact::<PyDict>() {
        return Ok(dict.len());
    }
    let py = mapping.py();
    let len = match mapping.len() {
        Ok(len) => len,
        // Too large for an index: as absurd as 2**62. A `__len__` that is missing or fails
        // otherwise only loses the hint; Ctrl-C and the like still stop the call.
        Err(err) if err.is_instance_of::<PyOverflowError>(py) => return Err(err),
        Err(err) if err.is_instance_of::<PyException>(py) => 0,
        Err(err) => return Err(err),
    };
    if len > MAX_ENTRIES {
        return Err(Error::TooManyEntries { len }.into());
    }
    Ok(len.min(HINT_TRUSTED))
}

/// A map key: must be a `str` of Unicode text that fits a map.
#[inline]
pub fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    let Ok(text) = key.cast::<PyString>() else {
        return Err(wrong_type("DeviceMap keys must be str", key).into());
    };
    let text = str_text(text, "DeviceMap key")?;
    if u32::try_from(text.len()).is_err() {
        return Err(Error::KeyTooLong { len: text.len() }.into());
    }
    Ok(text)
}

/// The text of a device string value, naming its key if it is not Unicode.
#[inline]
fn value_text<'a>(text: &'a Bound<'_, PyString>, key: &str) -> PyResult<&'a str> {
    str_text(text, "Device string").map_err(|err| with_key(text.py(), err, key))
}

/// Converts each distinct value once per call. Entries of real maps come in runs of one
/// device, or cycle over a few (`i % 8`): recent value objects are kept in a small table
/// indexed by address, so the same object (accelerate's small ints, interned strings) skips
/// the type checks and the lookup; for text (`json.load` makes a new `str` per value) the
/// previous text is checked first.
struct ValueCache<'py> {
    recent: [Option<(Bound<'py, PyAny>, Slot)>; RECENT],
    last_text: String,
    last_text_slot: Option<Slot>,
    parsed: HashMap<Box<str>, Slot, RandomState>,
}

/// Entries of [`ValueCache::recent`]: a power of two. Small ints are consecutive 32-byte
/// objects, so 0 to 15 land in distinct entries.
const RECENT: usize = 32;

impl<'py> ValueCache<'py> {
    fn new() -> Self {
        ValueCache {
            recent: std::array::from_fn(|_| None),
            last_text: String::new(),
            last_text_slot: None,
            parsed: HashMap::default(),
        }
    }

    #[inline]
    fn entry(value: &Bound<'py, PyAny>) -> usize {
        // The low bits of an address say little (objects are 8- or 16-byte aligned); small
        // ints, 32 bytes apart, then take every other entry.
        (value.as_ptr() as usize >> 4) & (RECENT - 1)
    }

    /// The slot of a recent value if `value` is that very object (kept alive by the table,
    /// so its address cannot be reused by another object meanwhile).
    #[inline]
    fn same_object(&self, value: &Bound<'py, PyAny>) -> Option<Slot> {
        match &self.recent[Self::entry(value)] {
            Some((seen, slot)) if seen.is(value) => Some(*slot),
            _ => None,
        }
    }

    #[inline]
    fn remember(&mut self, value: &Bound<'py, PyAny>, slot: Slot) {
        self.recent[Self::entry(value)] = Some((value.clone(), slot));
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

/// Puts entries into a new map. The keys of an exact `dict` are distinct, and for exact
/// `str`s that means distinct text, so they are appended without a lookup; after the first
/// key that is a `str` subclass (which may define equality its own way) or for any other
/// mapping (whose `items()` may repeat a key), each key is looked up as usual.
struct Appender {
    distinct: bool,
}

impl Appender {
    fn new(mapping: &Bound<'_, PyAny>) -> Self {
        Appender {
            distinct: mapping.is_exact_instance_of::<PyDict>(),
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

// --- maps from Python ----------------------------------------------------------------------

/// `DeviceMap(mapping)`: `str` keys, `Device` values (or Haystack's `DeviceMap`).
pub fn map_from_devices(mapping: &Bound<'_, PyAny>) -> PyResult<DeviceMap> {
    guard("reading a mapping of Devices", || devices_to_map(mapping))
}

fn devices_to_map(mapping: &Bound<'_, PyAny>) -> PyResult<DeviceMap> {
    if haystack_class(mapping) == Some(Haystack::DeviceMap) {
        return devices_to_map(&mapping.getattr("mapping")?);
    }
    let mut map = DeviceMap::with_capacity(capacity_for(mapping)?);
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

/// A value stored into a map: must be a `Device` (ours, or Haystack's read by value).
pub fn device_value(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Device> {
    match value.cast::<PyDevice>() {
        Ok(device) => Ok(device.get().inner),
        Err(_) if haystack_class(value) == Some(Haystack::Device) => {
            haystack_device(value).map_err(|err| with_key(value.py(), err, key))
        }
        Err(_) => Err(wrong_type("DeviceMap values must be Device", value)
            .for_key(key)
            .into()),
    }
}

/// Bad entries found by `check-map`: all counted, the first `keep` kept in full as
/// `(key, exception type name, message)`, so a file of a million bad entries costs little.
pub struct Collected {
    pub keep: usize,
    pub count: usize,
    pub kept: Vec<(String, String, String)>,
}

impl Collected {
    pub fn new(keep: usize) -> Self {
        Collected {
            keep,
            count: 0,
            kept: Vec::new(),
        }
    }
}

/// What to do with a bad entry: stop at the first (the constructors), or collect them and
/// keep the good entries (`check-map`).
pub enum OnError<'a> {
    Stop,
    Bounded(&'a mut Collected),
}

impl OnError<'_> {
    #[inline]
    fn handle(&mut self, key: &Bound<'_, PyAny>, result: PyResult<()>) -> PyResult<()> {
        let Err(err) = result else {
            return Ok(());
        };
        match self {
            OnError::Stop => Err(err),
            OnError::Bounded(collected) => {
                collected.count += 1;
                if collected.kept.len() < collected.keep {
                    let py = key.py();
                    let kind = err
                        .get_type(py)
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    let message = err.value(py).to_string();
                    collected.kept.push((key_text(key), kind, message));
                }
                Ok(())
            }
        }
    }
}

/// A key as text for a report: a `str` as it is, anything else as its (short) repr.
fn key_text(key: &Bound<'_, PyAny>) -> String {
    match key.cast::<PyString>() {
        Ok(text) => text.to_string_lossy().into_owned(),
        Err(_) => short_repr(key),
    }
}

/// `DeviceMap.from_dict`: `str` keys, device-string values.
pub fn map_from_strings(mapping: &Bound<'_, PyAny>, on_error: OnError<'_>) -> PyResult<DeviceMap> {
    guard("reading a serialized device map", || {
        strings_to_map(mapping, on_error)
    })
}

fn strings_to_map(mapping: &Bound<'_, PyAny>, mut on_error: OnError<'_>) -> PyResult<DeviceMap> {
    let mut map = DeviceMap::with_capacity(capacity_for(mapping)?);
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
                        .text_slot(&mut map, value_text(text, key)?)
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
pub fn map_from_hf(mapping: &Bound<'_, PyAny>, on_error: OnError<'_>) -> PyResult<DeviceMap> {
    guard("reading a HuggingFace device map", || {
        hf_to_map(mapping, on_error)
    })
}

fn hf_to_map(mapping: &Bound<'_, PyAny>, mut on_error: OnError<'_>) -> PyResult<DeviceMap> {
    let py = mapping.py();
    // A torch.device can only exist if torch is imported; never import it here.
    let torch_device = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?
        .get_item("torch")?
        // `sys.modules["torch"] = None` blocks torch; a torch still importing may lack `device`.
        .and_then(|torch| torch.getattr("device").ok());
    let mut map = DeviceMap::with_capacity(capacity_for(mapping)?);
    let mut cache = ValueCache::new();
    let mut appender = Appender::new(mapping);
    for_each_item(mapping, |key_obj, value| {
        let result = (|| -> PyResult<()> {
            let key = key_str(key_obj)?;
            if let Some(slot) = cache.same_object(value) {
                appender.put(&mut map, key_obj, key, slot);
                return Ok(());
            }
            // Haystack's message, with the value's `str` and the key cut to a readable length.
            let unexpected = || -> PyResult<PyErr> {
                Ok(Error::UnexpectedHfDevice {
                    value: short_str(value)?,
                    key: key.to_owned(),
                }
                .into())
            };
            let slot = if let Ok(text) = value.cast::<PyString>() {
                cache
                    .text_slot(&mut map, value_text(text, key)?)
                    .map_err(|e| e.for_key(key))?
            } else if value.is_instance_of::<PyInt>() {
                if value.is_instance_of::<PyBool>() {
                    return Err(unexpected()?);
                }
                let id = id_from_py(Some(value)).map_err(|e| with_key(py, e, key))?;
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

/// `to_dict()`: `{key: "cuda:1"}`.
pub fn map_to_strings<'py>(
    py: Python<'py>,
    map: &DeviceMap,
    keys: &KeyCache,
) -> PyResult<Bound<'py, PyDict>> {
    guard("serializing a device map", || {
        let texts: Vec<Bound<'py, PyAny>> = map
            .table()
            .iter()
            .map(|device| PyString::new(py, &device.to_string()).into_any())
            .collect();
        entries_to_dict(py, map, keys, &texts)
    })
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
    guard("converting a device map to HuggingFace's form", || {
        map.check_gpu_ids("HuggingFace's device map")?;
        let values = map
            .table()
            .iter()
            .map(|&device| hf_value(py, device))
            .collect::<PyResult<Vec<_>>>()?;
        entries_to_dict(py, map, keys, &values)
    })
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
        for (key, slot) in cached.zip(map.slots()) {
            dict.set_item(key, &values[slot as usize])?;
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
    keys.offer(py, made)?;
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
