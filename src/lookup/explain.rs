//! Why a name goes where it goes: the key that decides, the shorter keys it shadows, and the
//! keys that nearly cover it.

use super::find::{check_name, for_each_covering};
use super::text::quoted;
use crate::device::Device;
use crate::error::Result;
use crate::map::DeviceMap;
use crate::units::thousands;

/// Why a key that does not cover a name is worth showing next to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The key is a text prefix of the name, but the name goes on with something other than
    /// `.` (`model.layers.1` against `model.layers.10.x`, `lm_head` against `lm_head_extra`).
    NoDotBoundary,
    /// The key has the name's first components but one, which differs.
    ComponentDiffers {
        index: usize,
        key_part: String,
        name_part: String,
    },
    /// The key lies inside the name (`a.b.c` against `a.b`): it covers part of that module only.
    Inside,
}

impl Miss {
    /// A short code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Miss::NoDotBoundary => "no-dot-boundary",
            Miss::ComponentDiffers { .. } => "component-differs",
            Miss::Inside => "inside-name",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Miss::NoDotBoundary => {
                "a text prefix of the name, but not at a '.' boundary".to_owned()
            }
            Miss::ComponentDiffers {
                index,
                key_part,
                name_part,
            } => format!(
                "component {} differs: '{key_part}' in the key, '{name_part}' in the name",
                index + 1
            ),
            Miss::Inside => "lies inside the name, so it covers only part of it".to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearMiss {
    pub key: String,
    pub device: Device,
    pub miss: Miss,
}

/// Why `name` goes where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    /// The key that decides, with its device.
    pub matched: Option<(String, Device)>,
    /// Shorter keys that also cover the name and lose to `matched`, longest first.
    pub shadowed: Vec<(String, Device)>,
    /// Keys that do not cover the name but nearly do, in map order (at most `NEAR_MISSES`).
    pub near_misses: Vec<NearMiss>,
    /// Near misses found beyond the first `NEAR_MISSES`, counted, not listed.
    pub more_near_misses: usize,
}

/// How many near misses an explanation lists.
pub const NEAR_MISSES: usize = 20;

/// Which key decides `name`'s device, which shorter keys it shadows, and the keys that nearly
/// cover it. Scans every key for near misses: a diagnostic, not a hot path.
pub fn explain(map: &DeviceMap, name: &str) -> Result<Explanation> {
    check_name(name)?;
    let mut covering = Vec::new();
    for_each_covering(map, name, |position| {
        if let Some((key, device)) = map.get_index(position) {
            covering.push((key.to_owned(), device));
        }
    });
    let mut covering = covering.into_iter();
    let matched = covering.next();
    let shadowed = covering.collect();
    let name_parts: Vec<&str> = name.split('.').collect();
    let mut near_misses = Vec::new();
    let mut more_near_misses = 0;
    for (key, device) in map.iter() {
        if key.is_empty() || key == name {
            continue;
        }
        let miss = if let Some(rest) = name.strip_prefix(key) {
            if rest.starts_with('.') {
                continue;
            }
            Miss::NoDotBoundary
        } else if key
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
        {
            Miss::Inside
        } else {
            match one_component_differs(key, &name_parts) {
                Some(miss) => miss,
                None => continue,
            }
        };
        if near_misses.len() == NEAR_MISSES {
            more_near_misses += 1;
            continue;
        }
        near_misses.push(NearMiss {
            key: key.to_owned(),
            device,
            miss,
        });
    }
    Ok(Explanation {
        name: name.to_owned(),
        matched,
        shadowed,
        near_misses,
        more_near_misses,
    })
}

fn one_component_differs(key: &str, name_parts: &[&str]) -> Option<Miss> {
    let mut differing = None;
    // A key sharing no component with the name is not near it (`lm_head` against `model.x`).
    let mut shared = 0;
    for (index, key_part) in key.split('.').enumerate() {
        let name_part = name_parts.get(index)?;
        if key_part == *name_part {
            shared += 1;
        } else {
            if differing.is_some() {
                return None;
            }
            differing = Some((index, key_part, *name_part));
        }
    }
    if shared == 0 {
        return None;
    }
    differing.map(|(index, key_part, name_part)| Miss::ComponentDiffers {
        index,
        key_part: key_part.to_owned(),
        name_part: name_part.to_owned(),
    })
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.matched {
            Some((key, device)) => write!(f, "{} -> {device} (key {})", self.name, quoted(key))?,
            None => write!(f, "{} -> no key covers it", self.name)?,
        }
        if !self.shadowed.is_empty() {
            let shadowed: Vec<String> = self
                .shadowed
                .iter()
                .map(|(key, device)| format!("{} ({device})", quoted(key)))
                .collect();
            write!(
                f,
                "\n  shorter keys that also cover it: {}",
                shadowed.join(", ")
            )?;
        }
        if !self.near_misses.is_empty() {
            write!(f, "\n  near misses (do not cover it):")?;
            for near in &self.near_misses {
                write!(
                    f,
                    "\n    {} ({}): {}",
                    quoted(&near.key),
                    near.device,
                    near.miss.describe()
                )?;
            }
            if self.more_near_misses > 0 {
                write!(
                    f,
                    "\n    ... and {} more",
                    thousands(self.more_near_misses as u64)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::testing::map;

    #[test]
    fn explain_names_the_match_the_shadowed_and_near_misses() {
        let m = map(&[
            ("model.layers.1", Device::gpu(0)),
            ("model", Device::gpu(1)),
            ("model.layer.10", Device::gpu(2)),
            ("model.layers.10.mlp.up", Device::gpu(3)),
            ("", Device::cpu()),
            ("lm_head", Device::disk()),
        ]);
        let e = explain(&m, "model.layers.10.mlp").unwrap();
        assert_eq!(e.matched, Some(("model".to_owned(), Device::gpu(1))));
        assert_eq!(e.shadowed, vec![(String::new(), Device::cpu())]);
        let misses: Vec<(&str, &str)> = e
            .near_misses
            .iter()
            .map(|n| (n.key.as_str(), n.miss.code()))
            .collect();
        assert_eq!(
            misses,
            vec![
                ("model.layers.1", "no-dot-boundary"),
                ("model.layer.10", "component-differs"),
                ("model.layers.10.mlp.up", "inside-name"),
            ]
        );
        let e = explain(&m, "lm_head_extra.weight").unwrap();
        assert_eq!(e.matched, Some((String::new(), Device::cpu())));
        assert_eq!(e.near_misses[0].key, "lm_head");
        assert!(explain(&m, "a..b").is_err());
    }

    #[test]
    fn near_misses_past_the_cap_are_counted() {
        let pairs: Vec<(String, Device)> = (0..NEAR_MISSES + 5)
            .map(|i| (format!("model.layers.{}", i + 100), Device::gpu(0)))
            .collect();
        let pairs: Vec<(&str, Device)> = pairs.iter().map(|(k, d)| (k.as_str(), *d)).collect();
        let e = explain(&map(&pairs), "model.layers.1.mlp").unwrap();
        assert_eq!(e.near_misses.len(), NEAR_MISSES);
        assert_eq!(e.more_near_misses, 5);
        assert!(e.to_string().ends_with("\n    ... and 5 more"));
        let few = explain(&map(&pairs[..2]), "model.layers.1.mlp").unwrap();
        assert_eq!((few.near_misses.len(), few.more_near_misses), (2, 0));
        assert!(!few.to_string().contains("more"));
    }
}
