//! A checkpoint's sizes in the names of the model the loader builds.
//!
//! transformers renames checkpoint keys while loading (`model.layers.N` ->
//! `model.language_model.layers.N` in vision-language models), fuses several checkpoint
//! tensors into one parameter (per-expert weights -> `experts.gate_up_proj`), and fills tied
//! parameters the checkpoint stores once. The caller renames each key as the loader does (that
//! is transformers' own code); here the renamed keys are matched against the model's own
//! tensors: sizes summed per model tensor, in the model's order, with the model's own size for
//! a tensor the checkpoint lacks.

use std::collections::HashMap;
use std::fmt::Write;

use ahash::RandomState;

/// Sizes keyed by the model's tensor names, in the model's order.
///
/// - `checkpoint`: `(checkpoint key, bytes as loaded)`; `renamed[i]` is the name the loader
///   gives `checkpoint[i]` (the first target when a converter makes several).
/// - `model`: the model's tensors in its order, with their own bytes (of the model built on
///   the meta device), used for a tensor no checkpoint key becomes (a tied copy, a buffer).
/// - `shared`: groups of model names one converter makes from the same checkpoint tensors
///   (a fused `qkv` split into `q`, `k`, `v`): their checkpoint bytes are shared out in
///   proportion to the model's own sizes.
///
/// A renamed key that is no model tensor (a quantization scale, a key the loader would call
/// unexpected) keeps its bytes under its renamed name, after the last model tensor of its
/// nearest enclosing module (at the end when none), so nothing stored goes uncounted.
pub fn loaded_sizes(
    checkpoint: &[(String, u64)],
    renamed: &[String],
    model: &[(String, u64)],
    shared: &[Vec<String>],
) -> Vec<(String, u64)> {
    let index: HashMap<&str, usize, RandomState> = model
        .iter()
        .enumerate()
        .map(|(at, (name, _))| (name.as_str(), at))
        .collect();
    let mut got: Vec<Option<u64>> = vec![None; model.len()];
    let mut extra: Vec<(&str, u64)> = Vec::new();
    let mut extra_at: HashMap<&str, usize, RandomState> = HashMap::default();
    for ((_, bytes), name) in checkpoint.iter().zip(renamed) {
        match index.get(name.as_str()) {
            Some(&at) => got[at] = Some(got[at].unwrap_or(0).saturating_add(*bytes)),
            None => match extra_at.get(name.as_str()) {
                Some(&at) => extra[at].1 = extra[at].1.saturating_add(*bytes),
                None => {
                    extra_at.insert(name, extra.len());
                    extra.push((name, *bytes));
                }
            },
        }
    }
    for group in shared {
        share_out(group, &index, model, &mut got);
    }
    let after = attach(&extra, model);
    let mut out = Vec::with_capacity(model.len() + extra.len());
    let mut attached = after.iter().peekable();
    while let Some(&&(None, e)) = attached.peek() {
        out.push((extra[e].0.to_owned(), extra[e].1));
        attached.next();
    }
    for (at, (name, own)) in model.iter().enumerate() {
        out.push((name.clone(), got[at].unwrap_or(*own)));
        while let Some(&&(Some(p), e)) = attached.peek() {
            if p != at {
                break;
            }
            out.push((extra[e].0.to_owned(), extra[e].1));
            attached.next();
        }
    }
    out
}

/// The first stand-in number `name_template` puts in place of a numbered component: far above
/// any layer or expert count, so no renaming pattern matches it by value.
pub const STAND_IN: u64 = 7_300_000_000;

/// `key` with each numbered component (`layers.3`: all ASCII digits between dots) replaced by
/// a stand-in (`STAND_IN`, `STAND_IN + 1`, ...), and the numbers in order.
#[cfg(test)]
fn name_template(key: &str) -> (String, Vec<&str>) {
    let mut out = String::with_capacity(key.len() + 8);
    let mut numbers = Vec::new();
    template_into(key, &mut out, &mut numbers);
    (out, numbers)
}

/// `name_template` into reused buffers (cleared first).
fn template_into<'k>(key: &'k str, out: &mut String, numbers: &mut Vec<&'k str>) {
    out.clear();
    numbers.clear();
    for (at, part) in key.split('.').enumerate() {
        if at > 0 {
            out.push('.');
        }
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}", STAND_IN + numbers.len() as u64);
            numbers.push(part);
        } else {
            out.push_str(part);
        }
    }
}

/// The distinct templates of `names` (`name_template`), in first-seen order, each with the
/// index of its first name.
pub fn name_templates<'a>(names: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut seen: HashMap<String, (), RandomState> = HashMap::default();
    let mut out = Vec::new();
    let (mut template, mut numbers) = (String::new(), Vec::new());
    for (at, name) in names.enumerate() {
        template_into(name, &mut template, &mut numbers);
        if !seen.contains_key(&template) {
            seen.insert(template.clone(), ());
            out.push((template.clone(), at));
        }
    }
    out
}

/// How the loader renames one template: the renamed template and the matching converter's
/// target patterns (empty when no converter matched), and the first key of the template as the
/// loader renamed it directly, with whether a converter matched it the same way.
pub struct TemplateRename {
    pub renamed: String,
    pub pattern: Option<String>,
    pub targets: Vec<String>,
    pub first_renamed: String,
    pub first_pattern: Option<String>,
}

/// Keys as the loader renames them, and the groups of model names one converter makes.
pub type RenamedKeys = (Vec<String>, Vec<Vec<String>>);

/// `renamed` with its stand-ins replaced by `numbers`, as the template was filled.
fn fill(renamed: &str, numbers: &[&str], stand_ins: &mut Vec<String>) -> String {
    while stand_ins.len() < numbers.len() {
        stand_ins.push((STAND_IN + stand_ins.len() as u64).to_string());
    }
    let mut out = renamed.to_owned();
    for (stand_in, number) in stand_ins.iter().zip(numbers) {
        if out.contains(stand_in.as_str()) {
            out = out.replace(stand_in.as_str(), number);
        }
    }
    out
}

/// transformers' base-model-prefix step of `rename_source_key`: strip `prefix` and the one
/// character after it when the rest is a model tensor, else prepend `prefix.` when that is.
/// `prefix` must be plain (letters, digits, `_`): transformers uses it in a regex.
fn settle(key: &str, prefix: &str, state: &HashMap<&str, (), RandomState>) -> String {
    let stripped = key
        .strip_prefix(prefix)
        .and_then(|rest| {
            let next = rest.chars().next().filter(|&c| c != '\n')?;
            Some(&rest[next.len_utf8()..])
        })
        .unwrap_or(key);
    if key.starts_with(prefix) && state.contains_key(stripped) {
        return stripped.to_owned();
    }
    let prepended = format!("{prefix}.{key}");
    if state.contains_key(prepended.as_str()) {
        prepended
    } else {
        key.to_owned()
    }
}

/// Each of `names` renamed as the loader renames it, from the renames of its template (the
/// numbers put back, the base model prefix settled per key against the model's `state` names),
/// and the groups of model names one converter makes from the same tensors. `None` when the
/// first key of some template renames differently from its template filled: then the caller
/// renames key by key. `prefix` `None`: no prefix step.
pub fn renamed_keys(
    names: &[&str],
    templates: &HashMap<String, TemplateRename, RandomState>,
    prefix: Option<&str>,
    state: &[String],
) -> Option<RenamedKeys> {
    let state: HashMap<&str, (), RandomState> = state.iter().map(|s| (s.as_str(), ())).collect();
    let mut checked: HashMap<&str, (), RandomState> = HashMap::default();
    let mut renamed = Vec::with_capacity(names.len());
    let mut shared = Vec::new();
    let mut grouped: HashMap<String, (), RandomState> = HashMap::default();
    let (mut template, mut numbers, mut stand_ins) = (String::new(), Vec::new(), Vec::new());
    // Many keys fill to one name (every expert of a layer into its fused parameter).
    let mut settled: HashMap<String, String, RandomState> = HashMap::default();
    for &key in names {
        template_into(key, &mut template, &mut numbers);
        let (name, known) = templates.get_key_value(&template)?;
        let filled = fill(&known.renamed, &numbers, &mut stand_ins);
        if !checked.contains_key(name.as_str()) {
            if (&filled, &known.pattern) != (&known.first_renamed, &known.first_pattern) {
                return None;
            }
            checked.insert(name, ());
        }
        let mut pattern = known.pattern.is_some();
        let mut new = match (prefix, settled.get(&filled)) {
            (None, _) => filled,
            (Some(_), Some(done)) => done.clone(),
            (Some(prefix), None) => {
                let done = settle(&filled, prefix, &state);
                settled.insert(filled, done.clone());
                done
            }
        };
        if !state.contains_key(new.as_str()) && state.contains_key(key) {
            new = prefix.map_or_else(|| key.to_owned(), |p| settle(key, p, &state));
            pattern = false;
        }
        let targets = &known.targets;
        if pattern
            && targets.len() > 1
            && state.contains_key(new.as_str())
            && !grouped.contains_key(&new)
        {
            grouped.insert(new.clone(), ());
            shared.push(
                targets
                    .iter()
                    .map(|t| new.replace(&targets[0], t))
                    .collect(),
            );
        }
        renamed.push(new);
    }
    Some((renamed, shared))
}

/// The report's note for a plan in the checkpoint's own names, saying `why` the loader's
/// model could not be built.
pub fn checkpoint_names_note(why: &str) -> String {
    format!(
        "Planned in the checkpoint's own tensor names, not the names from_pretrained gives the \
         model ({why}): renamed keys, tied copies and the architecture's no-split classes are \
         not known, and the map may not load."
    )
}

/// The checkpoint bytes of a converter's targets, shared out in proportion to their own sizes
/// (the last takes what rounding leaves).
fn share_out(
    group: &[String],
    index: &HashMap<&str, usize, RandomState>,
    model: &[(String, u64)],
    got: &mut [Option<u64>],
) {
    let members: Vec<usize> = group
        .iter()
        .filter_map(|n| index.get(n.as_str()).copied())
        .collect();
    if members.len() < 2 || members.iter().all(|&m| got[m].is_none()) {
        return;
    }
    let total: u64 = members.iter().filter_map(|&m| got[m]).sum();
    let own: u128 = members.iter().map(|&m| model[m].1 as u128).sum();
    let mut left = total;
    for (k, &m) in members.iter().enumerate() {
        let share = if k + 1 == members.len() {
            left
        } else {
            (total as u128 * model[m].1 as u128)
                .checked_div(own)
                .map_or(total / members.len() as u64, |share| share as u64)
        };
        let share = share.min(left);
        left -= share;
        got[m] = Some(share);
    }
}

/// The module a name is in (`None` at the top).
fn parent(name: &str) -> Option<&str> {
    name.rfind('.').map(|dot| &name[..dot])
}

/// `(model tensor it follows, position in extra)` for each extra name, sorted by the first:
/// the last model tensor of its nearest enclosing module, else the model's last tensor
/// (`None` only when the model has none). Names keep their order among themselves.
fn attach(extra: &[(&str, u64)], model: &[(String, u64)]) -> Vec<(Option<usize>, usize)> {
    if extra.is_empty() {
        return Vec::new();
    }
    // The last model tensor inside each module.
    let mut last_in: HashMap<&str, usize, RandomState> = HashMap::default();
    for (at, (name, _)) in model.iter().enumerate() {
        let mut module = name.as_str();
        while let Some(up) = parent(module) {
            last_in.insert(up, at);
            module = up;
        }
    }
    let end = model.len().checked_sub(1);
    let mut after: Vec<(Option<usize>, usize)> = extra
        .iter()
        .enumerate()
        .map(|(e, (name, _))| {
            let mut module = *name;
            let mut found = None;
            while let Some(up) = parent(module) {
                if let Some(&at) = last_in.get(up) {
                    found = Some(at);
                    break;
                }
                module = up;
            }
            (found.or(end), e)
        })
        .collect();
    after.sort_by_key(|&(at, _)| at);
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|&(n, b)| (n.to_owned(), b)).collect()
    }

    #[test]
    fn renamed_fused_tied_and_extra() {
        // Checkpoint order is the file's; the result follows the model.
        let checkpoint = owned(&[
            ("lm_head.weight", 10),
            ("model.layers.0.mlp.experts.0.w1.weight", 4),
            ("model.layers.0.mlp.experts.1.w1.weight", 4),
            ("model.layers.0.mlp.w.weight_scale", 1),
            ("model.layers.0.qkv.weight", 30),
            ("model.embed_tokens.weight", 10),
            ("stray", 2),
        ]);
        let renamed: Vec<String> = [
            "lm_head.weight",
            "model.language_model.layers.0.mlp.experts.gate_up_proj",
            "model.language_model.layers.0.mlp.experts.gate_up_proj",
            "model.language_model.layers.0.mlp.w.weight_scale",
            "model.language_model.layers.0.q.weight",
            "model.language_model.embed_tokens.weight",
            "stray",
        ]
        .map(str::to_owned)
        .to_vec();
        let model = owned(&[
            ("model.language_model.embed_tokens.weight", 20),
            ("model.language_model.layers.0.q.weight", 8),
            ("model.language_model.layers.0.k.weight", 4),
            ("model.language_model.layers.0.v.weight", 4),
            ("model.language_model.layers.0.mlp.experts.gate_up_proj", 16),
            ("model.language_model.layers.0.mlp.w.weight", 16),
            ("model.language_model.norm.weight", 2),
            ("lm_head.weight", 20),
            ("tied.weight", 20),
        ]);
        let shared = vec![[
            "model.language_model.layers.0.q.weight",
            "model.language_model.layers.0.k.weight",
            "model.language_model.layers.0.v.weight",
        ]
        .map(str::to_owned)
        .to_vec()];
        let sizes = loaded_sizes(&checkpoint, &renamed, &model, &shared);
        assert_eq!(
            sizes,
            owned(&[
                ("model.language_model.embed_tokens.weight", 10),
                ("model.language_model.layers.0.q.weight", 15),
                ("model.language_model.layers.0.k.weight", 7),
                ("model.language_model.layers.0.v.weight", 8),
                ("model.language_model.layers.0.mlp.experts.gate_up_proj", 8),
                ("model.language_model.layers.0.mlp.w.weight", 16),
                ("model.language_model.layers.0.mlp.w.weight_scale", 1),
                ("model.language_model.norm.weight", 2),
                ("lm_head.weight", 10),
                ("tied.weight", 20),
                ("stray", 2),
            ])
        );
    }

    #[test]
    fn nothing_renamed_keeps_the_model() {
        let model = owned(&[("a.w", 4), ("b.w", 4)]);
        let checkpoint = owned(&[("b.w", 2), ("a.w", 2)]);
        let renamed = vec!["b.w".to_owned(), "a.w".to_owned()];
        assert_eq!(
            loaded_sizes(&checkpoint, &renamed, &model, &[]),
            owned(&[("a.w", 2), ("b.w", 2)])
        );
        assert!(loaded_sizes(&[], &[], &[], &[]).is_empty());
    }

    #[test]
    fn templates_stand_in_for_whole_numbered_components() {
        let (template, numbers) = name_template("model.layers.12.mlp.experts.3.w1.weight");
        assert_eq!(
            template,
            "model.layers.7300000000.mlp.experts.7300000001.w1.weight"
        );
        assert_eq!(numbers, ["12", "3"]);
        // Digits inside a component, an empty component, a leading number.
        assert_eq!(name_template("h2.x..7").0, "h2.x..7300000000");
        assert_eq!(name_template("0.a").1, ["0"]);
        let names = ["a.0.w", "a.1.w", "b.w", "a.2.v", "a.3.w"];
        let templates = name_templates(names.iter().copied());
        let firsts: Vec<usize> = templates.iter().map(|(_, at)| *at).collect();
        assert_eq!(firsts, [0, 2, 3]);
    }

    fn rename(
        renamed: &str,
        pattern: Option<&str>,
        targets: &[&str],
        first: &str,
    ) -> TemplateRename {
        TemplateRename {
            renamed: renamed.to_owned(),
            pattern: pattern.map(str::to_owned),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            first_renamed: first.to_owned(),
            first_pattern: pattern.map(str::to_owned),
        }
    }

    #[test]
    fn keys_renamed_from_their_templates() {
        let state: Vec<String> = [
            "model.layers.0.qkv_q",
            "model.layers.0.qkv_k",
            "model.layers.1.qkv_q",
            "lm_head.weight",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut templates: HashMap<String, TemplateRename, RandomState> = HashMap::default();
        let t = "layers.7300000000.qkv";
        templates.insert(
            t.to_owned(),
            rename(
                "layers.7300000000.qkv_q",
                Some("qkv"),
                &["qkv_q", "qkv_k"],
                "layers.0.qkv_q",
            ),
        );
        templates.insert(
            "lm_head.weight".to_owned(),
            rename("lm_head.weight", None, &[], "lm_head.weight"),
        );
        let names = ["layers.0.qkv", "layers.1.qkv", "lm_head.weight"];
        let (renamed, shared) = renamed_keys(&names, &templates, Some("model"), &state).unwrap();
        // The prefix is added where the model has it, the numbers put back.
        assert_eq!(
            renamed,
            [
                "model.layers.0.qkv_q",
                "model.layers.1.qkv_q",
                "lm_head.weight"
            ]
        );
        assert_eq!(
            shared,
            [
                vec!["model.layers.0.qkv_q", "model.layers.0.qkv_k"],
                vec!["model.layers.1.qkv_q", "model.layers.1.qkv_k"]
            ]
        );
        // A first key that renames otherwise than its template filled: key by key.
        templates.get_mut(t).unwrap().first_renamed = "layers.0.other".to_owned();
        assert!(renamed_keys(&names, &templates, Some("model"), &state).is_none());
        // A template nobody renamed: key by key too.
        assert!(renamed_keys(&["x.0"], &templates, None, &state).is_none());
    }

    #[test]
    fn the_prefix_is_settled_as_transformers_does() {
        let state: HashMap<&str, (), RandomState> = ["layers.0.w", "model.norm.w"]
            .iter()
            .map(|s| (*s, ()))
            .collect();
        assert_eq!(settle("model.layers.0.w", "model", &state), "layers.0.w");
        assert_eq!(settle("norm.w", "model", &state), "model.norm.w");
        assert_eq!(settle("other.w", "model", &state), "other.w");
        // The character after the prefix is any character (transformers' regex `.`).
        assert_eq!(settle("model_layers.0.w", "model", &state), "layers.0.w");
        assert_eq!(settle("mlayers.0.w", "", &state), "layers.0.w");
    }
}
