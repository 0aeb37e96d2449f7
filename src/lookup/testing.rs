//! Helpers for the lookup's tests.

use crate::device::Device;
use crate::map::DeviceMap;

pub fn map(pairs: &[(&str, Device)]) -> DeviceMap {
    pairs.iter().map(|(k, d)| (k.to_string(), *d)).collect()
}
