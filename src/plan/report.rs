//! The result of a plan: per-device accounting, what was offloaded or left over, the verdict,
//! the notes saying why, and the plain-text report.

use std::fmt::Write as _;

use super::budget::Budgets;
use super::context::{Context, Fit, Workload};
use super::cost::Cost;
use super::error::{LeftCache, PlanError, Shortfall};
use super::model::{Tensors, Units};
use super::place::{Placement, Strategy};
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
    /// Kept free for the weights of the largest offloaded block (on the device that runs
    /// offloaded blocks).
    pub reserved: u64,
    /// Weights placed here.
    pub bytes: u64,
    /// KV cache charged here: of the layers placed here and, on the device that runs offloaded
    /// blocks, of the offloaded layers.
    pub cache: u64,
    /// Kept free for activations (on devices that run layers, when planned with `activation`).
    pub activation: u64,
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

/// Whether the model fits, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every unit on an accelerator (or, without accelerators, in memory).
    Fits,
    /// Every unit placed, `blocks` of them (`bytes` in all) offloaded to the CPU or disk
    /// (to disk, without accelerators).
    FitsWithOffload { blocks: usize, bytes: u64 },
    /// Some units left over once every device is full.
    DoesNotFit(Shortfall),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub map: DeviceMap,
    pub strategy: Strategy,
    pub devices: Vec<DeviceUse>,
    /// Bytes of the weights.
    pub total_bytes: u64,
    /// Bytes of the KV cache (0 without a context).
    pub cache_bytes: u64,
    /// What a plan for inference was planned for (`None` without a context).
    pub context: Option<Box<Context>>,
    pub tensors: usize,
    pub blocks: usize,
    pub largest_block: (String, u64),
    /// Units on the CPU or disk (with accelerators present), or on disk (without), in order.
    pub spilled: Vec<Placed>,
    /// Units no device could take.
    pub unplaced: Vec<Placed>,
    pub unplaced_bytes: u64,
    pub verdict: Verdict,
    /// Sentences saying why things went where they went (the last one, when the model does
    /// not fit, says by how much).
    pub notes: Vec<String>,
    /// The planned map looked up for every tensor (`DeviceMap.summary(sizes)`), with tied
    /// storage counted once: per device it agrees with `devices`, which `plan` checks.
    pub summary: Summary,
}

/// What planning decided, for the report.
pub(super) struct Planned<'p, 'a> {
    pub(super) strategy: Strategy,
    pub(super) budgets: &'p Budgets,
    pub(super) tensors: &'p Tensors<'a>,
    pub(super) units: &'p Units<'a>,
    /// The cost of each unit placement placed (`units.order`).
    pub(super) costs: &'p [Cost],
    pub(super) placement: &'p Placement,
    /// The device of every unit (`units.list`).
    pub(super) unit_device: &'p [usize],
    pub(super) map: DeviceMap,
    /// Planned for inference: the layer list, each layer's cache, and what fit needs.
    pub(super) context: Option<(&'p Workload, String, Vec<u64>, Fit)>,
}

/// The plan: what each device holds, what was offloaded or left over and why, and the compact
/// map checked against the placement.
pub(super) fn report(planned: Planned<'_, '_>) -> Result<Plan> {
    let Planned {
        strategy,
        budgets,
        tensors,
        units,
        costs,
        placement,
        unit_device,
        map,
        context,
    } = planned;
    let devices = &budgets.devices;
    let tensor_device: Vec<usize> = units
        .of_tensor
        .iter()
        .map(|&u| unit_device[u as usize])
        .collect();
    let uses = device_uses(budgets, costs, placement, &tensor_device);
    let mut spilled = Vec::new();
    let mut unplaced = Vec::new();
    let mut left_over = Cost::default();
    for (&u, (&d, cost)) in units.order.iter().zip(placement.assigned.iter().zip(costs)) {
        if d >= devices.len() {
            left_over = left_over.saturating_add(*cost);
            unplaced.push(Placed {
                name: units.name(u),
                bytes: cost.total(),
                device: None,
            });
        } else if d >= placement.offload_from {
            spilled.push(Placed {
                name: units.name(u),
                bytes: cost.on_offload(),
                device: Some(devices[d].0),
            });
        }
    }
    let sum = costs
        .iter()
        .fold(Cost::default(), |sum, &c| sum.saturating_add(c));
    let total = sum.total();
    let unplaced_bytes = unplaced.iter().map(|p| p.bytes).sum();
    let largest = costs
        .iter()
        .enumerate()
        .max_by_key(|&(i, c)| (c.weights, std::cmp::Reverse(i)))
        .map(|(i, c)| (units.name(units.order[i]), c.weights))
        .unwrap_or_default();
    let verdict = if !unplaced.is_empty() {
        Verdict::DoesNotFit(Shortfall {
            total,
            cache: sum.cache,
            context: context.as_ref().map(|(w, ..)| (w.tokens, w.batch)),
            missing: unplaced_bytes,
            blocks: unplaced.len(),
            first: unplaced[0].name.clone(),
            budgets: devices.clone(),
            left_cache: (left_over.cache > 0).then(|| LeftCache {
                runner: devices[placement.runner].0,
                weights: left_over.weights,
                cache: left_over.cache,
                disk_room: disk_room(&uses, left_over.weights),
            }),
        })
    } else if !spilled.is_empty() {
        Verdict::FitsWithOffload {
            blocks: spilled.len(),
            bytes: spilled.iter().map(|p| p.bytes).sum(),
        }
    } else {
        Verdict::Fits
    };
    let context = context.map(|(workload, layer_list, per_layer, fit)| {
        let layer_device = fit
            .layer_slots()
            .iter()
            .map(|&slot| runs_on(placement, slot, devices.len()).map(|d| devices[d].0))
            .collect();
        Box::new(Context {
            model_type: workload.layout.model_type,
            tokens: workload.tokens,
            batch: workload.batch,
            dtype: workload.layout.dtype,
            activation: workload.activation,
            layer_list,
            per_layer,
            layer_device,
            cache_bytes: sum.cache,
            fit,
        })
    });
    let mut notes = notes(budgets, placement, &uses, &spilled, sum.weights, &verdict);
    let accelerators = budgets.accelerators();
    if accelerators > 0 && unplaced.is_empty() && tensor_device.iter().all(|&d| d >= accelerators) {
        let smallest = costs.iter().map(|c| c.total()).min().unwrap_or(0);
        notes.push(cpu_run_note(&devices[..accelerators], &largest, smallest));
    }
    if let Some(context) = &context {
        notes.insert(0, cache_note(context, &uses));
    }
    let summary = checked_summary(&map, &tensors.names, &tensors.bytes, &uses, &tensor_device)?;
    Ok(Plan {
        summary,
        map,
        strategy,
        devices: uses,
        total_bytes: sum.weights,
        cache_bytes: sum.cache,
        context,
        tensors: tensors.names.len(),
        blocks: units.order.len(),
        largest_block: largest,
        spilled,
        unplaced,
        unplaced_bytes,
        verdict,
        notes,
    })
}

/// Per device: its budget, the reserve it keeps, and the bytes, units and tensors placed on it.
fn device_uses(
    budgets: &Budgets,
    costs: &[Cost],
    placement: &Placement,
    tensor_device: &[usize],
) -> Vec<DeviceUse> {
    let mut uses: Vec<DeviceUse> = budgets
        .devices
        .iter()
        .enumerate()
        .map(|(i, &(device, budget))| DeviceUse {
            device,
            budget,
            // What the budget can keep: a reserve above it is said in the notes.
            reserved: if i == placement.runner {
                placement.reserve.min(budget)
            } else {
                0
            },
            bytes: 0,
            cache: 0,
            activation: if i < placement.offload_from {
                placement.activation.min(budget)
            } else {
                0
            },
            blocks: 0,
            tensors: 0,
        })
        .collect();
    for (slot, (&d, cost)) in placement.assigned.iter().zip(costs).enumerate() {
        if let Some(used) = uses.get_mut(d) {
            used.bytes += cost.weights;
            used.blocks += 1;
        }
        if let Some(runs) = runs_on(placement, slot, uses.len()) {
            uses[runs].cache += cost.cache;
        }
    }
    for &d in tensor_device {
        if let Some(used) = uses.get_mut(d) {
            used.tensors += 1;
        }
    }
    uses
}

/// The device the unit at `slot` runs on: its own, or for an offloaded unit the device that
/// runs offloaded blocks; `None` when it was not placed.
fn runs_on(placement: &Placement, slot: usize, devices: usize) -> Option<usize> {
    match placement.assigned[slot] {
        d if d >= devices => None,
        d if d >= placement.offload_from => Some(placement.runner),
        d => Some(d),
    }
}

/// What the cache adds, and where.
fn cache_note(context: &Context, uses: &[DeviceUse]) -> String {
    let on: Vec<String> = uses
        .iter()
        .filter(|u| u.cache > 0)
        .map(|u| format!("{} {}", u.device, human_bytes(u.cache)))
        .collect();
    let activation = if context.activation > 0 {
        format!(
            "; {} kept free for activations on each device that runs layers",
            human_bytes(context.activation)
        )
    } else {
        String::new()
    };
    format!(
        "KV cache for {} tokens x batch {} ({} {}, {} layers of '{}'): {} added ({}){activation}",
        thousands(context.tokens),
        thousands(context.batch),
        context.model_type,
        context.dtype,
        context.per_layer.len(),
        context.layer_list,
        human_bytes(context.cache_bytes),
        if on.is_empty() {
            "nothing placed".to_owned()
        } else {
            on.join(", ")
        }
    )
}

/// Whether the disk budget has room for `weights` (the blocks left over): then only a device
/// that runs layers (which holds their cache) is short, and more disk does not help.
fn disk_room(uses: &[DeviceUse], weights: u64) -> bool {
    uses.iter()
        .find(|u| u.device.kind == DeviceType::Disk)
        .is_some_and(|disk| disk.budget.saturating_sub(disk.bytes) >= weights)
}

/// Sentences for the report: what was offloaded and where, what the runner keeps for it, and
/// by how much the model does not fit.
fn notes(
    budgets: &Budgets,
    placement: &Placement,
    uses: &[DeviceUse],
    spilled: &[Placed],
    total: u64,
    verdict: &Verdict,
) -> Vec<String> {
    let devices = &budgets.devices;
    let mut notes = Vec::new();
    if !spilled.is_empty() {
        let offload_from = placement.offload_from;
        let on_fast: u64 = uses[..offload_from].iter().map(|u| u.bytes).sum();
        let fast = device_list(&devices[..offload_from]);
        let spilled_bytes: u64 = spilled.iter().map(|p| p.bytes).sum();
        notes.push(format!(
            "{} of {} did not fit on {} ({} placed there); {} block(s) go to {}",
            human_bytes(spilled_bytes),
            human_bytes(total),
            fast,
            human_bytes(on_fast),
            spilled.len(),
            spill_devices(spilled)
        ));
        let biggest = spilled
            .iter()
            .max_by_key(|p| p.bytes)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let cache = if placement.offloaded_cache > 0 {
            format!(
                ", and holds the KV cache of the offloaded layers ({}), which run there",
                human_bytes(placement.offloaded_cache)
            )
        } else {
            String::new()
        };
        let (runner, budget) = devices[placement.runner];
        notes.push(if placement.reserve > budget {
            format!(
                "{runner} needs {} free to run the largest offloaded block '{biggest}', which is \
                 copied there to run{cache}: more than its {} budget, so it holds no weights \
                 and running offloaded blocks there needs more memory than the budget allows",
                human_bytes(placement.reserve),
                human_bytes(budget),
            )
        } else {
            format!(
                "{runner} keeps {} free for the largest offloaded block '{biggest}', which is \
                 copied there to run{cache}",
                human_bytes(placement.reserve),
            )
        });
    }
    if let Verdict::DoesNotFit(shortfall) = verdict {
        notes.push(shortfall.to_string());
    }
    notes
}

/// `cuda:0, cuda:1`; three or more GPUs numbered in a row as `cuda:0..cuda:11`.
/// Why a plan with accelerators holds nothing on them (`place.rs`'s `run_on_the_cpu`): no
/// block fits one, or the accelerator holding the first block, which would run every offloaded
/// block, cannot keep room for the largest of them beside its own blocks.
fn cpu_run_note(accelerators: &[(Device, u64)], largest: &(String, u64), smallest: u64) -> String {
    let most = accelerators.iter().map(|&(_, b)| b).max().unwrap_or(0);
    let gpus = device_list(accelerators);
    let hold = if accelerators.len() == 1 {
        "holds"
    } else {
        "hold"
    };
    if smallest > most {
        return format!(
            "{gpus} {hold} no weights: the smallest block ({}) is larger than every GPU budget \
             (at most {}), so the plan runs on the CPU",
            human_bytes(smallest),
            human_bytes(most),
        );
    }
    format!(
        "{gpus} {hold} no weights: the GPU holding the first block runs the blocks left off the \
         GPUs, copied there to run, so it must keep room for the largest of them (up to '{}', \
         {}) beside its own; no budget (at most {}) allows both, so the plan runs on the CPU",
        largest.0,
        human_bytes(largest.1),
        human_bytes(most),
    )
}

fn device_list(devices: &[(Device, u64)]) -> String {
    let ids: Vec<Option<u64>> = devices
        .iter()
        .map(|(d, _)| (d.kind == DeviceType::Gpu).then_some(d.id).flatten())
        .collect();
    let in_a_row = ids.len() >= 3
        && ids.iter().all(Option::is_some)
        && ids.windows(2).all(|w| w[1] == w[0].map(|id| id + 1));
    match (in_a_row, devices.first(), devices.last()) {
        (true, Some((first, _)), Some((last, _))) => format!("{first}..{last}"),
        _ => {
            let names: Vec<String> = devices.iter().map(|(d, _)| d.to_string()).collect();
            names.join(", ")
        }
    }
}

fn spill_devices(spilled: &[Placed]) -> String {
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

/// A tensor name that is a dotted prefix of another (`x.a` and `x.a.w`), with that other.
fn tensor_under_tensor<'a>(names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let all: std::collections::HashSet<&str> = names.iter().copied().collect();
    names.iter().find_map(|&name| {
        name.match_indices('.')
            .map(|(at, _)| &name[..at])
            .find(|prefix| all.contains(prefix))
            .map(|prefix| (prefix, name))
    })
}

/// Looks up every tensor in the compact map, as a loader will, and checks that each lands
/// where the planner put it: the compaction must not move anything.
fn checked_summary(
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
        // The one input known to cause it: a tensor with tensors under it ('x.a', 'x.a.w'),
        // which no map can place apart. Looked for only here, so planning pays nothing for it.
        if let Some((tensor, under)) = tensor_under_tensor(names) {
            return Err(PlanError::TensorUnderTensor {
                tensor: crate::error::quoted(tensor),
                under: crate::error::quoted(under),
            }
            .into());
        }
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

impl DeviceUse {
    /// Weights and cache placed here, as a share of the budget.
    pub fn share(&self) -> f64 {
        if self.budget == 0 {
            0.0
        } else {
            (self.bytes + self.cache) as f64 / self.budget as f64
        }
    }

    /// What the budget has left once weights, cache, the offload reserve and the activation
    /// headroom are taken.
    pub fn spare(&self) -> u64 {
        self.budget
            .saturating_sub(self.bytes)
            .saturating_sub(self.cache)
            .saturating_sub(self.reserved)
            .saturating_sub(self.activation)
    }
}

impl Plan {
    /// Whether everything was placed.
    pub fn fits(&self) -> bool {
        !matches!(self.verdict, Verdict::DoesNotFit(_))
    }

    /// What helps a plan whose left-over blocks have a KV cache (see [`Shortfall::cache_remedy`]).
    pub fn cache_remedy(&self) -> Option<String> {
        match &self.verdict {
            Verdict::DoesNotFit(shortfall) => shortfall.cache_remedy(),
            _ => None,
        }
    }

    /// `Ok` when everything was placed, else the error saying by how much it does not fit.
    pub fn check_fits(&self) -> Result<(), PlanError> {
        match &self.verdict {
            Verdict::DoesNotFit(shortfall) => {
                Err(PlanError::DoesNotFit(Box::new(shortfall.clone())))
            }
            _ => Ok(()),
        }
    }

    /// A plain-text report that reads at 80 columns: the model, one table row per device,
    /// then the notes (wrapped) saying what spilled and why.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "plan ({}): {} in {} tensors, {} blocks",
            self.strategy.as_str(),
            human_bytes(self.total_bytes),
            thousands(self.tensors as u64),
            thousands(self.blocks as u64),
        );
        // A tied block's name joins its members' ('shared + encoder.embed_tokens + ...').
        let largest = format!(
            "largest block '{}' ({})",
            self.largest_block.0,
            human_bytes(self.largest_block.1)
        );
        wrap(&mut out, &largest, 80);
        if let Some(context) = &self.context {
            let cache = format!(
                "for {} tokens x batch {}: KV cache {} ({})",
                thousands(context.tokens),
                thousands(context.batch),
                human_bytes(self.cache_bytes),
                context.dtype
            );
            wrap(&mut out, &cache, 80);
        }
        let cache = self.context.is_some();
        let _ = writeln!(
            out,
            "  {:<7} {:>10}{} {:>10} {:>6} {:>7} {:>8} {:>12}",
            "device",
            if cache { "weights" } else { "placed" },
            if cache { "      cache" } else { "" },
            "budget",
            "share",
            "blocks",
            "tensors",
            "map entries"
        );
        for used in &self.devices {
            let entries = self
                .summary
                .devices
                .iter()
                .find(|u| u.device == used.device)
                .map_or(0, |u| u.entries);
            let cache_cell = if cache {
                format!(" {:>10}", human_bytes(used.cache))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<7} {:>10}{cache_cell} {:>10} {:>6} {:>7} {:>8} {:>12}",
                used.device.to_string(),
                human_bytes(used.bytes),
                human_bytes(used.budget),
                share(used.share()),
                thousands(used.blocks as u64),
                thousands(used.tensors as u64),
                thousands(entries as u64)
            );
        }
        for note in &self.notes {
            wrap(&mut out, note, 80);
        }
        out
    }
}

/// A share of a budget as a percentage; something placed never reads as `0.0%`.
fn share(share: f64) -> String {
    if share > 0.0 && share < 0.0005 {
        "<0.1%".to_owned()
    } else {
        format!("{:.1}%", share * 100.0)
    }
}

/// Appends `text` cut at spaces into lines of at most `width` characters (a longer word stays
/// whole, and a size keeps its unit: `4.5 MiB`), the lines after the first indented by two
/// spaces.
fn wrap(out: &mut String, text: &str, width: usize) {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(' ') {
        let unit = word.trim_end_matches([',', ')', ';', ':', '.']);
        let after_number = words
            .last()
            .is_some_and(|w| w.ends_with(|c: char| c.is_ascii_digit()));
        if after_number && ["B", "KiB", "MiB", "GiB", "TiB", "PiB"].contains(&unit) {
            if let Some(last) = words.last_mut() {
                last.push(' ');
                last.push_str(word);
            }
        } else {
            words.push(word.to_owned());
        }
    }
    let mut line = String::new();
    for word in &words {
        if !line.trim().is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = "  ".to_owned();
        } else if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_wrap_at_spaces_and_keep_sizes_whole() {
        let mut out = String::new();
        wrap(&mut out, "aaaa bbbb cccc 4.5 MiB, dddd", 14);
        assert_eq!(out, "aaaa bbbb cccc\n  4.5 MiB,\n  dddd\n");
        let mut long = String::new();
        wrap(&mut long, "averyveryverylongword x", 5);
        assert_eq!(long, "averyveryverylongword\n  x\n");
    }

    #[test]
    fn gpus_in_a_row_read_as_a_range() {
        let gpus = |ids: &[u64]| -> Vec<(Device, u64)> {
            ids.iter().map(|&i| (Device::gpu(i), 1)).collect()
        };
        assert_eq!(device_list(&gpus(&[0, 1, 2, 3])), "cuda:0..cuda:3");
        assert_eq!(device_list(&gpus(&[0, 1])), "cuda:0, cuda:1");
        assert_eq!(device_list(&gpus(&[0, 2, 3])), "cuda:0, cuda:2, cuda:3");
        assert_eq!(device_list(&[(Device::mps(), 1)]), "mps");
    }

    #[test]
    fn a_share_above_zero_never_reads_as_zero() {
        assert_eq!(share(0.0), "0.0%");
        assert_eq!(share(1e-6), "<0.1%");
        assert_eq!(share(0.5), "50.0%");
    }
}
