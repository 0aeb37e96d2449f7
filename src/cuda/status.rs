//! What discovery found, as data: the devices and a structured account of how they were found.
//! The sentences `cuda_status()` returns are written from it in one place ([`Discovery::status_text`]),
//! so settling the order later changes a field, never the text.

use std::sync::atomic::{AtomicBool, Ordering};

use super::order::{reorder_by_uuids, CudaDevice};

/// How the numbering `cuda:0`, `cuda:1`, ... of the devices was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSource {
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`, identical GPUs, UUIDs in `CUDA_VISIBLE_DEVICES`, or no
    /// device: NVML alone tells CUDA's order.
    Certain,
    /// The GPUs differ in model and CUDA orders them fastest first, which NVML cannot tell.
    Uncertain,
    /// Read from torch, which had initialized CUDA in this process.
    FromTorch,
}

/// What NVML reported, when it could be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlReport {
    /// The driver version, when NVML gives it.
    pub driver: Option<String>,
    /// NVML's count of GPUs, including any skipped (see `notes`).
    pub reported: u32,
    /// Per-device problems found when the GPUs were first read, each a sentence.
    pub notes: Vec<String>,
}

/// A device whose memory NVML could not read, named by UUID so a later reordering keeps it right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryError {
    pub uuid: String,
    pub reason: String,
}

/// Discovery's account of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What NVML reported, or why it cannot be used (a clause, no final period).
    pub nvml: Result<NvmlReport, String>,
    /// `CUDA_VISIBLE_DEVICES` as discovery read it.
    pub visible_var: Option<String>,
    pub order: OrderSource,
    pub memory_errors: Vec<MemoryError>,
}

/// The devices this process will see, `cuda:0` first, and how they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub devices: Vec<CudaDevice>,
    pub status: Status,
}

/// The sentence said when the order is uncertain (also the text of the ordering warning).
pub const UNCERTAIN_ORDER: &str = "The GPUs differ in model and CUDA_DEVICE_ORDER is not PCI_BUS_ID, \
so CUDA numbers them fastest first, which NVML cannot tell; the ordinals shown follow PCI bus order \
and may not match cuda:N (set CUDA_DEVICE_ORDER=PCI_BUS_ID, or initialize CUDA in torch first).";

/// The sentence said when torch settled the order.
pub const ORDER_FROM_TORCH: &str =
    "CUDA's order was read from torch, which has initialized CUDA in this process.";

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Discovery {
    /// Discovery when NVML cannot be used: no devices, and why.
    pub fn without_nvml(reason: String, visible_var: Option<&str>) -> Self {
        Discovery {
            devices: Vec::new(),
            status: Status {
                nvml: Err(reason),
                visible_var: visible_var.map(str::to_owned),
                order: OrderSource::Certain,
                memory_errors: Vec::new(),
            },
        }
    }

    pub fn ordering_certain(&self) -> bool {
        self.status.order != OrderSource::Uncertain
    }

    pub fn nvml_usable(&self) -> bool {
        self.status.nvml.is_ok()
    }

    /// The warning to give when the order is uncertain, once per process: a loop over
    /// `cuda_devices()` warns on its first call only.
    pub fn order_warning(&self) -> Option<String> {
        static WARNED: AtomicBool = AtomicBool::new(false);
        (!self.ordering_certain() && !WARNED.swap(true, Ordering::Relaxed))
            .then(|| format!("devicemap: {UNCERTAIN_ORDER}"))
    }

    /// Settles an uncertain order with torch's device UUIDs (in torch's order). Returns whether
    /// it did; nothing changes unless every device matches exactly one of them.
    pub fn settle_order(&mut self, torch_uuids: &[String]) -> bool {
        if self.status.order != OrderSource::Uncertain {
            return false;
        }
        if !reorder_by_uuids(&mut self.devices, torch_uuids) {
            return false;
        }
        self.status.order = OrderSource::FromTorch;
        true
    }

    /// In a sentence or a few: what NVML reported, what CUDA will see, and what went wrong.
    pub fn status_text(&self) -> String {
        let report = match &self.status.nvml {
            Ok(report) => report,
            Err(reason) => return format!("{reason}."),
        };
        let driver = report
            .driver
            .as_deref()
            .map(|v| format!(" (driver {v})"))
            .unwrap_or_default();
        let visible_note = match &self.status.visible_var {
            None => "CUDA_VISIBLE_DEVICES is unset".to_owned(),
            Some(value) => format!("CUDA_VISIBLE_DEVICES={value:?}"),
        };
        let mut sentences = vec![format!(
            "NVML{driver} reports {}; {} visible to CUDA ({visible_note}).",
            plural(report.reported as usize, "GPU", "GPUs"),
            plural(self.devices.len(), "device is", "devices are"),
        )];
        sentences.extend(report.notes.iter().cloned());
        match self.status.order {
            OrderSource::Certain => {}
            OrderSource::Uncertain => sentences.push(UNCERTAIN_ORDER.to_owned()),
            OrderSource::FromTorch => sentences.push(ORDER_FROM_TORCH.to_owned()),
        }
        for error in &self.status.memory_errors {
            let device = self
                .devices
                .iter()
                .find(|d| d.uuid == error.uuid)
                .map_or_else(|| error.uuid.clone(), |d| format!("cuda:{}", d.ordinal));
            sentences.push(format!(
                "The memory of {device} cannot be read ({}).",
                error.reason
            ));
        }
        sentences.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(ordinal: u32, uuid: &str, name: &str) -> CudaDevice {
        CudaDevice {
            ordinal,
            nvml_index: ordinal,
            uuid: uuid.to_owned(),
            name: name.to_owned(),
            memory_total: None,
            memory_free: None,
            memory_used: None,
            pci_bus_id: String::new(),
            compute_capability: None,
            is_mig: false,
            ordering_certain: false,
        }
    }

    fn uncertain() -> Discovery {
        Discovery {
            devices: vec![device(0, "GPU-aa", "A100"), device(1, "GPU-bb", "H100")],
            status: Status {
                nvml: Ok(NvmlReport {
                    driver: Some("550.54.15".to_owned()),
                    reported: 2,
                    notes: vec!["GPU 7 was skipped: no handle.".to_owned()],
                }),
                visible_var: None,
                order: OrderSource::Uncertain,
                memory_errors: vec![MemoryError {
                    uuid: "GPU-bb".to_owned(),
                    reason: "NotSupported".to_owned(),
                }],
            },
        }
    }

    #[test]
    fn status_says_each_part_in_order() {
        let text = uncertain().status_text();
        let expected = format!(
            "NVML (driver 550.54.15) reports 2 GPUs; 2 devices are visible to CUDA \
             (CUDA_VISIBLE_DEVICES is unset). GPU 7 was skipped: no handle. {UNCERTAIN_ORDER} \
             The memory of cuda:1 cannot be read (NotSupported)."
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn torch_settles_the_order_and_the_memory_note_follows_the_device() {
        let mut discovery = uncertain();
        assert!(!discovery.ordering_certain());
        let torch = vec!["bb".to_owned(), "aa".to_owned()];
        assert!(discovery.settle_order(&torch));
        assert!(discovery.ordering_certain());
        assert_eq!(discovery.devices[0].uuid, "GPU-bb");
        let text = discovery.status_text();
        assert!(text.contains(ORDER_FROM_TORCH), "{text}");
        assert!(!text.contains(UNCERTAIN_ORDER), "{text}");
        assert!(
            text.ends_with("The memory of cuda:0 cannot be read (NotSupported)."),
            "{text}"
        );
        // Settled once; a second settling changes nothing.
        assert!(!discovery.settle_order(&["aa".to_owned(), "bb".to_owned()]));
    }

    #[test]
    fn torch_that_does_not_match_changes_nothing() {
        let mut discovery = uncertain();
        let before = discovery.clone();
        assert!(!discovery.settle_order(&["aa".to_owned()]));
        assert!(!discovery.settle_order(&["aa".to_owned(), "cc".to_owned()]));
        assert_eq!(discovery, before);
    }

    #[test]
    fn an_uncertain_order_is_warned_about_once() {
        // The only test that asks for the warning, so the process-wide flag is its own.
        let certain = Discovery::without_nvml("no NVML".to_owned(), None);
        assert_eq!(certain.order_warning(), None);
        let warning = uncertain()
            .order_warning()
            .expect("the first uncertain discovery");
        assert_eq!(warning, format!("devicemap: {UNCERTAIN_ORDER}"));
        assert_eq!(uncertain().order_warning(), None);
    }

    #[test]
    fn without_nvml_is_the_reason_alone() {
        let discovery = Discovery::without_nvml("NVML is not usable".to_owned(), Some("0"));
        assert_eq!(discovery.status_text(), "NVML is not usable.");
        assert!(discovery.ordering_certain());
        assert!(!discovery.nvml_usable());
    }

    #[test]
    fn counts_are_worded_for_one() {
        let mut discovery = uncertain();
        discovery.devices.truncate(1);
        discovery.status.order = OrderSource::Certain;
        discovery.status.memory_errors.clear();
        discovery.status.visible_var = Some("0".to_owned());
        if let Ok(report) = &mut discovery.status.nvml {
            report.reported = 1;
            report.notes.clear();
        }
        assert_eq!(
            discovery.status_text(),
            "NVML (driver 550.54.15) reports 1 GPU; 1 device is visible to CUDA \
             (CUDA_VISIBLE_DEVICES=\"0\")."
        );
    }
}
