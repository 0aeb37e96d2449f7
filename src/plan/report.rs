//! The result of a plan: per-device accounting, what spilled or was left over, notes, text.

use std::fmt::Write as _;

use super::place::Strategy;
use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};
use crate::lookup::{self, Summary};
use crate::map::DeviceMap;
use crate::units::{human_bytes, thousands};

/// Per-device result of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceUse {
    pub device: Device,
    pub budget: u64,
    /// Kept free for the largest offloaded block (on the device that runs offloaded blocks).
    pub reserved: u64,
    pub bytes: u64,
    pub blocks: usize,
    pub tensors: usize,
}

/// A unit that was placed off the accelerators, or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub name: String,
    pub bytes: u64,
    pub device: Option<Device>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub map: DeviceMap,
    pub strategy: Strategy,
    pub devices: Vec<DeviceUse>,
    pub total_bytes: u64,
    pub tensors: usize,
    pub blocks: usize,
    pub largest_block: (String, u64),
    /// Units on the CPU or disk (with accelerators present), or on disk (without), in order.
    pub spilled: Vec<Placed>,
    /// Units no device could take.
    pub unplaced: Vec<Placed>,
    pub unplaced_bytes: u64,
    /// Sentences saying why things went where they went.
    pub notes: Vec<String>,
    /// The planned map looked up for every tensor (`DeviceMap.summary(sizes)`), with tied
    /// storage counted once: per device it agrees with `devices`, which `plan` checks.
    pub summary: Summary,
}

/// Looks up every tensor in the compact map, as a loader will, and checks that each lands
/// where the planner put it: the compaction must not move anything.
pub(super) fn checked_summary(
    map: &DeviceMap,
    names: &[&str],
    tensor_bytes: &[u64],
    uses: &[DeviceUse],
    tensor_device: &[usize],
) -> Result<Summary> {
    let summary =
        lookup::summary_with_sizes(map, names.iter().copied().zip(tensor_bytes.iter().copied()))?;
    // What no device takes is mapped to `meta` (see `compact`); nothing is left uncovered.
    let unplaced = tensor_device.iter().filter(|&&d| d >= uses.len()).count();
    let on_meta = summary
        .devices
        .iter()
        .find(|u| u.device.kind == DeviceType::Meta)
        .map_or(0, |u| u.tensors);
    let mut agrees = summary.uncovered_tensors == 0 && on_meta == unplaced;
    for used in uses {
        let found = summary.devices.iter().find(|u| u.device == used.device);
        let (tensors, bytes) = found.map_or((0, 0), |u| (u.tensors, u.bytes));
        agrees &= tensors == used.tensors && bytes == used.bytes;
    }
    if !agrees {
        return Err(Error::Internal(format!(
            "the compact map places tensors elsewhere than planned (planned {:?}, map gives {:?})",
            uses.iter()
                .map(|u| (u.device, u.tensors, u.bytes))
                .collect::<Vec<_>>(),
            summary
                .devices
                .iter()
                .map(|u| (u.device, u.tensors, u.bytes))
                .collect::<Vec<_>>()
        )));
    }
    Ok(summary)
}

pub(super) fn spill_devices(spilled: &[Placed]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for p in spilled {
        if let Some(d) = p.device {
            let text = d.to_string();
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
    }
    seen.join(" and ")
}

pub(super) fn not_fitting_message(
    total: u64,
    missing: u64,
    unplaced: &[Placed],
    devices: &[(Device, u64)],
) -> String {
    let budget: u64 = devices.iter().map(|&(_, b)| b).fold(0, u64::saturating_add);
    let first = unplaced.first().map(|p| p.name.as_str()).unwrap_or("");
    format!(
        "The model ({}) does not fit: {} in {} block(s), from '{}' on, are left over once every device is full (budgets total {}: {}); add {} or more to the budgets",
        human_bytes(total),
        human_bytes(missing),
        unplaced.len(),
        first,
        human_bytes(budget),
        devices
            .iter()
            .map(|(d, b)| format!("{d}={}", human_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", "),
        human_bytes(missing)
    )
}

impl Plan {
    /// Whether everything was placed.
    pub fn fits(&self) -> bool {
        self.unplaced.is_empty()
    }

    /// `Ok` when everything was placed, else the error saying by how much it does not fit.
    pub fn check_fits(&self) -> Result<()> {
        match self.notes.last() {
            Some(message) if !self.fits() => Err(Error::Invalid(message.clone())),
            _ => Ok(()),
        }
    }

    /// A plain-text report: one line per device, then what spilled and why.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "plan ({}): {} in {} tensors, {} blocks (largest '{}', {})",
            self.strategy.as_str(),
            human_bytes(self.total_bytes),
            thousands(self.tensors as u64),
            thousands(self.blocks as u64),
            self.largest_block.0,
            human_bytes(self.largest_block.1)
        );
        for used in &self.devices {
            let share = if used.budget == 0 {
                0.0
            } else {
                used.bytes as f64 / used.budget as f64 * 100.0
            };
            let entries = self
                .summary
                .devices
                .iter()
                .find(|u| u.device == used.device)
                .map_or(0, |u| u.entries);
            let _ = write!(
                out,
                "  {:<8} {:>11} of {:>11} ({share:5.1}%)  {:>6} blocks  {:>9} tensors  {:>6} map entries",
                used.device.to_string(),
                human_bytes(used.bytes),
                human_bytes(used.budget),
                used.blocks,
                thousands(used.tensors as u64),
                entries
            );
            if used.reserved > 0 {
                let _ = write!(
                    out,
                    "  (keeps {} for offloaded blocks)",
                    human_bytes(used.reserved)
                );
            }
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        out
    }
}
