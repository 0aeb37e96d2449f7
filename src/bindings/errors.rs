//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::PyErr;

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
