//! The Python `str` objects of a map's keys, in entry order. Converting a map to a dict costs
//! mostly a new `str` per key and its hash; the first conversion keeps the objects it made, and
//! later ones reuse them, hash included, as Haystack's dict reuses its keys.
//!
//! Iterating a map (`for k, d in dm`, `keys()`, `items()`, the `mapping` view) fills it too,
//! so that a loop over the map hands out the same key objects each time instead of making a
//! `str` per key per loop (most of the cost of iterating).
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

    /// The key objects, if a conversion has made them.
    pub fn get<'a>(&'a self, py: Python<'_>) -> Option<&'a [Py<PyString>]> {
        self.0.get(py).map(|keys| &**keys)
    }

    /// The key objects of `map` (the map this cache belongs to), made now if no conversion or
    /// iteration has made them yet.
    pub fn get_or_fill<'a>(&'a self, py: Python<'_>, map: &DeviceMap) -> &'a [Py<PyString>] {
        self.0.get_or_init(py, || {
            map.iter()
                .map(|(key, _)| PyString::new(py, key).unbind())
                .collect()
        })
    }

    /// Keeps the key objects a conversion made, in entry order, unless another conversion
    /// (another thread, while this one let go of the GIL) got there first.
    pub fn offer(&self, py: Python<'_>, keys: Vec<Py<PyString>>) {
        let _ = self.0.set(py, keys.into_boxed_slice());
    }
}
