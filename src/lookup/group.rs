//! Names grouped for people: names that differ only in numeric components become one line.

use std::collections::HashMap;

use ahash::RandomState;

/// A group of names that differ only in numeric components, as one line:
/// `model.layers.{3..60}.mlp.gate.weight`, with how many names it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameGroup {
    pub pattern: String,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Part<'a> {
    Text(&'a str),
    Numbers(Vec<u64>),
}

/// A component that is a number written without leading zeros (so it prints back the same).
fn number(component: &str) -> Option<u64> {
    let bytes = component.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= 18
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes[0] != b'0');
    plain.then(|| component.parse().ok()).flatten()
}

/// Groups names that differ only in numeric components, merging one numeric position at a
/// time from the last (experts) to the first (layers), so a full grid of layers x experts
/// becomes one line and a hole in it stays visible. Groups come in order of their first name.
pub fn compact<S: AsRef<str>>(names: &[S]) -> Vec<NameGroup> {
    let mut groups: Vec<(Vec<Part<'_>>, usize)> = names
        .iter()
        .map(|name| {
            let parts = name
                .as_ref()
                .split('.')
                .map(|c| match number(c) {
                    Some(n) => Part::Numbers(vec![n]),
                    None => Part::Text(c),
                })
                .collect();
            (parts, 1)
        })
        .collect();
    let depth = groups
        .iter()
        .map(|(parts, _)| parts.len())
        .max()
        .unwrap_or(0);
    for at in (0..depth).rev() {
        let mut merged: Vec<(Vec<Part<'_>>, usize)> = Vec::with_capacity(groups.len());
        let mut index: HashMap<Vec<Part<'_>>, usize, RandomState> = HashMap::default();
        for (mut parts, count) in groups {
            let numbers = match parts.get_mut(at) {
                Some(Part::Numbers(numbers)) => std::mem::take(numbers),
                _ => {
                    merged.push((parts, count));
                    continue;
                }
            };
            match index.get(&parts) {
                Some(&i) => {
                    if let Part::Numbers(into) = &mut merged[i].0[at] {
                        into.extend(numbers);
                    }
                    merged[i].1 += count;
                }
                None => {
                    index.insert(parts.clone(), merged.len());
                    parts[at] = Part::Numbers(numbers);
                    merged.push((parts, count));
                }
            }
        }
        for (parts, _) in &mut merged {
            if let Some(Part::Numbers(numbers)) = parts.get_mut(at) {
                numbers.sort_unstable();
                numbers.dedup();
            }
        }
        groups = merged;
    }
    groups
        .into_iter()
        .map(|(parts, count)| NameGroup {
            pattern: parts.iter().map(render).collect::<Vec<_>>().join("."),
            count,
        })
        .collect()
}

fn render(part: &Part<'_>) -> String {
    let numbers = match part {
        Part::Text(text) => return (*text).to_owned(),
        Part::Numbers(numbers) if numbers.len() == 1 => return numbers[0].to_string(),
        Part::Numbers(numbers) => numbers,
    };
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
            j += 1;
        }
        match j - i {
            0 => runs.push(numbers[i].to_string()),
            1 => runs.push(format!("{},{}", numbers[i], numbers[j])),
            _ => runs.push(format!("{}..{}", numbers[i], numbers[j])),
        }
        i = j + 1;
    }
    format!("{{{}}}", runs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_groups_numeric_runs() {
        let mut names = Vec::new();
        for layer in 3..61 {
            for expert in 0..4 {
                names.push(format!("model.layers.{layer}.mlp.experts.{expert}.w"));
            }
            names.push(format!("model.layers.{layer}.mlp.gate.weight"));
        }
        names.retain(|n| n != "model.layers.17.mlp.experts.2.w");
        names.push("lm_head.weight".to_owned());
        names.push("model.layers.07.x".to_owned());
        let groups = compact(&names);
        let shown: Vec<(&str, usize)> = groups
            .iter()
            .map(|g| (g.pattern.as_str(), g.count))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("model.layers.{3..16,18..60}.mlp.experts.{0..3}.w", 57 * 4),
                ("model.layers.{3..60}.mlp.gate.weight", 58),
                ("model.layers.17.mlp.experts.{0,1,3}.w", 3),
                ("lm_head.weight", 1),
                ("model.layers.07.x", 1),
            ]
        );
    }
}
