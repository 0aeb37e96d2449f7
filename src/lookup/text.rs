//! Text forms shared by the reports' `Display`, the Python objects' `str()` and the command
//! line.

use crate::units::thousands;

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(n as u64),
        if n == 1 { one } else { many }
    )
}

/// Quoted like Python's repr of a plain string.
pub fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
