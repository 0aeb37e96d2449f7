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
}
