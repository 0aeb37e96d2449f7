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
use std::sync::{mpsc, Mutex, OnceLock};

use ahash::RandomState;
use hashbrown::HashTable;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub use crate::dtype::Dtype;
use crate::dtype::{dtype_bytes, from_safetensors_name};

use crate::error::{Error, Result};
use crate::order::{model_order, FileOrder};

/// The same cap as the safetensors crate: a header above 100 MB is refused before reading it.
pub const MAX_HEADER_SIZE: u64 = 100_000_000;
/// The index file transformers writes beside sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// One tensor of a header: its dtype, element count and bytes. Its name is kept in the
/// [`Header`] ([`Header::name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Where the name lies in the header's `names`.
    name: (u32, u32),
    pub dtype: Dtype,
    pub elements: u64,
    pub bytes: u64,
    /// [`name_hash`] of the name, computed by the thread that read the header so that the
    /// duplicate check after reading does not hash 10^5 names on one thread.
    pub name_hash: u64,
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
}

/// The hash that the checks across files use for tensor names: keyed with random keys, once
/// per process, so that a checkpoint cannot be made for names whose hashes collide (which
/// would slow the tables down, or pass the index [`Digest`] with a wrong index).
pub fn name_hash(name: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(name)
}

fn bad(file: &Path, tensor: Option<&str>, message: impl fmt::Display) -> Error {
    Error::Checkpoint {
        file: file.display().to_string(),
        tensor: tensor.map(str::to_owned),
        message: message.to_string(),
    }
}

/// Text that borrows from the header when it holds no escapes (serde's own `Cow<str>` always
/// copies): tensor names and dtypes are read without an allocation each.
struct Text<'a>(Cow<'a, str>);

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
    file: &'f Path,
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
                        name_hash: name_hash(&name),
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
    file: &Path,
    data_len: u64,
    name: &str,
    info: &RawInfo<'_>,
) -> Result<(Dtype, u64, u64)> {
    let dtype = from_safetensors_name(info.dtype.as_ref())
        .ok_or_else(|| bad(file, Some(name), format!("unknown dtype '{}'", info.dtype)))?;
    let overflows = || {
        bad(
            file,
            Some(name),
            format!("shape {:?} overflows", info.shape),
        )
    };
    let elements = info.shape.elements.ok_or_else(overflows)?;
    let bytes = dtype_bytes(dtype, elements).ok_or_else(overflows)?;
    let (begin, end) = info.data_offsets;
    if begin > end {
        return Err(bad(
            file,
            Some(name),
            format!("data offsets [{begin}, {end}] end before they begin"),
        ));
    }
    if end > data_len {
        return Err(bad(
            file,
            Some(name),
            format!("data offsets [{begin}, {end}] run past the end of the file (its data section is {data_len} bytes)"),
        ));
    }
    if end - begin != bytes {
        return Err(bad(
            file,
            Some(name),
            format!(
                "data offsets [{begin}, {end}] span {} bytes, but shape {:?} of {dtype} needs {bytes}",
                end - begin,
                info.shape
            ),
        ));
    }
    Ok((dtype, elements, bytes))
}

/// The tensors of one header, in file (data offset) order, checked against the data section
/// of `data_len` bytes that follows it. `file` only names the file in errors.
pub fn parse_header(file: &Path, header: &[u8], data_len: u64) -> Result<Header> {
    // (`Header` keeps names by u32 offsets: the cap keeps them in range.)
    if header.len() as u64 > MAX_HEADER_SIZE {
        return Err(bad(
            file,
            None,
            format!(
                "header of {} bytes is above the safetensors limit of {MAX_HEADER_SIZE} bytes",
                header.len()
            ),
        ));
    }
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
        (Err(e), None) => {
            return Err(bad(
                file,
                None,
                format!("header is not a valid safetensors JSON object: {e}"),
            ))
        }
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
                return Err(bad(
                    file,
                    Some(name(index)),
                    format!(
                        "data offsets [{begin}, {end}] overlap those of tensor '{}'",
                        name(last_index)
                    ),
                ));
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

/// Reads and parses the header of one safetensors file: 8 bytes of length, then the JSON,
/// read into `buffer` (a thread that reads many files keeps one buffer instead of allocating,
/// and faulting in, fresh memory for each).
fn read_file(path: &Path, buffer: &mut Vec<u8>) -> Result<Header> {
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
    // Read into spare capacity: zeroing the buffer first would touch every page twice.
    buffer.clear();
    buffer.reserve(header_len as usize);
    file.take(header_len).read_to_end(buffer).map_err(io)?;
    if buffer.len() as u64 != header_len {
        return Err(bad(
            path,
            None,
            format!(
                "the file ended after {} of its {header_len} header bytes",
                buffer.len()
            ),
        ));
    }
    parse_header(path, buffer, file_len - 8 - header_len)
}

/// What a checkpoint path names: safetensors files, or an index whose `weight_map` names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    Files(Vec<PathBuf>),
    Index(PathBuf),
}

impl Checkpoint {
    /// The folder that holds the checkpoint (where `config.json` would be).
    pub fn dir(&self) -> PathBuf {
        let first = match self {
            Checkpoint::Files(files) => files.first(),
            Checkpoint::Index(index) => Some(index),
        };
        first
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Resolves a checkpoint path: a `.safetensors` file, an index file, or a directory holding
/// `model.safetensors.index.json` (or one `*.safetensors.index.json`), `model.safetensors`, or
/// exactly one `*.safetensors` file. Nothing is parsed yet.
pub fn resolve(path: &Path) -> Result<Checkpoint> {
    if path.is_file() {
        if path.to_string_lossy().ends_with(".index.json") {
            return Ok(Checkpoint::Index(path.to_owned()));
        }
        return Ok(Checkpoint::Files(vec![path.to_owned()]));
    }
    if !path.is_dir() {
        return Err(bad(path, None, "no such file or directory"));
    }
    let index = path.join(INDEX_FILE);
    if index.is_file() {
        return Ok(Checkpoint::Index(index));
    }
    let single = path.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(Checkpoint::Files(vec![single]));
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
        ([index], _) => Ok(Checkpoint::Index(index.clone())),
        ([], [single]) => Ok(Checkpoint::Files(vec![single.clone()])),
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

/// An index's `weight_map` as read: the shards' file names in the order they first appear
/// (a shard's id is its place in that order), an order-free [`Digest`] of its (tensor, shard id)
/// pairs, and either each tensor with the shard it is said to be in, or only its name's hash.
struct WeightMap<'a> {
    shards: Vec<Cow<'a, str>>,
    digest: Digest,
    entries: Vec<Listed<'a>>,
    hashes: Vec<u64>,
}

/// One tensor of an index: its name, the shard it is said to be in, and the [`name_hash`] of
/// its name.
struct Listed<'a> {
    tensor: Cow<'a, str>,
    shard: usize,
    hash: u64,
}

/// An order-free digest of (tensor name, shard) pairs: their number and the sum of a 64-bit
/// mix of each name's (keyed, see [`name_hash`]) hash and its shard. Two different sets of pairs
/// of the same size have the same digest with a chance of about 2^-64, which no checkpoint can
/// be made to raise, as the hash keys are drawn when the process starts. So the index and the
/// headers are compared without a table of 10^5 names, and any difference is then found and
/// named by looking each name up (see `Checks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Digest {
    count: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, name_hash: u64, shard: usize) {
        let shard = (shard as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.count += 1;
        self.sum = self.sum.wrapping_add(mix(name_hash ^ shard));
    }
}

/// SplitMix64's finalizer: every input bit flips about half the output bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads an index (`{"weight_map": {tensor: file}, ...}`) and hands each shard file to
/// `submit` the moment it first appears, so shard headers are read while the rest of the index
/// is still being parsed. `weight_map` says which level is read: the index, or its map;
/// `entries` whether the entries are kept.
struct IndexSeed<'s> {
    submit: &'s mut dyn FnMut(&str),
    weight_map: bool,
    entries: bool,
}

impl<'de> de::DeserializeSeed<'de> for IndexSeed<'_> {
    type Value = WeightMap<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IndexSeed<'_> {
    type Value = WeightMap<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.weight_map {
            "an object of tensor names to shard files"
        } else {
            "a JSON object with a 'weight_map' object of tensor names to files"
        })
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        if self.weight_map {
            return read_weight_map(map, self.submit, self.entries);
        }
        let mut weight_map = None;
        let submit = self.submit;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if key != "weight_map" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if weight_map.is_some() {
                return Err(de::Error::duplicate_field("weight_map"));
            }
            weight_map = Some(map.next_value_seed(IndexSeed {
                submit: &mut *submit,
                weight_map: true,
                entries: self.entries,
            })?);
        }
        weight_map.ok_or_else(|| de::Error::missing_field("weight_map"))
    }
}

fn read_weight_map<'de, A: MapAccess<'de>>(
    mut map: A,
    submit: &mut dyn FnMut(&str),
    keep_entries: bool,
) -> std::result::Result<WeightMap<'de>, A::Error> {
    let (mut entries, mut hashes) = (Vec::new(), Vec::new());
    if keep_entries {
        entries.reserve(map.size_hint().unwrap_or(0));
    }
    let mut digest = Digest::default();
    let mut shards: Vec<Cow<'de, str>> = Vec::new();
    let mut ids: HashMap<Cow<'de, str>, usize, RandomState> = HashMap::default();
    while let Some((Text(tensor), Text(file))) = map.next_entry::<Text<'de>, Text<'de>>()? {
        // Entries come in runs of one shard: compare with the last before hashing.
        let id = match shards.last() {
            Some(last) if *last == file => shards.len() - 1,
            _ => match ids.get(&file) {
                Some(&id) => id,
                None => {
                    submit(&file);
                    ids.insert(file.clone(), shards.len());
                    shards.push(file);
                    shards.len() - 1
                }
            },
        };
        let hash = name_hash(&tensor);
        digest.add(hash, id);
        if keep_entries {
            entries.push(Listed {
                tensor,
                shard: id,
                hash,
            });
        } else {
            hashes.push(hash);
        }
    }
    Ok(WeightMap {
        shards,
        digest,
        entries,
        hashes,
    })
}

/// Parses an index's text, handing each shard to `submit` as it first appears.
fn parse_index<'a>(
    text: &'a str,
    submit: &mut dyn FnMut(&str),
    entries: bool,
) -> serde_json::Result<WeightMap<'a>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = IndexSeed {
        submit,
        weight_map: false,
        entries,
    };
    let parsed = de::DeserializeSeed::deserialize(seed, &mut deserializer)?;
    deserializer.end()?;
    Ok(parsed)
}

/// An index, as the checks need it: its path (for errors) and text, and each shard id's place
/// among the files.
#[derive(Clone, Copy)]
struct Index<'a> {
    path: &'a Path,
    text: &'a str,
    place: &'a [usize],
}

impl<'a> Index<'a> {
    /// The index's entries, each with its shard's place among the files (read again: the first
    /// reading keeps only the digest, and this is needed only to name what is wrong).
    fn entries(&self) -> Result<Vec<Listed<'a>>> {
        let mut entries = parse_index(self.text, &mut |_| {}, true)
            .map_err(|e| not_index(self.path, &e))?
            .entries;
        for listed in &mut entries {
            listed.shard = self.place[listed.shard];
        }
        Ok(entries)
    }
}

fn not_index(path: &Path, e: &dyn fmt::Display) -> Error {
    bad(
        path,
        None,
        format!("not a safetensors index (a JSON object with a 'weight_map' object of tensor names to files): {e}"),
    )
}

/// Header read results as they arrive: `(submission id, result)`.
type Arrivals<'a> = &'a mut dyn Iterator<Item = (usize, Result<Header>)>;

/// Reads headers on `workers` threads while the calling thread runs `feed`, which hands out
/// files with `submit` (a file's id is its submission order; `feed` may still be parsing an
/// index). Then `consume` gets what `feed` returned, the number of files, and the results as
/// they arrive, so it can check early files while later ones are still being read. With no
/// workers, each file is read as it is submitted.
fn read_headers<T, R>(
    workers: usize,
    feed: impl FnOnce(&mut dyn FnMut(&Path)) -> T,
    consume: impl FnOnce(T, usize, Arrivals<'_>) -> R,
) -> R {
    if workers == 0 {
        let mut results = Vec::new();
        let mut buffer = Vec::new();
        let fed = feed(&mut |file| results.push(read_file(file, &mut buffer)));
        let total = results.len();
        return consume(fed, total, &mut results.into_iter().enumerate());
    }
    let (jobs, queue) = mpsc::channel::<(usize, PathBuf)>();
    let queue = Mutex::new(queue);
    let (finished, done) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (queue, finished) = (&queue, finished.clone());
            scope.spawn(move || {
                let mut buffer = Vec::new();
                loop {
                    // The lock is held only to take the next job off the queue.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => break,
                    };
                    let Ok((id, file)) = job else { break };
                    if finished.send((id, read_file(&file, &mut buffer))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(finished);
        let mut submitted = 0;
        let fed = feed(&mut |file| {
            // A send fails only when every worker is gone; then the results come up short,
            // which `Checks::finish` reports.
            let _ = jobs.send((submitted, file.to_owned()));
            submitted += 1;
        });
        drop(jobs);
        consume(fed, submitted, &mut done.iter())
    })
}

/// Files read by one thread before the next is worth starting: below this, one thread.
const FILES_PER_THREAD: usize = 8;

/// A tensor's bytes as loaded: with `dtype`, floating-point tensors are re-sized as loading
/// with that `torch_dtype` would convert them.
pub fn loaded_bytes(tensor: &TensorInfo, dtype: Option<Dtype>) -> u64 {
    match dtype {
        None => tensor.bytes,
        Some(_) => crate::dtype::loaded_bytes(tensor.dtype, tensor.elements, dtype),
    }
}

/// What `checkpoint_sizes` shows its observer of each file, once it and the files before it
/// passed the checks that can be made so far (a check against the index may only settle after
/// the last file, and its error then ends the call): its tensors, and their model order (positions into `header.tensors`) while the files so far
/// follow the model (see [`FileOrder`]). While every file has an `order`, the files' orders put
/// one after another are the order of the result.
pub struct Observed<'a> {
    pub header: &'a Header,
    pub order: Option<&'a [u32]>,
    /// How many files the checkpoint has.
    pub files: usize,
}

/// A tensor's size as loaded, and its place in the order the observer saw the tensors (file by
/// file, each in file order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub seen: u32,
}

/// A checkpoint's checked headers and the model order of their tensors (see
/// [`crate::order::model_order`]).
#[derive(Debug)]
pub struct CheckpointSizes {
    headers: Vec<Header>,
    /// `(file, position in its header)` of each tensor, in model order.
    order: Vec<(u32, u32)>,
    /// Where each file's tensors start in the order the observer saw them.
    seen: Vec<u32>,
    dtype: Option<Dtype>,
}

impl CheckpointSizes {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Each tensor's name and size as loaded, in model order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Size)> {
        self.order.iter().map(|&(file, at)| {
            let header = &self.headers[file as usize];
            let tensor = &header.tensors[at as usize];
            let size = Size {
                bytes: loaded_bytes(tensor, self.dtype),
                seen: self.seen[file as usize] + at,
            };
            (header.name(tensor), size)
        })
    }

    /// `(name, bytes as loaded)` in model order.
    pub fn to_vec(&self) -> Vec<(String, u64)> {
        self.iter()
            .map(|(name, size)| (name.to_owned(), size.bytes))
            .collect()
    }
}

/// Per-tensor bytes of a checkpoint, in model order. `dtype` re-sizes floating-point tensors as
/// loading with that `torch_dtype` would. Headers are read by up to `threads` threads. On the
/// calling thread, `progress(done, total)` is called as files are read, and `observe` with each
/// file (see [`Observed`]), in file order, while later files may still be read (so a caller can
/// convert names, and while the files follow the model, build its result, meanwhile).
pub fn checkpoint_sizes(
    checkpoint: &Checkpoint,
    dtype: Option<Dtype>,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(Observed<'_>),
) -> Result<CheckpointSizes> {
    let mut file_order = FileOrder::default();
    let mut orders: Vec<Option<Vec<u32>>> = Vec::new();
    let mut observe_file = |header: &Header, files: usize| {
        let names: Vec<&str> = header.iter().map(|(name, _)| name).collect();
        let order = file_order.add(&names);
        observe(Observed {
            header,
            order: order.as_deref(),
            files,
        });
        orders.push(order);
    };
    let headers = match checkpoint {
        Checkpoint::Files(files) => read_headers(
            threads.min(files.len() / FILES_PER_THREAD),
            |submit| files.iter().for_each(|file| submit(file)),
            |(), total, arrivals| {
                let order: Vec<usize> = (0..total).collect();
                Checks::new(files, None).run(&order, arrivals, progress, &mut observe_file)
            },
        )?,
        Checkpoint::Index(index) => index_headers(index, threads, progress, &mut observe_file)?,
    };
    let mut seen = Vec::with_capacity(headers.len());
    let mut count = 0u32;
    for header in &headers {
        seen.push(count);
        count = u32::try_from(header.len())
            .ok()
            .and_then(|len| count.checked_add(len))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "The checkpoint holds more than {} tensors",
                    u32::MAX
                ))
            })?;
    }
    let mut order = Vec::with_capacity(count as usize);
    if orders.iter().all(Option::is_some) {
        for (file, positions) in orders.iter().flatten().enumerate() {
            order.extend(positions.iter().map(|&at| (file as u32, at)));
        }
    } else {
        let mut names = Vec::with_capacity(count as usize);
        let mut places = Vec::with_capacity(count as usize);
        for (file, header) in headers.iter().enumerate() {
            for (at, (name, _)) in header.iter().enumerate() {
                names.push(name);
                places.push((file as u32, at as u32));
            }
        }
        order.extend(model_order(&names).iter().map(|&i| places[i as usize]));
    }
    Ok(CheckpointSizes {
        headers,
        order,
        seen,
        dtype,
    })
}

/// The checked headers of the shards an index names, in file-name order.
fn index_headers(
    index: &Path,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(&Header, usize),
) -> Result<Vec<Header>> {
    let text = std::fs::read(index).map_err(|e| bad(index, None, format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&text).map_err(|e| not_index(index, &e))?;
    let dir = index.parent().unwrap_or(Path::new(""));
    read_headers(
        threads.max(1),
        |submit| parse_index(text, &mut |file: &str| submit(&dir.join(file)), false),
        |parsed, _, arrivals| {
            let WeightMap {
                shards,
                digest,
                mut hashes,
                ..
            } = parsed.map_err(|e| not_index(index, &e))?;
            // Names with distinct hashes are distinct: then the index lists no tensor twice.
            hashes.sort_unstable();
            let distinct = hashes.windows(2).all(|pair| pair[0] != pair[1]);
            drop(hashes);
            // Shards by file name, so errors and the order of equal names do not depend on
            // the order the index happens to list them in.
            let mut by_name: Vec<usize> = (0..shards.len()).collect();
            by_name.sort_unstable_by(|&a, &b| shards[a].cmp(&shards[b]));
            let mut place = vec![0; shards.len()];
            for (at, &id) in by_name.iter().enumerate() {
                place[id] = at;
            }
            let files: Vec<PathBuf> = by_name
                .iter()
                .map(|&id| dir.join(shards[id].as_ref()))
                .collect();
            let index = Index {
                path: index,
                text,
                place: &place,
            };
            for (at, file) in files.iter().enumerate() {
                if !file.is_file() {
                    let entries = index.entries()?;
                    let tensor = entries
                        .iter()
                        .filter(|listed| listed.shard == at)
                        .map(|listed| listed.tensor.as_ref())
                        .min()
                        .unwrap_or("");
                    return Err(bad(
                        index.path,
                        Some(tensor),
                        format!(
                            "the index names shard '{}', which is missing ({})",
                            shards[by_name[at]],
                            file.display()
                        ),
                    ));
                }
            }
            let check = IndexCheck {
                index,
                ids: by_name,
                listed: digest,
                distinct,
                read: Digest::default(),
                table: None,
            };
            Checks::new(&files, Some(check)).run(&place, arrivals, progress, observe)
        },
    )
}

/// The checks across files, fed the files in order: no tensor name twice (JSON objects may
/// repeat a key, which a loader would resolve silently), and with an index, each tensor in the
/// shard the index names and every tensor the index names found. Fed in file order, the first
/// error found never depends on which file a thread finished first.
struct Checks<'a> {
    files: &'a [PathBuf],
    per_file: Vec<Header>,
    /// Names seen so far, as (file, position), hashed with the hashes the reader threads
    /// computed: all of them without an index, those it does not list once the index is checked
    /// name by name (none while it is checked by digest).
    seen: HashTable<(u32, u32)>,
    index: Option<IndexCheck<'a>>,
}

/// How headers are checked against their index. First by [`Digest`]: the headers' (name,
/// shard) pairs are summed, to compare with the index's at the end; if the index's names are
/// distinct and the digests equal, the headers hold exactly the index's pairs, so their names
/// are distinct too and each is in the shard the index names. When that is not shown (digests
/// that differ, which tensors the index does not list also cause, names of the index that share
/// a hash, a file that cannot be read), every name is looked up in a table of the index, the
/// files so far again and the rest as they come, so the error is the first in file order and
/// names the tensor, whatever the path taken.
struct IndexCheck<'a> {
    index: Index<'a>,
    /// Each file's shard id.
    ids: Vec<usize>,
    /// The digest of the index, and whether its names' hashes are distinct.
    listed: Digest,
    distinct: bool,
    /// The digest of the headers read so far.
    read: Digest,
    table: Option<IndexTable<'a>>,
}

/// An index's entries by name, and the file each was found in (`u32::MAX`: not yet).
struct IndexTable<'a> {
    path: &'a Path,
    entries: Vec<Listed<'a>>,
    by_name: HashTable<u32>,
    found: Vec<u32>,
}

impl<'a> IndexTable<'a> {
    fn new(path: &'a Path, entries: Vec<Listed<'a>>) -> Result<Self> {
        let mut by_name = HashTable::with_capacity(entries.len());
        for (at, listed) in entries.iter().enumerate() {
            let same = |&other: &u32| entries[other as usize].tensor == listed.tensor;
            if by_name.find(listed.hash, same).is_some() {
                return Err(bad(
                    path,
                    Some(&listed.tensor),
                    "the index lists this tensor twice",
                ));
            }
            by_name.insert_unique(listed.hash, at as u32, |&e: &u32| entries[e as usize].hash);
        }
        Ok(IndexTable {
            path,
            found: vec![u32::MAX; entries.len()],
            entries,
            by_name,
        })
    }
}

impl<'a> Checks<'a> {
    fn new(files: &'a [PathBuf], index: Option<IndexCheck<'a>>) -> Self {
        Checks {
            files,
            per_file: Vec::with_capacity(files.len()),
            seen: HashTable::new(),
            index,
        }
    }

    /// Checks the results as they arrive (`place[id]`: the file's position in `files`), each
    /// file once all before it are checked, and shows it to `observe` (with the number of
    /// files); then that nothing the index names is missing.
    fn run(
        mut self,
        place: &[usize],
        arrivals: Arrivals<'_>,
        progress: &mut dyn FnMut(usize, usize),
        observe: &mut dyn FnMut(&Header, usize),
    ) -> Result<Vec<Header>> {
        let total = self.files.len();
        let mut early: Vec<Option<Result<Header>>> = (0..total).map(|_| None).collect();
        for (done, (id, result)) in arrivals.enumerate() {
            progress(done + 1, total);
            if let Some(slot) = place.get(id).and_then(|&at| early.get_mut(at)) {
                *slot = Some(result);
            }
            let mut next = self.per_file.len();
            while let Some(result) = early.get_mut(next).and_then(Option::take) {
                let header = match result {
                    Ok(header) => header,
                    Err(error) => {
                        // An error in an earlier file, found name by name, comes first.
                        self.by_name()?;
                        return Err(error);
                    }
                };
                self.add(header)?;
                if let Some(header) = self.per_file.last() {
                    observe(header, total);
                }
                next += 1;
            }
        }
        self.finish()
    }

    /// From here on, checks every name against a table of the index, starting over with the
    /// files so far. An error among them is the one the name-by-name checks meet first.
    fn by_name(&mut self) -> Result<()> {
        let Some(check) = self.index.as_mut().filter(|c| c.table.is_none()) else {
            return Ok(());
        };
        check.table = Some(IndexTable::new(check.index.path, check.index.entries()?)?);
        self.seen = HashTable::new();
        for header in std::mem::take(&mut self.per_file) {
            self.add(header)?;
        }
        Ok(())
    }

    fn add(&mut self, header: Header) -> Result<()> {
        let file = self.per_file.len();
        if let Some(check) = self.index.as_mut().filter(|c| c.table.is_none()) {
            // By digest: the pairs are summed; names are compared only if that check fails.
            let shard = check.ids[file];
            for tensor in &header.tensors {
                check.read.add(tensor.name_hash, shard);
            }
            self.per_file.push(header);
            return Ok(());
        }
        if file == 0 && self.index.is_none() {
            // Shards are about the same size: room for all without growing step by step.
            let guess = header.len().saturating_mul(self.files.len());
            // (The table is still empty: the hasher is never called.)
            self.seen.reserve(guess.min(1 << 24), |_| 0);
        }
        let per_file = &self.per_file;
        let at_place = |(f, p): (u32, u32)| -> (&str, u64) {
            let header = if f as usize == file {
                &header
            } else {
                &per_file[f as usize]
            };
            let tensor = &header.tensors[p as usize];
            (header.name(tensor), tensor.name_hash)
        };
        for (position, (name, info)) in header.iter().enumerate() {
            if let Some(IndexCheck {
                table: Some(table), ..
            }) = &mut self.index
            {
                let listed = table.by_name.find(info.name_hash, |&e| {
                    table.entries[e as usize].tensor == name
                });
                if let Some(&e) = listed {
                    let e = e as usize;
                    let first = table.found[e];
                    if first != u32::MAX {
                        return Err(duplicate(self.files, first as usize, file, name));
                    }
                    let named = table.entries[e].shard;
                    if named != file {
                        return Err(bad(
                            table.path,
                            Some(name),
                            format!(
                                "the index puts this tensor in '{}', but it is in '{}'",
                                file_name(&self.files[named]),
                                self.files[file].display()
                            ),
                        ));
                    }
                    table.found[e] = file as u32;
                    continue;
                }
            }
            let found = self
                .seen
                .find(info.name_hash, |&other| at_place(other).0 == name);
            if let Some(&(first, _)) = found {
                return Err(duplicate(self.files, first as usize, file, name));
            }
            self.seen
                .insert_unique(info.name_hash, (file as u32, position as u32), |&other| {
                    at_place(other).1
                });
        }
        self.per_file.push(header);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Header>> {
        if self.per_file.len() < self.files.len() {
            return Err(Error::Internal(
                "a header reader thread stopped before reading every file".to_owned(),
            ));
        }
        if self
            .index
            .as_ref()
            .is_some_and(|c| c.table.is_none() && !(c.distinct && c.listed == c.read))
        {
            self.by_name()?;
        }
        if let Some(IndexCheck {
            table: Some(table), ..
        }) = &self.index
        {
            let missing = table.found.iter().position(|&f| f == u32::MAX);
            if let Some(listed) = missing.map(|e| &table.entries[e]) {
                return Err(bad(
                    table.path,
                    Some(&listed.tensor),
                    format!(
                        "the index puts this tensor in '{}', but no shard has it",
                        file_name(&self.files[listed.shard])
                    ),
                ));
            }
        }
        if self.per_file.iter().all(Header::is_empty) {
            let what = self
                .index
                .as_ref()
                .map(|check| check.index.path)
                .or(self.files.first().map(PathBuf::as_path))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(Error::Invalid(format!(
                "The checkpoint '{what}' holds no tensors"
            )));
        }
        Ok(self.per_file)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn duplicate(files: &[PathBuf], first: usize, file: usize, name: &str) -> Error {
    let where_ = if first == file {
        "twice in its header".to_owned()
    } else {
        format!("also in '{}'", files[first].display())
    };
    bad(
        &files[file],
        Some(name),
        format!("duplicate tensor name ({where_})"),
    )
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
        assert_eq!(h.tensors[1].name_hash, name_hash("x.y\"z"));
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

    #[test]
    fn readers_give_results_by_submission_order() {
        let dir = std::env::temp_dir().join(format!("devicemap-readers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<PathBuf> = (0..20)
            .map(|i| {
                let path = dir.join(format!("{i}.safetensors"));
                let header = if i == 7 {
                    "[]".to_owned()
                } else {
                    format!(
                        r#"{{"t{i}":{{"dtype":"F32","shape":[{i}],"data_offsets":[0,{}]}}}}"#,
                        4 * i
                    )
                };
                let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
                bytes.extend_from_slice(header.as_bytes());
                bytes.resize(bytes.len() + 4 * i, 0);
                std::fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        for workers in [0, 1, 3] {
            let (fed, total, mut results) = read_headers(
                workers,
                |submit| {
                    files.iter().for_each(|f| submit(f));
                    "fed"
                },
                |fed, total, arrivals| (fed, total, arrivals.collect::<Vec<_>>()),
            );
            assert_eq!((fed, total), ("fed", 20), "{workers} workers");
            results.sort_by_key(|(id, _)| *id);
            assert_eq!(results.len(), 20);
            for (i, (id, result)) in results.iter().enumerate() {
                assert_eq!(*id, i);
                match result {
                    Ok(header) => {
                        assert_eq!(header.name(&header.tensors[0]), format!("t{i}"))
                    }
                    Err(e) => assert!(i == 7 && e.to_string().contains("7.safetensors"), "{e}"),
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
}
