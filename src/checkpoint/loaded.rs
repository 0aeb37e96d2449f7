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

use ahash::RandomState;

use crate::names::numbered;

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
    renamed: &[impl AsRef<str>],
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
        let name = name.as_ref();
        match index.get(name) {
            Some(&at) => got[at] = Some(got[at].unwrap_or(0).saturating_add(*bytes)),
            None => match extra_at.get(name) {
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

/// The stand-ins as text, made once and reused.
#[derive(Default)]
struct StandIns(Vec<String>);

impl StandIns {
    fn get(&mut self, at: usize) -> &str {
        while self.0.len() <= at {
            self.0.push((STAND_IN + self.0.len() as u64).to_string());
        }
        &self.0[at]
    }
}

/// `key` with each numbered component (`layers.3`: all ASCII digits between dots) replaced by
/// a stand-in (`STAND_IN`, `STAND_IN + 1`, ...), and the numbers in order.
#[cfg(test)]
fn name_template(key: &str) -> (String, Vec<&str>) {
    let mut out = String::with_capacity(key.len() + 8);
    let mut numbers = Vec::new();
    template_into(key, &mut out, &mut numbers, &mut StandIns::default());
    (out, numbers)
}

/// `name_template` into reused buffers (cleared first).
fn template_into<'k>(
    key: &'k str,
    out: &mut String,
    numbers: &mut Vec<&'k str>,
    stand_ins: &mut StandIns,
) {
    out.clear();
    numbers.clear();
    for (at, part) in key.split('.').enumerate() {
        if at > 0 {
            out.push('.');
        }
        if numbered(part) {
            out.push_str(stand_ins.get(numbers.len()));
            numbers.push(part);
        } else {
            out.push_str(part);
        }
    }
}

/// The template (`name_template`) of each of a checkpoint's keys: the distinct templates in
/// first-seen order, each with the index of its first key, the template of each key, and each
/// key's numbers as values (`NOT_PLAIN` for one with a leading zero or of a stand-in's length,
/// which only its text tells apart), key `k`'s from `numbers_at[k]` to `numbers_at[k + 1]`.
#[derive(Debug, Default)]
pub struct KeyTemplates {
    pub templates: Vec<(String, usize)>,
    pub of_key: Vec<u32>,
    numbers: Vec<u32>,
    numbers_at: Vec<u32>,
}

/// A number `KeyTemplates` keeps as text only.
const NOT_PLAIN: u32 = u32::MAX;

impl KeyTemplates {
    /// The numbers of key `at` as values.
    fn numbers_of(&self, at: usize) -> &[u32] {
        let (start, end) = (self.numbers_at[at], self.numbers_at[at + 1]);
        &self.numbers[start as usize..end as usize]
    }
}

/// `number`'s value when its text is the value's own (no leading zero, shorter than a
/// stand-in), else `NOT_PLAIN`.
fn plain(number: &str) -> u32 {
    match number.len() {
        1..10 if number == "0" || !number.starts_with('0') => number.parse().unwrap_or(NOT_PLAIN),
        _ => NOT_PLAIN,
    }
}

/// Whether `key`'s template (`name_template`) is `template`, without making it.
fn fits(key: &str, template: &str, stand_ins: &mut StandIns) -> bool {
    let mut parts = template.split('.');
    let mut count = 0;
    for part in key.split('.') {
        let Some(expected) = parts.next() else {
            return false;
        };
        if numbered(part) {
            if expected != stand_ins.get(count) {
                return false;
            }
            count += 1;
        } else if expected != part {
            return false;
        }
    }
    parts.next().is_none()
}

/// How many of the templates met last `key_templates` tries before making a key's template:
/// sorted keys cycle through a few (an expert's `down_proj`, `gate_proj`, `up_proj`).
const RECENT: usize = 4;

/// The templates of `names` (`KeyTemplates`).
pub fn key_templates<'a>(names: impl Iterator<Item = &'a str>) -> KeyTemplates {
    let mut seen: HashMap<String, u32, RandomState> = HashMap::default();
    let mut out = KeyTemplates {
        numbers_at: vec![0],
        ..KeyTemplates::default()
    };
    let (mut template, mut numbers) = (String::new(), Vec::new());
    let mut stand_ins = StandIns::default();
    let mut recent: Vec<u32> = Vec::with_capacity(RECENT + 1);
    for (at, name) in names.enumerate() {
        let known = recent
            .iter()
            .position(|&id| fits(name, &out.templates[id as usize].0, &mut stand_ins));
        let id = match known {
            Some(place) => recent.remove(place),
            None => {
                template_into(name, &mut template, &mut numbers, &mut stand_ins);
                match seen.get(&template) {
                    Some(&id) => id,
                    None => {
                        let id = out.templates.len() as u32;
                        seen.insert(template.clone(), id);
                        out.templates.push((template.clone(), at));
                        id
                    }
                }
            }
        };
        recent.insert(0, id);
        recent.truncate(RECENT);
        numbers_into(name, &mut numbers);
        out.of_key.push(id);
        out.numbers.extend(numbers.iter().map(|n| plain(n)));
        out.numbers_at.push(out.numbers.len() as u32);
    }
    out
}

/// The numbered components of `key` (those `name_template` replaces), in order.
fn numbers_into<'k>(key: &'k str, numbers: &mut Vec<&'k str>) {
    numbers.clear();
    numbers.extend(key.split('.').filter(|part| numbered(part)));
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

/// Keys as the loader renames them, each as an index into a table of the distinct names (many
/// keys become one name: every expert of a layer its fused parameter), and the groups of model
/// names one converter makes.
#[derive(Debug, Default)]
pub struct Renamed {
    pub names: Vec<String>,
    pub of_key: Vec<u32>,
    pub shared: Vec<Vec<String>>,
}

impl Renamed {
    /// Each key's new name, in key order.
    pub fn keys(&self) -> Vec<&str> {
        self.of_key
            .iter()
            .map(|&at| self.names[at as usize].as_str())
            .collect()
    }
}

/// `renamed` with its stand-ins replaced by `numbers`, as the template was filled.
fn fill(renamed: &str, numbers: &[&str], stand_ins: &mut StandIns) -> String {
    let mut out = renamed.to_owned();
    for (at, number) in numbers.iter().enumerate() {
        let stand_in = stand_ins.get(at);
        if out.contains(stand_in) {
            out = out.replace(stand_in, number);
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

/// One template met while renaming: its rename, the stand-ins its renamed name holds (the
/// numbers it depends on), whether those alone decide the filled name (each stand-in bordered
/// by non-digits, so that no filled number can join another into a stand-in), and the names
/// already made from it, by the values of those numbers (`Met::pack`).
struct Met<'t> {
    known: &'t TemplateRename,
    used: Vec<usize>,
    clean: bool,
    made: HashMap<u64, (u32, bool), RandomState>,
}

impl<'t> Met<'t> {
    fn new(known: &'t TemplateRename, count: usize, stand_ins: &mut StandIns) -> Met<'t> {
        let text = known.renamed.as_bytes();
        let mut used = Vec::new();
        let mut clean = true;
        for at in 0..count {
            let stand_in = stand_ins.get(at);
            for (start, _) in known.renamed.match_indices(stand_in) {
                let end = start + stand_in.len();
                let digit =
                    |i: Option<usize>| i.and_then(|i| text.get(i)).is_some_and(u8::is_ascii_digit);
                clean &= !digit(start.checked_sub(1)) && !digit(Some(end));
                if used.last() != Some(&at) {
                    used.push(at);
                }
            }
        }
        Met {
            known,
            used,
            clean,
            made: HashMap::default(),
        }
    }

    /// The numbers a key's name depends on, as one value, when they alone decide it: the
    /// template clean, at most two of them, each plain (so none holds a stand-in).
    fn pack(&self, numbers: &[u32]) -> Option<u64> {
        if !self.clean || self.used.len() > 2 {
            return None;
        }
        let mut packed = 0u64;
        for &u in &self.used {
            let number = *numbers.get(u)?;
            if number == NOT_PLAIN {
                return None;
            }
            packed = (packed << 32) | number as u64;
        }
        Some(packed)
    }
}

/// The distinct names made so far, each with its place in the table.
#[derive(Default)]
struct Names {
    at: HashMap<String, u32, RandomState>,
    renamed: Renamed,
}

impl Names {
    fn id(&mut self, name: String) -> u32 {
        if let Some(&at) = self.at.get(&name) {
            return at;
        }
        let at = self.renamed.names.len() as u32;
        self.renamed.names.push(name.clone());
        self.at.insert(name, at);
        at
    }
}

/// What renaming one key needs besides the key.
struct Renaming<'s> {
    prefix: Option<&'s str>,
    state: HashMap<&'s str, (), RandomState>,
    stand_ins: StandIns,
    grouped: HashMap<String, (), RandomState>,
}

impl Renaming<'_> {
    /// The name a key of `met` with `numbers` becomes before the per-key check, its place in
    /// `names`, and whether the model has it; converter groups recorded as first met.
    fn make(&mut self, met: &Met<'_>, numbers: &[&str], names: &mut Names) -> (u32, bool) {
        let known = met.known;
        let filled = fill(&known.renamed, numbers, &mut self.stand_ins);
        let new = match self.prefix {
            None => filled,
            Some(prefix) => settle(&filled, prefix, &self.state),
        };
        let in_state = self.state.contains_key(new.as_str());
        let targets = &known.targets;
        if known.pattern.is_some()
            && targets.len() > 1
            && in_state
            && !self.grouped.contains_key(&new)
        {
            self.grouped.insert(new.clone(), ());
            let group = targets.iter().map(|t| new.replace(&targets[0], t));
            names.renamed.shared.push(group.collect());
        }
        (names.id(new), in_state)
    }
}

/// Each of `names` renamed as the loader renames it, from the renames of its template (the
/// numbers put back, the base model prefix settled per key against the model's `state` names),
/// and the groups of model names one converter makes from the same tensors. `None` when the
/// first key of some template renames differently from its template filled: then the caller
/// renames key by key. `prefix` `None`: no prefix step. Keys of one template with the same
/// numbers where its renamed name has them make one name, made once.
pub fn renamed_keys(
    names: &[&str],
    keyed: &KeyTemplates,
    templates: &HashMap<String, TemplateRename, RandomState>,
    prefix: Option<&str>,
    state: &[String],
) -> Option<Renamed> {
    let mut renaming = Renaming {
        prefix,
        state: state.iter().map(|s| (s.as_str(), ())).collect(),
        stand_ins: StandIns::default(),
        grouped: HashMap::default(),
    };
    let mut out = Names::default();
    out.renamed.of_key.reserve(names.len());
    let mut met: Vec<Option<Met<'_>>> = keyed.templates.iter().map(|_| None).collect();
    let mut numbers = Vec::new();
    for (at, (&key, &id)) in names.iter().zip(&keyed.of_key).enumerate() {
        let this = match &mut met[id as usize] {
            Some(this) => this,
            slot @ None => {
                numbers_into(key, &mut numbers);
                let known = templates.get(&keyed.templates[id as usize].0)?;
                let filled = fill(&known.renamed, &numbers, &mut renaming.stand_ins);
                if (&filled, &known.pattern) != (&known.first_renamed, &known.first_pattern) {
                    return None;
                }
                slot.insert(Met::new(known, numbers.len(), &mut renaming.stand_ins))
            }
        };
        let packed = this.pack(keyed.numbers_of(at));
        let (id, in_state) = match packed.and_then(|p| this.made.get(&p)) {
            Some(&done) => done,
            None => {
                numbers_into(key, &mut numbers);
                let done = renaming.make(this, &numbers, &mut out);
                if let Some(packed) = packed {
                    this.made.insert(packed, done);
                }
                done
            }
        };
        let id = if !in_state && renaming.state.contains_key(key) {
            let new = prefix.map_or_else(|| key.to_owned(), |p| settle(key, p, &renaming.state));
            out.id(new)
        } else {
            id
        };
        out.renamed.of_key.push(id);
    }
    (out.renamed.of_key.len() == names.len()).then_some(out.renamed)
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
        assert!(loaded_sizes(&[], &[] as &[&str], &[], &[]).is_empty());
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
        let templates = key_templates(names.iter().copied()).templates;
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
        let found = renamed_keys(
            &names,
            &key_templates(names.into_iter()),
            &templates,
            Some("model"),
            &state,
        )
        .unwrap();
        let (renamed, shared) = (found.keys(), &found.shared);
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
            *shared,
            [
                vec!["model.layers.0.qkv_q", "model.layers.0.qkv_k"],
                vec!["model.layers.1.qkv_q", "model.layers.1.qkv_k"]
            ]
        );
        // A first key that renames otherwise than its template filled: key by key.
        templates.get_mut(t).unwrap().first_renamed = "layers.0.other".to_owned();
        assert!(renamed_keys(
            &names,
            &key_templates(names.into_iter()),
            &templates,
            Some("model"),
            &state
        )
        .is_none());
        // A template nobody renamed: key by key too.
        assert!(renamed_keys(
            &["x.0"],
            &key_templates(["x.0"].into_iter()),
            &templates,
            None,
            &state
        )
        .is_none());
    }

    /// Renaming key by key: each template's rename filled with the key's numbers, the prefix
    /// settled, as `renamed_keys` did before it made each name once.
    fn key_by_key(
        names: &[&str],
        templates: &HashMap<String, TemplateRename, RandomState>,
        state: &[String],
    ) -> Vec<String> {
        let index: HashMap<&str, (), RandomState> =
            state.iter().map(|s| (s.as_str(), ())).collect();
        names
            .iter()
            .map(|key| {
                let (template, numbers) = name_template(key);
                let filled = fill(
                    &templates[&template].renamed,
                    &numbers,
                    &mut StandIns::default(),
                );
                let new = settle(&filled, "model", &index);
                match index.contains_key(new.as_str()) || !index.contains_key(key) {
                    true => new,
                    false => settle(key, "model", &index),
                }
            })
            .collect()
    }

    #[test]
    fn names_made_once_per_template_and_numbers_agree_key_by_key() {
        let state: Vec<String> = [
            "model.layers.1.experts.fused",
            "model.layers.01.experts.fused",
            "x.3.y",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut templates: HashMap<String, TemplateRename, RandomState> = HashMap::default();
        // Experts fused: the name holds the layer's number only.
        let experts = "layers.7300000000.experts.7300000001.w";
        templates.insert(
            experts.to_owned(),
            rename(
                "layers.7300000000.experts.fused",
                None,
                &[],
                "layers.1.experts.fused",
            ),
        );
        // A stand-in next to a digit: the name is made afresh for every key.
        let glued = "x.7300000000.y";
        templates.insert(
            glued.to_owned(),
            rename("x.73000000001.y", None, &[], "x.31.y"),
        );
        let names = [
            "layers.1.experts.0.w",
            "layers.1.experts.1.w",
            "layers.01.experts.0.w",
            "layers.1.experts.7300000001.w",
            "layers.7300000001.experts.2.w",
            "layers.2.experts.0.w",
            "x.3.y",
            "x.4.y",
        ];
        let keyed = key_templates(names.into_iter());
        let renamed = renamed_keys(&names, &keyed, &templates, Some("model"), &state).unwrap();
        let expected = key_by_key(&names, &templates, &state);
        assert_eq!(renamed.keys(), expected);
        // Keys 0, 1 and 3 make one name; "01" is not "1"; x.3.y is a model tensor as stored.
        assert_eq!(renamed.of_key[0], renamed.of_key[1]);
        assert_eq!(renamed.of_key[0], renamed.of_key[3]);
        assert_eq!(expected[2], "model.layers.01.experts.fused");
        assert_eq!(expected[6..], ["x.3.y", "x.41.y"]);
    }

    #[test]
    fn each_key_gets_its_own_template() {
        let names = [
            "a.0.b.1.w",
            "a.0.b.1.v",
            "a.0.b.2.w",
            "a.0.b.2.v",
            "a.1",
            "a.x",
            "a.1.b",
            "a",
            "",
            "a..1",
            "a.7300000000.b.1.w",
            "a.01.b.1.w",
            "c.0",
            "a.0.b.1.w",
            "d.0.e",
            "f.1",
            "g.2",
            "h.3",
            "a.0.b.1.v",
        ];
        let keyed = key_templates(names.into_iter());
        let mut templates: Vec<String> = Vec::new();
        for (at, name) in names.iter().enumerate() {
            let (template, numbers) = name_template(name);
            let id = keyed.of_key[at] as usize;
            assert_eq!(keyed.templates[id].0, template, "{name}");
            if !templates.contains(&template) {
                assert_eq!(keyed.templates[id].1, at);
                templates.push(template);
            }
            let plain: Vec<u32> = numbers.iter().map(|n| plain(n)).collect();
            assert_eq!(keyed.numbers_of(at), plain);
        }
        assert_eq!(keyed.templates.len(), templates.len());
        assert_eq!(keyed.numbers_of(11), [NOT_PLAIN, 1]);
        assert_eq!(keyed.numbers_of(10), [NOT_PLAIN, 1]);
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
