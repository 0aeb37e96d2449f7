//! The Python `str` objects of a map's keys, in entry order. Converting a map to a dict costs
//! mostly a new `str` per key and its hash; the first conversion keeps the objects it made, and
//! later ones reuse them, hash included, as Haystack's dict reuses its keys.
//!
//! Not filled from the input dict's own keys: once that dict is freed they would be all that
//! is left of its memory, scattered among its freed values, and cost more than the map.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

use crate::map::DeviceMap;

/// Key objects for one map's keys and order (values may change under it). Holders of the same
/// keys share the cell, so the first conversion fills it for all of them; a holder whose keys
/// change takes a fresh cell rather than emptying the shared one.
#[derive(Clone)]
pub struct KeyCache(Arc<PyOnceLock<Box<[Py<PyString>]>>>);

impl KeyCache {
    /// Filled on first use.
    pub fn empty() -> Self {
        KeyCache(Arc::new(PyOnceLock::new()))
    }

    /// The key objects of `map`, which must have the keys this cache belongs to. `PyOnceLock`:
    /// making the objects may run Python code that lets another thread in, which must not block.
    pub fn get<'a>(&'a self, py: Python<'_>, map: &DeviceMap) -> &'a [Py<PyString>] {
        let keys = self.0.get_or_init(py, || {
            map.iter_slots()
                .map(|(key, _)| PyString::new(py, key).unbind())
                .collect()
        });
        debug_assert_eq!(keys.len(), map.len(), "a key cache paired with another map");
        keys
    }
}
