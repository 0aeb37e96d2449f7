//! Checks of what the caller asked for against the model, before planning: every tied group
//! names a tensor the model has, and every `no_split` pattern names a module the model has.
//! A typo in either would otherwise be ignored and the plan made without it.

use std::collections::HashMap;

use ahash::RandomState;

use super::error::PlanError;
use super::model::{Model, NoSplit};

/// Refuses a tied group none of whose names is a tensor of the model (a group may name tensors
/// the sizes lack, a tied weight stored once, but not only such), and a `no_split` pattern
/// that matches no module or tensor name.
pub(super) fn check(model: &Model, has: impl Fn(&str) -> bool) -> Result<(), PlanError> {
    for group in &model.tied {
        if !group.is_empty() && !group.iter().any(|name| has(name)) {
            return Err(PlanError::TiedUnknown {
                names: quoted_list(group),
            });
        }
    }
    if let Some(no_split) = &model.no_split {
        check_no_split(model, no_split)?;
    }
    Ok(())
}

/// Every pattern matches some prefix (at a dot) of some tensor name. Exact patterns are looked
/// up by prefix (a model's own module list can hold hundreds), wildcards compared by component;
/// the scan stops once all have matched.
fn check_no_split(model: &Model, no_split: &NoSplit) -> Result<(), PlanError> {
    let patterns = no_split.patterns();
    let joined: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
    let mut exact: HashMap<&str, usize, RandomState> = HashMap::default();
    let mut wildcard: Vec<usize> = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        if pattern.iter().any(|c| c == "*") {
            wildcard.push(i);
        } else {
            exact.insert(joined[i].as_str(), i);
        }
    }
    // Exact patterns are looked up only at the depths they have (`model.layers.3`: 3), and
    // only for a prefix the name before did not have: names in model order share prefixes, so
    // this is one comparison for most names.
    let mut depths: Vec<usize> = exact.keys().map(|p| p.split('.').count()).collect();
    depths.sort_unstable();
    depths.dedup();
    let mut last: Vec<&str> = vec![""; depths.len()];
    let mut components: Vec<&str> = Vec::new();
    for (name, _) in &model.sizes {
        if exact.is_empty() && wildcard.is_empty() {
            return Ok(());
        }
        if !exact.is_empty() {
            for (&depth, seen) in depths.iter().zip(last.iter_mut()) {
                if !seen.is_empty() && within(name, seen) {
                    continue;
                }
                if let Some(prefix) = prefix_at(name, depth) {
                    *seen = prefix;
                    exact.remove(prefix);
                }
            }
        }
        if !wildcard.is_empty() {
            components.clear();
            for component in name.split('.') {
                components.push(component);
                wildcard.retain(|&i| !matches(&patterns[i], &components));
            }
        }
    }
    // The first in text order, so that the message is the same in every process.
    let first = exact
        .values()
        .chain(&wildcard)
        .min_by_key(|&&i| joined[i].as_str());
    match first {
        Some(&missed) => Err(PlanError::NoSplitUnmatched {
            pattern: joined[missed].clone(),
        }),
        None => Ok(()),
    }
}

/// Whether `name` is `prefix` or lies inside it (`prefix.` ...).
fn within(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) && matches!(name.as_bytes().get(prefix.len()), None | Some(b'.'))
}

/// The first `depth` components of `name`, if it has that many.
fn prefix_at(name: &str, depth: usize) -> Option<&str> {
    match name.match_indices('.').nth(depth - 1) {
        Some((end, _)) => Some(&name[..end]),
        None => (name.split('.').count() == depth).then_some(name),
    }
}

fn matches(pattern: &[String], components: &[&str]) -> bool {
    pattern.len() == components.len()
        && pattern
            .iter()
            .zip(components)
            .all(|(p, c)| p == "*" || p == c)
}

/// `'a', 'b'` (at most 3 names, then how many more).
fn quoted_list(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(3).map(|n| format!("'{n}'")).collect();
    if names.len() > 3 {
        shown.push(format!("and {} more", names.len() - 3));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tied: &[&[&str]], no_split: Option<&[&str]>) -> Model {
        Model {
            sizes: vec![
                ("model.embed.weight".into(), 4),
                ("model.layers.0.w".into(), 4),
                ("lm_head.weight".into(), 4),
            ],
            tied: tied
                .iter()
                .map(|g| g.iter().map(|n| n.to_string()).collect())
                .collect(),
            no_split: no_split.map(|p| NoSplit::new(p).unwrap()),
            names_distinct: true,
        }
    }

    fn has(name: &str) -> bool {
        ["model.embed.weight", "model.layers.0.w", "lm_head.weight"].contains(&name)
    }

    #[test]
    fn a_tied_group_names_a_tensor_the_model_has() {
        let stored_once = model(&[&["model.embed.weight", "extra.weight"]], None);
        assert_eq!(check(&stored_once, has), Ok(()));
        let typo = model(&[&["lm_haed.weight", "model.embd.weight"]], None);
        assert_eq!(
            check(&typo, has).unwrap_err().to_string(),
            "tied group 'lm_haed.weight', 'model.embd.weight' names no tensor of the model; \
             at least one name must be one of its tensors"
        );
    }

    #[test]
    fn every_no_split_pattern_matches_a_module() {
        let fine = [
            "model.layers.*",
            "model.embed",
            "lm_head.weight",
            "model.layers.0.w",
            "model",
        ];
        assert_eq!(check(&model(&[], Some(&fine)), has), Ok(()));
        for missing in [
            "model.layer.*",
            "model.layers.*.*.*",
            "decoder",
            "model.layers.1",
            "model.layers.0.w.x",
        ] {
            let err = check(&model(&[], Some(&["model", missing])), has).unwrap_err();
            assert_eq!(
                err,
                PlanError::NoSplitUnmatched {
                    pattern: missing.to_owned()
                }
            );
        }
    }
}
