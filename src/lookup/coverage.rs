//! How a map covers a list of tensor names: the names no key covers, the keys that cover no
//! name, and the text that says so.

use std::str::FromStr;

use super::error::LookupError;
use super::find::{for_each_covering, Finder};
use super::group::compact;
use super::text::{plural, quoted};
use crate::error::{Error, Result};
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

/// What [`check`] does with keys that cover no name (in a map written by hand, likely typos).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unused {
    /// They fail the check, as uncovered names do.
    #[default]
    Error,
    /// They pass; the caller warns with the line naming them.
    Warn,
    /// They pass, unmentioned.
    Ignore,
}

impl FromStr for Unused {
    type Err = Error;

    /// `"error"`, `"warn"` or `"ignore"`.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "error" => Ok(Unused::Error),
            "warn" => Ok(Unused::Warn),
            "ignore" => Ok(Unused::Ignore),
            other => Err(LookupError::UnknownUnused {
                got: other.to_owned(),
            }
            .into()),
        }
    }
}

/// Whether `map` covers every one of `names`, with `unused` deciding about keys that cover no
/// name. Fails with `LookupError::NotCovered`, whose message is the coverage text (naming the
/// unused keys only when they are what fails); passes with the line to warn with when keys
/// cover no name under `Unused::Warn`, or with `None`.
pub fn check<S: AsRef<str>>(
    map: &DeviceMap,
    names: &[S],
    unused: Unused,
) -> Result<Option<String>> {
    let coverage = coverage(map, names)?;
    let unused_fails = unused == Unused::Error && !coverage.unused.is_empty();
    if !coverage.is_complete() || unused_fails {
        let text = coverage_text(map, names, &coverage, unused == Unused::Error);
        return Err(LookupError::NotCovered { text }.into());
    }
    Ok(match unused {
        Unused::Warn => unused_text(map, &coverage),
        Unused::Error | Unused::Ignore => None,
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
    let mut text = names_text(names, coverage);
    if with_unused {
        if let Some(line) = unused_text(map, coverage) {
            text.push('\n');
            text.push_str(&line);
        }
    }
    text
}

/// Whether every name is covered; if not, the uncovered names grouped into runs.
fn names_text<S: AsRef<str>>(names: &[S], coverage: &Coverage) -> String {
    if coverage.uncovered.is_empty() {
        return format!(
            "every one of {} is covered by the device map",
            plural(coverage.names, "tensor name", "tensor names")
        );
    }
    let mut lines = Vec::new();
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
    lines.join("\n")
}

/// One line naming the keys that cover no name, if there are any.
fn unused_text(map: &DeviceMap, coverage: &Coverage) -> Option<String> {
    if coverage.unused.is_empty() {
        return None;
    }
    let keys: Vec<String> = coverage
        .unused
        .iter()
        .take(TEXT_MAX_LINES)
        .filter_map(|&p| map.get_index(p))
        .map(|(key, _)| quoted(key))
        .collect();
    let more = coverage.unused.len().saturating_sub(TEXT_MAX_LINES);
    Some(format!(
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
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::error::ErrorKind;
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

    #[test]
    fn check_decides_by_the_unused_policy() {
        let m = map(&[("a", Device::cpu()), ("typo", Device::gpu(0))]);
        let covered = ["a.w", "a.b"];
        let policy = |text: &str| text.parse::<Unused>().unwrap();
        assert_eq!(policy("error"), Unused::Error);
        assert_eq!(Unused::default(), Unused::Error);
        let err = check(&m, &covered, policy("error")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "every one of 2 tensor names is covered by the device map\n\
             1 key of the device map covers no tensor name (a typo?): 'typo'"
        );
        assert_eq!(err.kind(), ErrorKind::Value);
        // The warning is the line about the keys alone.
        assert_eq!(
            check(&m, &covered, policy("warn")).unwrap().as_deref(),
            Some("1 key of the device map covers no tensor name (a typo?): 'typo'")
        );
        assert_eq!(check(&m, &covered, policy("ignore")).unwrap(), None);
        // Nothing to warn about when every key covers a name.
        assert_eq!(check(&m, &["a", "typo.x"], Unused::Warn).unwrap(), None);
        assert_eq!(check(&m, &["a", "typo.x"], Unused::Error).unwrap(), None);
        // Uncovered names fail whatever the policy; the text names the unused keys only when
        // they fail too.
        for (unused, with_keys) in [
            (Unused::Error, true),
            (Unused::Warn, false),
            (Unused::Ignore, false),
        ] {
            let text = check(&m, &["b"], unused).unwrap_err().to_string();
            assert!(
                text.starts_with("1 of 1 tensor name is not covered"),
                "{text}"
            );
            assert_eq!(text.contains("'typo'"), with_keys, "{unused:?}: {text}");
        }
        let err = "loud".parse::<Unused>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unused must be 'error', 'warn' or 'ignore', got \"loud\""
        );
        assert_eq!(err.kind(), ErrorKind::Value);
        // A bad name is reported before any verdict.
        assert!(check(&m, &["a", ""], Unused::Ignore)
            .unwrap_err()
            .to_string()
            .contains("position 1"));
    }
}
