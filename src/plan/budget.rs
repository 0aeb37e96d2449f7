//! Budgets: where units may go and how much each device holds. `max_memory` keys and sizes as
//! accelerate reads them, the memory a machine's budgets leave free (the reserve), and the
//! system memory those budgets start from.

use super::error::{BudgetProblem, PlanError};
use crate::device::{Device, DeviceType};

/// Where units may go, in fill order: accelerators (GPUs by id, or MPS), then CPU, then disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    pub devices: Vec<(Device, u64)>,
}

impl Budgets {
    /// Budgets in fill order from `(device, bytes)` pairs in any order. A device given twice
    /// is an error.
    pub fn new(devices: Vec<(Device, u64)>) -> Result<Budgets, PlanError> {
        Budgets::keyed(
            devices
                .into_iter()
                .map(|(device, bytes)| (device.to_string(), device, bytes))
                .collect(),
        )
    }

    /// Like [`Budgets::new`], from `(key as the caller wrote it, device, bytes)`: a device
    /// given twice (`0` and `'cuda:0'`) is an error naming both keys.
    pub fn keyed(mut keyed: Vec<(String, Device, u64)>) -> Result<Budgets, PlanError> {
        // A stable sort: of two keys for one device, the one given first comes first.
        keyed.sort_by_key(|(_, device, _)| (fill_rank(*device), device.id));
        for pair in keyed.windows(2) {
            if pair[0].1 == pair[1].1 {
                return Err(PlanError::BudgetTwice {
                    device: pair[0].1,
                    first: pair[0].0.clone(),
                    second: pair[1].0.clone(),
                });
            }
        }
        let devices = keyed.into_iter().map(|(_, d, b)| (d, b)).collect();
        Ok(Budgets { devices })
    }

    pub(super) fn accelerators(&self) -> usize {
        self.devices
            .iter()
            .filter(|(d, _)| is_accelerator(*d))
            .count()
    }

    /// Whether any device can run layers (an accelerator or the CPU; the disk only stores).
    pub(super) fn runs_layers(&self) -> bool {
        self.devices
            .iter()
            .any(|(d, _)| is_accelerator(*d) || d.kind == DeviceType::Cpu)
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
pub fn parse_size(text: &str) -> Result<u64, PlanError> {
    let bad = || PlanError::BadMemorySize {
        text: text.to_owned(),
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
    let too_large = || PlanError::MemorySizeTooLarge {
        text: text.to_owned(),
    };
    let number = number.trim();
    // Whole numbers exactly: through f64, "9007199254740993" lost its last byte and
    // "18446744073709551615" was refused.
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        let bytes = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale as u64))
            .ok_or_else(too_large)?;
        return Ok(if bits { bytes / 8 } else { bytes });
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = (value * scale).floor();
    if bytes >= u64::MAX as f64 {
        return Err(too_large());
    }
    let bytes = bytes as u64;
    Ok(if bits { bytes / 8 } else { bytes })
}

/// Whether `text` is a size in bits by accelerate's rule: a decimal unit ending in a lowercase
/// `b` (`"80gb"`, `"8Gb"`: an eighth of the bytes `"80GB"` means).
pub fn size_in_bits(text: &str) -> bool {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    trimmed.ends_with('b')
        && ["TB", "GB", "MB", "KB"].iter().any(|u| upper.ends_with(u))
        && !upper.ends_with("IB")
}

/// The one warning for sizes read as bits: `what` is the argument (`max_memory`,
/// `activation`), `entries` the values as the caller wrote them (`key=value` for budgets;
/// `None` when there are none).
pub fn bits_warning(what: &str, entries: &[String]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    Some(format!(
        "{what} {} read as bits, as accelerate reads a lowercase 'b' (80gb is 10 GB of bytes); \
         write GB or GiB for bytes",
        entries.join(", ")
    ))
}

/// A `max_memory` key: a GPU id (`0`, `"0"`, `"cuda:0"`), `"cpu"`, `"disk"` or `"mps"`.
pub fn parse_budget_key(text: &str) -> Result<Device, PlanError> {
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
    device.ok_or_else(|| PlanError::UnknownBudgetKey {
        shown: format!("'{text}'"),
    })
}

/// A `max_memory` value as the caller gave it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BudgetValue<'a> {
    /// An integer: bytes, `None` when it is negative or past `u64::MAX`.
    Int(Option<u64>),
    Float(f64),
    /// A size such as `"20GiB"` (see [`parse_size`]).
    Text(&'a str),
    /// Anything else (a `bool` too: `True` is not a number of bytes).
    Other,
}

/// Bytes of one `max_memory` value: an integer, a finite non-negative float (cut to whole
/// bytes), or a size as text.
pub fn budget_bytes(value: BudgetValue<'_>) -> Result<u64, BudgetProblem> {
    match value {
        BudgetValue::Int(bytes) => bytes.ok_or(BudgetProblem::Negative),
        BudgetValue::Float(f) if !f.is_finite() || f < 0.0 || f >= u64::MAX as f64 => {
            Err(BudgetProblem::NotFinite)
        }
        BudgetValue::Float(f) => Ok(f as u64),
        BudgetValue::Text(text) => {
            parse_size(text).map_err(|err| BudgetProblem::Text(Box::new(err)))
        }
        BudgetValue::Other => Err(BudgetProblem::NotASize),
    }
}

/// The part of a device's memory that budgets taken from the machine leave free, as vLLM's
/// default `gpu_memory_utilization=0.9`: for the CUDA context and allocator fragmentation, and,
/// in a plan without a context, for the KV cache and activations (a plan with one counts each
/// layer's cache, and `activation` headroom, itself).
/// Explicit `max_memory` values are used as given.
pub const DEFAULT_RESERVE: f64 = 0.1;

/// Memory kept free on each device of a machine's budgets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reserve {
    /// A fraction of the device's total memory, in `[0, 1)`.
    Fraction(f64),
    Bytes(u64),
}

impl Reserve {
    /// A fraction in `[0, 1)`; `shown` is how the caller wrote it, for the message.
    pub fn fraction(fraction: f64, shown: &str) -> Result<Reserve, PlanError> {
        if (0.0..1.0).contains(&fraction) {
            Ok(Reserve::Fraction(fraction))
        } else {
            Err(PlanError::ReserveFraction {
                shown: shown.to_owned(),
            })
        }
    }

    /// Bytes kept free on a device with `total` bytes of memory (a fraction rounds down).
    pub fn of(self, total: u64) -> u64 {
        match self {
            Reserve::Fraction(fraction) => (total as f64 * fraction) as u64,
            Reserve::Bytes(bytes) => bytes,
        }
    }
}

/// The machine's memory in bytes, each figure where known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemMemory {
    /// What can be allocated without swapping (`MemAvailable`).
    pub available: Option<u64>,
    /// All of it (`MemTotal`).
    pub total: Option<u64>,
}

/// The system memory, from one read of `/proc/meminfo` (nothing known elsewhere).
pub fn system_memory() -> SystemMemory {
    std::fs::read_to_string("/proc/meminfo")
        .map(|text| meminfo(&text))
        .unwrap_or_default()
}

fn meminfo(text: &str) -> SystemMemory {
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    };
    SystemMemory {
        available: field("MemAvailable:"),
        total: field("MemTotal:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn sizes_parse_as_accelerate() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 * GIB);
        assert_eq!(parse_size("20GB").unwrap(), 20_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("8Gb").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("9007199254740993").unwrap(), (1 << 53) + 1);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        assert_eq!(parse_size("17179869183GiB").unwrap(), 17179869183 * GIB);
        for huge in [
            "18446744073709551616",
            "17179869184GiB",
            "1e30",
            "16777216TiB",
        ] {
            assert!(
                matches!(parse_size(huge), Err(PlanError::MemorySizeTooLarge { .. })),
                "{huge}"
            );
        }
        for bad in ["-1GiB", "nan", "inf", "20XB", "", "GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_budget_key("cuda:1").unwrap(), Device::gpu(1));
        assert_eq!(
            parse_budget_key("tpu").unwrap_err().to_string(),
            "Unknown max_memory key 'tpu': expected a GPU id (0, 1, ...), 'cpu', 'disk' or 'mps'"
        );
    }

    #[test]
    fn lowercase_b_is_bits() {
        for bits in ["80gb", "8Gb", " 1.5 tb ", "10kb"] {
            assert!(size_in_bits(bits), "{bits}");
        }
        for bytes in ["80GB", "80GiB", "80gib", "80", "80b", "80B"] {
            assert!(!size_in_bits(bytes), "{bytes}");
        }
        assert_eq!(parse_size("80gb").unwrap(), 10_000_000_000);
        assert_eq!(bits_warning("max_memory", &[]), None);
        let text = bits_warning("max_memory", &["0=80gb".into()]).unwrap();
        assert!(text.starts_with("max_memory 0=80gb read as bits"), "{text}");
    }

    #[test]
    fn budget_values() {
        assert_eq!(budget_bytes(BudgetValue::Int(Some(5))), Ok(5));
        assert_eq!(
            budget_bytes(BudgetValue::Int(None)),
            Err(BudgetProblem::Negative)
        );
        assert_eq!(budget_bytes(BudgetValue::Float(2.9)), Ok(2));
        for bad in [f64::NAN, -1.0, f64::INFINITY, 1e30] {
            assert_eq!(
                budget_bytes(BudgetValue::Float(bad)),
                Err(BudgetProblem::NotFinite)
            );
        }
        assert_eq!(budget_bytes(BudgetValue::Text("1KiB")), Ok(1024));
        assert!(matches!(
            budget_bytes(BudgetValue::Text("-5GiB")),
            Err(BudgetProblem::Text(_))
        ));
        assert_eq!(
            budget_bytes(BudgetValue::Other),
            Err(BudgetProblem::NotASize)
        );
    }

    #[test]
    fn budgets_sort_and_refuse_a_device_twice() {
        let budgets = Budgets::new(vec![
            (Device::disk(), 1),
            (Device::cpu(), 2),
            (Device::gpu(1), 3),
            (Device::gpu(0), 4),
        ])
        .unwrap();
        let order: Vec<Device> = budgets.devices.iter().map(|&(d, _)| d).collect();
        assert_eq!(
            order,
            [
                Device::gpu(0),
                Device::gpu(1),
                Device::cpu(),
                Device::disk()
            ]
        );
        assert_eq!(budgets.accelerators(), 2);
        let twice = Budgets::keyed(vec![
            ("'cuda:0'".into(), Device::gpu(0), 1),
            ("0".into(), Device::gpu(0), 2),
        ]);
        assert_eq!(
            twice.unwrap_err().to_string(),
            "max_memory names cuda:0 twice: 'cuda:0' and 0"
        );
    }

    #[test]
    fn reserve() {
        assert_eq!(Reserve::fraction(0.1, "0.1").unwrap().of(1000), 100);
        assert_eq!(Reserve::Bytes(7).of(1000), 7);
        for bad in [1.0, -0.1, f64::NAN] {
            let err = Reserve::fraction(bad, "x").unwrap_err();
            assert_eq!(
                err.to_string(),
                "reserve as a fraction must be in [0, 1), got x"
            );
        }
    }

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:       16 kB\nMemFree:  1 kB\nMemAvailable:    8 kB\n";
        assert_eq!(
            meminfo(text),
            SystemMemory {
                available: Some(8192),
                total: Some(16384)
            }
        );
        assert_eq!(meminfo("nothing"), SystemMemory::default());
    }
}
