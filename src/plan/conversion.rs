//! The room a load needs on a GPU for its largest conversion (transformers' `WeightConverter`s:
//! per-expert checkpoint tensors merged into one fused parameter, and the like): the bytes of
//! the tensors one converter makes, summed per module, largest over all converters. The
//! converters' target patterns are Python `re` patterns; only those that mean the same to the
//! `regex` crate ([`portable`]) are matched here, and the caller falls back to Python's `re`
//! for the others.

use std::collections::HashMap;

use regex::Regex;

/// Whether `pattern` means exactly the same to Python's `re` (on a `str`, no flags) and to the
/// `regex` crate: letters, digits and `_` (literals in both), `.` (any character but a line
/// break in both) and `\.` (a literal dot in both). Every target pattern of transformers
/// 5.24's converters is of this form (`mlp.experts.gate_up_proj`: its loader has turned `\.`
/// into `.`); anything else (classes, groups, backreferences, lookarounds, flags) is left to
/// Python.
pub fn portable(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '.' => {}
            '\\' if chars.next() == Some('.') => {}
            _ => return false,
        }
    }
    true
}

/// The largest sum, over `converters` (each its target patterns) and modules, of the bytes of
/// the tensors in `sizes` a converter makes: a tensor counts for the module its name has
/// before the leftmost match of any of the converter's patterns (as
/// `re.finditer(rf"^(.*?)(?:{targets})[^\n]*$", "\n".join(names), re.MULTILINE)` groups
/// them). `None` when a pattern is not [`portable`], or a name holds a line break (that search
/// reads lines, not names): the caller then asks Python's `re`.
pub fn largest_conversion<'a>(
    sizes: impl Iterator<Item = (&'a str, u64)> + Clone,
    converters: &[Vec<String>],
) -> Option<u64> {
    if converters
        .iter()
        .flatten()
        .any(|pattern| !portable(pattern))
    {
        return None;
    }
    if sizes.clone().any(|(name, _)| name.contains('\n')) {
        return None;
    }
    let mut largest = 0;
    for targets in converters {
        // No patterns: Python's `(?:)`, which matches every name at its start (module "").
        let alternation: Vec<String> = targets.iter().map(|p| format!("(?:{p})")).collect();
        let search = Regex::new(&alternation.join("|")).ok()?;
        let mut per_module: HashMap<&str, u64> = HashMap::new();
        for (name, bytes) in sizes.clone() {
            if let Some(found) = search.find(name) {
                let sum = per_module.entry(&name[..found.start()]).or_default();
                *sum = sum.saturating_add(bytes);
                largest = largest.max(*sum);
            }
        }
    }
    Some(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(patterns: &[&str]) -> Vec<String> {
        patterns.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn portable_patterns() {
        for pattern in [
            "mlp.experts.gate_up_proj",
            r"mlp\.experts",
            "lm_head.weight",
            "",
        ] {
            assert!(portable(pattern), "{pattern}");
        }
        for pattern in [
            r"layers\.(\d+)",
            r"\1.weight",
            "a|b",
            "(?!x)y",
            "[ab]",
            "a*",
            r"\d",
            "é",
        ] {
            assert!(!portable(pattern), "{pattern}");
        }
    }

    #[test]
    fn sums_per_module_at_the_leftmost_match() {
        let sizes = [
            ("model.layers.0.mlp.experts.gate_up_proj", 10),
            ("model.layers.0.mlp.experts.down_proj", 5),
            ("model.layers.1.mlp.experts.gate_up_proj", 7),
            ("model.layers.1.mlpXexperts.down_proj", 1), // `.` is any character
            ("model.norm.weight", 100),
        ];
        let converters = [
            targets(&["mlp.experts.gate_up_proj"]),
            targets(&["mlp.experts.down_proj", "experts.down_proj"]),
        ];
        let found = largest_conversion(sizes.iter().map(|(n, b)| (*n, *b)), &converters);
        assert_eq!(found, Some(10));
        let one = [targets(&["experts.gate_up_proj", "experts.down_proj"])];
        let found = largest_conversion(sizes.iter().map(|(n, b)| (*n, *b)), &one);
        assert_eq!(found, Some(15), "both under model.layers.0.mlp.");
    }

    #[test]
    fn left_to_python() {
        let sizes = [("a.b", 1)];
        let patterns = [targets(&[r"(a)\1"])];
        assert_eq!(largest_conversion(sizes.iter().copied(), &patterns), None);
        let sizes = [("a\nb", 1)];
        let patterns = [targets(&["b"])];
        assert_eq!(largest_conversion(sizes.iter().copied(), &patterns), None);
    }
}
