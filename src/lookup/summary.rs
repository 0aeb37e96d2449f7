//! A map's entries per device, and a model's tensors and bytes per device when sizes are given.

use std::collections::HashMap;

use ahash::RandomState;

use super::find::Finder;
use super::text::plural;
use crate::device::Device;
use crate::error::Result;
use crate::map::DeviceMap;
use crate::units::{human_bytes, thousands};

/// One device's share of a map (and of a model's tensors, when sizes were given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceUsage {
    pub device: Device,
    /// Map entries with this device.
    pub entries: usize,
    /// Tensors placed on it (0 without sizes).
    pub tensors: usize,
    /// Their total size in bytes (0 without sizes).
    pub bytes: u64,
}

/// Entries per device, and tensors and bytes per device when sizes were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// In order of each device's first entry.
    pub devices: Vec<DeviceUsage>,
    /// Whether tensor sizes were given (so `tensors` and `bytes` mean something).
    pub sized: bool,
    /// Tensors no key covers, and their bytes.
    pub uncovered_tensors: usize,
    pub uncovered_bytes: u64,
}

/// Entries per device.
pub fn summary(map: &DeviceMap) -> Summary {
    Summary {
        devices: map
            .device_counts()
            .into_iter()
            .map(|(device, entries)| DeviceUsage {
                device,
                entries,
                tensors: 0,
                bytes: 0,
            })
            .collect(),
        sized: false,
        uncovered_tensors: 0,
        uncovered_bytes: 0,
    }
}

/// Entries, tensors and bytes per device for tensors given as `(name, bytes)`. Byte totals
/// saturate rather than wrap. The first bad name is an error naming its position.
pub fn summary_with_sizes<'a>(
    map: &DeviceMap,
    sizes: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<Summary> {
    let mut result = summary(map);
    result.sized = true;
    let mut usage_of: HashMap<Device, usize, RandomState> = result
        .devices
        .iter()
        .enumerate()
        .map(|(i, usage)| (usage.device, i))
        .collect();
    let sizes = sizes.into_iter();
    let finder = Finder::new(map, sizes.size_hint().0);
    for (i, (name, bytes)) in sizes.enumerate() {
        match finder
            .find_checked(name)
            .map_err(|e| e.at_position(i))?
            .and_then(|position| map.get_index(position))
        {
            Some((_, device)) => {
                let index = *usage_of.entry(device).or_insert_with(|| {
                    result.devices.push(DeviceUsage {
                        device,
                        entries: 0,
                        tensors: 0,
                        bytes: 0,
                    });
                    result.devices.len() - 1
                });
                let usage = &mut result.devices[index];
                usage.tensors += 1;
                usage.bytes = usage.bytes.saturating_add(bytes);
            }
            None => {
                result.uncovered_tensors += 1;
                result.uncovered_bytes = result.uncovered_bytes.saturating_add(bytes);
            }
        }
    }
    Ok(result)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: usize = self.devices.iter().map(|u| u.entries).sum();
        write!(
            f,
            "{} on {}",
            plural(entries, "entry", "entries"),
            plural(
                self.devices.iter().filter(|u| u.entries > 0).count(),
                "device",
                "devices"
            )
        )?;
        let width = self
            .devices
            .iter()
            .map(|u| u.device.to_string().len())
            .chain(["device".len()])
            .max()
            .unwrap_or(0);
        write!(f, "\n  {:<width$}  {:>9}", "device", "entries")?;
        if self.sized {
            write!(f, "  {:>9}  {:>10}", "tensors", "bytes")?;
        }
        for usage in &self.devices {
            write!(
                f,
                "\n  {:<width$}  {:>9}",
                usage.device.to_string(),
                thousands(usage.entries as u64)
            )?;
            if self.sized {
                write!(
                    f,
                    "  {:>9}  {:>10}",
                    thousands(usage.tensors as u64),
                    human_bytes(usage.bytes)
                )?;
            }
        }
        if self.sized && self.uncovered_tensors > 0 {
            write!(
                f,
                "\n  not covered: {}, {}",
                plural(self.uncovered_tensors, "tensor", "tensors"),
                human_bytes(self.uncovered_bytes)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::testing::map;

    #[test]
    fn summary_counts_entries_and_bytes() {
        let m = map(&[
            ("a", Device::gpu(0)),
            ("b", Device::cpu()),
            ("c", Device::gpu(0)),
        ]);
        let s = summary(&m);
        assert!(!s.sized);
        assert_eq!(
            s.devices
                .iter()
                .map(|u| (u.device, u.entries))
                .collect::<Vec<_>>(),
            vec![(Device::gpu(0), 2), (Device::cpu(), 1)]
        );
        let s = summary_with_sizes(
            &m,
            [
                ("a.w", 10),
                ("c.w", 5),
                ("b.w", 7),
                ("z", 1),
                ("a.x", u64::MAX),
            ],
        )
        .unwrap();
        assert_eq!(
            s.devices
                .iter()
                .map(|u| (u.device, u.entries, u.tensors, u.bytes))
                .collect::<Vec<_>>(),
            vec![(Device::gpu(0), 2, 3, u64::MAX), (Device::cpu(), 1, 1, 7)]
        );
        assert_eq!((s.uncovered_tensors, s.uncovered_bytes), (1, 1));
        let text = s.to_string();
        assert!(text.starts_with("3 entries on 2 devices"), "{text}");
        assert!(text.contains("not covered: 1 tensor, 1 B"), "{text}");
        assert!(summary_with_sizes(&m, [("ok", 1), ("", 2)])
            .unwrap_err()
            .to_string()
            .contains("position 1"));
    }
}
