//! Placement: which device each unit goes to, by strategy, and the reserve for offloaded blocks.

use super::budget::is_accelerator;
use crate::device::Device;
use crate::error::{Error, Result};

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
pub(super) fn assign(
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
