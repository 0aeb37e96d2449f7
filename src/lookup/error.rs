//! What the lookup refuses. `crate::error::Error::Lookup` wraps these, so a batch can add the
//! position of the name (`Error::Position`) and the bindings map them with every other error.

use std::fmt;

use thiserror::Error;

use super::find::{MAX_NAME_BYTES, MAX_NAME_DEPTH};
use crate::error::ErrorKind;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LookupError {
    /// `name` is shortened for the message (see `check_name`).
    #[error("Tensor name '{name}' {problem}")]
    BadName { name: String, problem: NameProblem },

    #[error("No key of the device map covers tensor '{name}'")]
    Uncovered { name: String },

    /// An item of a batch of names that is not a `str`; the binding renders its type and repr.
    #[error("tensor names must be str; position {position} holds {type_name} {repr}")]
    NotAName {
        position: usize,
        type_name: String,
        repr: String,
    },

    /// `devices_for(names, default, extra...)`: `got` counts `names` too.
    #[error("devices_for expected at most 2 arguments, got {got}")]
    TooManyArguments { got: usize },

    /// `got` is shown as Rust's `{:?}` shows a string (`"loud"`).
    #[error("unused must be 'error', 'warn' or 'ignore', got {got:?}")]
    UnknownUnused { got: String },

    /// `check` failed: names no key covers, or keys covering no name under `Unused::Error`.
    /// The message is the coverage text.
    #[error("{text}")]
    NotCovered { text: String },
}

impl LookupError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LookupError::Uncovered { .. } => ErrorKind::Key,
            LookupError::NotAName { .. } | LookupError::TooManyArguments { .. } => ErrorKind::Type,
            LookupError::BadName { .. }
            | LookupError::UnknownUnused { .. }
            | LookupError::NotCovered { .. } => ErrorKind::Value,
        }
    }
}

/// Why a tensor name cannot be looked up (see `check_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    /// Longer than `MAX_NAME_BYTES`.
    TooLong {
        bytes: usize,
    },
    StartsWithDot,
    EndsWithDot,
    /// Two dots side by side.
    EmptyComponent,
    /// Deeper than `MAX_NAME_DEPTH` components.
    TooDeep {
        depth: usize,
    },
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("is empty"),
            NameProblem::TooLong { bytes } => write!(
                f,
                "is {bytes} bytes long; names are looked up up to {MAX_NAME_BYTES}"
            ),
            NameProblem::StartsWithDot => f.write_str("starts with '.'"),
            NameProblem::EndsWithDot => f.write_str("ends with '.'"),
            NameProblem::EmptyComponent => f.write_str("has an empty component ('..')"),
            NameProblem::TooDeep { depth } => write!(
                f,
                "is {depth} components deep; names are looked up up to {MAX_NAME_DEPTH}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn messages_and_kinds() {
        let cases = [
            (
                LookupError::NotAName {
                    position: 2,
                    type_name: "int".to_owned(),
                    repr: "5".to_owned(),
                },
                "tensor names must be str; position 2 holds int 5",
                ErrorKind::Type,
            ),
            (
                LookupError::TooManyArguments { got: 3 },
                "devices_for expected at most 2 arguments, got 3",
                ErrorKind::Type,
            ),
            (
                LookupError::Uncovered {
                    name: "a.b".to_owned(),
                },
                "No key of the device map covers tensor 'a.b'",
                ErrorKind::Key,
            ),
            (
                LookupError::BadName {
                    name: "a..b".to_owned(),
                    problem: NameProblem::EmptyComponent,
                },
                "Tensor name 'a..b' has an empty component ('..')",
                ErrorKind::Value,
            ),
        ];
        for (err, message, kind) in cases {
            assert_eq!(err.to_string(), message);
            assert_eq!(err.kind(), kind);
            // Wrapped, and at a position of a batch, it keeps its text and kind.
            let wrapped = Error::from(err).at_position(4);
            assert_eq!(wrapped.to_string(), format!("{message} (at position 4)"));
            assert_eq!(wrapped.kind(), kind);
        }
    }
}
