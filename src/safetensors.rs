//! Per-tensor sizes from safetensors headers, without reading any tensor data.
//!
//! A safetensors file is an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
//! data. Only the first `8 + N` bytes of each file are read. The header is parsed here (with
//! `serde_json`) rather than by the `safetensors` crate so that every error names the file and
//! the tensor, and so that sub-byte tensors whose bits do not fill a byte round up (the crate
//! refuses them); the dtype list and bit sizes are the crate's `Dtype`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use ahash::RandomState;
use serde::de::{self, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;

pub use safetensors::Dtype;

use crate::error::{Error, Result};

/// The same cap as the safetensors crate: a header above 100 MB is refused before reading it.
pub const MAX_HEADER_SIZE: u64 = 100_000_000;
/// The index file transformers writes beside sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// One tensor of a header: its name, dtype, element count and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub elements: u64,
    pub bytes: u64,
}

fn bad(file: &Path, tensor: Option<&str>, message: impl fmt::Display) -> Error {
    Error::Checkpoint {
        file: file.display().to_string(),
        tensor: tensor.map(str::to_owned),
        message: message.to_string(),
    }
}

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
    let parsed: std::result::Result<Dtype, de::value::Error> =
        Dtype::deserialize(safetensors_name.into_deserializer());
    parsed.map_err(|_| Error::Invalid(format!("Unknown dtype '{text}'")))
}

/// Bytes of `elements` elements of `dtype`, rounded up to whole bytes.
pub fn dtype_bytes(dtype: Dtype, elements: u64) -> Option<u64> {
    let bits = elements.checked_mul(dtype.bitsize() as u64)?;
    Some(bits.div_ceil(8))
}

#[derive(Deserialize)]
struct RawInfo<'a> {
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

struct RawTensor<'a> {
    name: Cow<'a, str>,
    info: RawInfo<'a>,
}

/// Collects a header's entries in file order, skipping `__metadata__`, and names the tensor
/// whose entry fails to parse.
struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Vec<RawTensor<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensor names to {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut tensors = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let info = map
                .next_value::<RawInfo<'de>>()
                .map_err(|e| de::Error::custom(format!("tensor '{name}': {e}")))?;
            tensors.push(RawTensor { name, info });
        }
        Ok(tensors)
    }
}

/// The tensors of one header, in file (data offset) order, checked against the data section
/// of `data_len` bytes that follows it. `file` only names the file in errors.
pub fn parse_header(file: &Path, header: &[u8], data_len: u64) -> Result<Vec<TensorInfo>> {
    // One UTF-8 check of the whole header (fast), then a `str` reader that does not check
    // each string again.
    let text = std::str::from_utf8(header).map_err(|e| {
        bad(
            file,
            None,
            format!("header is not a valid safetensors JSON object: not UTF-8 ({e})"),
        )
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let raw = de::Deserializer::deserialize_map(&mut deserializer, HeaderVisitor)
        .and_then(|tensors| deserializer.end().map(|()| tensors))
        .map_err(|e| {
            bad(
                file,
                None,
                format!("header is not a valid safetensors JSON object: {e}"),
            )
        })?;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut spans = Vec::with_capacity(raw.len());
    for (index, RawTensor { name, info }) in raw.into_iter().enumerate() {
        let dtype = {
            let parsed: std::result::Result<Dtype, de::value::Error> =
                Dtype::deserialize(info.dtype.as_ref().into_deserializer());
            parsed.map_err(|_| bad(file, Some(&name), format!("unknown dtype '{}'", info.dtype)))?
        };
        let elements = info
            .shape
            .iter()
            .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
            .ok_or_else(|| {
                bad(
                    file,
                    Some(&name),
                    format!("shape {:?} overflows", info.shape),
                )
            })?;
        let bytes = dtype_bytes(dtype, elements).ok_or_else(|| {
            bad(
                file,
                Some(&name),
                format!("shape {:?} overflows", info.shape),
            )
        })?;
        let (begin, end) = info.data_offsets;
        if begin > end {
            return Err(bad(
                file,
                Some(&name),
                format!("data offsets [{begin}, {end}] end before they begin"),
            ));
        }
        if end > data_len {
            return Err(bad(
                file,
                Some(&name),
                format!("data offsets [{begin}, {end}] run past the end of the file (its data section is {data_len} bytes)"),
            ));
        }
        if end - begin != bytes {
            return Err(bad(
                file,
                Some(&name),
                format!(
                    "data offsets [{begin}, {end}] span {} bytes, but shape {:?} of {dtype} needs {bytes}",
                    end - begin,
                    info.shape
                ),
            ));
        }
        spans.push((begin, end, index));
        tensors.push(TensorInfo {
            name: name.into_owned(),
            dtype,
            elements,
            bytes,
        });
    }
    // Two tensors may not share bytes (empty tensors may sit anywhere).
    spans.sort_unstable();
    let mut last: Option<(u64, usize)> = None;
    for &(begin, end, index) in &spans {
        if begin == end {
            continue;
        }
        if let Some((last_end, last_index)) = last {
            if begin < last_end {
                return Err(bad(
                    file,
                    Some(&tensors[index].name),
                    format!(
                        "data offsets [{begin}, {end}] overlap those of tensor '{}'",
                        tensors[last_index].name
                    ),
                ));
            }
        }
        last = Some((end, index));
    }
    // File order, as the data lies.
    let mut ordered: Vec<Option<TensorInfo>> = tensors.into_iter().map(Some).collect();
    Ok(spans
        .iter()
        .filter_map(|&(_, _, index)| ordered.get_mut(index).and_then(Option::take))
        .collect())
}

/// Reads and parses the header of one safetensors file: 8 bytes of length, then the JSON.
pub fn read_file(path: &Path) -> Result<Vec<TensorInfo>> {
    let io = |e: std::io::Error| bad(path, None, format!("cannot read: {e}"));
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < 8 {
        return Err(bad(
            path,
            None,
            format!("file is {file_len} bytes, too short for a safetensors header (8-byte length first)"),
        ));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_SIZE {
        return Err(bad(
            path,
            None,
            format!("header length {header_len} is above the safetensors limit of {MAX_HEADER_SIZE} bytes"),
        ));
    }
    if header_len > file_len - 8 {
        return Err(bad(
            path,
            None,
            format!(
                "header length {header_len} runs past the end of the file ({file_len} bytes): truncated or not safetensors"
            ),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    parse_header(path, &header, file_len - 8 - header_len)
}

#[derive(Deserialize)]
struct Index<'a> {
    #[serde(borrow)]
    weight_map: WeightMap<'a>,
}

/// The index's `weight_map` in file order, without hashing 10^5 names into a map.
struct WeightMap<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for WeightMap<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WeightMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tensor names to shard files")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<Cow<'de, str>, Cow<'de, str>>()? {
                    out.push(entry);
                }
                Ok(WeightMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// What a checkpoint path names: the files to read, and, from an index, which file (by
/// position in `files`) each tensor is said to be in.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub files: Vec<PathBuf>,
    pub weight_map: Option<Vec<(String, usize)>>,
    pub index: Option<PathBuf>,
}

fn read_index(index: &Path) -> Result<Checkpoint> {
    let text = std::fs::read(index).map_err(|e| bad(index, None, format!("cannot read: {e}")))?;
    let parsed: Index = std::str::from_utf8(&text)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
        .map_err(|e| {
        bad(
            index,
            None,
            format!("not a safetensors index (a JSON object with a 'weight_map' object of tensor names to files): {e}"),
        )
    })?;
    let dir = index.parent().unwrap_or(Path::new(""));
    // Distinct shard names: entries come in runs of one shard, so compare with the last first.
    let mut names: Vec<&str> = Vec::new();
    let mut last: Option<&str> = None;
    for (_, file) in &parsed.weight_map.0 {
        if last != Some(file.as_ref()) {
            names.push(file.as_ref());
            last = Some(file.as_ref());
        }
    }
    names.sort_unstable();
    names.dedup();
    let mut files = Vec::with_capacity(names.len());
    for &name in &names {
        let path = dir.join(name);
        if !path.is_file() {
            let tensor = parsed
                .weight_map
                .0
                .iter()
                .filter(|(_, file)| file.as_ref() == name)
                .map(|(tensor, _)| tensor.as_ref())
                .min()
                .unwrap_or("");
            return Err(bad(
                index,
                Some(tensor),
                format!(
                    "the index names shard '{name}', which is missing ({})",
                    path.display()
                ),
            ));
        }
        files.push(path);
    }
    let position: HashMap<&str, usize> = names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let weight_map = parsed
        .weight_map
        .0
        .iter()
        .scan(None::<(&str, usize)>, |last, (tensor, file)| {
            let at = match *last {
                Some((text, at)) if text == file.as_ref() => at,
                _ => position.get(file.as_ref()).copied().unwrap_or(0),
            };
            *last = Some((file.as_ref(), at));
            Some((tensor.to_string(), at))
        })
        .collect();
    Ok(Checkpoint {
        files,
        weight_map: Some(weight_map),
        index: Some(index.to_owned()),
    })
}

/// Resolves a checkpoint path: a `.safetensors` file, an index file, or a directory holding
/// `model.safetensors.index.json` (or one `*.safetensors.index.json`), `model.safetensors`, or
/// exactly one `*.safetensors` file.
pub fn resolve(path: &Path) -> Result<Checkpoint> {
    if path.is_file() {
        if path.to_string_lossy().ends_with(".index.json") {
            return read_index(path);
        }
        return Ok(Checkpoint {
            files: vec![path.to_owned()],
            ..Checkpoint::default()
        });
    }
    if !path.is_dir() {
        return Err(bad(path, None, "no such file or directory"));
    }
    let index = path.join(INDEX_FILE);
    if index.is_file() {
        return read_index(&index);
    }
    let single = path.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(Checkpoint {
            files: vec![single],
            ..Checkpoint::default()
        });
    }
    let mut indexes = Vec::new();
    let mut singles = Vec::new();
    let entries =
        std::fs::read_dir(path).map_err(|e| bad(path, None, format!("cannot list: {e}")))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors.index.json") {
            indexes.push(entry.path());
        } else if name.ends_with(".safetensors") {
            singles.push(entry.path());
        }
    }
    match (indexes.as_slice(), singles.as_slice()) {
        ([index], _) => read_index(index),
        ([], [single]) => Ok(Checkpoint {
            files: vec![single.clone()],
            ..Checkpoint::default()
        }),
        _ => Err(bad(
            path,
            None,
            format!(
                "holds neither {INDEX_FILE} nor {SINGLE_FILE} (found {} index files and {} .safetensors files)",
                indexes.len(),
                singles.len()
            ),
        )),
    }
}

/// Files read by one thread before the next is worth starting: below this, one thread.
const FILES_PER_THREAD: usize = 8;

/// The headers of `files`, in order, read by up to `threads` threads. `progress(done, total)`
/// is called on the calling thread after each file.
pub fn read_files(
    files: &[PathBuf],
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<TensorInfo>>> {
    let total = files.len();
    let threads = threads.clamp(1, total.div_ceil(FILES_PER_THREAD).max(1));
    if threads == 1 {
        let mut out = Vec::with_capacity(total);
        for (done, file) in files.iter().enumerate() {
            out.push(read_file(file)?);
            progress(done + 1, total);
        }
        return Ok(out);
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<Result<Vec<TensorInfo>>>> = (0..total).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel();
        for _ in 0..threads {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = files.get(index) else { break };
                let result = read_file(file);
                let failed = result.is_err();
                if sender.send((index, result)).is_err() || failed {
                    // Stop the others early: the first error is reported.
                    next.store(total, Ordering::Relaxed);
                    break;
                }
            });
        }
        drop(sender);
        let mut done = 0;
        for (index, result) in receiver {
            done += 1;
            if let Some(slot) = out.get_mut(index) {
                *slot = Some(result);
            }
            progress(done, total);
        }
    });
    // The first error in file order, so the message does not depend on thread timing.
    let mut tensors = Vec::with_capacity(total);
    for (slot, file) in out.into_iter().zip(files) {
        match slot {
            Some(result) => tensors.push(result?),
            None => return Err(bad(file, None, "not read: an earlier file failed")),
        }
    }
    Ok(tensors)
}

/// Per-tensor bytes of a checkpoint, in model order (see [`crate::order::model_order`]).
/// `dtype` re-sizes floating-point tensors as loading with that `torch_dtype` would.
pub fn checkpoint_sizes(
    checkpoint: &Checkpoint,
    dtype: Option<Dtype>,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(String, u64)>> {
    let per_file = read_files(&checkpoint.files, threads, progress)?;
    let count: usize = per_file.iter().map(Vec::len).sum();
    // Names are checked for duplicates across every file (and inside one: JSON objects may
    // repeat a key, which a loader would resolve silently).
    let mut seen: HashMap<&str, usize, RandomState> =
        HashMap::with_capacity_and_hasher(count, RandomState::new());
    for (file_index, tensors) in per_file.iter().enumerate() {
        for tensor in tensors {
            if let Some(first) = seen.insert(&tensor.name, file_index) {
                let where_ = if first == file_index {
                    "twice in its header".to_owned()
                } else {
                    format!("also in '{}'", checkpoint.files[first].display())
                };
                return Err(bad(
                    &checkpoint.files[file_index],
                    Some(&tensor.name),
                    format!("duplicate tensor name ({where_})"),
                ));
            }
        }
    }
    if let (Some(weight_map), Some(index)) = (&checkpoint.weight_map, &checkpoint.index) {
        for (name, file) in weight_map {
            let found = seen.get(name.as_str()).copied();
            if found != Some(*file) {
                let actual = match found {
                    Some(other) => format!("it is in '{}'", checkpoint.files[other].display()),
                    None => "no shard has it".to_owned(),
                };
                let named = checkpoint.files[*file]
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(bad(
                    index,
                    Some(name),
                    format!("the index puts this tensor in '{named}', but {actual}"),
                ));
            }
        }
    }
    if count == 0 {
        let what = checkpoint
            .index
            .as_ref()
            .or(checkpoint.files.first())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "The checkpoint '{what}' holds no tensors"
        )));
    }
    drop(seen);
    let mut sizes = Vec::with_capacity(count);
    for tensor in per_file.into_iter().flatten() {
        let bytes = match dtype {
            Some(target) if is_floating(tensor.dtype) => {
                dtype_bytes(target, tensor.elements).unwrap_or(u64::MAX)
            }
            _ => tensor.bytes,
        };
        sizes.push((tensor.name, bytes));
    }
    crate::order::model_order(&mut sizes);
    Ok(sizes)
}

/// Names of input embeddings, by the last two components, in the models transformers ships.
const EMBEDDING_SUFFIXES: [&str; 5] = [
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "tok_embeddings.weight",
    "embed_in.weight",
];
/// The output head transformers ties to the input embeddings.
pub const HEAD: &str = "lm_head.weight";

/// The tied embedding pair of a checkpoint: when `config.json` in `dir` says
/// `tie_word_embeddings` (transformers' default when the key is absent), the input embedding
/// and `lm_head.weight` share one tensor, which the checkpoint usually stores once. No
/// `config.json`, or no input embedding among `sizes`: no ties.
pub fn config_ties(dir: &Path, sizes: &[(String, u64)]) -> Result<Vec<Vec<String>>> {
    let config_path = dir.join("config.json");
    let Ok(text) = std::fs::read(&config_path) else {
        return Ok(Vec::new());
    };
    let config: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| bad(&config_path, None, format!("is not valid JSON: {e}")))?;
    let tie = match config.get("tie_word_embeddings") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(
                &config_path,
                None,
                format!("'tie_word_embeddings' must be true or false, got {other}"),
            ))
        }
    };
    if !tie {
        return Ok(Vec::new());
    }
    let embedding = sizes.iter().map(|(n, _)| n).find(|n| {
        EMBEDDING_SUFFIXES
            .iter()
            .any(|s| n.as_str() == *s || n.ends_with(&format!(".{s}")))
    });
    Ok(embedding
        .filter(|n| n.as_str() != HEAD)
        .map(|n| vec![vec![n.clone(), HEAD.to_owned()]])
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.safetensors")
    }

    #[test]
    fn parses_in_offset_order() {
        let header = br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[2,18]},"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#;
        let t = parse_header(p(), header, 18).unwrap();
        assert_eq!(t[0].name, "a");
        assert_eq!(t[0].bytes, 2);
        assert_eq!(t[1].bytes, 16);
    }

    #[test]
    fn sub_byte_rounds_up() {
        let header = br#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]},"v":{"dtype":"F6_E2M3","shape":[5],"data_offsets":[2,6]}}"#;
        let t = parse_header(p(), header, 6).unwrap();
        assert_eq!(t[0].bytes, 2);
        assert_eq!(t[1].bytes, 4);
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

    #[test]
    fn tied_embeddings_from_config() {
        let dir = std::env::temp_dir().join(format!("devicemap-ties-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sizes = vec![
            ("model.embed_tokens.weight".to_owned(), 8),
            ("model.norm.weight".to_owned(), 2),
        ];
        assert!(
            config_ties(&dir, &sizes).unwrap().is_empty(),
            "no config.json: no ties"
        );
        std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
        assert_eq!(
            config_ties(&dir, &sizes).unwrap(),
            vec![vec![
                "model.embed_tokens.weight".to_owned(),
                HEAD.to_owned()
            ]]
        );
        std::fs::write(dir.join("config.json"), r#"{"tie_word_embeddings": false}"#).unwrap();
        assert!(config_ties(&dir, &sizes).unwrap().is_empty());
        std::fs::write(dir.join("config.json"), r#"{"tie_word_embeddings": "yes"}"#).unwrap();
        assert!(config_ties(&dir, &sizes).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dtype_names() {
        assert_eq!(parse_dtype("bfloat16").unwrap(), Dtype::BF16);
        assert_eq!(parse_dtype("torch.float8_e4m3fn").unwrap(), Dtype::F8_E4M3);
        assert_eq!(parse_dtype("F16").unwrap(), Dtype::F16);
        assert!(parse_dtype("float7").is_err());
        assert!(
            is_floating(Dtype::F8_E4M3) && !is_floating(Dtype::I64) && !is_floating(Dtype::C64)
        );
    }
}
