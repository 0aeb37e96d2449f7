//! Placement: which device each unit goes to. The strategies share one shape: units in order
//! go to contiguous ranges of accelerators, then the CPU, then disk; they differ in where the
//! cuts between accelerators fall. Around them, the reserve that the device running offloaded
//! blocks keeps for them.

use super::budget::{is_accelerator, Budgets};
use super::cost::Cost;
use super::error::PlanError;
use crate::device::{Device, DeviceType};

/// How units are spread over the accelerators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Sequential,
    Balanced,
    BalancedLow0,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["sequential", "balanced", "balanced_low_0"];

    /// A strategy by name (`"auto"` is accelerate's name for `"balanced"`).
    pub fn parse(text: &str) -> Result<Strategy, PlanError> {
        match text {
            "sequential" => Ok(Strategy::Sequential),
            "balanced" | "auto" => Ok(Strategy::Balanced),
            "balanced_low_0" => Ok(Strategy::BalancedLow0),
            _ => Err(PlanError::UnknownStrategy {
                text: text.to_owned(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
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

/// Greedy fill over every device: units keep their `fast` size on the devices before
/// `offload_from` and their `slow` size (weights only) on the CPU and disk after it. Order is
/// kept, so the units past the fast devices are a suffix, filled into the slow ones.
fn fill_split(fast: &[u64], slow: &[u64], caps: &[u64], offload_from: usize) -> Vec<usize> {
    let split = offload_from.min(caps.len());
    let mut out = fill(fast, &caps[..split]);
    let first = out.iter().position(|&d| d >= split).unwrap_or(out.len());
    out.truncate(first);
    out.extend(
        fill(&slow[first..], &caps[split..])
            .into_iter()
            .map(|d| d + split),
    );
    out
}

/// What placement needs besides the costs: the headroom for activations on each device that
/// runs layers, and the device that runs offloaded ones.
#[derive(Clone, Copy)]
struct Frame {
    activation: u64,
    runner: usize,
    offload_from: usize,
    /// The leading units offloaded whatever the accelerators' room (see [`place`]): they take
    /// the slow devices first, and the other units follow them there.
    head: usize,
}

/// Device index per unit; `devices.len()` for units that did not fit. `reserve` is taken off
/// the budget of device `runner`, and accelerators before it take nothing (the runner must be
/// the first accelerator holding a block). Devices that run layers (those before
/// `offload_from`) keep `activation` free. The `head` units go to the slow devices first.
fn assign(
    sizes: (&[u64], &[u64]),
    budgets: &[(Device, u64)],
    strategy: Strategy,
    reserve: u64,
    frame: Frame,
) -> Vec<usize> {
    let Frame {
        activation,
        offload_from,
        head,
        ..
    } = frame;
    let mut caps = caps(budgets, reserve, frame);
    let head = head.min(sizes.0.len());
    let mut out = offload_head(&sizes.1[..head], &mut caps, offload_from);
    let (fast, slow) = (&sizes.0[head..], &sizes.1[head..]);
    let accelerators = budgets.iter().filter(|(d, _)| is_accelerator(*d)).count();
    if strategy == Strategy::Sequential || accelerators == 0 {
        out.extend(fill_split(fast, slow, &caps, offload_from));
        return out;
    }
    let on_accelerators = prefix_that_fits(fast, &caps[..accelerators]);
    let plain: Vec<u64> = budgets[..accelerators]
        .iter()
        .map(|&(_, b)| b.saturating_sub(activation))
        .collect();
    let front = &fast[..on_accelerators];
    out.extend(match strategy {
        Strategy::BalancedLow0 => balance_low_0(front, &plain, &caps[..accelerators]),
        _ => balance(front, &plain, &caps[..accelerators]),
    });
    out.extend(
        fill(&slow[on_accelerators..], &caps[accelerators..])
            .into_iter()
            .map(|d| d + accelerators),
    );
    out
}

/// Each device's room for units: its budget, less `activation` where it runs layers and the
/// reserve on the runner; nothing on the accelerators before the runner.
fn caps(budgets: &[(Device, u64)], reserve: u64, frame: Frame) -> Vec<u64> {
    let Frame {
        activation,
        runner,
        offload_from,
        ..
    } = frame;
    budgets
        .iter()
        .enumerate()
        .map(|(i, &(device, b))| {
            let b = if i < offload_from {
                b.saturating_sub(activation)
            } else {
                b
            };
            if i == runner {
                b.saturating_sub(reserve)
            } else if i < runner && is_accelerator(device) {
                0
            } else {
                b
            }
        })
        .collect()
}

/// Fills the offloaded `head` units into the slow devices (from `offload_from`), and takes
/// what they use off `caps`, so the units after them that spill come after them there.
fn offload_head(head: &[u64], caps: &mut [u64], offload_from: usize) -> Vec<usize> {
    if head.is_empty() {
        return Vec::new();
    }
    let out: Vec<usize> = fill(head, &caps[offload_from..])
        .into_iter()
        .map(|d| d + offload_from)
        .collect();
    let last = out[out.len() - 1];
    let used: u64 = out
        .iter()
        .zip(head)
        .filter(|(&d, _)| d == last)
        .map(|(_, &s)| s)
        .sum();
    for (i, cap) in caps.iter_mut().enumerate().skip(offload_from) {
        if i < last {
            *cap = 0;
        } else if i == last {
            *cap = cap.saturating_sub(used);
        }
    }
    out
}

/// Where the units went, and what the device running offloaded blocks keeps for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    /// Device index (into the budgets) of each unit; the number of devices for a unit that
    /// no device takes.
    pub(super) assigned: Vec<usize>,
    /// The device that runs offloaded blocks: the lowest accelerator holding a block
    /// (accelerate's `dispatch_model` runs them on the first of the map's set of GPUs, the
    /// lowest id; see [`gpu_0_holds_what_fits`]), else the CPU.
    pub(super) runner: usize,
    /// Kept free on `runner` for the weights of the largest offloaded unit (0 when nothing is
    /// offloaded).
    pub(super) reserve: u64,
    /// The KV cache of the offloaded units, which `runner` holds (they run there).
    pub(super) offloaded_cache: u64,
    /// Units on devices from this index on are offloaded: the CPU and disk when there are
    /// accelerators, else the disk.
    pub(super) offload_from: usize,
    /// Kept free on every device before `offload_from` (the ones that run layers).
    pub(super) activation: u64,
}

impl Placement {
    /// Whether every unit was placed.
    pub(super) fn placed_all(&self, devices: usize) -> bool {
        self.assigned.iter().all(|&d| d < devices)
    }

    /// Bytes (weights) of the units on no accelerator (the first `accelerators` devices).
    fn off(&self, costs: &[Cost], accelerators: usize) -> u64 {
        self.bytes(costs, |d| d >= accelerators, Cost::on_offload)
    }

    /// Bytes (weights and cache) of the units none of the `devices` took.
    fn left_over(&self, costs: &[Cost], devices: usize) -> u64 {
        self.bytes(costs, |d| d >= devices, Cost::total)
    }

    /// The sum of `part` of the units on the devices `on` picks.
    fn bytes(&self, costs: &[Cost], on: impl Fn(usize) -> bool, part: fn(Cost) -> u64) -> u64 {
        self.assigned
            .iter()
            .zip(costs)
            .filter(|(&d, _)| on(d))
            .map(|(_, &c)| part(c))
            .fold(0, u64::saturating_add)
    }
}

/// Places units of these costs, in order, onto `budgets`, keeping `activation` free on each
/// device that runs layers. When anything is offloaded, the runner keeps room for the weights
/// of the largest offloaded unit (copied there to run) and for the cache of every offloaded
/// unit (its layers run there).
pub(super) fn place(
    costs: &[Cost],
    budgets: &Budgets,
    strategy: Strategy,
    activation: u64,
) -> Placement {
    let mut placed = place_with(costs, budgets, strategy, activation, 0);
    // `balanced_low_0` keeps GPU 0 as empty as the others allow, but not at the cost of more
    // off the GPUs: when its placement offloads or leaves something over (GPU 0 held back
    // while the runner's reserve and the offloaded layers' cache crowd the others),
    // `balanced`'s placement, which GPU 0 may share, is taken if it leaves less over, or as
    // much and less off the GPUs.
    let devices = budgets.devices.len();
    let score = |p: &Placement| {
        let off = p.off(costs, budgets.accelerators());
        (p.left_over(costs, devices), off)
    };
    if strategy == Strategy::BalancedLow0 && score(&placed) > (0, 0) {
        let balanced = place_with(costs, budgets, Strategy::Balanced, activation, 0);
        if score(&balanced) < score(&placed) {
            placed = balanced;
        }
    }
    let ask = Ask {
        costs,
        budgets,
        strategy,
        activation,
    };
    run_on_the_cpu(ask, with_head_offloaded(ask, placed))
}

/// What is being placed: the arguments of [`place`].
#[derive(Clone, Copy)]
struct Ask<'a> {
    costs: &'a [Cost],
    budgets: &'a Budgets,
    strategy: Strategy,
    activation: u64,
}

/// A placement with nothing on the accelerators runs on the CPU: `dispatch_model`'s main
/// device is then `"cpu"`, which runs the CPU's blocks in place and copies disk blocks in. So
/// it is placed again without the accelerators, the CPU running the offloaded (disk) blocks
/// and keeping their room, and no accelerator keeping a reserve for blocks it does not run.
fn run_on_the_cpu(ask: Ask<'_>, found: Placement) -> Placement {
    let Ask {
        costs,
        budgets,
        strategy,
        activation,
    } = ask;
    let accelerators = budgets.accelerators();
    let devices = budgets.devices.len();
    let on_accelerators = found.assigned.iter().any(|&d| d < accelerators);
    if accelerators == 0
        || accelerators == devices
        || (on_accelerators && found.placed_all(devices))
    {
        return found;
    }
    let rest = Budgets {
        devices: budgets.devices[accelerators..].to_vec(),
    };
    let placed = place_with(costs, &rest, strategy, activation, 0);
    let on_the_cpu = Placement {
        assigned: placed.assigned.iter().map(|&d| d + accelerators).collect(),
        runner: placed.runner + accelerators,
        offload_from: placed.offload_from + accelerators,
        ..placed
    };
    // With blocks on the accelerators that leave something over, the CPU alone may leave less
    // (the accelerators' reserve and the offloaded layers' cache no longer apply): so
    // whether a plan fits never depends on the accelerators being there.
    if !on_accelerators || on_the_cpu.left_over(costs, devices) < found.left_over(costs, devices) {
        on_the_cpu
    } else {
        found
    }
}

/// At most this many leading units are offloaded by the tight-budget rule.
const MOST_HEAD: usize = 8;

/// The tight-budget rule. The runner (the lowest GPU holding a block, where `dispatch_model`
/// runs offloaded blocks) must keep room for the largest offloaded block. When the first
/// block plus that room is more than a GPU's budget, contiguous placement skips that GPU, and
/// when that is so on every GPU, nothing goes on the GPUs at all; accelerate's
/// `infer_auto_device_map` instead puts the first block on the next GPU at its full budget,
/// which then runs offloaded blocks without the room to copy them in. Here the first blocks
/// may go to the CPU instead (they run on the runner like any offloaded block), and the
/// blocks after them fill the GPUs from GPU 0, which keeps room for the largest offloaded
/// block, the first ones included. Tried when GPU 0 holds nothing while something is
/// offloaded, or when something is left over, with 1 to [`MOST_HEAD`] leading blocks
/// offloaded; one is kept when it leaves fewer bytes unplaced, or as many and fewer off the
/// GPUs. The map then starts with CPU entries, and GPU 0 is both its first and its lowest
/// GPU, so `dispatch_model` (which takes the first GPU of the map's set of devices) runs
/// offloaded blocks there.
fn with_head_offloaded(ask: Ask<'_>, found: Placement) -> Placement {
    let (costs, budgets) = (ask.costs, ask.budgets);
    let devices = budgets.devices.len();
    let accelerators = budgets.accelerators();
    let score = |p: &Placement| (p.left_over(costs, devices), p.off(costs, accelerators));
    let gpu_0_idle = found.reserve > 0 && !found.assigned.contains(&0);
    if accelerators == 0 || (!gpu_0_idle && found.placed_all(devices)) {
        return found;
    }
    let mut best = found;
    for head in 1..=MOST_HEAD.min(costs.len()) {
        let tried = place_with(costs, budgets, ask.strategy, ask.activation, head);
        if score(&tried) < score(&best) {
            best = tried;
        }
    }
    // Still nothing on GPU 0 while something is offloaded, or something left over: GPU 0 may
    // run the offloaded blocks holding only blocks that fit beside their room, out of order
    // (see `gpu_0_holds_what_fits`).
    if !best.placed_all(devices) || (best.reserve > 0 && !best.assigned.contains(&0)) {
        for head in 0..=MOST_HEAD.min(costs.len()) {
            if let Some(tried) = gpu_0_holds_what_fits(ask, head) {
                if score(&tried) < score(&best) {
                    best = tried;
                }
            }
        }
    }
    best
}

/// The tight-budget rule's last case: no GPU holds the block after the offloaded ones beside
/// the room to run the largest offloaded block (Gemma-2-27B on 4 x 3.17 GiB: a 1.05 GiB layer
/// beside its 2.2 GiB embedding, tied to `lm_head`), so every GPU that would be the main device
/// stays empty. Here GPU 0 keeps that room and runs the offloaded blocks; the blocks go in
/// order to GPU 0 (what fits beside the room), GPUs 1.. (no room kept: they run only their
/// own blocks), then the CPU and disk; and then offloaded blocks that fit beside the room move
/// to GPU 0, largest first (a small block from later in the model, such as the final norm).
/// The map keys are module prefixes, so a block out of order on GPU 0 loads as any other.
///
/// `dispatch_model` (accelerate 1.15) takes the main device as
/// `list(set(device_map.values()) - {"cpu", "disk"})[0]`: for small int GPU ids the set
/// iterates in ascending order (CPython hashes an int to itself), so that is the lowest GPU in
/// the map, GPU 0 here, wherever its entries sit in the map's order (checked for every
/// contiguous set of GPUs 0..k with k up to 31, so 8 and 16 GPUs included). `None` when GPU 0
/// would hold nothing (the main device would then be another GPU) or lacks the room.
fn gpu_0_holds_what_fits(ask: Ask<'_>, head: usize) -> Option<Placement> {
    let (costs, budgets, activation) = (ask.costs, ask.budgets, ask.activation);
    let (accelerators, devices) = (budgets.accelerators(), budgets.devices.len());
    if accelerators < 2 {
        return None;
    }
    let fast: Vec<u64> = costs.iter().map(|c| c.total()).collect();
    let slow: Vec<u64> = costs.iter().map(|c| c.on_offload()).collect();
    let offloaded = |d: usize| d >= accelerators && d < devices;
    // The largest offloaded unit's weights and every offloaded unit's cache.
    let needs = |assigned: &[usize]| {
        let (mut largest, mut cache) = (0u64, 0u64);
        for (&d, cost) in assigned.iter().zip(costs) {
            if offloaded(d) {
                largest = largest.max(cost.on_offload());
                cache = cache.saturating_add(cost.cache);
            }
        }
        (largest, cache)
    };
    let frame = Frame {
        activation,
        runner: 0,
        offload_from: accelerators,
        head,
    };
    let sizes = (fast.as_slice(), slow.as_slice());
    // As in `place_with`: the reserve only grows, so this ends.
    let mut reserve = 0u64;
    let mut assigned = assign(sizes, &budgets.devices, ask.strategy, reserve, frame);
    loop {
        let (weights, cache) = needs(&assigned);
        let larger = weights.saturating_add(cache);
        if larger <= reserve {
            break;
        }
        reserve = larger;
        assigned = assign(sizes, &budgets.devices, ask.strategy, reserve, frame);
    }
    let room = budgets.devices[0].1.saturating_sub(activation);
    let on_gpu_0 = |assigned: &[usize]| -> u64 {
        assigned
            .iter()
            .zip(&fast)
            .filter(|(&d, _)| d == 0)
            .map(|(_, &s)| s)
            .fold(0, u64::saturating_add)
    };
    let mut used = on_gpu_0(&assigned);
    let (weights, cache) = needs(&assigned);
    let mut kept = weights.saturating_add(cache);
    let mut order: Vec<usize> = (0..costs.len())
        .filter(|&u| offloaded(assigned[u]))
        .collect();
    order.sort_by_key(|&u| std::cmp::Reverse(fast[u]));
    for u in order {
        // Moving a unit never raises what the room must hold, so `kept` stays enough.
        if used.saturating_add(fast[u]).saturating_add(kept) <= room {
            assigned[u] = 0;
            used += fast[u];
            let (weights, cache) = needs(&assigned);
            kept = weights.saturating_add(cache);
        }
    }
    let (weights, cache) = needs(&assigned);
    let anything_offloaded = assigned.iter().any(|&d| offloaded(d));
    if !assigned.contains(&0)
        || on_gpu_0(&assigned)
            .saturating_add(weights)
            .saturating_add(cache)
            > room
    {
        return None;
    }
    Some(Placement {
        assigned,
        runner: 0,
        reserve: if anything_offloaded { weights } else { 0 },
        offloaded_cache: cache,
        offload_from: accelerators,
        activation,
    })
}

fn place_with(
    costs: &[Cost],
    budgets: &Budgets,
    strategy: Strategy,
    activation: u64,
    head: usize,
) -> Placement {
    let fast: Vec<u64> = costs.iter().map(|c| c.total()).collect();
    let slow: Vec<u64> = costs.iter().map(|c| c.on_offload()).collect();
    let devices = &budgets.devices;
    let accelerators = budgets.accelerators();
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
    // What the runner must keep for the offloaded units: the largest one's weights, and the
    // cache of all of them. `None` when nothing is offloaded.
    let needs = |assigned: &[usize]| {
        let mut largest: Option<u64> = None;
        let mut cache = 0u64;
        for (&d, cost) in assigned.iter().zip(costs) {
            if d >= offload_from && d < devices.len() {
                largest = Some(largest.unwrap_or(0).max(cost.on_offload()));
                cache = cache.saturating_add(cost.cache);
            }
        }
        largest.map(|l| (l, cache))
    };
    let total = |(weights, cache): (u64, u64)| weights.saturating_add(cache);
    let sizes = (fast.as_slice(), slow.as_slice());
    // The placement with device `runner` running the offloaded units.
    let settle = |runner: usize| {
        let frame = Frame {
            activation,
            runner,
            offload_from,
            head,
        };
        // The reserve changes what spills: repeat until it covers what the spilled units need.
        // This ends without a cap on the rounds: a larger reserve only moves more units off
        // the accelerators (never back), so what they need only grows; each round raises the
        // reserve strictly, and there are at most as many rounds as units.
        let mut reserve = 0u64;
        let mut assigned = assign(sizes, devices, strategy, reserve, frame);
        while let Some(larger) = needs(&assigned).map(total).filter(|&s| s > reserve) {
            reserve = larger;
            assigned = assign(sizes, devices, strategy, reserve, frame);
        }
        // The runner holds the cache of every offloaded layer: when its budget cannot, the
        // last offloaded units are left over (their layers would have nowhere to run).
        let room = devices.get(runner).map_or(0, |&(_, b)| {
            if runner < offload_from {
                b.saturating_sub(activation)
            } else {
                b
            }
        });
        let on_runner: u64 = assigned
            .iter()
            .zip(&fast)
            .filter(|(&d, _)| d == runner)
            .map(|(_, &s)| s)
            .fold(0, u64::saturating_add);
        while let Some((weights, cache)) = needs(&assigned) {
            if cache == 0 || on_runner.saturating_add(weights).saturating_add(cache) <= room {
                break;
            }
            let last = assigned
                .iter()
                .rposition(|&d| d >= offload_from && d < devices.len());
            match last {
                Some(u) => assigned[u] = devices.len(),
                None => break,
            }
        }
        assigned
    };
    let mut assigned;
    loop {
        assigned = settle(runner);
        if needs(&assigned).is_none() {
            break;
        }
        // With its reserve taken off, the runner may hold nothing (its budget left too little
        // for the first block): then the first GPU that does hold a block runs the offloaded
        // ones, and the reserve moves there, the GPUs before it staying empty. The runner only
        // moves forward, so this too ends, after at most one round per accelerator.
        match assigned.iter().copied().find(|&d| d < accelerators) {
            Some(first) if first > runner => runner = first,
            _ => break,
        }
    }
    let runs_offloaded = |tried: &[usize], candidate: usize| {
        needs(tried).is_none()
            || tried.iter().copied().find(|&d| d < accelerators) == Some(candidate)
    };
    (assigned, runner) = fewest_left_over(
        (assigned, runner),
        accelerators,
        &fast,
        devices.len(),
        settle,
        runs_offloaded,
    );
    let (reserve, offloaded_cache) = needs(&assigned).unwrap_or((0, 0));
    Placement {
        assigned,
        runner,
        reserve,
        offloaded_cache,
        offload_from,
        activation,
    }
}

/// Moving the runner forward can skip the runner that places most (a reserve that empties GPU 0
/// at one size may not at another, so whether a plan fits would not grow monotonically with
/// the cache). When `found` leaves something over, every accelerator is tried as the runner
/// (`settle`), and a placement that leaves fewer bytes over wins, provided its runner is the
/// first accelerator holding a block (`runs_offloaded`: where `dispatch_model` runs offloaded
/// blocks).
fn fewest_left_over(
    found: (Vec<usize>, usize),
    accelerators: usize,
    fast: &[u64],
    devices: usize,
    settle: impl Fn(usize) -> Vec<usize>,
    runs_offloaded: impl Fn(&[usize], usize) -> bool,
) -> (Vec<usize>, usize) {
    let left_over = |assigned: &[usize]| -> u64 {
        assigned
            .iter()
            .zip(fast)
            .filter(|(&d, _)| d >= devices)
            .map(|(_, &s)| s)
            .fold(0, u64::saturating_add)
    };
    let (mut assigned, mut runner) = found;
    let mut worst = left_over(&assigned);
    for candidate in 0..accelerators {
        if worst == 0 {
            break;
        }
        if candidate == runner {
            continue; // the best placement so far is this runner's
        }
        let tried = settle(candidate);
        let over = left_over(&tried);
        if over < worst && runs_offloaded(&tried, candidate) {
            (assigned, runner, worst) = (tried, candidate, over);
        }
    }
    (assigned, runner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the cases below are the same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    #[test]
    fn the_reserve_always_covers_the_largest_offloaded_unit() {
        let mut rng = Lcg(7);
        for case in 0..2000 {
            let units = 1 + rng.next(40) as usize;
            let costs: Vec<Cost> = (0..units)
                .map(|_| Cost::of_weights(1 + rng.next(1000)))
                .collect();
            let gpus = rng.next(4);
            let mut devices: Vec<(Device, u64)> = (0..gpus)
                .map(|i| (Device::gpu(i), rng.next(5000)))
                .collect();
            devices.push((Device::cpu(), rng.next(8000)));
            if rng.next(2) == 0 {
                devices.push((Device::disk(), rng.next(20000)));
            }
            let budgets = Budgets::new(devices).unwrap();
            for strategy in [
                Strategy::Sequential,
                Strategy::Balanced,
                Strategy::BalancedLow0,
            ] {
                let placed = place(&costs, &budgets, strategy, 0);
                let offloaded = placed
                    .assigned
                    .iter()
                    .zip(&costs)
                    .filter(|(&d, _)| d >= placed.offload_from && d < budgets.devices.len())
                    .map(|(_, c)| c.total())
                    .max();
                match offloaded {
                    Some(largest) => assert!(
                        placed.reserve >= largest,
                        "case {case} {strategy:?}: {placed:?}"
                    ),
                    None => assert_eq!(placed.reserve, 0, "case {case}"),
                }
                // Nothing sits on the runner's accelerators before it, and the runner's
                // budget holds its units and the reserve, when they fit at all.
                let on_runner: u64 = placed
                    .assigned
                    .iter()
                    .zip(&costs)
                    .filter(|(&d, _)| d == placed.runner)
                    .map(|(_, c)| c.total())
                    .sum();
                if on_runner > 0 {
                    let budget = budgets.devices[placed.runner].1;
                    assert!(on_runner + placed.reserve <= budget, "case {case}");
                }
                // The runner is where `dispatch_model` runs offloaded blocks: the lowest
                // accelerator holding a unit (the first of the map's set of GPUs); the CPU
                // when no accelerator holds any.
                let gpus = gpus as usize;
                let lowest = placed.assigned.iter().copied().filter(|&d| d < gpus).min();
                match lowest {
                    Some(lowest) if placed.reserve > 0 => assert_eq!(placed.runner, lowest),
                    Some(_) => {}
                    None => assert!(placed.runner >= gpus, "case {case}: {placed:?}"),
                }
            }
        }
    }

    const GIB: u64 = 1 << 30;

    /// An embedding of `first`, `layers` layers of `layer` and a head of `first`.
    fn model(first: u64, layers: usize, layer: u64) -> Vec<Cost> {
        let mut costs = vec![Cost::of_weights(first)];
        costs.extend((0..layers).map(|_| Cost::of_weights(layer)));
        costs.push(Cost::of_weights(first));
        costs
    }

    fn gpus_and_cpu(gpus: u64, each: u64, cpu: u64) -> Budgets {
        let mut devices: Vec<(Device, u64)> = (0..gpus).map(|i| (Device::gpu(i), each)).collect();
        devices.push((Device::cpu(), cpu));
        Budgets::new(devices).unwrap()
    }

    #[test]
    fn a_first_block_too_large_with_the_room_is_offloaded_and_gpu_0_runs_the_rest() {
        // Llama-3-70B's shape: embedding and head 2 GiB, layers 1.6 GiB, GPUs of 3.7 GiB. The
        // embedding plus the room for the head (2 + 2 GiB) fits no GPU: contiguous placement
        // put nothing on the GPUs. The embedding goes to the CPU; GPU 0 keeps 2 GiB for it and
        // the head and holds one layer, the others two each.
        let costs = model(2 * GIB, 80, 16 * GIB / 10);
        let budgets = gpus_and_cpu(4, 37 * GIB / 10, 200 * GIB);
        for strategy in [
            Strategy::Sequential,
            Strategy::Balanced,
            Strategy::BalancedLow0,
        ] {
            let placed = place(&costs, &budgets, strategy, 0);
            assert_eq!(placed.assigned[0], 4, "{strategy:?}: {placed:?}");
            assert_eq!(placed.runner, 0);
            assert_eq!(placed.reserve, 2 * GIB);
            let on = |d: usize| placed.assigned.iter().filter(|&&a| a == d).count();
            assert_eq!([on(0), on(1), on(2), on(3)], [1, 2, 2, 2], "{strategy:?}");
            assert!(placed.placed_all(budgets.devices.len()));
        }
        // One more GPU byte for the embedding and the room: the embedding stays first on GPU 0.
        let roomy = gpus_and_cpu(4, 4 * GIB, 200 * GIB);
        let placed = place(&costs, &roomy, Strategy::Sequential, 0);
        assert_eq!(placed.assigned[0], 0);
    }

    #[test]
    fn gpu_0_runs_offloaded_blocks_holding_only_what_fits_beside_their_room() {
        // Gemma-2-27B's shape on 4 x 3.17 GiB: an embedding of 2.2 GiB (tied to the head, one
        // unit), layers of 1.05 GiB, a small final norm. A layer beside the room to run the
        // embedding (1.05 + 2.2 GiB) fits no GPU, so no GPU could be the main device holding
        // blocks in order, and the plan ran on the CPU (the stock map keeps 8.5 GiB on the
        // GPUs, its main device short of the room). Now GPU 0 keeps the room and runs the
        // offloaded blocks, holding out of order what fits beside it: here the embedding
        // stays on GPU 1, so the room is a layer's, and GPU 0 holds two layers and the norm.
        let mib = 1 << 20;
        let mut costs = vec![Cost::of_weights(2250 * mib)];
        costs.extend((0..46).map(|_| Cost::of_weights(1075 * mib)));
        costs.push(Cost::of_weights(mib / 64));
        let budgets = gpus_and_cpu(4, 3246 * mib, 200 * GIB);
        for strategy in [
            Strategy::Sequential,
            Strategy::Balanced,
            Strategy::BalancedLow0,
        ] {
            let placed = place(&costs, &budgets, strategy, 0);
            let case = format!("{strategy:?}: {placed:?}");
            assert_eq!(placed.runner, 0, "{case}");
            assert!(placed.placed_all(budgets.devices.len()));
            assert_eq!(placed.assigned[47], 0, "the norm runs on GPU 0: {case}");
            let on = |d: usize| -> u64 {
                placed
                    .assigned
                    .iter()
                    .zip(&costs)
                    .filter(|(&a, _)| a == d)
                    .map(|(_, c)| c.total())
                    .sum()
            };
            assert!(on(0) + placed.reserve <= 3246 * mib, "{case}");
            let largest = (0..costs.len())
                .filter(|&u| placed.assigned[u] == 4)
                .map(|u| costs[u].total())
                .max();
            assert_eq!(Some(placed.reserve), largest, "{case}");
            // More on the GPUs than the stock map's 8.5 GiB.
            assert!(on(0) + on(1) + on(2) + on(3) >= 10 * GIB, "{case}");
        }
    }

    #[test]
    fn balanced_low_0_never_keeps_more_off_the_gpus_than_balanced() {
        // Mixtral-8x7B's shape on 2 x 4.35 GiB: holding GPU 0 back makes GPU 1 the runner,
        // whose reserve leaves it room for the embedding only; sharing GPU 0 keeps a layer on
        // the GPUs as well.
        let mib = 1 << 20;
        let costs = model(250 * mib, 32, 2765 * mib);
        let budgets = gpus_and_cpu(2, 4454 * mib, 200 * GIB);
        let off = |p: &Placement| p.off(&costs, 2);
        let low_0 = place(&costs, &budgets, Strategy::BalancedLow0, 0);
        let balanced = place(&costs, &budgets, Strategy::Balanced, 0);
        assert_eq!(off(&low_0), off(&balanced));
        assert!(
            low_0.assigned.iter().filter(|&&d| d < 2).count() >= 2,
            "{low_0:?}"
        );
    }

    #[test]
    fn nothing_on_the_gpus_runs_on_the_cpu() {
        // Layers of 2 GiB, an embedding of 1, GPUs of 2.5 GiB: a GPU holding a block cannot keep
        // 2 GiB for the offloaded ones. Then `dispatch_model` runs on the CPU, which keeps the room for the
        // largest disk block, and no GPU keeps a reserve.
        let costs = model(GIB, 10, 2 * GIB);
        let mut devices: Vec<(Device, u64)> =
            (0..2).map(|i| (Device::gpu(i), 5 * GIB / 2)).collect();
        devices.push((Device::cpu(), 10 * GIB));
        devices.push((Device::disk(), 100 * GIB));
        let budgets = Budgets::new(devices).unwrap();
        let placed = place(&costs, &budgets, Strategy::Sequential, 0);
        assert!(placed.assigned.iter().all(|&d| d >= 2), "{placed:?}");
        assert_eq!(placed.runner, 2);
        assert_eq!(placed.offload_from, 3);
        assert_eq!(placed.reserve, 2 * GIB);
        let on_cpu: u64 = placed
            .assigned
            .iter()
            .zip(&costs)
            .filter(|(&d, _)| d == 2)
            .map(|(_, c)| c.total())
            .sum();
        assert!(on_cpu + placed.reserve <= 10 * GIB);
    }

    #[test]
    fn strategies_by_name() {
        for name in Strategy::NAMES {
            assert_eq!(Strategy::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(Strategy::parse("auto").unwrap(), Strategy::Balanced);
        assert_eq!(
            Strategy::parse("greedy").unwrap_err().to_string(),
            "Unknown strategy 'greedy'; expected one of 'sequential', 'balanced', 'balanced_low_0'"
        );
    }
}
