//! Model order for names that come without one.
//!
//! A checkpoint's headers and index list tensors by name (`model.layers.10` before
//! `model.layers.2`) or grouped by dtype, not in the order the model runs them. Planning fills
//! devices in order, so names from a checkpoint are sorted the way decoder models run:
//! component by component, numbers by value, and at each level embeddings first, final norms
//! after everything else and output heads last. A heuristic on names; a mapping or a module
//! given by the caller keeps its own order.

use std::cmp::Ordering;

/// Where a component sorts among its siblings before its name is compared.
fn rank(component: &str) -> u8 {
    match component {
        "wte" | "wpe" | "tok_embeddings" | "word_embeddings" | "embeddings" => 0,
        "ln_f" | "norm" | "final_norm" | "final_layernorm" | "ln_final" | "final_layer_norm" => 2,
        "lm_head" | "head" | "output" | "score" | "classifier" => 3,
        _ if component.contains("embed") => 0,
        _ => 1,
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part<'a> {
    // Numbered children (`layers.0`, `layers.1`, ...) sort by value, before named siblings.
    Number(u64, &'a str),
    Name(u8, &'a str),
}

fn key(name: &str) -> Vec<Part<'_>> {
    name.split('.')
        .map(|c| match c.parse::<u64>() {
            Ok(n) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => Part::Number(n, c),
            _ => Part::Name(rank(c), c),
        })
        .collect()
}

/// Compares two names in model order.
pub fn compare(a: &str, b: &str) -> Ordering {
    key(a).cmp(&key(b))
}

/// Sorts `(name, value)` pairs into model order (stable for equal names).
pub fn model_order<T>(items: &mut Vec<(String, T)>) {
    let mut keyed: Vec<(Vec<Part<'_>>, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (key(name), i))
        .collect();
    keyed.sort_unstable();
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    let mut taken: Vec<Option<(String, T)>> = items.drain(..).map(Some).collect();
    items.extend(
        order
            .into_iter()
            .filter_map(|i| taken.get_mut(i).and_then(Option::take)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_order() {
        let mut names: Vec<(String, ())> = [
            "lm_head.weight",
            "model.norm.weight",
            "model.layers.10.mlp.weight",
            "model.layers.2.mlp.weight",
            "model.embed_tokens.weight",
        ]
        .iter()
        .map(|n| (n.to_string(), ()))
        .collect();
        model_order(&mut names);
        let got: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
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
}
