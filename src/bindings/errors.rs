//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::{Error, ErrorKind};

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err.kind() {
            ErrorKind::Value => PyValueError::new_err(message),
            ErrorKind::Type => PyTypeError::new_err(message),
            ErrorKind::Key => PyKeyError::new_err(message),
        }
    }
}

/// A `TypeError` saying what was expected and what came instead: `"{expected}, got int 5"`.
pub fn wrong_type(expected: &str, value: &Bound<'_, PyAny>) -> Error {
    let type_name = value
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "<unnamed type>".to_owned());
    Error::Type(format!("{expected}, got {type_name} {}", short_repr(value)))
}

/// `repr(value)`, cut to 80 characters: messages name the offending value, not all of it.
pub fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".to_owned());
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

/// The text of a `str`, or a `TypeError` saying what was expected.
#[inline]
pub fn expect_str<'a>(value: &'a Bound<'_, PyAny>, expected: &str) -> Result<&'a str, PyErr> {
    match value.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?),
        Err(_) => Err(wrong_type(expected, value).into()),
    }
}
