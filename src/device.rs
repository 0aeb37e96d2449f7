//! Device types and devices as plain Rust values.

use std::fmt;

/// The kinds of device, in the order of Haystack's `DeviceType` enum (then our additions).
/// The Python enum `devicemap.DeviceType` lists the same members in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DeviceType {
    Cpu,
    Gpu,
    Disk,
    Mps,
    Xpu,
    Meta,
}

impl DeviceType {
    pub const ALL: [DeviceType; 6] = [
        DeviceType::Cpu,
        DeviceType::Gpu,
        DeviceType::Disk,
        DeviceType::Mps,
        DeviceType::Xpu,
        DeviceType::Meta,
    ];

    /// The value, which is also torch's device type string.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceType::Cpu => "cpu",
            DeviceType::Gpu => "cuda",
            DeviceType::Disk => "disk",
            DeviceType::Mps => "mps",
            DeviceType::Xpu => "xpu",
            DeviceType::Meta => "meta",
        }
    }

    /// The member's name in the Python enum.
    pub const fn name(self) -> &'static str {
        match self {
            DeviceType::Cpu => "CPU",
            DeviceType::Gpu => "GPU",
            DeviceType::Disk => "DISK",
            DeviceType::Mps => "MPS",
            DeviceType::Xpu => "XPU",
            DeviceType::Meta => "META",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device: a type and an optional index. Ids are unbounded in Haystack; we keep them in a
/// `u64` and check torch's narrower range only where a torch device is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Device {
    pub kind: DeviceType,
    pub id: Option<u64>,
}

impl Device {
    pub const fn new(kind: DeviceType, id: Option<u64>) -> Self {
        Device { kind, id }
    }
    pub const fn cpu() -> Self {
        Device::new(DeviceType::Cpu, None)
    }
    pub const fn gpu(id: u64) -> Self {
        Device::new(DeviceType::Gpu, Some(id))
    }
    pub const fn disk() -> Self {
        Device::new(DeviceType::Disk, None)
    }
    pub const fn mps() -> Self {
        Device::new(DeviceType::Mps, None)
    }
    pub const fn xpu() -> Self {
        Device::new(DeviceType::Xpu, None)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            None => f.write_str(self.kind.as_str()),
            Some(id) => write!(f, "{}:{}", self.kind.as_str(), id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_haystack() {
        assert_eq!(Device::cpu().to_string(), "cpu");
        assert_eq!(Device::gpu(3).to_string(), "cuda:3");
        assert_eq!(Device::new(DeviceType::Disk, Some(0)).to_string(), "disk:0");
        assert_eq!(Device::new(DeviceType::Gpu, None).to_string(), "cuda");
    }

    #[test]
    fn order_of_members_is_haystacks() {
        let values: Vec<_> = DeviceType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(values, ["cpu", "cuda", "disk", "mps", "xpu", "meta"]);
        for (i, t) in DeviceType::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }
}
