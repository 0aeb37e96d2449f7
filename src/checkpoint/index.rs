//! The `model.safetensors.index.json` reader: which shard holds each tensor.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use ahash::RandomState;
use hashbrown::HashTable;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use super::error::{bad, Problem};
use super::header::Text;
use crate::error::{Error, Result};

/// An index's `weight_map` as read: the shards' file names in the order they first appear
/// (a shard's id is its place in that order), and each tensor with the shard it is said to be
/// in.
pub(super) struct WeightMap<'a> {
    pub(super) shards: Vec<Cow<'a, str>>,
    pub(super) entries: Vec<Listed<'a>>,
}

/// One tensor of an index: its name, and the shard it is said to be in (its id while the index
/// is read, then its file's place among the checkpoint's files).
pub(super) struct Listed<'a> {
    pub(super) tensor: Cow<'a, str>,
    pub(super) shard: usize,
}

/// Reads an index (`{"weight_map": {tensor: file}, ...}`) and hands each shard file to
/// `submit` the moment it first appears, so shard headers are read while the rest of the index
/// is still being parsed. `weight_map` says which level is read: the index, or its map.
struct IndexSeed<'s> {
    submit: &'s mut dyn FnMut(&str),
    weight_map: bool,
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
            return read_weight_map(map, self.submit);
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
            })?);
        }
        weight_map.ok_or_else(|| de::Error::missing_field("weight_map"))
    }
}

fn read_weight_map<'de, A: MapAccess<'de>>(
    mut map: A,
    submit: &mut dyn FnMut(&str),
) -> std::result::Result<WeightMap<'de>, A::Error> {
    let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
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
        entries.push(Listed { tensor, shard: id });
    }
    Ok(WeightMap { shards, entries })
}

/// Parses an index's text, handing each shard to `submit` as it first appears.
pub(super) fn parse_index<'a>(
    text: &'a str,
    submit: &mut dyn FnMut(&str),
) -> serde_json::Result<WeightMap<'a>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = IndexSeed {
        submit,
        weight_map: false,
    };
    let parsed = de::DeserializeSeed::deserialize(seed, &mut deserializer)?;
    deserializer.end()?;
    Ok(parsed)
}

pub(super) fn not_index(index: &str, e: &dyn fmt::Display) -> Error {
    bad(index, None, Problem::NotIndex(e.to_string()))
}

/// An index's entries by name, and the file each was found in (`u32::MAX`: not yet).
pub(super) struct IndexTable<'a> {
    /// The index as messages show it.
    pub(super) path: &'a str,
    pub(super) entries: Vec<Listed<'a>>,
    by_name: HashTable<u32>,
    pub(super) found: Vec<u32>,
}

impl<'a> IndexTable<'a> {
    /// The table of `entries` (their shards already places among the files), names hashed
    /// with `hasher`; an error names the first tensor the index lists twice.
    pub(super) fn new(
        path: &'a str,
        entries: Vec<Listed<'a>>,
        hasher: &RandomState,
    ) -> Result<Self> {
        let mut by_name = HashTable::with_capacity(entries.len());
        let hash = |e: &u32| hasher.hash_one(entries[*e as usize].tensor.as_ref());
        for (at, listed) in entries.iter().enumerate() {
            let name = listed.tensor.as_ref();
            let same = |&other: &u32| entries[other as usize].tensor == name;
            let entry = by_name.entry(hasher.hash_one(name), same, hash);
            match entry {
                hashbrown::hash_table::Entry::Occupied(_) => {
                    return Err(bad(path, Some(name), Problem::ListedTwice));
                }
                hashbrown::hash_table::Entry::Vacant(slot) => {
                    slot.insert(at as u32);
                }
            }
        }
        Ok(IndexTable {
            path,
            found: vec![u32::MAX; entries.len()],
            entries,
            by_name,
        })
    }

    /// Where the index lists `name` (hashed with the table's hasher) among its entries.
    pub(super) fn find(&self, hash: u64, name: &str) -> Option<usize> {
        let same = |&e: &u32| self.entries[e as usize].tensor == name;
        self.by_name.find(hash, same).map(|&e| e as usize)
    }
}
