//! Budgets: where units may go and how much each device holds; `max_memory` sizes and keys;
//! system memory.

use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};

/// Where units may go, in fill order: accelerators (GPUs by id, or MPS), then CPU, then disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    pub devices: Vec<(Device, u64)>,
}

impl Budgets {
    /// Budgets in fill order from `(device, bytes)` pairs in any order. A device given twice
    /// is an error.
    pub fn new(mut devices: Vec<(Device, u64)>) -> Result<Budgets> {
        devices.sort_by_key(|(device, _)| (fill_rank(*device), device.id));
        for pair in devices.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Error::Invalid(format!(
                    "max_memory names {} twice",
                    pair[0].0
                )));
            }
        }
        Ok(Budgets { devices })
    }

    pub(super) fn accelerators(&self) -> usize {
        self.devices
            .iter()
            .filter(|(d, _)| is_accelerator(*d))
            .count()
    }
}

fn fill_rank(device: Device) -> u8 {
    match device.kind {
        DeviceType::Gpu => 0,
        DeviceType::Mps | DeviceType::Xpu => 1,
        DeviceType::Cpu => 2,
        DeviceType::Disk => 3,
        DeviceType::Meta => 4,
    }
}

pub(super) fn is_accelerator(device: Device) -> bool {
    matches!(
        device.kind,
        DeviceType::Gpu | DeviceType::Mps | DeviceType::Xpu
    )
}

/// A byte count as accelerate's `convert_file_size_to_int` reads it: a plain number of bytes,
/// or a number with `GiB`/`MiB`/`KiB` (powers of 2) or `GB`/`MB`/`KB` (powers of 10, and
/// accelerate's quirk of a lowercase final `b` meaning bits, so `"8Gb"` is 1 GB). Beyond
/// accelerate: `TiB`, `TB` and a bare `B`, and spaces before the unit.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::Invalid(format!(
            "Invalid memory size '{text}': use bytes or a number with a unit such as '20GiB', '20GB', '512MiB'"
        ))
    };
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let units: [(&str, f64, bool); 9] = [
        ("TIB", 1099511627776.0, false),
        ("GIB", 1073741824.0, false),
        ("MIB", 1048576.0, false),
        ("KIB", 1024.0, false),
        ("TB", 1e12, true),
        ("GB", 1e9, true),
        ("MB", 1e6, true),
        ("KB", 1e3, true),
        ("B", 1.0, false),
    ];
    let (number, scale, bits) = units
        .iter()
        .find(|(unit, _, _)| upper.ends_with(unit))
        .map(|&(unit, scale, decimal)| {
            (
                &trimmed[..trimmed.len() - unit.len()],
                scale,
                decimal && trimmed.ends_with('b'),
            )
        })
        .unwrap_or((trimmed, 1.0, false));
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = (value * scale).floor();
    if bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    let bytes = bytes as u64;
    Ok(if bits { bytes / 8 } else { bytes })
}

/// A `max_memory` key: a GPU id (`0`, `"0"`, `"cuda:0"`), `"cpu"`, `"disk"` or `"mps"`.
pub fn parse_budget_key(text: &str) -> Result<Device> {
    let trimmed = text.trim();
    let device = match trimmed {
        "cpu" => Some(Device::cpu()),
        "disk" => Some(Device::disk()),
        "mps" => Some(Device::mps()),
        _ => trimmed
            .strip_prefix("cuda:")
            .unwrap_or(trimmed)
            .parse::<u64>()
            .ok()
            .filter(|_| trimmed.bytes().last().is_some_and(|b| b.is_ascii_digit()))
            .map(Device::gpu),
    };
    device.ok_or_else(|| {
        Error::Invalid(format!(
            "Unknown max_memory key '{text}': expected a GPU id (0, 1, ...), 'cpu', 'disk' or 'mps'"
        ))
    })
}

/// Available system memory in bytes (`MemAvailable` of `/proc/meminfo`), where known.
pub fn available_system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Total system memory in bytes (`MemTotal`), where known.
pub fn total_system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
