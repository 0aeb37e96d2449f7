//! CUDA numbering without NVML: `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER` values (any
//! text) over arbitrary machines (GPU records as NVML would give them), then torch's order and
//! the status text. Never panics; every `cuda:N` names a distinct existing GPU or MIG device;
//! a GPU in MIG mode appears only through its MIG devices.
#![no_main]

use _core::cuda::order::{enumerate, pci_key, reorder_by_uuids, CudaDevice};
use _core::cuda::status::{MemoryError, NvmlReport, Status};
use _core::cuda::visible::{parse_visible, Visible};
use _core::cuda::{DeviceOrder, Discovery, GpuRecord, MigRecord, OrderSource};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Gpu {
    /// Small numbers give colliding UUID prefixes; text gives anything.
    uuid: Result<u8, String>,
    model: u8,
    bus: Result<u8, String>,
    migs: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    visible: Option<String>,
    order: Option<String>,
    gpus: Vec<Gpu>,
    torch_uuids: Vec<String>,
}

fn records(gpus: &[Gpu]) -> Vec<GpuRecord> {
    gpus.iter()
        .take(16)
        .enumerate()
        .map(|(i, gpu)| GpuRecord {
            nvml_index: i as u32,
            uuid: match &gpu.uuid {
                Ok(n) => format!("GPU-{n:02x}{i:02x}"),
                Err(text) => text.clone(),
            },
            name: ["NVIDIA A100", "NVIDIA H100", "NVIDIA L4"][usize::from(gpu.model % 3)]
                .to_owned(),
            pci_bus_id: match &gpu.bus {
                Ok(bus) => format!("00000000:{bus:02X}:00.0"),
                Err(text) => text.clone(),
            },
            // As NVML reports them: MIG devices only on a GPU in MIG mode.
            mig_enabled: gpu.migs.is_some(),
            migs: gpu
                .migs
                .iter()
                .flatten()
                .take(7)
                .enumerate()
                .map(|(m, tag)| MigRecord {
                    mig_index: m as u32,
                    uuid: format!("MIG-{tag:02x}{i:02x}{m}"),
                    name: String::new(),
                })
                .collect(),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let gpus = records(&input.gpus);
    for gpu in &gpus {
        let _ = pci_key(&gpu.pci_bus_id);
    }
    let visible = parse_visible(input.visible.as_deref());
    if let Visible::Indices(list) = &visible {
        let mut sorted = list.clone();
        sorted.sort_unstable();
        sorted.dedup();
        // Saturated huge values may repeat; every other duplicate empties the list.
        assert!(sorted.len() == list.len() || list.iter().filter(|&&v| v == u64::MAX).count() > 1);
    }
    let order = DeviceOrder::from_env(input.order.as_deref());
    let enumeration = enumerate(&gpus, &visible, order);
    let mut seen = std::collections::HashSet::new();
    for record_ref in &enumeration.refs {
        let gpu = &gpus[record_ref.gpu];
        match record_ref.mig {
            Some(m) => assert!(gpu.mig_enabled && m < gpu.migs.len()),
            None => assert!(!gpu.mig_enabled),
        }
        assert!(
            seen.insert((record_ref.gpu, record_ref.mig)),
            "a device numbered twice"
        );
    }
    if order == DeviceOrder::PciBusId || enumeration.refs.is_empty() {
        assert!(enumeration.ordering_certain);
    }

    let devices: Vec<CudaDevice> = enumeration
        .refs
        .iter()
        .enumerate()
        .map(|(ordinal, r)| {
            let gpu = &gpus[r.gpu];
            CudaDevice {
                ordinal: ordinal as u32,
                nvml_index: gpu.nvml_index,
                uuid: r.mig.map_or(gpu.uuid.clone(), |m| gpu.migs[m].uuid.clone()),
                name: gpu.name.clone(),
                memory_total: None,
                memory_free: None,
                memory_used: None,
                pci_bus_id: gpu.pci_bus_id.clone(),
                compute_capability: None,
                is_mig: r.mig.is_some(),
                ordering_certain: enumeration.ordering_certain,
            }
        })
        .collect();

    let mut reordered = devices.clone();
    if reorder_by_uuids(&mut reordered, &input.torch_uuids) {
        let mut before: Vec<&str> = devices.iter().map(|d| d.uuid.as_str()).collect();
        let mut after: Vec<&str> = reordered.iter().map(|d| d.uuid.as_str()).collect();
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after, "reordering lost or made a device");
        for (ordinal, device) in reordered.iter().enumerate() {
            assert_eq!(device.ordinal as usize, ordinal);
        }
    } else {
        assert_eq!(reordered, devices, "a failed reordering changed something");
    }

    let mut discovery = Discovery {
        devices,
        status: Status {
            nvml: Ok(NvmlReport {
                driver: input.order.clone(),
                reported: gpus.len() as u32,
                notes: Vec::new(),
            }),
            visible_var: input.visible.clone(),
            order: if enumeration.ordering_certain {
                OrderSource::Certain
            } else {
                OrderSource::Uncertain
            },
            memory_errors: input
                .torch_uuids
                .iter()
                .take(4)
                .map(|uuid| MemoryError {
                    uuid: uuid.clone(),
                    reason: "fuzz".to_owned(),
                })
                .collect(),
        },
    };
    let before = discovery.status_text();
    assert!(before.starts_with("NVML"));
    if discovery.settle_order(&input.torch_uuids) {
        assert!(discovery.ordering_certain());
        assert_ne!(discovery.status_text(), before);
    }
});
