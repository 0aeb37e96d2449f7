//! NVML, loaded and initialized once per process. Every failure (no library, no driver, no
//! permission, a missing symbol, an error on one device) becomes a sentence in the status, never
//! a panic or an error for the caller: discovery returns what it could read.

use std::ffi::OsString;
use std::sync::OnceLock;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::order::{enumerate, CudaDevice, DeviceOrder, GpuRecord, MigRecord};
use super::visible::parse_visible;

/// The library loaded when `DEVICEMAP_NVML_LIBRARY` is unset or empty.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// A device's fields that do not change while the process runs, and its handle for the rest.
struct Known {
    handle: Device<'static>,
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

fn capability(device: &Device<'_>) -> Option<(i32, i32)> {
    device
        .cuda_compute_capability()
        .ok()
        .map(|cc| (cc.major, cc.minor))
}

/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;

/// The MIG devices of a GPU in MIG mode, or `None` when MIG mode is off or unsupported.
fn mig_devices(
    parent: &Device<'static>,
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

/// What discovery found, and in a sentence or two, how.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub devices: Vec<CudaDevice>,
    pub ordering_certain: bool,
    /// Whether NVML could be used at all.
    pub nvml_ok: bool,
    pub status: String,
}

/// Sentence appended to the status when CUDA's order cannot be read from NVML.
pub const UNCERTAIN_ORDER: &str = "The GPUs differ in model and CUDA_DEVICE_ORDER is not PCI_BUS_ID, \
so CUDA numbers them fastest first, which NVML cannot tell; the ordinals shown follow PCI bus order \
and may not match cuda:N (set CUDA_DEVICE_ORDER=PCI_BUS_ID, or initialize CUDA in torch first).";

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The CUDA devices of a process with these `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER`
/// values. `memory` reads each device's memory now (the count alone does not need it).
pub fn discover(visible_var: Option<&str>, order_var: Option<&str>, memory: bool) -> Discovery {
    let inventory = match inventory() {
        Ok(inventory) => inventory,
        Err(reason) => {
            return Discovery {
                devices: Vec::new(),
                ordering_certain: true,
                nvml_ok: false,
                status: format!("{reason}."),
            }
        }
    };
    let order = DeviceOrder::from_env(order_var);
    let enumeration = enumerate(&inventory.records, &parse_visible(visible_var), order);
    let certain = enumeration.ordering_certain;
    let mut memory_notes = Vec::new();
    let devices: Vec<CudaDevice> = enumeration
        .slots
        .iter()
        .enumerate()
        .map(|(ordinal, slot)| {
            let (record, handles) = (&inventory.records[slot.gpu], &inventory.handles[slot.gpu]);
            let (known, uuid, name) = match slot.mig {
                Some(m) => (&handles.migs[m], &record.migs[m].uuid, &record.migs[m].name),
                None => (&handles.this, &record.uuid, &record.name),
            };
            let info = if memory {
                known
                    .handle
                    .memory_info()
                    .map_err(|error| {
                        memory_notes.push(format!(
                            "The memory of cuda:{ordinal} cannot be read ({}).",
                            describe(&error)
                        ));
                    })
                    .ok()
            } else {
                None
            };
            CudaDevice {
                ordinal: ordinal as u32,
                nvml_index: record.nvml_index,
                uuid: uuid.clone(),
                name: name.clone(),
                memory_total: info.as_ref().map(|i| i.total),
                memory_free: info.as_ref().map(|i| i.free),
                memory_used: info.as_ref().map(|i| i.used),
                pci_bus_id: record.pci_bus_id.clone(),
                compute_capability: known.compute_capability,
                is_mig: slot.mig.is_some(),
                ordering_certain: certain,
            }
        })
        .collect();

    let driver = inventory
        .driver
        .as_deref()
        .map(|v| format!(" (driver {v})"))
        .unwrap_or_default();
    let visible_note = match visible_var {
        None => "CUDA_VISIBLE_DEVICES is unset".to_owned(),
        Some(value) => format!("CUDA_VISIBLE_DEVICES={value:?}"),
    };
    let mut status = format!(
        "NVML{driver} reports {}; {} visible to CUDA ({visible_note}).",
        plural(inventory.reported as usize, "GPU", "GPUs"),
        plural(devices.len(), "device is", "devices are"),
    );
    for note in &inventory.notes {
        status.push(' ');
        status.push_str(note);
    }
    if !certain {
        status.push(' ');
        status.push_str(UNCERTAIN_ORDER);
    }
    for note in memory_notes {
        status.push(' ');
        status.push_str(&note);
    }
    Discovery {
        devices,
        ordering_certain: certain,
        nvml_ok: true,
        status,
    }
}
