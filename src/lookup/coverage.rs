//! How a map covers a list of tensor names: the names no key covers, the keys that cover no
//! name, and the text that says so.

use super::find::{for_each_covering, Finder};
use super::group::compact;
use super::text::{plural, quoted};
use crate::error::Result;
use crate::map::DeviceMap;
use crate::units::thousands;

/// How a map covers a list of tensor names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// How many names were checked.
    pub names: usize,
    /// Indices of the names no key covers, in input order.
    pub uncovered: Vec<usize>,
    /// Positions of the keys that cover no name at all (likely typos), in map order.
    pub unused: Vec<usize>,
}

impl Coverage {
    pub fn is_complete(&self) -> bool {
        self.uncovered.is_empty()
    }
}

/// Which names no key covers and which keys cover no name. O(names x depth) for the names,
/// then O(keys x depth) for the keys.
pub fn coverage<S: AsRef<str>>(map: &DeviceMap, names: &[S]) -> Result<Coverage> {
    let mut matched = vec![false; map.len()];
    let mut uncovered = Vec::new();
    let finder = Finder::new(map, names.len());
    for (i, name) in names.iter().enumerate() {
        match finder
            .find_checked(name.as_ref())
            .map_err(|e| e.at_position(i))?
        {
            Some(position) => matched[position] = true,
            None => uncovered.push(i),
        }
    }
    // A key covers some name exactly when it is a dot-prefix of (or equal to) a key that some
    // name matched: so walk the prefixes of the matched keys, not of every name.
    let mut covers = vec![false; map.len()];
    for (position, _) in matched.iter().enumerate().filter(|(_, &m)| m) {
        if covers[position] {
            continue;
        }
        let Some((key, _)) = map.get_index(position) else {
            continue;
        };
        let mut stop = false;
        for_each_covering(map, key, |p| {
            // A key already marked had all its prefixes marked when it was.
            if stop || (covers[p] && p != position) {
                stop = true;
                return;
            }
            covers[p] = true;
        });
    }
    let unused = (0..map.len()).filter(|&p| !covers[p]).collect();
    Ok(Coverage {
        names: names.len(),
        uncovered,
        unused,
    })
}

/// How many name groups and unused keys a coverage text lists before `... and N more`.
pub const TEXT_MAX_LINES: usize = 20;

/// The uncovered names grouped into runs, then the unused keys when `with_unused`.
pub fn coverage_text<S: AsRef<str>>(
    map: &DeviceMap,
    names: &[S],
    coverage: &Coverage,
    with_unused: bool,
) -> String {
    let mut lines = Vec::new();
    if coverage.uncovered.is_empty() {
        lines.push(format!(
            "every one of {} is covered by the device map",
            plural(coverage.names, "tensor name", "tensor names")
        ));
    } else {
        lines.push(format!(
            "{} of {} {} not covered by the device map:",
            thousands(coverage.uncovered.len() as u64),
            plural(coverage.names, "tensor name", "tensor names"),
            if coverage.uncovered.len() == 1 {
                "is"
            } else {
                "are"
            }
        ));
        let uncovered: Vec<&str> = coverage
            .uncovered
            .iter()
            .map(|&i| names[i].as_ref())
            .collect();
        let groups = compact(&uncovered);
        for group in groups.iter().take(TEXT_MAX_LINES) {
            if group.count == 1 {
                lines.push(format!("  {}", group.pattern));
            } else {
                lines.push(format!(
                    "  {}  ({} names)",
                    group.pattern,
                    thousands(group.count as u64)
                ));
            }
        }
        if groups.len() > TEXT_MAX_LINES {
            lines.push(format!(
                "  ... and {} more groups",
                thousands((groups.len() - TEXT_MAX_LINES) as u64)
            ));
        }
        lines.push(format!(
            "{} not covered",
            plural(coverage.uncovered.len(), "tensor name", "tensor names")
        ));
    }
    if with_unused && !coverage.unused.is_empty() {
        let keys: Vec<String> = coverage
            .unused
            .iter()
            .take(TEXT_MAX_LINES)
            .filter_map(|&p| map.get_index(p))
            .map(|(key, _)| quoted(key))
            .collect();
        let more = coverage.unused.len().saturating_sub(TEXT_MAX_LINES);
        lines.push(format!(
            "{} of the device map {} no tensor name (a typo?): {}{}",
            plural(coverage.unused.len(), "key", "keys"),
            if coverage.unused.len() == 1 {
                "covers"
            } else {
                "cover"
            },
            keys.join(", "),
            if more > 0 {
                format!(" and {} more", thousands(more as u64))
            } else {
                String::new()
            }
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::lookup::testing::map;

    #[test]
    fn coverage_names_gaps_and_unused_keys() {
        let m = map(&[
            ("model.embed", Device::gpu(0)),
            ("model.layers.0", Device::gpu(0)),
            ("model.layers.1", Device::gpu(1)),
            ("model.layer.2", Device::gpu(1)),
            ("model", Device::cpu()),
        ]);
        let names = [
            "model.embed.weight",
            "model.layers.0.w",
            "model.layers.2.w",
            "lm_head.weight",
        ];
        let cov = coverage(&m, &names).unwrap();
        assert_eq!(cov.uncovered, vec![3]);
        // `model` covers `model.layers.2.w`; `model.layers.1` and the typo cover nothing.
        assert_eq!(cov.unused, vec![2, 3]);
        assert!(!cov.is_complete());
        let text = coverage_text(&m, &names, &cov, true);
        assert_eq!(
            text,
            "1 of 4 tensor names is not covered by the device map:\n  lm_head.weight\n\
             1 tensor name not covered\n\
             2 keys of the device map cover no tensor name (a typo?): 'model.layers.1', 'model.layer.2'"
        );
    }
}
