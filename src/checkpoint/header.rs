//! One safetensors header from its bytes.
//!
//! A safetensors file is an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
//! data. Only the first `8 + N` bytes of each file are read. The header is parsed here (with
//! `serde_json`) rather than by the `safetensors` crate so that every error names the file and
//! the tensor, and so that sub-byte tensors whose bits do not fill a byte round up (the crate
//! refuses them); the dtype list and bit sizes are the crate's `Dtype`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub use crate::dtype::Dtype;
use crate::dtype::{dtype_bytes, from_safetensors_name};

use super::error::{bad, CheckpointError, Problem};
use crate::error::{Error, Result};

/// The same cap as the safetensors crate: a header above 100 MB is refused before reading it.
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// One tensor of a header: its dtype, element count and bytes. Its name is kept in the
/// [`Header`] ([`Header::name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Where the name lies in the header's `names`.
    name: (u32, u32),
    pub dtype: Dtype,
    pub elements: u64,
    pub bytes: u64,
}

/// The checked tensors of one header, in file (data offset) order. Their names share one
/// string, so a header costs two allocations rather than one per tensor: 10^5 names would be
/// allocated on the reader threads and freed on the caller's, each free a slow cross-thread one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    names: String,
    pub tensors: Vec<TensorInfo>,
}

impl Header {
    /// Its names' string and each tensor's place in it: for a compact copy of a header read
    /// already (the Hub's cache, `hub/compact.rs`).
    pub(crate) fn parts(&self) -> (&str, impl Iterator<Item = ((u32, u32), &TensorInfo)>) {
        (&self.names, self.tensors.iter().map(|t| (t.name, t)))
    }

    /// A header from [`Header::parts`] (`(name, dtype, elements, bytes)` per tensor); `None`
    /// when a name does not lie in `names` on character boundaries.
    pub(crate) fn from_parts(
        names: String,
        tensors: impl Iterator<Item = ((u32, u32), Dtype, u64, u64)>,
    ) -> Option<Header> {
        let fits = |(begin, end): (u32, u32)| {
            begin <= end && names.get(begin as usize..end as usize).is_some()
        };
        let tensors = tensors
            .map(|(name, dtype, elements, bytes)| {
                fits(name).then_some(TensorInfo {
                    name,
                    dtype,
                    elements,
                    bytes,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Header { names, tensors })
    }

    pub fn name(&self, tensor: &TensorInfo) -> &str {
        let (begin, end) = tensor.name;
        &self.names[begin as usize..end as usize]
    }

    /// Each tensor with its name, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorInfo)> {
        self.tensors.iter().map(|t| (self.name(t), t))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Adds a tensor read elsewhere than a safetensors header (a PyTorch checkpoint's
    /// metadata) of file `file`: its name, dtype and shape. A shape whose bytes overflow is
    /// refused, naming the tensor.
    pub fn push(&mut self, file: &str, name: &str, dtype: Dtype, shape: &[u64]) -> Result<()> {
        let shown = || format!("{shape:?}");
        let overflows = || bad(file, Some(name), Problem::ShapeOverflows { shape: shown() });
        let elements = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(overflows)?;
        let bytes = dtype_bytes(dtype, elements).ok_or_else(overflows)?;
        let begin = self.names.len();
        self.names.push_str(name);
        let end = self.names.len();
        let range = u32::try_from(begin).ok().zip(u32::try_from(end).ok());
        let (begin, end) = range.ok_or_else(|| Error::from(CheckpointError::TooManyTensors))?;
        self.tensors.push(TensorInfo {
            name: (begin, end),
            dtype,
            elements,
            bytes,
        });
        Ok(())
    }
}

/// Text that borrows from the header when it holds no escapes (serde's own `Cow<str>` always
/// copies): tensor names and dtypes are read without an allocation each.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Dimensions kept inline for error messages; longer shapes are shown cut.
const SHAPE_SHOWN: usize = 8;

/// A shape folded into its element count as it is read (`None` once the product overflows),
/// without collecting a `Vec` per tensor.
struct Shape {
    elements: Option<u64>,
    dims: [u64; SHAPE_SHOWN],
    rank: usize,
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let shown = &self.dims[..self.rank.min(SHAPE_SHOWN)];
        if self.rank > SHAPE_SHOWN {
            write!(f, "{shown:?} (first {SHAPE_SHOWN} of {} dims)", self.rank)
        } else {
            write!(f, "{shown:?}")
        }
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of non-negative integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Shape, A::Error> {
                let mut shape = Shape {
                    elements: Some(1),
                    dims: [0; SHAPE_SHOWN],
                    rank: 0,
                };
                while let Some(dim) = seq.next_element::<u64>()? {
                    if let Some(slot) = shape.dims.get_mut(shape.rank) {
                        *slot = dim;
                    }
                    shape.rank += 1;
                    shape.elements = shape.elements.and_then(|e| e.checked_mul(dim));
                }
                Ok(shape)
            }
        }
        d.deserialize_seq(V)
    }
}

/// One tensor's entry: `{"dtype", "shape", "data_offsets"}`; other fields are ignored, as the
/// safetensors crate ignores them.
struct RawInfo<'a> {
    dtype: Cow<'a, str>,
    shape: Shape,
    data_offsets: (u64, u64),
}

impl<'de> Deserialize<'de> for RawInfo<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawInfo<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with dtype, shape and data_offsets")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawInfo<'de>, A::Error> {
                let (mut dtype, mut shape, mut offsets) = (None, None, None);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let duplicate = match key.as_ref() {
                        "dtype" => dtype.replace(map.next_value::<Text<'de>>()?.0).is_some(),
                        "shape" => shape.replace(map.next_value::<Shape>()?).is_some(),
                        "data_offsets" => {
                            offsets.replace(map.next_value::<(u64, u64)>()?).is_some()
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            false
                        }
                    };
                    if duplicate {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                }
                Ok(RawInfo {
                    dtype: dtype.ok_or_else(|| de::Error::missing_field("dtype"))?,
                    shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
                    data_offsets: offsets
                        .ok_or_else(|| de::Error::missing_field("data_offsets"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a header's entries in file order, skipping `__metadata__`, and checks each as it is
/// read (no entry is kept in between). A parse error names the tensor; a check's error is kept
/// in `failure` (serde's error type cannot carry it) and stops the parse.
struct HeaderVisitor<'f> {
    file: &'f str,
    data_len: u64,
    failure: &'f mut Option<Error>,
    /// Room for the names: they are a good part of a header's text.
    names_capacity: usize,
}

/// A header's tensors, and each one's data span `(begin, end, position)`.
type Entries = (Header, Vec<(u64, u64, usize)>);

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensor names to {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut header = Header {
            names: String::with_capacity(self.names_capacity),
            tensors: Vec::with_capacity(map.size_hint().unwrap_or(0)),
        };
        let mut spans = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let info = map
                .next_value::<RawInfo<'de>>()
                .map_err(|e| de::Error::custom(format!("tensor '{name}': {e}")))?;
            match check_entry(self.file, self.data_len, &name, &info) {
                Ok((dtype, elements, bytes)) => {
                    let position = header.tensors.len();
                    spans.push((info.data_offsets.0, info.data_offsets.1, position));
                    let begin = header.names.len() as u32;
                    header.names.push_str(&name);
                    header.tensors.push(TensorInfo {
                        name: (begin, header.names.len() as u32),
                        dtype,
                        elements,
                        bytes,
                    });
                }
                Err(error) => {
                    *self.failure = Some(error);
                    return Err(de::Error::custom("invalid tensor entry"));
                }
            }
        }
        Ok((header, spans))
    }
}

/// One entry's dtype, element count and bytes, checked against its offsets and the data
/// section of `data_len` bytes.
fn check_entry(
    file: &str,
    data_len: u64,
    name: &str,
    info: &RawInfo<'_>,
) -> Result<(Dtype, u64, u64)> {
    let dtype = from_safetensors_name(info.dtype.as_ref()).ok_or_else(|| {
        bad(
            file,
            Some(name),
            Problem::UnknownDtype(info.dtype.to_string()),
        )
    })?;
    let overflows = || {
        let shape = format!("{:?}", info.shape);
        bad(file, Some(name), Problem::ShapeOverflows { shape })
    };
    let elements = info.shape.elements.ok_or_else(overflows)?;
    let bytes = dtype_bytes(dtype, elements).ok_or_else(overflows)?;
    let (begin, end) = info.data_offsets;
    if begin > end {
        return Err(bad(
            file,
            Some(name),
            Problem::OffsetsReversed { begin, end },
        ));
    }
    if end > data_len {
        let problem = Problem::OffsetsPastEnd {
            begin,
            end,
            data_len,
        };
        return Err(bad(file, Some(name), problem));
    }
    if end - begin != bytes {
        let problem = Problem::WrongSpan {
            begin,
            end,
            shape: format!("{:?}", info.shape),
            dtype,
            bytes,
        };
        return Err(bad(file, Some(name), problem));
    }
    Ok((dtype, elements, bytes))
}

/// The tensors of one header, in file (data offset) order, checked against the data section
/// of `data_len` bytes that follows it. `file` only names the file in errors.
pub fn parse_header(file: &str, header: &[u8], data_len: u64) -> Result<Header> {
    // (`Header` keeps names by u32 offsets: the cap keeps them in range.)
    if header.len() as u64 > MAX_HEADER_SIZE {
        let len = header.len() as u64;
        return Err(bad(file, None, Problem::HeaderTooLarge { len }));
    }
    // One UTF-8 check of the whole header (fast), then a `str` reader that does not check
    // each string again.
    let text = std::str::from_utf8(header)
        .map_err(|e| bad(file, None, Problem::HeaderNotUtf8(e.to_string())))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut failure = None;
    let visitor = HeaderVisitor {
        file,
        data_len,
        failure: &mut failure,
        names_capacity: text.len() / 2,
    };
    let parsed = de::Deserializer::deserialize_map(&mut deserializer, visitor)
        .and_then(|entries| deserializer.end().map(|()| entries));
    let (mut parsed, mut spans) = match (parsed, failure) {
        (_, Some(error)) => return Err(error),
        (Ok(entries), None) => entries,
        (Err(e), None) => return Err(bad(file, None, Problem::HeaderNotJson(e.to_string()))),
    };
    // Headers written by safetensors list tensors in data order already: then nothing moves.
    let in_order = spans.windows(2).all(|w| w[0] <= w[1]);
    if !in_order {
        spans.sort_unstable();
    }
    // Two tensors may not share bytes (empty tensors may sit anywhere).
    let mut last: Option<(u64, usize)> = None;
    for &(begin, end, index) in &spans {
        if begin == end {
            continue;
        }
        if let Some((last_end, last_index)) = last {
            if begin < last_end {
                let name = |at: usize| parsed.name(&parsed.tensors[at]);
                let other = name(last_index).to_owned();
                let problem = Problem::Overlap { begin, end, other };
                return Err(bad(file, Some(name(index)), problem));
            }
        }
        last = Some((end, index));
    }
    if in_order {
        return Ok(parsed);
    }
    // File order, as the data lies.
    let mut ordered: Vec<Option<TensorInfo>> = parsed.tensors.drain(..).map(Some).collect();
    parsed.tensors = spans
        .iter()
        .filter_map(|&(_, _, index)| ordered.get_mut(index).and_then(Option::take))
        .collect();
    Ok(parsed)
}

/// A tensor's bytes as loaded: with `dtype`, floating-point tensors are re-sized as loading
/// with that `torch_dtype` would convert them.
pub fn loaded_bytes(tensor: &TensorInfo, dtype: Option<Dtype>) -> u64 {
    match dtype {
        None => tensor.bytes,
        Some(_) => crate::dtype::loaded_bytes(tensor.dtype, tensor.elements, dtype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static str {
        "x.safetensors"
    }

    #[test]
    fn parses_in_offset_order() {
        let header = br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[2,18]},"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#;
        let h = parse_header(p(), header, 18).unwrap();
        let got: Vec<(&str, u64)> = h.iter().map(|(name, t)| (name, t.bytes)).collect();
        assert_eq!(got, [("a", 2), ("b", 16)]);
    }

    #[test]
    fn escaped_names_are_read_unescaped() {
        let header = br#"{"x\u002ey\"z":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let h = parse_header(p(), header, 8).unwrap();
        let names: Vec<&str> = h.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["w", "x.y\"z"]);
    }

    #[test]
    fn sub_byte_rounds_up() {
        let header = br#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]},"v":{"dtype":"F6_E2M3","shape":[5],"data_offsets":[2,6]}}"#;
        let h = parse_header(p(), header, 6).unwrap();
        assert_eq!(h.tensors[0].bytes, 2);
        assert_eq!(h.tensors[1].bytes, 4);
    }

    #[test]
    fn errors_name_the_tensor() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"w":{"dtype":"F9","shape":[1],"data_offsets":[0,1]}}"#, "unknown dtype 'F9'"),
            (br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#, "needs 4"),
            (br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[96,100]}}"#, "run past the end"),
            (
                br#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}"#,
                "overflows",
            ),
            (
                br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
                "overlap those of tensor 'w'",
            ),
            (br#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, "tensor 'w'"),
        ];
        for (header, expected) in cases {
            let message = parse_header(p(), header, 16).unwrap_err().to_string();
            assert!(message.contains(expected), "{message} lacks {expected}");
            assert!(message.contains("x.safetensors"), "{message}");
        }
        for header in [&b"[1,2]"[..], b"{", b"{\"a\":1}", b"\xff"] {
            let message = parse_header(p(), header, 0).unwrap_err().to_string();
            assert!(message.contains("not a valid safetensors"), "{message}");
        }
    }
}
