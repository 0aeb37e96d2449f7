//! `devicemap check-map`'s scan: every entry validated, the good ones kept, the bad ones
//! counted and the first few hundred reported in full.

use pyo3::prelude::*;

use super::convert::{map_from_hf, map_from_strings, Collected, OnError};
use super::guard::guard;
use super::map::PyDeviceMap;

/// `(key, exception type name, message)` of an entry that failed validation.
type BadEntry = (String, String, String);

/// Validates every entry of a map in HF form (`hf=True`) or Haystack's string form. Returns
/// the map of good entries, the number of bad ones, and the first `keep` of them in full, so
/// memory stays bounded however many entries are bad.
#[pyfunction]
#[pyo3(signature = (mapping, *, hf, keep = 200))]
pub fn _check_map(
    mapping: &Bound<'_, PyAny>,
    hf: bool,
    keep: usize,
) -> PyResult<(PyDeviceMap, usize, Vec<BadEntry>)> {
    guard("check-map", || {
        let mut collected = Collected::new(keep);
        let sink = OnError::Bounded(&mut collected);
        let map = if hf {
            map_from_hf(mapping, sink)?
        } else {
            map_from_strings(mapping, sink)?
        };
        Ok((PyDeviceMap::from_map(map), collected.count, collected.kept))
    })
}
