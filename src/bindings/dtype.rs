//! A dtype from Python: `None`, a `torch.dtype` or its name.

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::errors::wrong_type;
use crate::dtype::{self, Dtype};

/// The dtype a model is loaded in: `None`, a floating-point torch dtype or its name
/// (`torch.bfloat16`, `"bfloat16"`, `"BF16"`, `"bf16"`).
pub fn dtype_from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Dtype>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Some(dtype::parse_load_dtype(text.to_str()?)?));
    }
    // A torch.dtype prints as "torch.bfloat16"; anything else is refused by name.
    let type_name = value.get_type().name()?.to_string();
    if type_name == "dtype" {
        return Ok(Some(dtype::parse_load_dtype(&value.str()?.to_string())?));
    }
    Err(wrong_type(
        "dtype must be a torch.dtype or its name such as 'bfloat16'",
        value,
    )
    .into())
}
