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

/// A dtype from its safetensors name (`"BF16"`), its torch name (`"bfloat16"`,
/// `"torch.bfloat16"`, `"float8_e4m3fn"`) or a common short name (`"bf16"`, `"fp16"`,
/// `"fp8"`: the E4M3 format inference engines mean by it), in any case.
pub fn parse_dtype(text: &str) -> Result<Dtype> {
    let name = text
        .strip_prefix("torch.")
        .unwrap_or(text)
        .to_ascii_lowercase();
    let safetensors_name = match name.as_str() {
        "bool" => "BOOL",
        "uint8" | "u8" => "U8",
        "int8" | "i8" => "I8",
        "int16" | "short" | "i16" => "I16",
        "uint16" | "u16" => "U16",
        "int32" | "int" | "i32" => "I32",
        "uint32" | "u32" => "U32",
        "int64" | "long" | "i64" => "I64",
        "uint64" | "u64" => "U64",
        "float16" | "half" | "fp16" | "f16" => "F16",
        "bfloat16" | "bf16" => "BF16",
        "float32" | "float" | "fp32" | "f32" => "F32",
        "float64" | "double" | "fp64" | "f64" => "F64",
        "complex64" => "C64",
        "float8_e4m3fn" | "fp8" | "float8" | "fp8_e4m3" | "e4m3" => "F8_E4M3",
        "float8_e4m3fnuz" => "F8_E4M3FNUZ",
        "float8_e5m2" | "fp8_e5m2" | "e5m2" => "F8_E5M2",
        "float8_e5m2fnuz" => "F8_E5M2FNUZ",
        "float8_e8m0fnu" => "F8_E8M0",
        "float4_e2m1fn_x2" | "fp4" => "F4",
        other => other,
    };
    from_safetensors_name(safetensors_name)
        .or_else(|| from_safetensors_name(&safetensors_name.to_ascii_uppercase()))
        .ok_or_else(|| Error::UnknownDtype {
            text: text.to_owned(),
        })
}

/// The dtype a model is loaded in (`torch_dtype`): loading converts floating-point tensors
/// only, so the target must be a floating-point dtype (`int8` or `bool` would re-size floats
/// to a dtype no loader converts them to).
pub fn parse_load_dtype(text: &str) -> Result<Dtype> {
    let dtype = parse_dtype(text)?;
    if !is_floating(dtype) {
        return Err(Error::NotAFloatDtype {
            text: text.to_owned(),
        });
    }
    Ok(dtype)
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
        assert_eq!(parse_dtype("bf16").unwrap(), Dtype::BF16);
        assert_eq!(parse_dtype("fp8").unwrap(), Dtype::F8_E4M3);
        assert_eq!(parse_dtype("f8_e5m2").unwrap(), Dtype::F8_E5M2);
        assert_eq!(parse_dtype("int8").unwrap(), Dtype::I8);
        assert_eq!(parse_dtype("FP8").unwrap(), Dtype::F8_E4M3);
        assert!(parse_dtype("int4").is_err());
        assert_eq!(parse_load_dtype("fp16").unwrap(), Dtype::F16);
        assert!(matches!(
            parse_load_dtype("int8"),
            Err(Error::NotAFloatDtype { .. })
        ));
        assert!(parse_load_dtype("bool").is_err());
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
