//! Checks of what the caller asked for against the model, before planning: every tied group
//! names a tensor the model has, and every `no_split` pattern names a module the model has.
//! A typo in either would otherwise be ignored and the plan made without it.

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

/// Every pattern matches some prefix (at a dot) of some tensor name; the scan stops once all
/// have matched.
fn check_no_split(model: &Model, no_split: &NoSplit) -> Result<(), PlanError> {
    let patterns = no_split.patterns();
    let mut hit = vec![false; patterns.len()];
    let mut left = patterns.len();
    let mut components: Vec<&str> = Vec::new();
    for (name, _) in &model.sizes {
        if left == 0 {
            break;
        }
        components.clear();
        for component in name.split('.') {
            components.push(component);
            for (pattern, seen) in patterns.iter().zip(hit.iter_mut()) {
                if !*seen && matches(pattern, &components) {
                    *seen = true;
                    left -= 1;
                }
            }
        }
    }
    match hit.iter().position(|seen| !seen) {
        Some(missed) => Err(PlanError::NoSplitUnmatched {
            pattern: patterns[missed].join("."),
        }),
        None => Ok(()),
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
        let fine = ["model.layers.*", "model.embed", "lm_head.weight"];
        assert_eq!(check(&model(&[], Some(&fine)), has), Ok(()));
        for missing in ["model.layer.*", "model.layers.*.*.*", "decoder"] {
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
