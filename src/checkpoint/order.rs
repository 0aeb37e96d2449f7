//! Model order for names that come without one.
//!
//! A checkpoint's headers and index list tensors by name (`model.layers.10` before
//! `model.layers.2`) or grouped by dtype, not in the order the model runs them. Planning fills
//! devices in order, so names from a checkpoint are sorted the way models run:
//! component by component, numbers by value, and at each level embeddings first, then
//! encoders and vision towers, then their projectors, then the rest (by name), final norms
//! and output heads last (see `rank`). Where transformers can build the model, planning takes
//! the model's own order instead (`loaded.rs`); this order is for planning without it. Names inside one numbered block
//! (`model.layers.3.*`) keep their order: a block is placed whole, so only the order of blocks
//! matters, and sorting 10^5 names by their block is much cheaper than by their full name.
//! A heuristic on names; a mapping or a module given by the caller keeps its own order.

use std::cmp::Ordering;
use std::collections::HashMap;

use ahash::RandomState;

use crate::names::{block_prefix, inside, number};

/// Where a component sorts among its siblings before its name is compared, in the order
/// models run their parts: embeddings (and T5's `shared`, and a vision tower's first norm),
/// then encoders and vision or audio towers, then the projectors that feed a language model,
/// then everything else, final norms, and heads last.
fn rank(component: &str) -> u8 {
    match component {
        "wte" | "wpe" | "tok_embeddings" | "word_embeddings" | "embeddings" | "shared"
        | "pre_layrnorm" | "pre_layernorm" => 0,
        "encoder" | "vision_tower" | "visual" | "vision_model" | "vision_encoder" | "vision"
        | "image_encoder" | "audio_tower" | "audio_encoder" | "audio_model" => 1,
        "multi_modal_projector" | "mm_projector" | "connector" | "projector" => 2,
        "ln_f" | "norm" | "final_norm" | "final_layernorm" | "ln_final" | "final_layer_norm" => 4,
        "lm_head" | "head" | "output" | "score" | "classifier" => 5,
        _ if component.contains("embed") => 0,
        _ => 3,
    }
}

/// A byte string that sorts as the name should: per component, a marker (numbers before
/// names, names by rank), then the number as 8 big-endian bytes or the name's bytes (0 and 1
/// escaped) and a 0.
/// Sorting these with `memcmp` is several times faster than comparing split components.
fn key(name: &str, out: &mut Vec<u8>) {
    out.clear();
    for component in name.split('.') {
        match number(component) {
            Some(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_be_bytes());
                // The first numbered block: what follows keeps its order.
                return;
            }
            None => {
                out.push(2 + rank(component));
                // Bytes 0 and 1 are escaped (as 1 1 and 1 2) so that the 0 ending the name
                // sorts before every byte of a longer name, as `compare_names` has it.
                for &byte in component.as_bytes() {
                    match byte {
                        0 | 1 => out.extend_from_slice(&[1, byte + 1]),
                        _ => out.push(byte),
                    }
                }
                out.push(0);
            }
        }
    }
}

fn compare_names(a: &str, b: &str) -> Ordering {
    // Neighbouring names share most of their text: start at the component where they part.
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let start = a.as_bytes()[..common]
        .iter()
        .rposition(|&c| c == b'.')
        .map_or(0, |dot| dot + 1);
    let mut left = a[start..].split('.');
    let mut right = b[start..].split('.');
    loop {
        let (x, y) = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => (x, y),
        };
        if x == y {
            continue;
        }
        let order = match (number(x), number(y)) {
            (Some(m), Some(n)) => m.cmp(&n),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => (rank(x), x).cmp(&(rank(y), y)),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Whether `names` are in model order. Neighbours mostly share their block
/// (`model.layers.3.`), which a prefix comparison settles without splitting either name.
fn in_order<'a>(names: impl Iterator<Item = &'a str>) -> bool {
    // The last name's block prefix, and whether it is a numbered block (then every name under
    // it compares equal to it); a whole name is not, as `a.w.z` comes after `a.w.a`.
    let mut last: Option<(&str, bool)> = None;
    for name in names {
        if let Some((prefix, true)) = last {
            if inside(name, prefix) {
                continue;
            }
        }
        let prefix = block_prefix(name);
        if let Some((previous, _)) = last {
            if compare_names(previous, prefix) == Ordering::Greater {
                return false;
            }
        }
        last = Some((prefix, prefix.len() < name.len()));
    }
    true
}

/// The model order of `names`, as positions into them (stable: names of one block keep their
/// order).
pub fn model_order(names: &[&str]) -> Vec<u32> {
    bucket(names)
        .order
        .unwrap_or_else(|| (0..names.len() as u32).collect())
}

/// The model order of some names, as positions into them (`None`: already in order), and the
/// keys of their first and last block in that order (empty for no names).
struct Bucketed {
    order: Option<Vec<u32>>,
    first: Vec<u8>,
    last: Vec<u8>,
}

/// The key of a name's block (`key` stops at the first number: it is the block's key).
fn block_key(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    key(name, &mut out);
    out
}

fn bucket(names: &[&str]) -> Bucketed {
    // Checkpoints are often in order already (shards follow the model): check first.
    if in_order(names.iter().copied()) {
        return Bucketed {
            order: None,
            first: names.first().map(|n| block_key(n)).unwrap_or_default(),
            last: names.last().map(|n| block_key(n)).unwrap_or_default(),
        };
    }
    // A name sorts by its block (its key), and names of one block keep their order; a model
    // has few blocks (one per layer, plus the names outside any), so the blocks are sorted
    // and the names bucketed by block, instead of sorting 10^5 names. Neighbours mostly share
    // their block, which a prefix comparison settles before anything is hashed.
    let mut groups: HashMap<Box<[u8]>, u32, RandomState> = HashMap::default();
    let mut keys: Vec<Box<[u8]>> = Vec::new();
    let mut group_of = Vec::with_capacity(names.len());
    let mut last: Option<(&str, bool, u32)> = None;
    let mut buffer = Vec::with_capacity(128);
    for name in names {
        if let Some((prefix, true, group)) = last {
            if inside(name, prefix) {
                group_of.push(group);
                continue;
            }
        }
        let prefix = block_prefix(name);
        key(prefix, &mut buffer);
        let group = match groups.get(buffer.as_slice()) {
            Some(&group) => group,
            None => {
                let group = keys.len() as u32;
                keys.push(buffer.as_slice().into());
                groups.insert(buffer.as_slice().into(), group);
                group
            }
        };
        group_of.push(group);
        last = Some((prefix, prefix.len() < name.len(), group));
    }
    let mut by_key: Vec<u32> = (0..keys.len() as u32).collect();
    by_key.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
    let mut rank = vec![0u32; keys.len()];
    for (at, &group) in by_key.iter().enumerate() {
        rank[group as usize] = at as u32;
    }
    // A stable counting sort by rank.
    let mut start = vec![0usize; keys.len() + 1];
    for &group in &group_of {
        start[rank[group as usize] as usize + 1] += 1;
    }
    for at in 1..start.len() {
        start[at] += start[at - 1];
    }
    let mut order = vec![0u32; names.len()];
    for (position, &group) in group_of.iter().enumerate() {
        let at = &mut start[rank[group as usize] as usize];
        order[*at] = position as u32;
        *at += 1;
    }
    let key_at = |at: Option<&u32>| at.map(|&g| keys[g as usize].to_vec()).unwrap_or_default();
    Bucketed {
        order: Some(order),
        first: key_at(by_key.first()),
        last: key_at(by_key.last()),
    }
}

/// Model order of names that arrive file by file (a checkpoint's shards), ordered as each file
/// arrives. Checkpoints are written following the model, so each file's blocks usually come
/// after the blocks of the files before it, or continue the last one; while they do, the files'
/// orders put one after another are the model order of all the names ([`model_order`] of their
/// concatenation), and a caller can hand out early files' names before later files are read.
#[derive(Debug, Default)]
pub struct FileOrder {
    /// The key of the last block so far (empty before any, which every key follows).
    last: Vec<u8>,
    /// Whether a file broke the order.
    broken: bool,
}

impl FileOrder {
    /// The model order of one file's names, as positions into them, while the files so far
    /// follow the model; `None` from the first file whose blocks start before the last block
    /// of the files before it (then only [`model_order`] of all the names gives the order).
    pub fn add(&mut self, names: &[&str]) -> Option<Vec<u32>> {
        if self.broken {
            return None;
        }
        let bucketed = bucket(names);
        if names.is_empty() {
            return Some(Vec::new());
        }
        if bucketed.first < self.last {
            self.broken = true;
            return None;
        }
        self.last = bucketed.last;
        Some(
            bucketed
                .order
                .unwrap_or_else(|| (0..names.len() as u32).collect()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two names in model order (the order of their keys): the pairwise rule `in_order` and
    /// the keys must agree with.
    fn compare(a: &str, b: &str) -> Ordering {
        compare_names(block_prefix(a), block_prefix(b))
    }

    #[test]
    fn compare_agrees_with_keys() {
        let names = [
            "a.1.b",
            "a.10",
            "a.2.c",
            "a.b",
            "embed",
            "lm_head.w",
            "x.norm",
            "x.layers.3",
            "a",
            "a.b.c",
            "a\0",
            "a\u{1}",
            "a\u{1}x",
            "a\u{2}",
            "a\0.b",
        ];
        for a in names {
            for b in names {
                let (mut ka, mut kb) = (Vec::new(), Vec::new());
                key(a, &mut ka);
                key(b, &mut kb);
                assert_eq!(compare(a, b), ka.cmp(&kb), "{a} {b}");
            }
        }
    }

    #[test]
    fn order_check_agrees_with_compare() {
        let names = [
            "a.w",
            "a.w.z",
            "a.w.a",
            "a.1.x",
            "a.1.b",
            "a.1",
            "a.10.a",
            "a.2.z",
            "lm_head.w",
            "a.norm",
            "embed",
            "a.1.x.2",
            "a.1.x.1",
        ];
        // Every ordered triple, as a list: the check must say what pairwise `compare` says.
        for a in names {
            for b in names {
                for c in names {
                    let list = [a, b, c];
                    let expected = list
                        .windows(2)
                        .all(|w| compare(w[0], w[1]) != Ordering::Greater);
                    assert_eq!(in_order(list.into_iter()), expected, "{list:?}");
                }
            }
        }
    }

    #[test]
    fn bucketing_equals_a_stable_sort_by_key() {
        // Names in safetensors' own order (by dtype, then by name) across blocks, names outside
        // any block, and two spellings of one number ("01", "1"), which share a key.
        let mut names: Vec<String> = Vec::new();
        for dtype in ["f32", "bf16", "f8"] {
            for layer in ["10", "2", "1", "01", "0"] {
                for part in ["mlp.experts.3.w", "mlp.experts.12.w", "attn.q"] {
                    names.push(format!("model.layers.{layer}.{part}.{dtype}"));
                }
            }
            names.push(format!("lm_head.{dtype}"));
            names.push(format!("model.norm.{dtype}"));
            names.push(format!("model.embed_tokens.{dtype}"));
            names.push(format!("extra.{dtype}"));
        }
        let mut expected: Vec<(Vec<u8>, usize, String)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut k = Vec::new();
                key(name, &mut k);
                (k, i, name.clone())
            })
            .collect();
        expected.sort();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let got: Vec<&str> = model_order(&names)
            .iter()
            .map(|&at| names[at as usize])
            .collect();
        let want: Vec<&str> = expected.iter().map(|(_, _, n)| n.as_str()).collect();
        assert_eq!(got, want);
        let first_model = got.iter().find(|n| n.starts_with("model."));
        assert_eq!(first_model, Some(&"model.embed_tokens.bf16"));
        assert_eq!(got.last(), Some(&"lm_head.f8"));
    }

    #[test]
    fn file_by_file_order_is_the_whole_order() {
        // Checkpoints in model order, cut into files at random points, each file's names in
        // safetensors' order (by dtype, then by name: shuffled here); in some rounds one name is
        // moved into a random file, as a checkpoint that keeps its embeddings in its last shard.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut names = vec!["model.embed_tokens.weight".to_owned()];
        for layer in 0..12 {
            for part in [
                "attn.q",
                "attn.k",
                "mlp.up",
                "mlp.experts.3.w",
                "mlp.experts.10.w",
            ] {
                names.push(format!("model.layers.{layer}.{part}"));
            }
        }
        names.extend(["model.norm.weight".to_owned(), "lm_head.weight".to_owned()]);
        let (mut followed, mut broke) = (0, 0);
        for round in 0..300 {
            let mut ordered: Vec<&str> = names.iter().map(String::as_str).collect();
            let displaced = round % 3 == 0;
            if displaced {
                let name = ordered.remove(next(ordered.len()));
                ordered.insert(next(ordered.len() + 1), name);
            }
            let mut files: Vec<Vec<&str>> = Vec::new();
            let mut rest = ordered.as_slice();
            while !rest.is_empty() {
                let (file, after) = rest.split_at(1 + next(rest.len().min(20)));
                let mut file = file.to_vec();
                for at in (1..file.len()).rev() {
                    file.swap(at, next(at + 1));
                }
                files.push(file);
                rest = after;
            }
            match file_by_file(&files) {
                Ok(joined) => {
                    followed += 1;
                    assert_eq!(joined, whole_order(&files), "{files:?}");
                }
                Err(first) => {
                    broke += 1;
                    assert!(displaced, "files in model order must follow: {files:?}");
                    assert!(first > 0, "the first file always follows");
                }
            }
        }
        assert!(followed > 100 && broke > 10, "{followed} {broke}");

        // Names holding the bytes the keys use as markers.
        let files = [vec!["a.b", "a\0"], vec!["c", "b"]];
        let whole = whole_order(&files);
        assert_eq!(file_by_file(&files), Ok(whole.clone()));
        // Component by component, as `compare_names`: "a" before "a\0".
        assert_eq!(whole, ["a.b", "a\0", "b", "c"]);
    }

    /// [`model_order`] of the files' names put one after another.
    fn whole_order<'a>(files: &[Vec<&'a str>]) -> Vec<&'a str> {
        let all: Vec<&str> = files.concat();
        model_order(&all)
            .iter()
            .map(|&at| all[at as usize])
            .collect()
    }

    /// The files' names in the [`FileOrder`] of each, put one after another; or the first file
    /// that broke the order (checking that every later one stays broken).
    fn file_by_file<'a>(files: &[Vec<&'a str>]) -> Result<Vec<&'a str>, usize> {
        let mut by_file = FileOrder::default();
        let orders: Vec<Option<Vec<u32>>> = files.iter().map(|f| by_file.add(f)).collect();
        if let Some(first) = orders.iter().position(Option::is_none) {
            assert!(orders[first..].iter().all(Option::is_none), "{files:?}");
            return Err(first);
        }
        Ok(files
            .iter()
            .zip(orders.iter().flatten())
            .flat_map(|(file, order)| order.iter().map(|&at| file[at as usize]))
            .collect())
    }

    #[test]
    fn decoder_order() {
        let names = [
            "lm_head.weight",
            "model.norm.weight",
            "model.layers.10.mlp.weight",
            "model.layers.2.mlp.weight",
            "model.embed_tokens.weight",
        ];
        let got: Vec<&str> = model_order(&names)
            .iter()
            .map(|&at| names[at as usize])
            .collect();
        assert_eq!(
            got,
            [
                "model.embed_tokens.weight",
                "model.layers.2.mlp.weight",
                "model.layers.10.mlp.weight",
                "model.norm.weight",
                "lm_head.weight"
            ]
        );
    }

    #[test]
    fn encoder_decoder_and_vision_language_order() {
        let sorted = |names: &[&'static str]| -> Vec<&'static str> {
            model_order(names)
                .iter()
                .map(|&at| names[at as usize])
                .collect()
        };
        // T5: the shared embedding, the encoder, the decoder, the head (not alphabetical).
        let t5 = [
            "decoder.block.0.w",
            "decoder.final_layer_norm.weight",
            "encoder.block.0.w",
            "encoder.final_layer_norm.weight",
            "lm_head.weight",
            "shared.weight",
        ];
        assert_eq!(
            sorted(&t5),
            [
                "shared.weight",
                "encoder.block.0.w",
                "encoder.final_layer_norm.weight",
                "decoder.block.0.w",
                "decoder.final_layer_norm.weight",
                "lm_head.weight"
            ]
        );
        // Gemma-3 and Qwen2-VL as saved: the vision tower and projector before the language
        // model, the head last.
        let gemma3 = [
            "language_model.model.layers.0.w",
            "multi_modal_projector.mm_input_projection_weight",
            "vision_tower.vision_model.encoder.layers.0.w",
            "vision_tower.vision_model.embeddings.patch_embedding.weight",
        ];
        assert_eq!(
            sorted(&gemma3),
            [
                "vision_tower.vision_model.embeddings.patch_embedding.weight",
                "vision_tower.vision_model.encoder.layers.0.w",
                "multi_modal_projector.mm_input_projection_weight",
                "language_model.model.layers.0.w",
            ]
        );
        let qwen2_vl = ["lm_head.weight", "model.layers.0.w", "visual.blocks.0.w"];
        assert_eq!(
            sorted(&qwen2_vl),
            ["visual.blocks.0.w", "model.layers.0.w", "lm_head.weight"]
        );
    }
}
