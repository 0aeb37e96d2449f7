//! From the machine's GPUs (as NVML lists them) to the devices `cuda:0`, `cuda:1`, ... of this
//! process: `CUDA_DEVICE_ORDER`, `CUDA_VISIBLE_DEVICES` and MIG, as the CUDA runtime applies them.

use super::visible::{uuids_to_positions, Visible};

/// One MIG device of a GPU whose MIG mode is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigRecord {
    /// `nvmlDeviceGetMigDeviceHandleByIndex`'s index on the parent.
    pub mig_index: u32,
    pub uuid: String,
    pub name: String,
}

/// One physical GPU as NVML reports it; only what numbering needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRecord {
    pub nvml_index: u32,
    pub uuid: String,
    pub name: String,
    /// NVML's `busId`, e.g. `00000000:17:00.0`.
    pub pci_bus_id: String,
    pub mig_enabled: bool,
    pub migs: Vec<MigRecord>,
}

/// `CUDA_DEVICE_ORDER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOrder {
    /// The default: fastest device first, ties in PCI bus order.
    FastestFirst,
    PciBusId,
}

impl DeviceOrder {
    /// CUDA reads exactly `PCI_BUS_ID`; anything else is the default order.
    pub fn from_env(value: Option<&str>) -> Self {
        match value {
            Some("PCI_BUS_ID") => DeviceOrder::PciBusId,
            _ => DeviceOrder::FastestFirst,
        }
    }
}

/// A CUDA device of this process, as positions in the GPU records: a physical GPU, or one MIG
/// device of it. (Named apart from `map::Slot`, a position in a map's device table.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    /// Position in the records given to [`enumerate`].
    pub gpu: usize,
    /// Position in that record's `migs`.
    pub mig: Option<usize>,
}

/// What [`enumerate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enumeration {
    /// In ordinal order: `refs[n]` is `cuda:n`.
    pub refs: Vec<RecordRef>,
    /// False where CUDA's fastest-first order decides which physical GPU a position names and
    /// the GPUs differ in model, so NVML alone cannot tell.
    pub ordering_certain: bool,
}

/// A CUDA device as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CudaDevice {
    pub ordinal: u32,
    pub nvml_index: u32,
    pub uuid: String,
    pub name: String,
    /// The memory CUDA can use, as torch's `total_memory` says: NVML's total less what the
    /// driver reserves (which nvidia-smi's total includes).
    pub memory_total: Option<u64>,
    pub memory_free: Option<u64>,
    pub memory_used: Option<u64>,
    pub pci_bus_id: String,
    pub compute_capability: Option<(i32, i32)>,
    pub is_mig: bool,
    pub ordering_certain: bool,
}

/// Numeric (domain, bus, device, function) of a bus id like `00000000:17:00.0`; `None` if it
/// does not have that shape.
pub fn pci_key(bus_id: &str) -> Option<(u64, u64, u64, u64)> {
    let (domain, rest) = bus_id.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |s: &str| u64::from_str_radix(s.trim(), 16).ok();
    Some((hex(domain)?, hex(bus)?, hex(device)?, hex(function)?))
}

/// The GPUs in PCI bus order (NVML order where a bus id cannot be read).
fn pci_order(gpus: &[GpuRecord]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..gpus.len()).collect();
    order.sort_by_key(|&i| {
        (
            pci_key(&gpus[i].pci_bus_id).is_none(),
            pci_key(&gpus[i].pci_bus_id),
            i,
        )
    });
    order
}

/// A GPU in MIG mode appears to CUDA as its MIG devices, not as itself.
fn expand(gpus: &[GpuRecord], gpu: usize, refs: &mut Vec<RecordRef>) {
    let record = &gpus[gpu];
    if record.mig_enabled {
        refs.extend((0..record.migs.len()).map(|mig| RecordRef {
            gpu,
            mig: Some(mig),
        }));
    } else {
        refs.push(RecordRef { gpu, mig: None });
    }
}

/// The CUDA devices of a process with this `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER`.
pub fn enumerate(gpus: &[GpuRecord], visible: &Visible, order: DeviceOrder) -> Enumeration {
    let base = pci_order(gpus);
    // Fastest-first equals PCI order when every GPU is the same model; otherwise CUDA ranks
    // by a speed estimate that NVML does not expose.
    let same_model = gpus.windows(2).all(|pair| pair[0].name == pair[1].name);
    let base_certain = order == DeviceOrder::PciBusId || same_model;
    let mut refs = Vec::new();
    let ordering_certain = match visible {
        Visible::All => {
            for &gpu in &base {
                expand(gpus, gpu, &mut refs);
            }
            // No device (every GPU in MIG mode without MIG devices): no order to be unsure of.
            base_certain || refs.is_empty()
        }
        Visible::Indices(indices) => {
            for &index in indices {
                // Torch's `_device_count_nvml`: the first index past the device count ends the list.
                let Some(&gpu) = usize::try_from(index).ok().and_then(|i| base.get(i)) else {
                    break;
                };
                expand(gpus, gpu, &mut refs);
            }
            base_certain || refs.is_empty()
        }
        // UUIDs name physical devices and the listed order gives the ordinals: no guessing.
        Visible::Gpu(candidates) => {
            let uuids: Vec<&str> = base.iter().map(|&g| gpus[g].uuid.as_str()).collect();
            for position in uuids_to_positions(candidates, &uuids) {
                expand(gpus, base[position], &mut refs);
            }
            true
        }
        Visible::Mig(candidates) => {
            let all: Vec<RecordRef> = base
                .iter()
                .flat_map(|&gpu| {
                    (0..gpus[gpu].migs.len()).map(move |mig| RecordRef {
                        gpu,
                        mig: Some(mig),
                    })
                })
                .collect();
            let uuids: Vec<&str> = all
                .iter()
                .map(|record_ref| {
                    gpus[record_ref.gpu].migs[record_ref.mig.unwrap_or(0)]
                        .uuid
                        .as_str()
                })
                .collect();
            refs.extend(
                uuids_to_positions(candidates, &uuids)
                    .into_iter()
                    .map(|p| all[p]),
            );
            true
        }
    };
    Enumeration {
        refs,
        ordering_certain,
    }
}

/// Puts `devices` in the order torch reports (`torch.cuda.get_device_properties(i).uuid`),
/// settling an uncertain order. Returns false, changing nothing, unless every device matches
/// exactly one torch UUID. Torch's UUIDs come without the `GPU-`/`MIG-` prefix.
pub fn reorder_by_uuids(devices: &mut Vec<CudaDevice>, torch_uuids: &[String]) -> bool {
    fn bare(uuid: &str) -> String {
        uuid.trim_start_matches("GPU-")
            .trim_start_matches("MIG-")
            .to_ascii_lowercase()
    }
    if torch_uuids.len() != devices.len() {
        return false;
    }
    let mut placed: Vec<Option<CudaDevice>> = vec![None; devices.len()];
    for device in devices.iter() {
        let key = bare(&device.uuid);
        let Some(position) = torch_uuids.iter().position(|u| bare(u) == key) else {
            return false;
        };
        if placed[position].is_some() {
            return false;
        }
        placed[position] = Some(device.clone());
    }
    *devices = placed
        .into_iter()
        .enumerate()
        .map(|(ordinal, device)| {
            let mut device = device.expect("every position was filled");
            device.ordinal = ordinal as u32;
            device.ordering_certain = true;
            device
        })
        .collect();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::visible::parse_visible;

    fn gpu(i: u32, name: &str, bus: u32) -> GpuRecord {
        GpuRecord {
            nvml_index: i,
            uuid: format!("GPU-{i}{i}{i}-uuid"),
            name: name.into(),
            pci_bus_id: format!("00000000:{bus:02X}:00.0"),
            mig_enabled: false,
            migs: vec![],
        }
    }

    fn run(
        gpus: &[GpuRecord],
        var: Option<&str>,
        order: DeviceOrder,
    ) -> (Vec<(usize, Option<usize>)>, bool) {
        let e = enumerate(gpus, &parse_visible(var), order);
        (
            e.refs.iter().map(|s| (s.gpu, s.mig)).collect(),
            e.ordering_certain,
        )
    }

    #[test]
    fn same_model_is_pci_order_and_certain() {
        let gpus = [gpu(0, "A", 0x81), gpu(1, "A", 0x17), gpu(2, "A", 0x3b)];
        let f = DeviceOrder::FastestFirst;
        assert_eq!(
            run(&gpus, None, f),
            (vec![(1, None), (2, None), (0, None)], true)
        );
        assert_eq!(
            run(&gpus, Some("2,0"), f),
            (vec![(0, None), (1, None)], true)
        );
        assert_eq!(run(&gpus, Some("1,5,0"), f), (vec![(2, None)], true));
        assert_eq!(run(&gpus, Some(""), f), (Vec::new(), true));
    }

    #[test]
    fn mixed_models_uncertain_unless_pci_or_uuid() {
        let gpus = [gpu(0, "A", 1), gpu(1, "B", 2)];
        assert!(!run(&gpus, None, DeviceOrder::FastestFirst).1);
        assert!(!run(&gpus, Some("1"), DeviceOrder::FastestFirst).1);
        assert!(run(&gpus, None, DeviceOrder::PciBusId).1);
        // Found by fuzzing: mixed models, every GPU in MIG mode with no MIG device, so nothing is
        // visible; the order of nothing is certain (as with an empty CUDA_VISIBLE_DEVICES).
        let mut empty = gpus.clone();
        for gpu in &mut empty {
            gpu.mig_enabled = true;
        }
        assert_eq!(run(&empty, None, DeviceOrder::FastestFirst), (vec![], true));
        assert_eq!(
            run(&gpus, Some("GPU-111,GPU-0"), DeviceOrder::FastestFirst),
            (vec![(1, None), (0, None)], true)
        );
    }

    #[test]
    fn mig_devices_replace_their_parent() {
        let mut gpus = vec![gpu(0, "A", 1), gpu(1, "A", 2)];
        gpus[1].mig_enabled = true;
        gpus[1].migs = (0..2)
            .map(|m| MigRecord {
                mig_index: m,
                uuid: format!("MIG-{m}abc"),
                name: "A MIG".into(),
            })
            .collect();
        let f = DeviceOrder::FastestFirst;
        assert_eq!(
            run(&gpus, None, f).0,
            vec![(0, None), (1, Some(0)), (1, Some(1))]
        );
        assert_eq!(
            run(&gpus, Some("MIG-1,MIG-0"), f).0,
            vec![(1, Some(1)), (1, Some(0))]
        );
        assert!(run(&gpus, Some("MIG-"), f).0.is_empty());
    }

    #[test]
    fn pci_keys() {
        assert_eq!(pci_key("00000000:17:00.0"), Some((0, 0x17, 0, 0)));
        assert_eq!(pci_key("0001:AB:1f.7"), Some((1, 0xab, 0x1f, 7)));
        assert_eq!(pci_key("garbage"), None);
    }

    fn device(ordinal: u32, uuid: &str) -> CudaDevice {
        CudaDevice {
            ordinal,
            nvml_index: ordinal,
            uuid: uuid.into(),
            name: String::new(),
            memory_total: None,
            memory_free: None,
            memory_used: None,
            pci_bus_id: String::new(),
            compute_capability: None,
            is_mig: false,
            ordering_certain: false,
        }
    }

    #[test]
    fn torch_uuids_settle_the_order_or_change_nothing() {
        let mut devices = vec![device(0, "GPU-aa"), device(1, "GPU-BB")];
        let before = devices.clone();
        assert!(!reorder_by_uuids(&mut devices, &["aa".into()]));
        assert!(!reorder_by_uuids(&mut devices, &["aa".into(), "cc".into()]));
        assert!(!reorder_by_uuids(&mut devices, &["aa".into(), "aa".into()]));
        assert_eq!(devices, before);
        assert!(reorder_by_uuids(
            &mut devices,
            &["bb".into(), "GPU-aa".into()]
        ));
        let got: Vec<_> = devices
            .iter()
            .map(|d| (d.ordinal, d.uuid.as_str(), d.ordering_certain))
            .collect();
        assert_eq!(got, vec![(0, "GPU-BB", true), (1, "GPU-aa", true)]);
    }
}
