//! What tensor names say about the model's structure: numbered blocks and module nesting.
//! Planning cuts units at numbered blocks and model order sorts by them, so both read the
//! same rule here.

/// Whether `component` is numbered (`3` in `model.layers.3`): one or more ASCII digits, of any
/// length.
pub fn numbered(component: &str) -> bool {
    !component.is_empty() && component.bytes().all(|b| b.is_ascii_digit())
}

/// The value of a numbered component ([`numbered`]), within `u64`.
pub fn number(component: &str) -> Option<u64> {
    if !numbered(component) {
        return None;
    }
    component.parse().ok()
}

/// Whether `name` lies inside module `prefix` (`prefix.` starts it): a comparison of bytes,
/// which settles most neighbours in a list of names without splitting either.
pub fn inside(name: &str, prefix: &str) -> bool {
    name.len() > prefix.len() && name.as_bytes()[prefix.len()] == b'.' && name.starts_with(prefix)
}

/// The name up to and including its first numbered component (the whole name if none).
pub fn block_prefix(name: &str) -> &str {
    let mut start = 0;
    for (i, c) in name.bytes().enumerate() {
        if c == b'.' {
            if number(&name[start..i]).is_some() {
                return &name[..i];
            }
            start = i + 1;
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_nesting() {
        assert_eq!(number("12"), Some(12));
        assert_eq!(number("1a"), None);
        assert_eq!(number(""), None);
        assert_eq!(number("99999999999999999999999"), None);
        assert_eq!(block_prefix("model.layers.3.mlp.weight"), "model.layers.3");
        assert_eq!(block_prefix("lm_head.weight"), "lm_head.weight");
        assert!(inside("model.layers.3.mlp", "model.layers.3"));
        assert!(!inside("model.layers.30", "model.layers.3"));
        assert!(!inside("model.layers.3", "model.layers.3"));
    }
}
