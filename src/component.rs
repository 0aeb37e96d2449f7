//! `ComponentDevice`: one device or one device map, as a component is told where to run.
//!
//! Haystack's class is a frozen dataclass whose two fields are not checked at construction;
//! every operation validates first. We keep that contract, and hold the map behind an `Arc`
//! so a component made from a map shares its storage until the map is next changed.

use std::sync::Arc;

use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};
use crate::map::DeviceMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentDevice {
    pub single: Option<Device>,
    pub multiple: Option<Arc<DeviceMap>>,
}

/// What a valid component device holds.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Single(Device),
    Multiple(&'a DeviceMap),
}

impl ComponentDevice {
    pub fn from_single(device: Device) -> Result<Self> {
        if device.kind == DeviceType::Disk {
            return Err(Error::DiskAsSingle);
        }
        Ok(ComponentDevice {
            single: Some(device),
            multiple: None,
        })
    }

    pub fn from_multiple(map: Arc<DeviceMap>) -> Self {
        ComponentDevice {
            single: None,
            multiple: Some(map),
        }
    }

    /// Exactly one of the two must be set; every operation starts here.
    pub fn target(&self) -> Result<Target<'_>> {
        match (&self.single, &self.multiple) {
            (Some(device), None) => Ok(Target::Single(*device)),
            (None, Some(map)) => Ok(Target::Multiple(map)),
            _ => Err(Error::InvalidComponent),
        }
    }

    /// The single device, for conversions that only take one (`target` names the format).
    pub fn single_for(&self, target: &'static str) -> Result<Device> {
        match self.target()? {
            Target::Single(device) => Ok(device),
            Target::Multiple(_) => Err(Error::NotSingle { target }),
        }
    }

    pub fn has_multiple_devices(&self) -> Result<bool> {
        Ok(matches!(self.target()?, Target::Multiple(_)))
    }

    /// The single device, or the first device of the map that is not the disk.
    pub fn first_device(&self) -> Result<Device> {
        match self.target()? {
            Target::Single(device) => Ok(device),
            Target::Multiple(map) => map.first_usable().ok_or(Error::NoUsableDevice),
        }
    }

    /// spaCy's form: the GPU id, or -1 for anything else.
    pub fn to_spacy(&self) -> Result<i64> {
        let device = self.single_for("spaCy")?;
        match (device.kind, device.id) {
            (DeviceType::Gpu, Some(id)) => i64::try_from(id).map_err(|_| Error::IdTooLarge {
                part: id.to_string(),
            }),
            (DeviceType::Gpu, None) => Err(Error::GpuWithoutId {
                what: "spaCy's device format".to_owned(),
                device: device.to_string(),
            }),
            _ => Ok(-1),
        }
    }

    /// The torch device string. Unlike `to_torch()`, it is not checked against torch's `int8`
    /// device index: Haystack returns `str(device)` here, and a string is not yet a torch device.
    pub fn to_torch_str(&self) -> Result<String> {
        let device = self.single_for("PyTorch")?;
        Ok(device.to_string())
    }

    pub fn check_torch_index(device: Device) -> Result<()> {
        match device.id {
            Some(id) if id > i8::MAX as u64 => Err(Error::IdTooLargeForTorch { id }),
            _ => Ok(()),
        }
    }

    /// A stable hash over both fields, for Python's `__hash__`.
    pub fn content_hash(&self) -> u64 {
        let single = self.single.map(|d| d.to_string()).unwrap_or_default();
        let map_part = self.multiple.as_ref().map_or(0, |m| m.fingerprint());
        let mut bytes = Vec::with_capacity(single.len() + 18);
        bytes.push(u8::from(self.single.is_some()));
        bytes.extend_from_slice(single.as_bytes());
        bytes.push(u8::from(self.multiple.is_some()));
        bytes.extend_from_slice(&map_part.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Device)]) -> Arc<DeviceMap> {
        Arc::new(pairs.iter().map(|(k, d)| (k.to_string(), *d)).collect())
    }

    #[test]
    fn disk_is_not_a_single_device() {
        assert_eq!(
            ComponentDevice::from_single(Device::disk()),
            Err(Error::DiskAsSingle)
        );
    }

    #[test]
    fn empty_and_both_are_invalid() {
        let empty = ComponentDevice::default();
        assert_eq!(empty.has_multiple_devices(), Err(Error::InvalidComponent));
        let both = ComponentDevice {
            single: Some(Device::cpu()),
            multiple: Some(map(&[])),
        };
        assert_eq!(both.first_device(), Err(Error::InvalidComponent));
    }

    #[test]
    fn first_device_skips_disk() {
        let cd =
            ComponentDevice::from_multiple(map(&[("a", Device::disk()), ("b", Device::gpu(2))]));
        assert_eq!(cd.first_device(), Ok(Device::gpu(2)));
        let only_disk = ComponentDevice::from_multiple(map(&[("a", Device::disk())]));
        assert_eq!(only_disk.first_device(), Err(Error::NoUsableDevice));
    }

    #[test]
    fn spacy_form() {
        let gpu = ComponentDevice::from_single(Device::gpu(3)).unwrap();
        assert_eq!(gpu.to_spacy(), Ok(3));
        let cpu = ComponentDevice::from_single(Device::cpu()).unwrap();
        assert_eq!(cpu.to_spacy(), Ok(-1));
        let bare = ComponentDevice::from_single(Device::new(DeviceType::Gpu, None)).unwrap();
        assert!(matches!(bare.to_spacy(), Err(Error::GpuWithoutId { .. })));
        let multi = ComponentDevice::from_multiple(map(&[("a", Device::cpu())]));
        assert_eq!(
            multi.to_spacy().unwrap_err().to_string(),
            "Only single devices can be converted to spaCy format"
        );
    }

    #[test]
    fn torch_index_limit() {
        assert!(ComponentDevice::check_torch_index(Device::gpu(127)).is_ok());
        assert_eq!(
            ComponentDevice::check_torch_index(Device::gpu(128)),
            Err(Error::IdTooLargeForTorch { id: 128 })
        );
    }

    #[test]
    fn equal_components_hash_equal() {
        let a = ComponentDevice::from_multiple(map(&[("a", Device::cpu()), ("b", Device::gpu(0))]));
        let b = ComponentDevice::from_multiple(map(&[("b", Device::gpu(0)), ("a", Device::cpu())]));
        assert_eq!(a, b);
        assert_eq!(a.content_hash(), b.content_hash());
    }
}
