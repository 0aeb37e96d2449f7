//! The one dtype table: names (safetensors' and torch's), sizes, and re-sizing to the dtype a
//! model is loaded in. Headers, the built-in examples and modules all size tensors through it.

use serde::de::{value, IntoDeserializer};
use serde::Deserialize;

pub use safetensors::Dtype;

use crate::error::{Error, Result};

/// Whether loading with another `torch_dtype` converts tensors of this dtype: torch's
/// `is_floating_point()` (every float, FP8 and sub-byte float included; not complex, ints, bool).
pub fn is_floating(dtype: Dtype) -> bool {
    matches!(
        dtype,
        Dtype::F4
            | Dtype::F6_E2M3
            | Dtype::F6_E3M2
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3
            | Dtype::F8_E8M0
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ
            | Dtype::F16
            | Dtype::BF16
            | Dtype::F32
            | Dtype::F64
    )
}

/// A dtype from its safetensors name (`"BF16"`) or its torch name (`"bfloat16"`,
/// `"torch.bfloat16"`, `"float8_e4m3fn"`).
pub fn parse_dtype(text: &str) -> Result<Dtype> {
    let name = text.strip_prefix("torch.").unwrap_or(text);
    let safetensors_name = match name {
        "bool" => "BOOL",
        "uint8" => "U8",
        "int8" => "I8",
        "int16" | "short" => "I16",
        "uint16" => "U16",
        "int32" | "int" => "I32",
        "uint32" => "U32",
        "int64" | "long" => "I64",
        "uint64" => "U64",
        "float16" | "half" => "F16",
        "bfloat16" => "BF16",
        "float32" | "float" => "F32",
        "float64" | "double" => "F64",
        "complex64" => "C64",
        "float8_e4m3fn" => "F8_E4M3",
        "float8_e4m3fnuz" => "F8_E4M3FNUZ",
        "float8_e5m2" => "F8_E5M2",
        "float8_e5m2fnuz" => "F8_E5M2FNUZ",
        "float8_e8m0fnu" => "F8_E8M0",
        "float4_e2m1fn_x2" => "F4",
        other => other,
    };
    from_safetensors_name(safetensors_name).ok_or_else(|| Error::UnknownDtype {
        text: text.to_owned(),
    })
}

/// A dtype from the name a safetensors header gives it (`"BF16"`, `"F8_E4M3"`).
pub fn from_safetensors_name(name: &str) -> Option<Dtype> {
    let parsed: std::result::Result<Dtype, value::Error> =
        Dtype::deserialize(name.into_deserializer());
    parsed.ok()
}

/// Bytes of `elements` elements of `dtype`, rounded up to whole bytes.
pub fn dtype_bytes(dtype: Dtype, elements: u64) -> Option<u64> {
    let bits = elements.checked_mul(dtype.bitsize() as u64)?;
    Some(bits.div_ceil(8))
}

/// Bytes of `elements` elements stored as `stored`, once loaded with `target` as `torch_dtype`:
/// floating-point tensors are converted to it, the rest keep their dtype. Saturates at
/// `u64::MAX` (a size no budget holds).
pub fn loaded_bytes(stored: Dtype, elements: u64, target: Option<Dtype>) -> u64 {
    let dtype = match target {
        Some(target) if is_floating(stored) => target,
        _ => stored,
    };
    dtype_bytes(dtype, elements).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_dtype("bfloat16").unwrap(), Dtype::BF16);
        assert_eq!(parse_dtype("torch.float8_e4m3fn").unwrap(), Dtype::F8_E4M3);
        assert_eq!(parse_dtype("F16").unwrap(), Dtype::F16);
        assert!(parse_dtype("float7").is_err());
        assert!(
            is_floating(Dtype::F8_E4M3) && !is_floating(Dtype::I64) && !is_floating(Dtype::C64)
        );
    }

    #[test]
    fn resizing_converts_floats_only() {
        assert_eq!(loaded_bytes(Dtype::BF16, 10, Some(Dtype::F32)), 40);
        assert_eq!(loaded_bytes(Dtype::I64, 10, Some(Dtype::F16)), 80);
        assert_eq!(loaded_bytes(Dtype::F4, 3, None), 2);
        assert_eq!(loaded_bytes(Dtype::F32, u64::MAX, None), u64::MAX);
    }
}
