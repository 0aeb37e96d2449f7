//! What changed from one map to another: keys added, removed, and moved to another device.

use super::text::quoted;
use crate::device::Device;
use crate::map::DeviceMap;
use crate::units::thousands;

/// What changed from one map to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Keys only in the new map, in its order.
    pub added: Vec<(String, Device)>,
    /// Keys only in the old map, in its order.
    pub removed: Vec<(String, Device)>,
    /// Keys in both whose device changed: (key, old, new), in the old map's order.
    pub moved: Vec<(String, Device, Device)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty()
    }
}

pub fn diff(old: &DeviceMap, new: &DeviceMap) -> Diff {
    let mut result = Diff::default();
    for (key, device) in old.iter() {
        match new.get(key) {
            None => result.removed.push((key.to_owned(), device)),
            Some(now) if now != device => result.moved.push((key.to_owned(), device, now)),
            Some(_) => {}
        }
    }
    for (key, device) in new.iter() {
        if !old.contains_key(key) {
            result.added.push((key.to_owned(), device));
        }
    }
    result
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("no differences");
        }
        write!(
            f,
            "{} added, {} removed, {} moved",
            thousands(self.added.len() as u64),
            thousands(self.removed.len() as u64),
            thousands(self.moved.len() as u64)
        )?;
        for (key, device) in &self.added {
            write!(f, "\n+ {}: {device}", quoted(key))?;
        }
        for (key, device) in &self.removed {
            write!(f, "\n- {}: {device}", quoted(key))?;
        }
        for (key, old, new) in &self.moved {
            write!(f, "\n~ {}: {old} -> {new}", quoted(key))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::testing::map;

    #[test]
    fn diff_lists_added_removed_and_moved() {
        let old = map(&[
            ("a", Device::cpu()),
            ("b", Device::gpu(0)),
            ("c", Device::gpu(1)),
        ]);
        let new = map(&[
            ("c", Device::gpu(2)),
            ("b", Device::gpu(0)),
            ("d", Device::disk()),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.removed, vec![("a".to_owned(), Device::cpu())]);
        assert_eq!(d.added, vec![("d".to_owned(), Device::disk())]);
        assert_eq!(
            d.moved,
            vec![("c".to_owned(), Device::gpu(1), Device::gpu(2))]
        );
        assert!(diff(&old, &old.clone()).is_empty());
        assert_eq!(
            d.to_string(),
            "1 added, 1 removed, 1 moved\n+ 'd': disk\n- 'a': cpu\n~ 'c': cuda:1 -> cuda:2"
        );
    }
}
