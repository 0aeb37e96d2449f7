//! The Python `str` objects of a map's keys, in entry order. Converting a map to a dict costs
//! mostly a new `str` per key and its hash; the first conversion keeps the objects it made, and
//! later ones reuse them, hash included, as Haystack's dict reuses its keys.
//!
//! Iterating a map (`for k, d in dm`, its `keys()` and `items()` views, the `mapping` view)
//! fills it too, so that a loop over the map hands out the same key objects each time instead
//! of making a `str` per key per loop (most of the cost of iterating: docs/design.md, "Key
//! objects", has what each alternative measured, and the memory this keeps).
//!
//! Not filled from the input dict's own keys: once that dict is freed they would be all that
//! is left of its memory, scattered among its freed values, and cost more than the map.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyIterator, PyList, PyString};

use crate::map::DeviceMap;

/// Key objects for one map's keys and order (values may change under it), as one Python
/// list that never leaves this module (callers get slices of it, which are new lists, or an
/// iterator over it, which cannot change it), so it never changes once filled. Holders of the same keys share the cell, so the first
/// conversion fills it for all of them; a holder whose keys change takes a fresh cell rather
/// than emptying the shared one.
#[derive(Clone)]
pub struct KeyCache(Arc<PyOnceLock<Py<PyList>>>);

impl KeyCache {
    /// Filled on first use.
    pub fn empty() -> Self {
        KeyCache(Arc::new(PyOnceLock::new()))
    }

    /// The key objects in entry order, if a conversion or iteration has made them.
    pub fn get<'a, 'py>(&'a self, py: Python<'py>) -> Option<CachedKeys<'a, 'py>> {
        let list = self.0.get(py)?.bind_borrowed(py);
        Some(CachedKeys {
            list,
            next: 0,
            len: list.len(),
        })
    }

    /// The key objects of entries `start..end` of `map` (the map this cache belongs to) as a
    /// new list, making every key object now if no conversion or iteration has yet: copying
    /// a slice of ready objects is C's work, with nothing made per key.
    pub fn slice<'py>(
        &self,
        py: Python<'py>,
        map: &DeviceMap,
        start: usize,
        end: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        Ok(self.list(py, map)?.get_slice(start, end))
    }

    /// The list itself, made now if need be: only for reading within this module.
    fn list<'py>(&self, py: Python<'py>, map: &DeviceMap) -> PyResult<Bound<'py, PyList>> {
        // Made with the GIL held and offered, not through `get_or_init`, which lets go of the
        // GIL and takes it back (a wait behind every other thread when many share the map);
        // two threads filling at once both make the list and the second one's is dropped.
        Ok(match self.0.get(py) {
            Some(list) => list.bind(py).clone(),
            None => {
                let made = PyList::new(py, map.iter().map(|(key, _)| PyString::new(py, key)))?;
                let _ = self.0.set(py, made.clone().unbind());
                self.0.get(py).map_or(made, |list| list.bind(py).clone())
            }
        })
    }

    /// An iterator over all the key objects of `map` (the map this cache belongs to), making
    /// them now if no conversion or iteration has yet. A list iterator cannot change its
    /// list, so handing one out keeps the list as it is; nothing is copied.
    pub fn iter<'py>(&self, py: Python<'py>, map: &DeviceMap) -> PyResult<Bound<'py, PyIterator>> {
        self.list(py, map)?.try_iter()
    }

    /// Keeps the key objects a conversion made, in entry order, unless another conversion
    /// (another thread, while this one let go of the GIL) got there first.
    pub fn offer(&self, py: Python<'_>, keys: Vec<Py<PyString>>) -> PyResult<()> {
        let _ = self.0.set(py, PyList::new(py, keys)?.unbind());
        Ok(())
    }
}

/// The items of a filled [`KeyCache`], borrowed.
pub struct CachedKeys<'a, 'py> {
    list: Borrowed<'a, 'py, PyList>,
    next: usize,
    len: usize,
}

impl<'a, 'py> Iterator for CachedKeys<'a, 'py> {
    type Item = Borrowed<'a, 'py, PyAny>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.next == self.len {
            return None;
        }
        let i = self.next as pyo3::ffi::Py_ssize_t;
        self.next += 1;
        // SAFETY: `i` is below the length of a list that never changes once filled (see
        // `KeyCache`), so the item exists and lives as long as the list the cache holds.
        unsafe {
            let item = pyo3::ffi::PyList_GetItem(self.list.as_ptr(), i);
            Some(Borrowed::from_ptr(self.list.py(), item))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len - self.next, Some(self.len - self.next))
    }
}

impl ExactSizeIterator for CachedKeys<'_, '_> {}
