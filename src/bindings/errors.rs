//! The one place where core errors become Python exceptions (and warnings are raised).

use std::ffi::CString;

use pyo3::exceptions::{
    PyKeyError, PyOverflowError, PyRuntimeError, PyTypeError, PyUnicodeEncodeError, PyUserWarning,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::{Error, ErrorKind};
use crate::lookup::LookupError;

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err.kind() {
            ErrorKind::Value => PyValueError::new_err(message),
            ErrorKind::Type => PyTypeError::new_err(message),
            ErrorKind::Key => PyKeyError::new_err(message),
            ErrorKind::Runtime => PyRuntimeError::new_err(message),
            ErrorKind::Overflow => PyOverflowError::new_err(message),
        }
    }
}

/// The lookup's errors, through [`Error`].
impl From<LookupError> for PyErr {
    fn from(err: LookupError) -> PyErr {
        Error::from(err).into()
    }
}

/// Adds the key to a Python error raised while converting its value, keeping its type.
pub fn with_key(py: Python<'_>, err: PyErr, key: &str) -> PyErr {
    let message = format!("{} (key {})", err.value(py), crate::error::quoted(key));
    let ty = err.get_type(py);
    PyErr::from_type(ty, message)
}

/// `KeyError(key)` for a key a map lacks, with the key object itself as its one argument, as a
/// `dict` raises it (a core error cannot hold a Python object). A 1-tuple, so that `None` (or a
/// tuple key) becomes that one argument.
pub fn missing_key(key: &Bound<'_, PyAny>) -> PyErr {
    PyKeyError::new_err((key.clone().unbind(),))
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
    cut_text(&text)
}

/// `str(value)`, cut as [`short_repr`] cuts, for messages that keep Haystack's `'{value}'`.
pub fn short_str(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(cut_text(&value.str()?.to_string_lossy()))
}

fn cut_text(text: &str) -> String {
    match text.char_indices().nth(77) {
        Some((end, _)) if text.chars().count() > 80 => format!("{}...", &text[..end]),
        _ => text.to_owned(),
    }
}

/// The text of a Python `str`. One holding a lone surrogate is not Unicode and cannot be
/// stored: a `ValueError` names `what` it was, the text, and where the surrogate is.
#[inline]
pub fn str_text<'a>(text: &'a Bound<'_, PyString>, what: &'static str) -> PyResult<&'a str> {
    text.to_str()
        .map_err(|err| surrogate_error(text, what, err))
}

#[cold]
fn surrogate_error(text: &Bound<'_, PyString>, what: &'static str, err: PyErr) -> PyErr {
    let py = text.py();
    if !err.is_instance_of::<PyUnicodeEncodeError>(py) {
        return err;
    }
    let start: PyResult<usize> = err.value(py).getattr("start").and_then(|s| s.extract());
    let Ok(index) = start else { return err };
    let code = text
        .as_any()
        .get_item(index)
        .and_then(|c| py.import("builtins")?.getattr("ord")?.call1((c,)))
        .and_then(|c| c.extract::<u32>())
        .unwrap_or(0);
    Error::Surrogate {
        what,
        repr: short_repr(text),
        code,
        index,
    }
    .into()
}

/// The text of a `str` (`what` names it if it is not Unicode), or a `TypeError` saying what
/// was expected.
#[inline]
pub fn expect_str<'a>(
    value: &'a Bound<'_, PyAny>,
    what: &'static str,
    expected: &str,
) -> Result<&'a str, PyErr> {
    match value.cast::<PyString>() {
        Ok(text) => str_text(text, what),
        Err(_) => Err(wrong_type(expected, value).into()),
    }
}

/// Warns with `message` (a `UserWarning` from the caller's line) through Python's warnings
/// machinery, so filters and `pytest.warns` see it. What to warn about is decided by the core.
pub fn user_warning(py: Python<'_>, message: &str) -> PyResult<()> {
    // A C string cannot hold NUL; a key may.
    let message = CString::new(message.replace('\0', "\\0"))
        .map_err(|err| Error::Internal(format!("a warning kept a NUL byte: {err}")))?;
    PyErr::warn(py, &py.get_type::<PyUserWarning>(), &message, 1)
}
