//! Iterating a `DeviceMap` or its `mapping` view: `itertools.chain` over batches of ready
//! Python objects (docs/design.md, "Iteration").

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

use super::component::glue;
use super::device::device_to_py;
use super::guard::guard;
use super::keys::KeyCache;
use crate::device::Device;
use crate::map::DeviceMap;

/// What each step hands out.
#[derive(Clone, Copy)]
pub(super) enum IterKind {
    /// `(key, device)` pairs: `for k, d in dm`, `dm.mapping.items()`.
    Items,
    /// Keys: `iter(dm.mapping)`, `dm.mapping.keys()`.
    Keys,
    /// Devices: `dm.mapping.values()`.
    Values,
}

/// Entries per batch: enough for `chain` to do nearly all the stepping, few for an early `break`.
const BATCH: usize = 512;

/// `itertools.chain` and `zip`, looked up once.
static CHAIN_FROM_ITERABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ZIP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Iterates a snapshot: changing the map while iterating neither fails nor shows the change.
/// Each step hands out a batch of ready objects (the shared key objects and interned devices)
/// as a list of keys, a list of devices or a `zip` of the two, for `itertools.chain` to step
/// through in C. The cursor's mutex is held only to take a batch, so threads sharing one
/// iterator get each entry once.
#[pyclass(frozen, module = "devicemap")]
pub struct MapIter {
    map: Arc<DeviceMap>,
    keys: KeyCache,
    /// Where the next batch starts: a cursor for [`DeviceMap::next_from`] and the number of
    /// live entries before it (an index into the key objects).
    cursor: Mutex<(usize, usize)>,
    kind: IterKind,
}

impl MapIter {
    /// `itertools.chain.from_iterable` over the batches of `map` (with its key objects `keys`).
    pub(super) fn chain<'py>(
        py: Python<'py>,
        map: Arc<DeviceMap>,
        keys: KeyCache,
        kind: IterKind,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batches = Bound::new(py, MapIter::new(py, map, keys, kind)?)?;
        glue(py, &CHAIN_FROM_ITERABLE, "itertools", "chain")?
            .getattr(pyo3::intern!(py, "from_iterable"))?
            .call1((batches,))
    }

    /// Makes the key objects now (unless only devices are wanted), so that taking a batch
    /// only shares them.
    fn new(py: Python<'_>, map: Arc<DeviceMap>, keys: KeyCache, kind: IterKind) -> PyResult<Self> {
        if !matches!(kind, IterKind::Values) {
            keys.slice(py, &map, 0, 0)?;
        }
        let cursor = Mutex::new((0, 0));
        Ok(MapIter {
            map,
            keys,
            cursor,
            kind,
        })
    }

    /// The next batch's first live index and devices, taken under the cursor's lock.
    fn take_batch(&self) -> (usize, Vec<Device>) {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let (mut at, first) = *cursor;
        let mut devices = Vec::with_capacity(BATCH.min(self.map.len()));
        while devices.len() < BATCH {
            let Some((after, _, device)) = self.map.next_from(at) else {
                break;
            };
            devices.push(device);
            at = after;
        }
        *cursor = (at, first + devices.len());
        (first, devices)
    }
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard("DeviceMap iterator.__next__", || {
            let (first, devices) = self.take_batch();
            if devices.is_empty() {
                return Ok(None);
            }
            let end = first + devices.len();
            let devices = || -> PyResult<Bound<'py, PyList>> {
                let objects = devices
                    .iter()
                    .map(|&device| device_to_py(py, device))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, objects)
            };
            Ok(Some(match self.kind {
                IterKind::Keys => self.keys.slice(py, &self.map, first, end)?.into_any(),
                IterKind::Values => devices()?.into_any(),
                IterKind::Items => {
                    let keys = self.keys.slice(py, &self.map, first, end)?;
                    glue(py, &ZIP, "builtins", "zip")?.call1((keys, devices()?))?
                }
            }))
        })
    }

    fn __length_hint__(&self) -> PyResult<usize> {
        guard("DeviceMap iterator.__length_hint__", || {
            let (_, before) = *self.cursor.lock().unwrap_or_else(|p| p.into_inner());
            Ok(self.map.len().saturating_sub(before))
        })
    }
}
