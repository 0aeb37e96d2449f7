//! A dtype from Python: `None`, a `torch.dtype` or its name.

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::errors::{str_text, wrong_type};
use crate::dtype::{self, Dtype};
use crate::plan::Resize;

/// The name a dtype argument gives: `None`, a name (`"bfloat16"`, `"BF16"`, `"bf16"`), or a
/// `torch.dtype` (read by its `str()`, `"torch.bfloat16"`). The core parses it.
pub fn dtype_name(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Some(str_text(text, "dtype")?.to_owned()));
    }
    // A torch.dtype prints as "torch.bfloat16"; anything else is refused by name.
    if value.get_type().name()? == "dtype" {
        return Ok(Some(value.str()?.to_string()));
    }
    Err(wrong_type(
        "dtype must be a torch.dtype or its name such as 'bfloat16'",
        value,
    )
    .into())
}

/// The dtype a model is loaded in: `None`, a floating-point torch dtype or its name
/// (`torch.bfloat16`, `"bfloat16"`, `"BF16"`, `"bf16"`).
pub fn dtype_from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Dtype>> {
    match dtype_name(value)? {
        Some(name) => Ok(Some(dtype::parse_load_dtype(&name)?)),
        None => Ok(None),
    }
}

/// The `dtype` of accelerate's `compute_module_sizes` (what the loader integrations size a
/// module with): any torch dtype or its name, integer ones included (`torch.int8` sizes a
/// model an 8-bit quantizer will load); floating-point tensors count at most its size.
pub fn accelerate_dtype(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Resize>> {
    match dtype_name(value)? {
        Some(name) => Ok(Some(Resize::AtMost(dtype::parse_dtype(&name)?))),
        None => Ok(None),
    }
}
