//! Which entry of a map covers a tensor name: the key that is the longest prefix of the name
//! ending at a dot boundary.
//!
//! A key covers a name when it is `""`, equals the name, or is a prefix of it followed by `.`
//! in the name. Keys are literal text (no patterns), so `model.layers.1` never covers
//! `model.layers.10.x` and `lm_head` never covers `lm_head_extra.weight`.
//!
//! - `find`: the lookup itself, one name or a batch, and which names it refuses.
//! - `coverage`: which names no key covers and which keys cover no name, and its text.
//! - `group`: names that differ only in numbers, as one line (`model.layers.{3..60}.w`).
//! - `explain`, `diff`, `summary`: the reports, each with its text.
//! - `text`: the text helpers the reports share.
//! - `error`: what the lookup refuses (`LookupError`, wrapped by `crate::error::Error`).

mod coverage;
mod diff;
mod error;
mod explain;
mod find;
mod group;
mod summary;
mod text;

#[cfg(test)]
mod testing;

pub use coverage::{check, coverage, coverage_text, Coverage, Unused, TEXT_MAX_LINES};
pub use diff::{diff, diff_on_names, Diff, Placement};
pub use error::{LookupError, NameProblem};
pub use explain::{explain, Explanation, Miss, NearMiss, NEAR_MISSES};
pub use find::{
    check_name, device_for, find, for_each_covering, group_by_slot, key_for, require_device,
    require_slots, slots_for, Batch, Finder, MAX_NAME_BYTES, MAX_NAME_DEPTH,
};
pub use group::{compact, NameGroup};
pub use summary::{summary, summary_with_sizes, DeviceUsage, Summary};
pub use text::quoted;
