//! Planning: where each tensor of a model goes, given its sizes and per-device budgets.
//!
//! 1. Names are split at dots into a module tree (first-appearance order).
//! 2. The tree is cut into *units*, the pieces placement never splits: a no-split block
//!    (`no_split` patterns, or by default the outermost numbered block `<prefix>.<N>`), else the
//!    tensors of one module together. Tied tensors join one unit (their storage counts once).
//! 3. Units, in order, go to contiguous ranges of accelerators, then the CPU, then disk:
//!    - `Sequential` fills accelerator 0, then 1, ... (accelerate's `infer_auto_device_map`);
//!    - `Balanced` keeps the same units on the accelerators as `Sequential` (the longest prefix
//!      that fits) and, among order-preserving contiguous assignments of them, minimises the
//!      largest share of an accelerator's budget: a binary search on that share, each step a
//!      greedy feasibility pass, so the result is optimal (to 2^-32 of a share), not greedy;
//!    - `BalancedLow0` gives accelerator 0 only what the others cannot hold, and balances the
//!      rest over the others.
//! 4. When anything spills, the accelerator that runs offloaded blocks (the first one, where
//!    the model's first block lies; accelerate's `dispatch_model` uses it as main device) keeps
//!    room for the largest spilled block: offloaded weights are copied there to run. The
//!    reserve and the spilled set depend on each other, so planning repeats until the reserve
//!    covers the largest spilled block.
//! 5. The map is compacted: a module whose tensors all sit on one device is one entry
//!    (accelerate's `clean_device_map`).

mod budget;
mod compact;
mod model;
mod place;
mod report;

use std::collections::HashMap;
use std::fmt::Write as _;

use ahash::RandomState;

use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};
use crate::units::human_bytes;

pub use budget::{
    available_system_memory, parse_budget_key, parse_size, total_system_memory, Budgets,
};
pub use model::{Model, NoSplit};
pub use place::Strategy;
pub use report::{DeviceUse, Placed, Plan};

use compact::compact;
use model::{unit_of, Kind, Tree, Unit};
use place::assign;
use report::{checked_summary, not_fitting_message, spill_devices};

/// Plans `model` onto `budgets`. Never fails for lack of room: what does not fit is listed in
/// `Plan::unplaced` (see [`Plan::check_fits`]).
pub fn plan(model: &Model, budgets: &Budgets, strategy: Strategy) -> Result<Plan> {
    if budgets.devices.is_empty() {
        return Err(Error::Invalid(
            "No device to plan for: max_memory is empty and no GPU or CPU budget was found"
                .to_owned(),
        ));
    }
    // Tied names the sizes lack are appended (size 0) so the map covers them.
    let mut extra: Vec<&str> = Vec::new();
    // Names are distinct (callers pass dicts, or check, as the bindings do for lists); the
    // name index is only needed to find tied names, so only tied models pay for it.
    let mut known: HashMap<&str, u32, RandomState> = HashMap::default();
    if !model.tied.is_empty() {
        known.reserve(model.sizes.len());
        for (i, (name, _)) in model.sizes.iter().enumerate() {
            known.insert(name.as_str(), i as u32);
        }
    }
    if model.sizes.is_empty() {
        return Err(Error::Invalid(
            "Nothing to plan: the model has no tensors".to_owned(),
        ));
    }
    let mut tensor_bytes: Vec<u64> = model.sizes.iter().map(|&(_, b)| b).collect();
    for group in &model.tied {
        for (k, name) in group.iter().enumerate() {
            match known.get(name.as_str()) {
                // Shared storage counts once: the first of the group that has a size.
                Some(&i) if k > 0 && group[..k].iter().any(|n| known.contains_key(n.as_str())) => {
                    tensor_bytes[i as usize] = 0;
                }
                Some(_) => {}
                None => {
                    let i = (model.sizes.len() + extra.len()) as u32;
                    extra.push(name.as_str());
                    known.insert(name.as_str(), i);
                    tensor_bytes.push(0);
                }
            }
        }
    }
    let names: Vec<&str> = model
        .sizes
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(extra.iter().copied())
        .collect();
    for name in &names {
        if name.is_empty() || name.starts_with('.') || name.ends_with('.') || name.contains("..") {
            return Err(Error::Invalid(format!(
                "Invalid tensor name '{name}': expected dotted names such as 'model.layers.0.mlp.weight'"
            )));
        }
    }
    // Units in order of first appearance. Names in model order share their block, so the
    // previous tensor's block is tried before anything is split or hashed.
    let mut units: Vec<Unit<'_>> = Vec::new();
    let mut unit_index: HashMap<&str, u32, RandomState> = HashMap::default();
    let mut tensor_unit = vec![0u32; names.len()];
    let mut components = Vec::with_capacity(16);
    let mut last_block: Option<(&str, u32)> = None;
    for (t, &name) in names.iter().enumerate() {
        let cached = last_block.filter(|(prefix, _)| crate::names::inside(name, prefix));
        let unit = match cached {
            Some((_, unit)) => unit,
            None => {
                let (prefix, kind) = unit_of(name, model.no_split.as_ref(), &mut components);
                let unit = *unit_index.entry(prefix).or_insert_with(|| {
                    units.push(Unit {
                        prefix,
                        bytes: 0,
                        tensors: Vec::new(),
                        tied: Vec::new(),
                    });
                    (units.len() - 1) as u32
                });
                last_block = (kind == Kind::Block).then_some((prefix, unit));
                unit
            }
        };
        let entry = &mut units[unit as usize];
        entry.bytes = entry.bytes.saturating_add(tensor_bytes[t]);
        entry.tensors.push(t as u32);
        tensor_unit[t] = unit;
    }
    let prefixes: Vec<&str> = units.iter().map(|u| u.prefix).collect();
    let tree = Tree::build(&prefixes);
    // Tied groups join the unit that comes first.
    let mut root: Vec<u32> = (0..units.len() as u32).collect();
    fn find(root: &mut [u32], mut u: u32) -> u32 {
        while root[u as usize] != u {
            root[u as usize] = root[root[u as usize] as usize];
            u = root[u as usize];
        }
        u
    }
    for group in &model.tied {
        let mut members: Vec<u32> = group
            .iter()
            .filter_map(|n| known.get(n.as_str()))
            .map(|&t| find(&mut root, tensor_unit[t as usize]))
            .collect();
        members.sort_unstable();
        members.dedup();
        if let Some((&first, rest)) = members.split_first() {
            for &other in rest {
                root[other as usize] = first;
                let bytes = units[other as usize].bytes;
                units[first as usize].bytes = units[first as usize].bytes.saturating_add(bytes);
                units[first as usize].tied.push(other);
            }
        }
    }
    let order: Vec<u32> = (0..units.len() as u32)
        .filter(|&u| find(&mut root, u) == u)
        .collect();
    let sizes: Vec<u64> = order.iter().map(|&u| units[u as usize].bytes).collect();
    let total: u64 = sizes.iter().fold(0u64, |a, &b| a.saturating_add(b));

    let devices = &budgets.devices;
    if devices.iter().all(|&(_, b)| b == 0) && total > 0 {
        return Err(Error::Invalid(format!(
            "Every budget is zero ({}): nothing can be placed",
            devices
                .iter()
                .map(|(d, _)| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let accelerators = budgets.accelerators();
    // The device that runs offloaded blocks: the first accelerator holding a block
    // (accelerate's `dispatch_model` runs them on the first GPU of the map), else the CPU.
    let mut runner = if accelerators > 0 {
        0
    } else {
        devices
            .iter()
            .position(|(d, _)| d.kind == DeviceType::Cpu)
            .unwrap_or(0)
    };
    let offload_from = if accelerators > 0 {
        accelerators
    } else {
        runner + 1
    };
    let spills = |assigned: &[usize]| {
        assigned
            .iter()
            .zip(&sizes)
            .filter(|(&d, _)| d >= offload_from && d < devices.len())
            .map(|(_, &s)| s)
            .max()
    };
    let (mut assigned, mut reserve);
    loop {
        // The reserve changes what spills: repeat until it covers the largest spilled block.
        reserve = 0u64;
        assigned = assign(&sizes, devices, strategy, reserve, runner);
        for _ in 0..64 {
            let largest_spilled = spills(&assigned).unwrap_or(0);
            if largest_spilled <= reserve {
                break;
            }
            reserve = largest_spilled;
            assigned = assign(&sizes, devices, strategy, reserve, runner);
        }
        if spills(&assigned).is_none() {
            reserve = 0;
            break;
        }
        // With its reserve taken off, the runner may hold nothing (its budget left too little
        // for the first block): then the first GPU that does hold a block runs the offloaded
        // ones, and the reserve moves there, the GPUs before it staying empty.
        match assigned.iter().copied().find(|&d| d < accelerators) {
            Some(first) if first > runner => runner = first,
            _ => break,
        }
    }

    // Per-tensor device, then the compact map.
    let mut unit_device = vec![devices.len(); units.len()];
    for (&u, &d) in order.iter().zip(&assigned) {
        unit_device[u as usize] = d;
    }
    for u in 0..units.len() as u32 {
        unit_device[u as usize] = unit_device[find(&mut root, u) as usize];
    }
    let tensor_device: Vec<usize> = tensor_unit
        .iter()
        .map(|&u| unit_device[u as usize])
        .collect();
    let map = compact(&tree, &units, &names, &unit_device, devices);

    let mut uses: Vec<DeviceUse> = devices
        .iter()
        .enumerate()
        .map(|(i, &(device, budget))| DeviceUse {
            device,
            budget,
            reserved: if i == runner { reserve } else { 0 },
            bytes: 0,
            blocks: 0,
            tensors: 0,
        })
        .collect();
    for (&d, &size) in assigned.iter().zip(&sizes) {
        if let Some(used) = uses.get_mut(d) {
            used.bytes += size;
            used.blocks += 1;
        }
    }
    for &d in &tensor_device {
        if let Some(used) = uses.get_mut(d) {
            used.tensors += 1;
        }
    }
    let unit_name = |u: u32| -> String {
        let unit = &units[u as usize];
        let mut name = unit.prefix.to_owned();
        for &other in &unit.tied {
            let _ = write!(name, " + {}", units[other as usize].prefix);
        }
        name
    };
    let mut spilled = Vec::new();
    let mut unplaced = Vec::new();
    for (&u, (&d, &size)) in order.iter().zip(assigned.iter().zip(&sizes)) {
        if d >= devices.len() {
            unplaced.push(Placed {
                name: unit_name(u),
                bytes: size,
                device: None,
            });
        } else if d >= offload_from {
            spilled.push(Placed {
                name: unit_name(u),
                bytes: size,
                device: Some(devices[d].0),
            });
        }
    }
    let unplaced_bytes = unplaced.iter().map(|p| p.bytes).sum();
    let largest = sizes
        .iter()
        .enumerate()
        .max_by_key(|&(i, &s)| (s, std::cmp::Reverse(i)))
        .map(|(i, &s)| (unit_name(order[i]), s))
        .unwrap_or_default();

    let mut notes = Vec::new();
    if !spilled.is_empty() {
        let on_fast: u64 = uses[..offload_from].iter().map(|u| u.bytes).sum();
        let fast: Vec<String> = devices[..offload_from]
            .iter()
            .map(|(d, _)| d.to_string())
            .collect();
        let spilled_bytes: u64 = spilled.iter().map(|p| p.bytes).sum();
        notes.push(format!(
            "{} of {} did not fit on {} ({} placed there); {} block(s) go to {}",
            human_bytes(spilled_bytes),
            human_bytes(total),
            fast.join(", "),
            human_bytes(on_fast),
            spilled.len(),
            spill_devices(&spilled)
        ));
        let biggest = spilled
            .iter()
            .max_by_key(|p| p.bytes)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        notes.push(format!(
            "{} keeps {} free for the largest offloaded block '{}', which is copied there to run",
            devices[runner].0,
            human_bytes(reserve),
            biggest
        ));
    }
    if !unplaced.is_empty() {
        notes.push(not_fitting_message(
            total,
            unplaced_bytes,
            &unplaced,
            devices,
        ));
    }
    let summary = checked_summary(&map, &names, &tensor_bytes, &uses, &tensor_device)?;
    Ok(Plan {
        summary,
        map,
        strategy,
        devices: uses,
        total_bytes: total,
        tensors: names.len(),
        blocks: order.len(),
        largest_block: largest,
        spilled,
        unplaced,
        unplaced_bytes,
        notes,
    })
}

/// Splits the model into `n` contiguous stages of about equal bytes (pipeline parallelism):
/// units in order, no unit split, the largest stage as small as it can be. Returns, for each
/// stage, the compact module names it holds.
pub fn stages(model: &Model, n: usize) -> Result<Vec<Vec<String>>> {
    if n == 0 {
        return Err(Error::Invalid(
            "The number of stages must be at least 1".to_owned(),
        ));
    }
    let huge = u64::MAX / 4;
    let budgets = Budgets {
        devices: (0..n as u64).map(|i| (Device::gpu(i), huge)).collect(),
    };
    // Balanced over equal budgets minimises the largest stage; ties are ignored for stages
    // (a pipeline keeps a tied embedding on both ends).
    let untied = Model {
        sizes: model.sizes.clone(),
        tied: Vec::new(),
        no_split: model.no_split.clone(),
    };
    let planned = plan(&untied, &budgets, Strategy::Balanced)?;
    if planned.blocks < n {
        return Err(Error::Invalid(format!(
            "Cannot split {} blocks into {n} stages",
            planned.blocks
        )));
    }
    let mut out = vec![Vec::new(); n];
    for (name, device) in planned.map.iter() {
        if let Some(id) = device.id {
            if let Some(stage) = out.get_mut(id as usize) {
                stage.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn layers(n: usize, layer: u64) -> Model {
        let mut sizes = vec![("model.embed_tokens.weight".to_owned(), layer / 2)];
        for i in 0..n {
            sizes.push((format!("model.layers.{i}.attn.weight"), layer / 4));
            sizes.push((format!("model.layers.{i}.mlp.weight"), layer - layer / 4));
        }
        sizes.push(("model.norm.weight".to_owned(), 8));
        sizes.push(("lm_head.weight".to_owned(), layer / 2));
        Model {
            sizes,
            ..Model::default()
        }
    }

    fn gpus(n: u64, each: u64) -> Budgets {
        Budgets::new((0..n).map(|i| (Device::gpu(i), each)).collect()).unwrap()
    }

    fn device_of(plan: &Plan, name: &str) -> Option<Device> {
        // Longest compact key that is a dot-prefix of the name.
        plan.map
            .iter()
            .filter(|(k, _)| k.is_empty() || *k == name || name.starts_with(&format!("{k}.")))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, d)| d)
    }

    #[test]
    fn sizes_parse_as_accelerate() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 * GIB);
        assert_eq!(parse_size("20GB").unwrap(), 20_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("8Gb").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("123").unwrap(), 123);
        for bad in ["-1GiB", "nan", "inf", "20XB", "", "GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_budget_key("cuda:1").unwrap(), Device::gpu(1));
        assert!(parse_budget_key("tpu").is_err());
    }

    #[test]
    fn fits_on_one_gpu_is_the_root() {
        let p = plan(&layers(4, GIB), &gpus(2, 100 * GIB), Strategy::Sequential).unwrap();
        assert_eq!(p.map.len(), 1);
        assert_eq!(p.map.get(""), Some(Device::gpu(0)));
    }

    #[test]
    fn blocks_are_never_split_and_budgets_hold() {
        let model = layers(10, GIB);
        for strategy in [
            Strategy::Sequential,
            Strategy::Balanced,
            Strategy::BalancedLow0,
        ] {
            let p = plan(&model, &gpus(3, 4 * GIB + GIB / 2), strategy).unwrap();
            for used in &p.devices {
                assert!(
                    used.bytes + used.reserved <= used.budget,
                    "{strategy:?} {used:?}"
                );
            }
            for i in 0..10 {
                let a = device_of(&p, &format!("model.layers.{i}.attn.weight"));
                let b = device_of(&p, &format!("model.layers.{i}.mlp.weight"));
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn balanced_is_never_worse_than_sequential() {
        let model = layers(13, GIB);
        let budgets = gpus(4, 8 * GIB);
        let seq = plan(&model, &budgets, Strategy::Sequential).unwrap();
        let bal = plan(&model, &budgets, Strategy::Balanced).unwrap();
        let top = |p: &Plan| p.devices.iter().map(|u| u.bytes).max().unwrap();
        assert!(top(&bal) <= top(&seq));
        // 13.5 + 0.5 GiB over 4 GPUs: no GPU needs more than 4 GiB.
        assert!(top(&bal) <= 4 * GIB, "{}", bal.text());
        let low = plan(&model, &budgets, Strategy::BalancedLow0).unwrap();
        assert!(low.devices[0].bytes <= low.devices[1].bytes);
    }

    #[test]
    fn spill_keeps_room_for_largest_offloaded_block() {
        let model = layers(10, GIB);
        let budgets = Budgets::new(vec![
            (Device::gpu(0), 4 * GIB),
            (Device::cpu(), 3 * GIB),
            (Device::disk(), 100 * GIB),
        ])
        .unwrap();
        let p = plan(&model, &budgets, Strategy::Sequential).unwrap();
        assert!(p.fits());
        assert_eq!(p.devices[0].reserved, GIB);
        assert!(p.devices[0].bytes <= 3 * GIB);
        assert!(!p.spilled.is_empty());
        assert!(p.devices[2].bytes > 0);
    }

    #[test]
    fn ties_land_together() {
        let mut model = layers(6, GIB);
        model.sizes.pop();
        model.tied = vec![vec![
            "model.embed_tokens.weight".into(),
            "lm_head.weight".into(),
        ]];
        let p = plan(&model, &gpus(3, 3 * GIB), Strategy::Sequential).unwrap();
        assert_eq!(
            device_of(&p, "lm_head.weight"),
            device_of(&p, "model.embed_tokens.weight")
        );
        assert!(p.map.contains_key("lm_head"));
    }

    #[test]
    fn no_split_patterns() {
        let model = Model {
            no_split: Some(NoSplit::new(&["model.layers.*.mlp"]).unwrap()),
            ..layers(2, GIB)
        };
        let p = plan(&model, &gpus(4, GIB), Strategy::Sequential).unwrap();
        // attn and mlp of a layer may part now.
        assert!(p.fits());
    }

    #[test]
    fn errors() {
        let too_big = plan(&layers(4, GIB), &gpus(1, GIB), Strategy::Balanced).unwrap();
        let message = too_big.check_fits().unwrap_err().to_string();
        assert!(message.contains("does not fit"), "{message}");
        assert!(plan(&layers(1, GIB), &gpus(2, 0), Strategy::Balanced).is_err());
        assert!(plan(&Model::default(), &gpus(1, GIB), Strategy::Balanced).is_err());
        assert!(Strategy::parse("greedy").is_err());
    }

    #[test]
    fn balanced_leaves_no_gpu_nearly_empty() {
        // 83 units over 8 GPUs: the optimal bottleneck is 11 layers; every GPU within one
        // layer (plus the embedding) of the others, the last one included.
        let p = plan(&layers(80, GIB), &gpus(8, 80 * GIB), Strategy::Balanced).unwrap();
        let loads: Vec<u64> = p.devices.iter().map(|u| u.bytes).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= GIB + GIB / 2, "{loads:?}");
        assert!(*max <= 11 * GIB, "{loads:?}");
    }

    #[test]
    fn low_0_keeps_gpu_0_empty_when_the_others_suffice() {
        let p = plan(&layers(6, GIB), &gpus(3, 10 * GIB), Strategy::BalancedLow0).unwrap();
        assert_eq!(p.devices[0].bytes, 0);
        assert!(p.fits());
        // When they do not, GPU 0 takes only the front that does not fit elsewhere.
        let p = plan(&layers(12, GIB), &gpus(2, 7 * GIB), Strategy::BalancedLow0).unwrap();
        assert!(p.fits());
        // GPU 1 holds 6 layers and the head (6.5 GiB): the embedding and 6 layers are left.
        assert_eq!(p.devices[0].bytes, 6 * GIB + GIB / 2, "{}", p.text());
    }

    #[test]
    fn stages_balance_bytes() {
        let s = stages(&layers(8, GIB), 2).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].iter().any(|n| n.contains("embed")));
        assert!(s[1].iter().any(|n| n.contains("lm_head")));
    }
}
