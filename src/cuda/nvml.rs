//! NVML, loaded and initialized once per process. Every failure (no library, no driver, no
//! permission, a missing symbol, an error on one device) becomes part of the status, never a
//! panic or an error for the caller: discovery returns what it could read.
//!
//! `discover` runs in three steps: number the devices (`order`), describe them from the
//! inventory read once, and read their memory; the status is data (`status`).

use std::ffi::OsString;
use std::sync::OnceLock;

use nvml_wrapper::error::NvmlError;
// Aliased: `Device` in this crate is `crate::device::Device`.
use nvml_wrapper::{Device as NvmlDevice, Nvml};

use super::order::{
    enumerate, CudaDevice, DeviceOrder, Enumeration, GpuRecord, MigRecord, RecordRef,
};
use super::status::{Discovery, MemoryError, NvmlReport, OrderSource, Status};
use super::visible::parse_visible;

/// The library loaded when `DEVICEMAP_NVML_LIBRARY` is unset or empty.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// A device's fields that do not change while the process runs, and its handle for the rest.
struct Known {
    handle: NvmlDevice<'static>,
    compute_capability: Option<(i32, i32)>,
}

struct Handles {
    this: Known,
    /// Parallel to the record's `migs`.
    migs: Vec<Known>,
}

struct Inventory {
    /// What enumeration needs, read once, so each call numbers devices without copying it.
    records: Vec<GpuRecord>,
    /// Parallel to `records`: each GPU's handle and those of its MIG devices.
    handles: Vec<Handles>,
    driver: Option<String>,
    /// NVML's count, including devices skipped below.
    reported: u32,
    /// Per-device problems, each a sentence.
    notes: Vec<String>,
}

static NVML: OnceLock<Result<(Nvml, String), String>> = OnceLock::new();
static INVENTORY: OnceLock<Result<Inventory, String>> = OnceLock::new();

fn library_path() -> OsString {
    match std::env::var_os("DEVICEMAP_NVML_LIBRARY") {
        Some(path) if !path.is_empty() => path,
        _ => OsString::from(DEFAULT_LIBRARY),
    }
}

fn describe(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(inner) => format!("the library could not be loaded ({inner})"),
        NvmlError::FailedToLoadSymbol(symbol) => {
            format!("the library lacks a function this needs ({symbol})")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".to_owned(),
        NvmlError::NoPermission => "NVML answered NoPermission".to_owned(),
        other => format!("{other} ({other:?})"),
    }
}

fn nvml() -> Result<&'static Nvml, &'static str> {
    NVML.get_or_init(|| {
        let path = library_path();
        let shown = path.to_string_lossy().into_owned();
        match Nvml::builder().lib_path(&path).init() {
            Ok(nvml) => Ok((nvml, shown)),
            Err(error) => Err(format!(
                "NVML is not usable from {shown}: {}, so no CUDA GPU is known",
                describe(&error)
            )),
        }
    })
    .as_ref()
    .map(|(nvml, _)| nvml)
    .map_err(String::as_str)
}

fn capability(device: &NvmlDevice<'_>) -> Option<(i32, i32)> {
    device
        .cuda_compute_capability()
        .ok()
        .map(|cc| (cc.major, cc.minor))
}

/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;

/// The MIG devices of a GPU in MIG mode, or `None` when MIG mode is off or unsupported.
fn mig_devices(
    parent: &NvmlDevice<'static>,
    nvml_index: u32,
    notes: &mut Vec<String>,
) -> Option<Vec<(MigRecord, Known)>> {
    let mode = parent.mig_mode().ok()?;
    if mode.current != MIG_ENABLED {
        return None;
    }
    let max = match parent.mig_device_count() {
        Ok(max) => max,
        Err(error) => {
            notes.push(format!(
                "GPU {nvml_index} is in MIG mode but its MIG devices cannot be counted: {}.",
                describe(&error)
            ));
            return Some(Vec::new());
        }
    };
    let mut found = Vec::new();
    for mig_index in 0..max {
        // Slots without a MIG device answer NotFound; that is how NVML lists them.
        let handle = match parent.mig_device_by_index(mig_index) {
            Ok(handle) => handle,
            Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
            Err(error) => {
                notes.push(format!(
                    "MIG device {mig_index} of GPU {nvml_index} was skipped: {}.",
                    describe(&error)
                ));
                continue;
            }
        };
        let uuid = match handle.uuid() {
            Ok(uuid) => uuid,
            Err(error) => {
                notes.push(format!(
                    "MIG device {mig_index} of GPU {nvml_index} was skipped: its UUID cannot be read ({}).",
                    describe(&error)
                ));
                continue;
            }
        };
        let name = handle.name().or_else(|_| parent.name()).unwrap_or_default();
        let compute_capability = capability(&handle).or_else(|| capability(parent));
        found.push((
            MigRecord {
                mig_index,
                uuid,
                name,
            },
            Known {
                handle,
                compute_capability,
            },
        ));
    }
    Some(found)
}

fn read_gpu(
    nvml: &'static Nvml,
    nvml_index: u32,
    notes: &mut Vec<String>,
) -> Option<(GpuRecord, Handles)> {
    let skipped = |what: &str, error: &NvmlError| {
        format!(
            "GPU {nvml_index} was skipped: {what} ({}).",
            describe(error)
        )
    };
    let handle = match nvml.device_by_index(nvml_index) {
        Ok(handle) => handle,
        Err(error) => {
            notes.push(skipped("NVML gives no handle for it", &error));
            return None;
        }
    };
    // Without a UUID a GPU cannot be matched to `CUDA_VISIBLE_DEVICES` or to torch.
    let uuid = match handle.uuid() {
        Ok(uuid) => uuid,
        Err(error) => {
            notes.push(skipped("its UUID cannot be read", &error));
            return None;
        }
    };
    let name = handle.name().unwrap_or_else(|error| {
        notes.push(format!(
            "GPU {nvml_index}'s name cannot be read ({}).",
            describe(&error)
        ));
        String::new()
    });
    let pci_bus_id = handle
        .pci_info()
        .map(|pci| pci.bus_id)
        .unwrap_or_else(|error| {
            notes.push(format!(
            "GPU {nvml_index}'s PCI bus id cannot be read ({}); it is ordered after the others.",
            describe(&error)
        ));
            String::new()
        });
    let compute_capability = capability(&handle);
    let (mig_enabled, migs) = match mig_devices(&handle, nvml_index, notes) {
        Some(found) => (true, found),
        None => (false, Vec::new()),
    };
    let (mig_records, mig_known) = migs.into_iter().unzip();
    Some((
        GpuRecord {
            nvml_index,
            uuid,
            name,
            pci_bus_id,
            mig_enabled,
            migs: mig_records,
        },
        Handles {
            this: Known {
                handle,
                compute_capability,
            },
            migs: mig_known,
        },
    ))
}

fn inventory() -> Result<&'static Inventory, &'static str> {
    INVENTORY
        .get_or_init(|| {
            let nvml = nvml().map_err(str::to_owned)?;
            let reported = nvml.device_count().map_err(|error| {
                format!(
                    "NVML cannot count the GPUs: {}, so no CUDA GPU is known",
                    describe(&error)
                )
            })?;
            let mut notes = Vec::new();
            let (records, handles) = (0..reported)
                .filter_map(|index| read_gpu(nvml, index, &mut notes))
                .unzip();
            Ok(Inventory {
                records,
                handles,
                driver: nvml.sys_driver_version().ok(),
                reported,
                notes,
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The CUDA devices of a process with these `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER`
/// values, and how they were found. `memory` reads each device's memory now (the count alone
/// does not need it).
pub fn discover(visible_var: Option<&str>, order_var: Option<&str>, memory: bool) -> Discovery {
    let inventory = match inventory() {
        Ok(inventory) => inventory,
        Err(reason) => return Discovery::without_nvml(reason.to_owned(), visible_var),
    };
    let enumeration = enumerate(
        &inventory.records,
        &parse_visible(visible_var),
        DeviceOrder::from_env(order_var),
    );
    let mut devices = describe_devices(inventory, &enumeration);
    let memory_errors = if memory {
        read_memory(inventory, &enumeration.refs, &mut devices)
    } else {
        Vec::new()
    };
    Discovery {
        devices,
        status: Status {
            nvml: Ok(NvmlReport {
                driver: inventory.driver.clone(),
                reported: inventory.reported,
                notes: inventory.notes.clone(),
            }),
            visible_var: visible_var.map(str::to_owned),
            order: if enumeration.ordering_certain {
                OrderSource::Certain
            } else {
                OrderSource::Uncertain
            },
            memory_errors,
        },
    }
}

/// The handle and fixed fields of what a reference names: a GPU, or one of its MIG devices.
fn known_of<'a>(inventory: &'a Inventory, record_ref: &RecordRef) -> (&'a Known, &'a str, &'a str) {
    let (record, handles) = (
        &inventory.records[record_ref.gpu],
        &inventory.handles[record_ref.gpu],
    );
    match record_ref.mig {
        Some(m) => (&handles.migs[m], &record.migs[m].uuid, &record.migs[m].name),
        None => (&handles.this, &record.uuid, &record.name),
    }
}

/// The devices of an enumeration, `cuda:0` first, without their memory.
fn describe_devices(inventory: &Inventory, enumeration: &Enumeration) -> Vec<CudaDevice> {
    enumeration
        .refs
        .iter()
        .enumerate()
        .map(|(ordinal, record_ref)| {
            let record = &inventory.records[record_ref.gpu];
            let (known, uuid, name) = known_of(inventory, record_ref);
            CudaDevice {
                ordinal: ordinal as u32,
                nvml_index: record.nvml_index,
                uuid: uuid.to_owned(),
                name: name.to_owned(),
                memory_total: None,
                memory_free: None,
                memory_used: None,
                pci_bus_id: record.pci_bus_id.clone(),
                compute_capability: known.compute_capability,
                is_mig: record_ref.mig.is_some(),
                ordering_certain: enumeration.ordering_certain,
            }
        })
        .collect()
}

/// Reads each device's memory now; `devices` is parallel to `refs`.
fn read_memory(
    inventory: &Inventory,
    refs: &[RecordRef],
    devices: &mut [CudaDevice],
) -> Vec<MemoryError> {
    let mut errors = Vec::new();
    for (record_ref, device) in refs.iter().zip(devices.iter_mut()) {
        match known_of(inventory, record_ref).0.handle.memory_info() {
            Ok(info) => {
                // CUDA's total (torch's `total_memory` and `mem_get_info`), which leaves out what
                // the driver sets aside; nvidia-smi's total counts it (measured on an H200:
                // NVML 150,754,820,096 B with 644,939,776 reserved, CUDA 150,109,880,320).
                device.memory_total = Some(info.total.saturating_sub(info.reserved));
                device.memory_free = Some(info.free);
                device.memory_used = Some(info.used);
            }
            Err(error) => errors.push(MemoryError {
                uuid: device.uuid.clone(),
                reason: describe(&error),
            }),
        }
    }
    errors
}
