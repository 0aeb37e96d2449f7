//! What changed from one map to another: keys added, removed, and moved to another device;
//! and whether the two maps place names the same way, which two maps with different keys can
//! (`{"": 0}` and `{"model": 0, "lm_head": 0}` place every name of a model the same way).

use super::find::find;
use super::text::{plural, quoted};
use crate::device::Device;
use crate::error::Result;
use crate::map::DeviceMap;
use crate::units::thousands;

/// A name (or key) placed differently by two maps: the old map's device and the new one's,
/// `None` where the map covers it not at all.
pub type Placed = (String, Option<Device>, Option<Device>);

/// What changed from one map to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Keys only in the new map, in its order.
    pub added: Vec<(String, Device)>,
    /// Keys only in the old map, in its order.
    pub removed: Vec<(String, Device)>,
    /// Keys in both whose device changed: (key, old, new), in the old map's order.
    pub moved: Vec<(String, Device, Device)>,
    /// How the two maps place names (see [`Placement`]).
    pub placement: Placement,
}

/// How two maps place names: compared on the names given, else on every key of both maps. A
/// name goes to the device of the longest key that covers it, and that key is one of the
/// map's keys, so two maps place every name the same way exactly when they place each key of
/// either map the same way (both to one device, or neither at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Whether the names given were compared (else the keys of both maps).
    pub by_names: bool,
    /// How many names (or distinct keys) were compared.
    pub compared: usize,
    /// Those placed differently, in the order compared (the old map's keys, then the new
    /// map's).
    pub different: Vec<Placed>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty()
    }

    /// Whether the two maps place every name compared the same way.
    pub fn equivalent(&self) -> bool {
        self.placement.different.is_empty()
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
    let keys = old.iter().map(|(key, _)| key);
    let added = result.added.iter().map(|(key, _)| key.as_str());
    result.placement = placement(old, new, keys.chain(added), false);
    result
}

/// [`diff`], with the placement compared on `names` (each checked as a tensor name).
pub fn diff_on_names<S: AsRef<str>>(old: &DeviceMap, new: &DeviceMap, names: &[S]) -> Result<Diff> {
    for name in names {
        super::find::check_name(name.as_ref())?;
    }
    let mut result = diff(old, new);
    result.placement = placement(old, new, names.iter().map(AsRef::as_ref), true);
    Ok(result)
}

fn placement<'a>(
    old: &DeviceMap,
    new: &DeviceMap,
    names: impl Iterator<Item = &'a str>,
    by_names: bool,
) -> Placement {
    let device = |map: &DeviceMap, name: &str| {
        find(map, name).and_then(|at| map.get_index(at).map(|(_, device)| device))
    };
    let mut result = Placement {
        by_names,
        ..Placement::default()
    };
    for name in names {
        result.compared += 1;
        let (before, after) = (device(old, name), device(new, name));
        if before != after {
            result.different.push((name.to_owned(), before, after));
        }
    }
    result
}

/// Lines of placement differences shown; the rest are counted.
const SHOWN: usize = 20;

fn shown(device: Option<Device>) -> String {
    device.map_or_else(|| "(not covered)".to_owned(), |d| d.to_string())
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.by_names {
            plural(self.compared, "name given", "names given")
        } else {
            "every name".to_owned()
        };
        if self.different.is_empty() {
            return write!(f, "equivalent: both maps place {what} the same way");
        }
        let moved = self
            .different
            .iter()
            .filter(|(_, a, b)| a.is_some() && b.is_some());
        if !self.by_names && moved.count() == 0 {
            // Only coverage differs: names under some keys are covered by one map alone.
            let (only_old, only_new): (Vec<&Placed>, Vec<&Placed>) =
                self.different.iter().partition(|(_, a, _)| a.is_some());
            f.write_str("every name both maps cover goes to the same device")?;
            for (side, keys) in [("the old", only_old), ("the new", only_new)] {
                if !keys.is_empty() {
                    let names: Vec<String> =
                        keys.iter().take(SHOWN).map(|(k, ..)| quoted(k)).collect();
                    let more = keys.len().saturating_sub(SHOWN);
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    write!(
                        f,
                        "; only {side} map covers names under {}{more}",
                        names.join(", ")
                    )?;
                }
            }
            return Ok(());
        }
        let of = if self.by_names { "names" } else { "keys" };
        write!(
            f,
            "placed differently: {} of {} {of}",
            thousands(self.different.len() as u64),
            thousands(self.compared as u64)
        )?;
        if self.by_names {
            for (name, before, after) in self.different.iter().take(SHOWN) {
                write!(
                    f,
                    "\n  {}: {} -> {}",
                    quoted(name),
                    shown(*before),
                    shown(*after)
                )?;
            }
            if self.different.len() > SHOWN {
                write!(f, "\n  ... and {} more", self.different.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() && !self.placement.by_names {
            return f.write_str("no differences");
        }
        if self.is_empty() {
            f.write_str("the keys are the same")?;
        } else {
            write!(
                f,
                "{} added, {} removed, {} moved",
                thousands(self.added.len() as u64),
                thousands(self.removed.len() as u64),
                thousands(self.moved.len() as u64)
            )?;
        }
        for (key, device) in &self.added {
            write!(f, "\n+ {}: {device}", quoted(key))?;
        }
        for (key, device) in &self.removed {
            write!(f, "\n- {}: {device}", quoted(key))?;
        }
        for (key, old, new) in &self.moved {
            write!(f, "\n~ {}: {old} -> {new}", quoted(key))?;
        }
        // The key lines say it all when the maps place keys differently: add the placement
        // only where it says more (equivalent maps, coverage only, or names given).
        let keys_moved = self
            .placement
            .different
            .iter()
            .any(|(_, a, b)| a.is_some() && b.is_some());
        if self.placement.by_names || !keys_moved {
            write!(f, "\n{}", self.placement)?;
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
        assert!(!d.equivalent());
    }

    #[test]
    fn maps_with_other_keys_can_place_every_name_the_same_way() {
        let whole = map(&[("", Device::gpu(0))]);
        let split = map(&[("model", Device::gpu(0)), ("lm_head", Device::gpu(0))]);
        let d = diff(&whole, &split);
        assert_eq!((d.added.len(), d.removed.len()), (2, 1));
        // `""` covers names the split map does not, so not every name is placed the same way.
        assert_eq!(
            d.placement.different,
            vec![("".to_owned(), Some(Device::gpu(0)), None)]
        );
        assert!(d.to_string().ends_with(
            "\nevery name both maps cover goes to the same device; only the old map covers names under ''"
        ));
        // On the model's names, they are equivalent.
        let names = ["model.layers.0.w", "model.norm.weight", "lm_head.weight"];
        let d = diff_on_names(&whole, &split, &names).unwrap();
        assert!(d.equivalent());
        assert!(d
            .to_string()
            .ends_with("\nequivalent: both maps place 3 names given the same way"));
        // Keys split further, each on the device of the key above: equivalent on every name.
        let finer = map(&[
            ("model", Device::gpu(0)),
            ("model.norm", Device::gpu(0)),
            ("lm_head", Device::gpu(0)),
        ]);
        let d = diff(&split, &finer);
        assert!(d.equivalent());
        assert_eq!(
            d.to_string(),
            "1 added, 0 removed, 0 moved\n+ 'model.norm': cuda:0\nequivalent: both maps place every name the same way"
        );
        // A name placed elsewhere is listed with both devices.
        let other = map(&[
            ("model", Device::gpu(0)),
            ("model.norm", Device::cpu()),
            ("lm_head", Device::gpu(0)),
        ]);
        let d = diff_on_names(&split, &other, &names).unwrap();
        assert_eq!(
            d.placement.different,
            vec![(
                "model.norm.weight".to_owned(),
                Some(Device::gpu(0)),
                Some(Device::cpu())
            )]
        );
        assert!(d
            .to_string()
            .ends_with("placed differently: 1 of 3 names\n  'model.norm.weight': cuda:0 -> cpu"));
        assert!(diff_on_names(&split, &other, &["bad."]).is_err());
    }
}
