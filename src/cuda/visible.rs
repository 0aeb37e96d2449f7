//! `CUDA_VISIBLE_DEVICES`, parsed as torch parses it (`torch.cuda._parse_visible_devices` and
//! `_transform_uuid_to_ordinals`), which follows the CUDA runtime's own rules.

/// What `CUDA_VISIBLE_DEVICES` selects, before it is matched against the machine's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Unset: every device.
    All,
    /// Integer entries, in the listed order. A value too large for `u64` saturates; it is past
    /// any device count either way, and duplicates were detected on the digits themselves.
    Indices(Vec<u64>),
    /// `GPU-` prefixed UUIDs or unique UUID prefixes, in the listed order.
    Gpu(Vec<String>),
    /// `MIG-` prefixed MIG device UUIDs or unique prefixes, in the listed order.
    Mig(Vec<String>),
}

/// Python's `str.isspace`, which `str.strip()` uses: Rust's `White_Space` plus the four
/// information separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A `strtoul`-like read of the integer an entry starts with: optional sign, ASCII digits,
/// the rest ignored (`1gpu2` is 1). `None` where torch's `_strtoul` gives -1 (no digits or a
/// negative value). Returns the digits without leading zeros, so duplicates compare by value.
///
/// Torch raises `ValueError` on a bare sign (`+`, `-x`); CUDA's `strtoul` converts nothing
/// there, so we treat it as invalid, which ends the list.
fn strtoul(entry: &str) -> Option<&str> {
    let (negative, rest) = match entry.as_bytes().first() {
        Some(b'+') => (false, &entry[1..]),
        Some(b'-') => (true, &entry[1..]),
        _ => (false, entry),
    };
    let end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    let digits = rest[..end].trim_start_matches('0');
    match (negative, digits.is_empty()) {
        (_, true) => Some("0"),
        (true, false) => None,
        (false, false) => Some(digits),
    }
}

fn parse_prefixed(var: &str, prefix: &str) -> Vec<String> {
    let mut listed: Vec<String> = Vec::new();
    for entry in var.split(',') {
        if listed.iter().any(|seen| seen == entry) {
            return Vec::new();
        }
        if !entry.starts_with(prefix) {
            break;
        }
        listed.push(entry.to_owned());
    }
    listed
}

/// Parses the value of `CUDA_VISIBLE_DEVICES` (`None` when unset).
pub fn parse_visible(var: Option<&str>) -> Visible {
    let Some(var) = var else {
        return Visible::All;
    };
    if var.starts_with("GPU-") {
        return Visible::Gpu(parse_prefixed(var, "GPU-"));
    }
    if var.starts_with("MIG-") {
        return Visible::Mig(parse_prefixed(var, "MIG-"));
    }
    let mut seen: Vec<&str> = Vec::new();
    for entry in var.split(',') {
        let Some(digits) = strtoul(entry.trim_matches(is_py_space)) else {
            break;
        };
        if seen.contains(&digits) {
            return Visible::Indices(Vec::new());
        }
        seen.push(digits);
    }
    Visible::Indices(
        seen.iter()
            .map(|digits| digits.parse::<u64>().unwrap_or(u64::MAX))
            .collect(),
    )
}

/// Maps UUID entries (full or prefix) to positions in `uuids`, as torch does: an entry that
/// matches nothing or more than one UUID ends the list; two entries naming the same device
/// empty it.
pub fn uuids_to_positions<S: AsRef<str>>(candidates: &[String], uuids: &[S]) -> Vec<usize> {
    let mut positions: Vec<usize> = Vec::new();
    for candidate in candidates {
        let mut found = None;
        let mut ambiguous = false;
        for (position, uuid) in uuids.iter().enumerate() {
            if uuid.as_ref().starts_with(candidate.as_str()) {
                if found.is_some() {
                    ambiguous = true;
                    break;
                }
                found = Some(position);
            }
        }
        let Some(position) = found.filter(|_| !ambiguous) else {
            break;
        };
        if positions.contains(&position) {
            return Vec::new();
        }
        positions.push(position);
    }
    positions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(var: &str) -> Vec<u64> {
        match parse_visible(Some(var)) {
            Visible::Indices(list) => list,
            other => panic!("{var:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn unset_and_empty() {
        assert_eq!(parse_visible(None), Visible::All);
        assert_eq!(ints(""), Vec::<u64>::new());
    }

    #[test]
    fn integers_like_strtoul() {
        assert_eq!(ints("1gpu2,2ampere"), vec![1, 2]);
        assert_eq!(ints(" 3 , 1"), vec![3, 1]);
        assert_eq!(ints("+2,-0,007"), vec![2, 0, 7]);
        assert_eq!(ints("0,-1,2"), vec![0]);
        assert_eq!(ints("0,x,2"), vec![0]);
        assert_eq!(ints("0,+,2"), vec![0]);
        assert_eq!(ints("0,,2"), vec![0]);
        assert_eq!(ints("\u{1f}4\u{3000}"), vec![4]);
    }

    #[test]
    fn duplicates_empty_the_list() {
        assert_eq!(ints("0,1,0"), Vec::<u64>::new());
        assert_eq!(ints("1,01"), Vec::<u64>::new());
        assert_eq!(ints("0,-0"), Vec::<u64>::new());
        // Duplicates after an invalid entry do not count: the list ended there.
        assert_eq!(ints("0,x,0"), vec![0]);
    }

    #[test]
    fn huge_values_are_distinct_but_saturate() {
        assert_eq!(
            ints("99999999999999999999999,99999999999999999999998"),
            vec![u64::MAX, u64::MAX]
        );
    }

    #[test]
    fn prefixed_lists() {
        assert_eq!(
            parse_visible(Some("GPU-a,GPU-b,3,GPU-c")),
            Visible::Gpu(vec!["GPU-a".into(), "GPU-b".into()])
        );
        assert_eq!(parse_visible(Some("GPU-a,GPU-a")), Visible::Gpu(vec![]));
        assert_eq!(
            parse_visible(Some("MIG-x,GPU-y")),
            Visible::Mig(vec!["MIG-x".into()])
        );
        // Not stripped: a space before the prefix ends the list.
        assert_eq!(
            parse_visible(Some("GPU-a, GPU-b")),
            Visible::Gpu(vec!["GPU-a".into()])
        );
    }

    #[test]
    fn uuid_prefixes() {
        let uuids = ["GPU-aa11", "GPU-aa22", "GPU-bb33"];
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            uuids_to_positions(&c(&["GPU-b", "GPU-aa2"]), &uuids),
            vec![2, 1]
        );
        assert_eq!(
            uuids_to_positions(&c(&["GPU-aa", "GPU-b"]), &uuids),
            Vec::<usize>::new()
        );
        assert_eq!(
            uuids_to_positions(&c(&["GPU-b", "GPU-aa"]), &uuids),
            vec![2]
        );
        assert_eq!(
            uuids_to_positions(&c(&["GPU-b", "GPU-zz", "GPU-aa1"]), &uuids),
            vec![2]
        );
        assert_eq!(
            uuids_to_positions(&c(&["GPU-b", "GPU-bb33"]), &uuids),
            Vec::<usize>::new()
        );
    }
}
