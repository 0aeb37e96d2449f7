//! The compact map: a module whose units all sit on one device becomes one entry.

use super::model::{Tree, Unit, NONE};
use crate::device::Device;
use crate::device::DeviceType;
use crate::map::DeviceMap;

/// Merges siblings on one device into their parent: a module whose units all sit on one
/// device is one entry (the root, `""`, when everything does). Units no device takes go to
/// `meta`, so the map of a plan that does not fit still covers every tensor.
pub(super) fn compact(
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
