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

use std::collections::HashMap;
use std::fmt::Write as _;

use ahash::RandomState;

use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};
use crate::lookup::{self, Summary};
use crate::map::DeviceMap;
use crate::units::{human_bytes, thousands};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Sequential,
    Balanced,
    BalancedLow0,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["sequential", "balanced", "balanced_low_0"];

    pub fn parse(text: &str) -> Result<Strategy> {
        match text {
            "sequential" => Ok(Strategy::Sequential),
            "balanced" | "auto" => Ok(Strategy::Balanced),
            "balanced_low_0" => Ok(Strategy::BalancedLow0),
            _ => Err(Error::Invalid(format!(
                "Unknown strategy '{text}'; expected one of 'sequential', 'balanced', 'balanced_low_0'"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Where units may go, in fill order: accelerators (GPUs by id, or MPS), then CPU, then disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    pub devices: Vec<(Device, u64)>,
}

impl Budgets {
    /// Budgets in fill order from `(device, bytes)` pairs in any order. A device given twice
    /// is an error.
    pub fn new(mut devices: Vec<(Device, u64)>) -> Result<Budgets> {
        devices.sort_by_key(|(device, _)| (fill_rank(*device), device.id));
        for pair in devices.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Error::Invalid(format!(
                    "max_memory names {} twice",
                    pair[0].0
                )));
            }
        }
        Ok(Budgets { devices })
    }

    fn accelerators(&self) -> usize {
        self.devices
            .iter()
            .filter(|(d, _)| is_accelerator(*d))
            .count()
    }
}

fn fill_rank(device: Device) -> u8 {
    match device.kind {
        DeviceType::Gpu => 0,
        DeviceType::Mps | DeviceType::Xpu => 1,
        DeviceType::Cpu => 2,
        DeviceType::Disk => 3,
        DeviceType::Meta => 4,
    }
}

fn is_accelerator(device: Device) -> bool {
    matches!(
        device.kind,
        DeviceType::Gpu | DeviceType::Mps | DeviceType::Xpu
    )
}

/// A byte count as accelerate's `convert_file_size_to_int` reads it: a plain number of bytes,
/// or a number with `GiB`/`MiB`/`KiB` (powers of 2) or `GB`/`MB`/`KB` (powers of 10, and
/// accelerate's quirk of a lowercase final `b` meaning bits, so `"8Gb"` is 1 GB). Beyond
/// accelerate: `TiB`, `TB` and a bare `B`, and spaces before the unit.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::Invalid(format!(
            "Invalid memory size '{text}': use bytes or a number with a unit such as '20GiB', '20GB', '512MiB'"
        ))
    };
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let units: [(&str, f64, bool); 9] = [
        ("TIB", 1099511627776.0, false),
        ("GIB", 1073741824.0, false),
        ("MIB", 1048576.0, false),
        ("KIB", 1024.0, false),
        ("TB", 1e12, true),
        ("GB", 1e9, true),
        ("MB", 1e6, true),
        ("KB", 1e3, true),
        ("B", 1.0, false),
    ];
    let (number, scale, bits) = units
        .iter()
        .find(|(unit, _, _)| upper.ends_with(unit))
        .map(|&(unit, scale, decimal)| {
            (
                &trimmed[..trimmed.len() - unit.len()],
                scale,
                decimal && trimmed.ends_with('b'),
            )
        })
        .unwrap_or((trimmed, 1.0, false));
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = (value * scale).floor();
    if bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    let bytes = bytes as u64;
    Ok(if bits { bytes / 8 } else { bytes })
}

/// A `max_memory` key: a GPU id (`0`, `"0"`, `"cuda:0"`), `"cpu"`, `"disk"` or `"mps"`.
pub fn parse_budget_key(text: &str) -> Result<Device> {
    let trimmed = text.trim();
    let device = match trimmed {
        "cpu" => Some(Device::cpu()),
        "disk" => Some(Device::disk()),
        "mps" => Some(Device::mps()),
        _ => trimmed
            .strip_prefix("cuda:")
            .unwrap_or(trimmed)
            .parse::<u64>()
            .ok()
            .filter(|_| trimmed.bytes().last().is_some_and(|b| b.is_ascii_digit()))
            .map(Device::gpu),
    };
    device.ok_or_else(|| {
        Error::Invalid(format!(
            "Unknown max_memory key '{text}': expected a GPU id (0, 1, ...), 'cpu', 'disk' or 'mps'"
        ))
    })
}

/// Module-name patterns whose matches are never split; `*` stands for one component.
#[derive(Clone, Debug, Default)]
pub struct NoSplit {
    exact: std::collections::HashSet<String, RandomState>,
    wildcard: Vec<Vec<String>>,
}

impl NoSplit {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<NoSplit> {
        let mut no_split = NoSplit::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
                return Err(Error::Invalid(format!(
                    "Invalid no_split pattern '{pattern}': expected a dotted module name such as 'model.layers.*'"
                )));
            }
            if pattern.split('.').any(|c| c == "*") {
                no_split
                    .wildcard
                    .push(pattern.split('.').map(str::to_owned).collect());
            } else {
                no_split.exact.insert(pattern.to_owned());
            }
        }
        Ok(no_split)
    }

    fn matches(&self, prefix: &str, components: &[&str]) -> bool {
        self.exact.contains(prefix)
            || self.wildcard.iter().any(|p| {
                p.len() == components.len()
                    && p.iter().zip(components).all(|(p, c)| p == "*" || p == c)
            })
    }
}

/// What to plan: tensor sizes in model order, which tensors share storage, and what not to split.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub sizes: Vec<(String, u64)>,
    /// Groups of tensor names that share storage and must sit together. A name missing from
    /// `sizes` (a tied weight the checkpoint stores once) is added to its group's device.
    pub tied: Vec<Vec<String>>,
    /// `None`: detect the outermost numbered blocks.
    pub no_split: Option<NoSplit>,
}

const NONE: u32 = u32::MAX;

/// What a unit is: a no-split block, the tensors of one module, or a lone top-level tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Block,
    Module,
    Tensor,
}

/// The unit a tensor belongs to: the prefix of its outermost no-split block (a `no_split`
/// pattern match, or by default the first numbered component: `model.layers.3`), else its
/// module (the name less its last component), else the tensor itself.
fn unit_of<'a>(
    name: &'a str,
    no_split: Option<&NoSplit>,
    components: &mut Vec<&'a str>,
) -> (&'a str, Kind) {
    components.clear();
    let mut start = 0;
    for (end, component) in name
        .match_indices('.')
        .map(|(i, _)| i)
        .chain(std::iter::once(name.len()))
        .map(|end| {
            let component = &name[start..end];
            start = end + 1;
            (end, component)
        })
    {
        components.push(component);
        let block = match no_split {
            Some(patterns) => patterns.matches(&name[..end], components),
            None => crate::names::number(component).is_some(),
        };
        if block {
            return (&name[..end], Kind::Block);
        }
    }
    match name.rfind('.') {
        Some(dot) => (&name[..dot], Kind::Module),
        None => (name, Kind::Tensor),
    }
}

/// The module tree of the unit prefixes (only down to units: a unit never parts, so the
/// compact map never names anything below one). Node 0 is the root (`""`).
struct Tree<'a> {
    /// Full dotted name of each node.
    names: Vec<&'a str>,
    parent: Vec<u32>,
    children: Vec<Vec<u32>>,
    /// The unit at this node, if one.
    unit: Vec<u32>,
}

impl<'a> Tree<'a> {
    fn build(prefixes: &[&'a str]) -> Tree<'a> {
        let mut tree = Tree {
            names: vec![""],
            parent: vec![NONE],
            children: vec![Vec::new()],
            unit: vec![NONE],
        };
        let mut index: HashMap<(u32, &'a str), u32, RandomState> =
            HashMap::with_capacity_and_hasher(prefixes.len() * 2, RandomState::new());
        for (u, &name) in prefixes.iter().enumerate() {
            let mut node = 0u32;
            let mut start = 0;
            loop {
                let end = name[start..].find('.').map_or(name.len(), |p| start + p);
                let component = &name[start..end];
                node = match index.get(&(node, component)) {
                    Some(&child) => child,
                    None => {
                        let child = tree.names.len() as u32;
                        tree.names.push(&name[..end]);
                        tree.parent.push(node);
                        tree.children.push(Vec::new());
                        tree.unit.push(NONE);
                        tree.children[node as usize].push(child);
                        index.insert((node, component), child);
                        child
                    }
                };
                if end == name.len() {
                    break;
                }
                start = end + 1;
            }
            tree.unit[node as usize] = u as u32;
        }
        tree
    }
}

/// A unit in placement order.
#[derive(Clone, Debug)]
struct Unit<'a> {
    prefix: &'a str,
    bytes: u64,
    /// The tensors in it (indices into the names).
    tensors: Vec<u32>,
    /// Other units tied into this one.
    tied: Vec<u32>,
}

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

/// Greedy order-preserving fill of `sizes` into devices of `caps`, starting each unit on the
/// current device and moving on when it does not fit. Returns each unit's device index
/// (`caps.len()` for units that did not fit anywhere after the last device was passed).
fn fill(sizes: &[u64], caps: &[u64]) -> Vec<usize> {
    let mut out = Vec::with_capacity(sizes.len());
    let mut device = 0;
    let mut used = 0u64;
    for &size in sizes {
        while device < caps.len() && used.saturating_add(size) > caps[device] {
            device += 1;
            used = 0;
        }
        if device < caps.len() {
            used += size;
        }
        out.push(device);
    }
    out
}

/// Whether `sizes` fit, in order and contiguously, into devices of `caps`.
fn fits(sizes: &[u64], caps: &[u64]) -> bool {
    if caps.is_empty() {
        return sizes.is_empty();
    }
    let mut device = 0;
    let mut used = 0u64;
    for &size in sizes {
        while used.saturating_add(size) > caps[device] {
            device += 1;
            used = 0;
            if device == caps.len() {
                return false;
            }
        }
        used += size;
    }
    true
}

/// Number of leading `sizes` that fit into `caps` in order (greedy is optimal for a prefix).
fn prefix_that_fits(sizes: &[u64], caps: &[u64]) -> usize {
    fill(sizes, caps)
        .iter()
        .position(|&d| d >= caps.len())
        .unwrap_or(sizes.len())
}

const SHARE_ONE: u128 = 1 << 32;

fn capped(budgets: &[u64], caps: &[u64], share: u128) -> Vec<u64> {
    budgets
        .iter()
        .zip(caps)
        .map(|(&b, &c)| ((b as u128 * share / SHARE_ONE) as u64).min(c))
        .collect()
}

/// Assigns `sizes` (which must fit `caps`) to the devices contiguously, minimising the largest
/// `used / budget`: binary search on that share in steps of 2^-32, each step a greedy check.
/// Then, under that bottleneck, each device in turn takes the cut closest to its fair part of
/// what is left (still leaving a feasible rest), so the last devices are not left under-filled
/// as a greedy fill up to the bottleneck would leave them.
fn balance(sizes: &[u64], budgets: &[u64], caps: &[u64]) -> Vec<usize> {
    if caps.is_empty() {
        return vec![0; sizes.len()];
    }
    let (mut low, mut high) = (0u128, SHARE_ONE);
    while low < high {
        let mid = (low + high) / 2;
        if fits(sizes, &capped(budgets, caps, mid)) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    let limit = capped(budgets, caps, high);
    if !fits(sizes, &limit) {
        // Only when the caller broke the precondition; the greedy fill still says what fits.
        return fill(sizes, caps);
    }
    let mut prefix = Vec::with_capacity(sizes.len() + 1);
    prefix.push(0u128);
    for &size in sizes {
        let last = prefix[prefix.len() - 1];
        prefix.push(last + size as u128);
    }
    let load = |a: usize, b: usize| prefix[b] - prefix[a];
    let mut out = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for device in 0..limit.len() {
        let end = if device + 1 == limit.len() {
            sizes.len()
        } else {
            // The most this device can take, and the least that leaves a rest that fits.
            let mut most = start;
            while most < sizes.len() && load(start, most + 1) <= limit[device] as u128 {
                most += 1;
            }
            let rest = &limit[device + 1..];
            let (mut lo, mut hi) = (start, most);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if fits(&sizes[mid..], rest) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            let least = lo;
            let left: u128 = budgets[device..].iter().map(|&b| b as u128).sum();
            let target = (load(start, sizes.len()) * budgets[device] as u128)
                .checked_div(left)
                .unwrap_or(0);
            // Loads grow with the cut: the first cut at or past the target, or the one before.
            let goal = prefix[start] + target;
            let at = prefix[least..=most].partition_point(|&p| p < goal) + least;
            let mut best = at.min(most);
            if best > least && goal - prefix[best - 1] <= prefix[best].saturating_sub(goal) {
                best -= 1;
            }
            best
        };
        out.extend(std::iter::repeat(device).take(end - start));
        start = end;
    }
    out
}

/// Like `balance`, but device 0 first takes only the prefix the others cannot hold.
fn balance_low_0(sizes: &[u64], budgets: &[u64], caps: &[u64]) -> Vec<usize> {
    if caps.len() < 2 {
        return balance(sizes, budgets, caps);
    }
    // Pack from the end into devices n-1 .. 1: what is left at the front is the least that
    // device 0 must take.
    let mut device = caps.len() - 1;
    let mut used = 0u64;
    let mut first_on_others = sizes.len();
    for (i, &size) in sizes.iter().enumerate().rev() {
        while used.saturating_add(size) > caps[device] {
            if device == 1 {
                break;
            }
            device -= 1;
            used = 0;
        }
        if used.saturating_add(size) > caps[device] {
            break;
        }
        used += size;
        first_on_others = i;
    }
    let mut out = vec![0; first_on_others];
    out.extend(
        balance(&sizes[first_on_others..], &budgets[1..], &caps[1..])
            .into_iter()
            .map(|d| d + 1),
    );
    out
}

/// Device index per unit; `devices.len()` for units that did not fit. `reserve` is taken off
/// the budget of device `runner`, and accelerators before it take nothing (the runner must be
/// the first accelerator holding a block).
fn assign(
    sizes: &[u64],
    budgets: &[(Device, u64)],
    strategy: Strategy,
    reserve: u64,
    runner: usize,
) -> Vec<usize> {
    let caps: Vec<u64> = budgets
        .iter()
        .enumerate()
        .map(|(i, &(device, b))| {
            if i == runner {
                b.saturating_sub(reserve)
            } else if i < runner && is_accelerator(device) {
                0
            } else {
                b
            }
        })
        .collect();
    let accelerators = budgets.iter().filter(|(d, _)| is_accelerator(*d)).count();
    if strategy == Strategy::Sequential || accelerators == 0 {
        return fill(sizes, &caps);
    }
    let on_accelerators = prefix_that_fits(sizes, &caps[..accelerators]);
    let plain: Vec<u64> = budgets[..accelerators].iter().map(|&(_, b)| b).collect();
    let head = &sizes[..on_accelerators];
    let mut out = match strategy {
        Strategy::BalancedLow0 => balance_low_0(head, &plain, &caps[..accelerators]),
        _ => balance(head, &plain, &caps[..accelerators]),
    };
    out.extend(
        fill(&sizes[on_accelerators..], &caps[accelerators..])
            .into_iter()
            .map(|d| d + accelerators),
    );
    out
}

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

fn not_fitting_message(
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

/// Merges siblings on one device into their parent: a module whose units all sit on one
/// device is one entry (the root, `""`, when everything does). Units no device takes go to
/// `meta`, so the map of a plan that does not fit still covers every tensor.
fn compact(
    tree: &Tree<'_>,
    units: &[Unit<'_>],
    names: &[&str],
    unit_device: &[usize],
    devices: &[(Device, u64)],
) -> DeviceMap {
    const UNSET: usize = usize::MAX;
    const MIXED: usize = usize::MAX - 1;
    fn merge(a: usize, b: usize) -> usize {
        match (a, b) {
            (UNSET, x) | (x, UNSET) => x,
            (x, y) if x == y => x,
            _ => MIXED,
        }
    }
    let mut common = vec![UNSET; tree.names.len()];
    // Children come after their parents, so walking backwards sees every child first.
    for node in (0..tree.names.len()).rev() {
        let u = tree.unit[node];
        if u != NONE {
            common[node] = merge(common[node], unit_device[u as usize]);
        }
        let parent = tree.parent[node];
        if parent != NONE {
            common[parent as usize] = merge(common[parent as usize], common[node]);
        }
    }
    let mut map = DeviceMap::with_capacity(64);
    let slots: Vec<u32> = devices.iter().map(|&(d, _)| map.intern(d)).collect();
    let unplaced = map.intern(Device::new(DeviceType::Meta, None));
    let slot = |d: usize| slots.get(d).copied().unwrap_or(unplaced);
    let mut stack = vec![0u32];
    while let Some(node) = stack.pop() {
        let n = node as usize;
        match common[n] {
            MIXED => {
                // A module with tensors of its own and children elsewhere: name its tensors.
                let u = tree.unit[n];
                if u != NONE {
                    let d = slot(unit_device[u as usize]);
                    for &t in &units[u as usize].tensors {
                        map.push_new(names[t as usize], d);
                    }
                }
                stack.extend(tree.children[n].iter().rev());
            }
            UNSET => {}
            d => map.push_new(tree.names[n], slot(d)),
        }
    }
    map
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

/// Available system memory in bytes (`MemAvailable` of `/proc/meminfo`), where known.
pub fn available_system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Total system memory in bytes (`MemTotal`), where known.
pub fn total_system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
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
