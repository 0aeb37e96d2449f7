//! Errors of the checkpoint reader.

use std::fmt;
use std::path::Path;

use crate::error::Error;

pub(super) fn bad(file: &Path, tensor: Option<&str>, message: impl fmt::Display) -> Error {
    Error::Checkpoint {
        file: file.display().to_string(),
        tensor: tensor.map(str::to_owned),
        message: message.to_string(),
    }
}
