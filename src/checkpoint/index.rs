//! The `model.safetensors.index.json` reader: which shard holds each tensor.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use ahash::RandomState;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use super::error::{bad, Problem};
use super::header::{name_hash, Text};
use crate::error::{Error, Result};

/// An index's `weight_map` as read: the shards' file names in the order they first appear
/// (a shard's id is its place in that order), an order-free [`Digest`] of its (tensor, shard id)
/// pairs, and either each tensor with the shard it is said to be in, or only its name's hash.
pub(super) struct WeightMap<'a> {
    pub(super) shards: Vec<Cow<'a, str>>,
    pub(super) digest: Digest,
    pub(super) entries: Vec<Listed<'a>>,
    pub(super) hashes: Vec<u64>,
}

/// One tensor of an index: its name, the shard it is said to be in, and the [`name_hash`] of
/// its name.
pub(super) struct Listed<'a> {
    pub(super) tensor: Cow<'a, str>,
    pub(super) shard: usize,
    pub(super) hash: u64,
}

/// An order-free digest of (tensor name, shard) pairs: their number and the sum of a 64-bit
/// mix of each name's (keyed, see [`name_hash`]) hash and its shard. Two different sets of pairs
/// of the same size have the same digest with a chance of about 2^-64, which no checkpoint can
/// be made to raise, as the hash keys are drawn when the process starts. So the index and the
/// headers are compared without a table of 10^5 names, and any difference is then found and
/// named by looking each name up (see `Checks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Digest {
    pub(super) count: u64,
    pub(super) sum: u64,
}

impl Digest {
    pub(super) fn add(&mut self, name_hash: u64, shard: usize) {
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
pub(super) fn parse_index<'a>(
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
pub(super) struct Index<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) place: &'a [usize],
}

impl<'a> Index<'a> {
    /// The index's entries, each with its shard's place among the files (read again: the first
    /// reading keeps only the digest, and this is needed only to name what is wrong).
    pub(super) fn entries(&self) -> Result<Vec<Listed<'a>>> {
        let mut entries = parse_index(self.text, &mut |_| {}, true)
            .map_err(|e| not_index(self.path, &e))?
            .entries;
        for listed in &mut entries {
            listed.shard = self.place[listed.shard];
        }
        Ok(entries)
    }
}

pub(super) fn not_index(path: &Path, e: &dyn fmt::Display) -> Error {
    bad(path, None, Problem::NotIndex(e.to_string()))
}
