//! `DeviceMap`: an insertion-ordered map from names to devices, built for 10^6 entries.
//!
//! Each distinct device is stored once in a small table and entries hold a `u32` slot into
//! it, so a map of a million parameter names costs little more than its key bytes. The
//! content fingerprint is a sum of per-entry hashes: independent of insertion order (like
//! equality), computed on first use, then kept up to date by each mutation in O(1).
//!
//! Deletion leaves a tombstone, as CPython's dict does: the entry stays in place, marked dead,
//! and the entries are compacted once the dead outnumber the live. Thinning a big map is then
//! amortised O(1) per deletion instead of a shift of every later entry.

use std::collections::HashMap;
use std::sync::OnceLock;

use ahash::RandomState;
use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_128;

use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};

/// A slot in a map's device table.
pub type Slot = u32;

/// Key bytes reserved per entry when the number of entries is known in advance.
const TEXT_BYTES_PER_KEY: usize = 64;

/// The slot of a deleted entry (a tombstone). The device table never reaches this size.
const DEAD: Slot = Slot::MAX;

/// One entry: its key as a range of the map's key text, and its device's slot (`DEAD` once
/// deleted).
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    len: u32,
    slot: Slot,
}

impl Entry {
    #[inline]
    fn is_live(&self) -> bool {
        self.slot != DEAD
    }
}

/// Keys live end to end in one `String` and entries are plain ranges into it, so a map of a
/// million names makes no allocation per key and costs about the key bytes plus 16 per entry.
/// The hash index over the keys is built on the first lookup: maps made from a Python dict
/// (whose keys are already distinct) and only converted back never pay for one.
#[derive(Clone, Debug, Default)]
pub struct DeviceMap {
    table: Vec<Device>,
    slots: HashMap<Device, Slot, RandomState>,
    text: String,
    /// Bytes of `text` no entry refers to any more (left by `remove`), reclaimed past half.
    dead_text: usize,
    /// Live entries and tombstones, in insertion order. No tombstone is ever last: removing
    /// the last entry pops it (and any tombstones before it), so the last entry is live.
    entries: Vec<Entry>,
    /// Tombstones in `entries`.
    dead: usize,
    /// Leading tombstones: `entries[head]` is the first live entry (or `head == entries.len()`).
    head: usize,
    /// Positions in `entries` (`u32`, half the size of the table at 10^6 entries), by key
    /// hash; absent until a lookup needs it.
    index: OnceLock<HashTable<u32>>,
    hasher: RandomState,
    /// Sum of the entry hashes, once someone asked for the fingerprint.
    hash_sum: OnceLock<u128>,
    /// Which key depths (in components) occur, as bits (see [`key_depths`](Self::key_depths));
    /// absent until a batch lookup needs it, then kept up to date by appends.
    depths: OnceLock<u64>,
}

impl DeviceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        DeviceMap {
            entries: Vec::with_capacity(capacity),
            // Parameter names run to 30-60 bytes. Reserving ahead saves the copies of a growing
            // buffer; pages never written cost no memory, and `shrink_to_fit` returns the rest.
            text: String::with_capacity(capacity.saturating_mul(TEXT_BYTES_PER_KEY)),
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The distinct devices this map has held; entries refer to them by slot.
    pub fn table(&self) -> &[Device] {
        &self.table
    }

    /// The slot of `device`, adding it to the table if new.
    pub fn intern(&mut self, device: Device) -> Slot {
        if let Some(&slot) = self.slots.get(&device) {
            return slot;
        }
        // Device ids are u64, so a hostile input could name 2^32 distinct devices; the map
        // would need hundreds of GiB first, so running out here is not a case worth an error.
        let slot = Slot::try_from(self.table.len())
            .ok()
            .filter(|&slot| slot != DEAD)
            .expect("fewer than 2^32 - 1 distinct devices");
        self.table.push(device);
        self.slots.insert(device, slot);
        slot
    }

    #[inline]
    fn key_of(&self, entry: &Entry) -> &str {
        key_in(&self.text, entry)
    }

    fn hash_key(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn build_index(&self) -> HashTable<u32> {
        let mut index = HashTable::with_capacity(self.len());
        for (position, entry) in self.entries.iter().enumerate() {
            if !entry.is_live() {
                continue;
            }
            let hash = self.hash_key(self.key_of(entry));
            // Keys are distinct, so no comparison is needed; sized for every entry, so the
            // rehash callback does not run.
            index.insert_unique(hash, position as u32, |&p| {
                self.hash_key(self.key_of(&self.entries[p as usize]))
            });
        }
        index
    }

    /// Bit `d` is set when some key has `d` components (`d` < 63; bit 63 stands for 63 or
    /// more; the empty key sets none). Computed on first request, then kept up to date by
    /// appends; removals leave their bits set, so it may claim a depth no key has any more
    /// (a lookup then makes a probe that finds nothing), never miss one.
    pub fn key_depths(&self) -> u64 {
        *self.depths.get_or_init(|| {
            self.live()
                .fold(0, |bits, entry| bits | depth_bit(self.key_of(entry)))
        })
    }

    /// The key depths if already computed.
    pub fn known_key_depths(&self) -> Option<u64> {
        self.depths.get().copied()
    }

    /// The slot of the entry at a position from [`position`](Self::position).
    #[inline]
    pub fn slot_at(&self, position: usize) -> Option<Slot> {
        self.entries
            .get(position)
            .filter(|entry| entry.is_live())
            .map(|entry| entry.slot)
    }

    fn index(&self) -> &HashTable<u32> {
        self.index.get_or_init(|| self.build_index())
    }

    /// Where `key`'s entry is: a position among the entries and tombstones, in insertion
    /// order, valid for [`get_index`](Self::get_index) until the map next changes.
    pub fn position(&self, key: &str) -> Option<usize> {
        let hash = self.hash_key(key);
        self.index()
            .find(hash, |&position| {
                self.key_of(&self.entries[position as usize]) == key
            })
            .map(|&position| position as usize)
    }

    pub fn get(&self, key: &str) -> Option<Device> {
        self.position(key)
            .map(|position| self.table[self.entries[position].slot as usize])
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` (keeping its position if present, as a Python dict does); returns the old device.
    pub fn insert(&mut self, key: &str, device: Device) -> Option<Device> {
        let slot = self.intern(device);
        self.insert_slot(key, slot)
    }

    /// Like [`insert`](Self::insert) with a slot from [`intern`](Self::intern).
    pub fn insert_slot(&mut self, key: &str, slot: Slot) -> Option<Device> {
        let old = match self.position(key) {
            Some(position) => Some(std::mem::replace(&mut self.entries[position].slot, slot)),
            None => {
                self.push_entry(key, slot);
                None
            }
        };
        self.track_change(key, old, Some(slot));
        old.map(|s| self.table[s as usize])
    }

    /// Appends an entry whose key the caller knows is not in the map, such as the keys of one
    /// Python dict of exact `str`s going into a new map: no lookup, and no index is built.
    pub fn push_new(&mut self, key: &str, slot: Slot) {
        debug_assert!(self.index.get().is_none() || self.position(key).is_none());
        self.push_entry(key, slot);
        self.track_change(key, None, Some(slot));
    }

    fn push_entry(&mut self, key: &str, slot: Slot) {
        let len = u32::try_from(key.len()).expect("a key longer than 4 GiB");
        let entry = Entry {
            start: self.text.len(),
            len,
            slot,
        };
        self.text.push_str(key);
        if let Some(depths) = self.depths.get_mut() {
            *depths |= depth_bit(key);
        }
        let position = u32::try_from(self.entries.len()).expect("more than 2^32 entries");
        self.entries.push(entry);
        if let Some(index) = self.index.get_mut() {
            let hash = self.hasher.hash_one(key);
            let (text, entries, hasher) = (&self.text, &self.entries, &self.hasher);
            index.insert_unique(hash, position, |&p| {
                hasher.hash_one(key_in(text, &entries[p as usize]))
            });
        }
    }

    /// Keeps a computed fingerprint up to date with one entry's change.
    #[inline]
    fn track_change(&mut self, key: &str, old: Option<Slot>, new: Option<Slot>) {
        // Only a map whose fingerprint was asked for keeps it up to date; bulk builds skip this.
        if self.hash_sum.get().is_some() {
            self.update_hash_sum(key, old, new);
        }
    }

    #[cold]
    fn update_hash_sum(&mut self, key: &str, old: Option<Slot>, new: Option<Slot>) {
        if let Some(sum) = self.hash_sum.get_mut() {
            if let Some(old) = old {
                *sum = sum.wrapping_sub(entry_hash(key, &self.table[old as usize].to_string()));
            }
            if let Some(new) = new {
                *sum = sum.wrapping_add(entry_hash(key, &self.table[new as usize].to_string()));
            }
        }
    }

    /// Frees spare capacity after a bulk build.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    /// Removes `key`, keeping the order of the rest, in amortised O(1): the entry becomes a
    /// tombstone, and tombstones are swept out once they outnumber the live entries.
    pub fn remove(&mut self, key: &str) -> Option<Device> {
        let position = self.position(key)?;
        let hash = self.hasher.hash_one(key);
        if let Some(index) = self.index.get_mut() {
            if let Ok(found) = index.find_entry(hash, |&p| p as usize == position) {
                found.remove();
            }
        }
        let entry = self.entries[position];
        self.track_change(key, Some(entry.slot), None);
        self.entries[position].slot = DEAD;
        self.dead += 1;
        self.dead_text += entry.len as usize;
        // Keep the last entry live (so `last()` is O(1)) and `head` on the first live one.
        while self.entries.last().is_some_and(|e| !e.is_live()) {
            self.entries.pop();
            self.dead -= 1;
        }
        self.head = self.head.min(self.entries.len());
        while self.entries.get(self.head).is_some_and(|e| !e.is_live()) {
            self.head += 1;
        }
        if self.dead > self.len() {
            self.compact();
        } else if self.dead_text > self.text.len() / 2 {
            self.compact_text();
        }
        Some(self.table[entry.slot as usize])
    }

    /// Sweeps out tombstones and dead key text. Positions change, so the index is dropped
    /// and rebuilt by the next lookup.
    fn compact(&mut self) {
        self.entries.retain(Entry::is_live);
        self.dead = 0;
        self.head = 0;
        self.index = OnceLock::new();
        self.compact_text();
    }

    /// Rewrites the key text without the bytes of removed entries.
    fn compact_text(&mut self) {
        let mut text = String::with_capacity(self.text.len() - self.dead_text);
        for entry in self.entries.iter_mut().filter(|e| e.is_live()) {
            let start = text.len();
            text.push_str(key_in(&self.text, entry));
            entry.start = start;
        }
        self.text = text;
        self.dead_text = 0;
    }

    /// Live entries in insertion order.
    #[inline]
    fn live(&self) -> LiveEntries<'_> {
        LiveEntries {
            entries: self.entries[self.head..].iter(),
            remaining: self.len(),
        }
    }

    pub fn clear(&mut self) {
        *self = DeviceMap::new();
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, Device)> + '_ {
        self.live()
            .map(|entry| (self.key_of(entry), self.table[entry.slot as usize]))
    }

    /// Entries as `(key, slot)`, for callers that convert each distinct device once.
    pub fn iter_slots(&self) -> impl ExactSizeIterator<Item = (&str, Slot)> + '_ {
        self.live().map(|entry| (self.key_of(entry), entry.slot))
    }

    /// Each entry's slot, in insertion order.
    pub fn slots(&self) -> impl ExactSizeIterator<Item = Slot> + '_ {
        self.live().map(|entry| entry.slot)
    }

    /// The first entry at or after `cursor`, and the cursor just past it: an iterator over a
    /// map it holds unchanged walks the entries with it in O(1) each.
    pub fn next_from(&self, cursor: usize) -> Option<(usize, &str, Device)> {
        let start = cursor.max(self.head);
        let offset = self.entries.get(start..)?.iter().position(Entry::is_live)?;
        let entry = &self.entries[start + offset];
        Some((
            start + offset + 1,
            self.key_of(entry),
            self.table[entry.slot as usize],
        ))
    }

    /// The entry at a position from [`position`](Self::position) (`None` past the end or at
    /// a tombstone).
    pub fn get_index(&self, position: usize) -> Option<(&str, Device)> {
        self.entries
            .get(position)
            .filter(|entry| entry.is_live())
            .map(|entry| (self.key_of(entry), self.table[entry.slot as usize]))
    }

    /// The last entry in insertion order.
    pub fn last(&self) -> Option<(&str, Device)> {
        // `remove` never leaves a tombstone last.
        self.entries
            .last()
            .map(|entry| (self.key_of(entry), self.table[entry.slot as usize]))
    }

    /// The device of the first entry in insertion order.
    pub fn first(&self) -> Option<Device> {
        self.next_from(0).map(|(_, _, device)| device)
    }

    /// The first device in insertion order that is not the disk.
    pub fn first_usable(&self) -> Option<Device> {
        self.iter()
            .map(|(_, device)| device)
            .find(|device| device.kind != DeviceType::Disk)
    }

    /// How many entries each device has, in order of first appearance.
    pub fn device_counts(&self) -> Vec<(Device, usize)> {
        let mut counts = vec![0usize; self.table.len()];
        let mut order = Vec::new();
        for slot in self.slots() {
            if counts[slot as usize] == 0 {
                order.push(slot);
            }
            counts[slot as usize] += 1;
        }
        order
            .into_iter()
            .map(|slot| (self.table[slot as usize], counts[slot as usize]))
            .collect()
    }

    /// The first entry whose device is a GPU without an id, which HF's form cannot express.
    pub fn check_gpu_ids(&self, what: &str) -> Result<()> {
        let gpu_without_id =
            |device: &Device| device.kind == DeviceType::Gpu && device.id.is_none();
        // Only a map whose small device table holds such a GPU can fail; skip the entries otherwise.
        if !self.table.iter().any(gpu_without_id) {
            return Ok(());
        }
        match self.iter().find(|(_, device)| gpu_without_id(device)) {
            Some((key, device)) => Err(Error::GpuWithoutId {
                what: what.to_owned(),
                device: device.to_string(),
            }
            .for_key(key)),
            None => Ok(()),
        }
    }

    /// A 128-bit content fingerprint: equal maps (in any insertion order) give equal values,
    /// stable across processes and platforms.
    pub fn fingerprint(&self) -> u128 {
        let sum = *self.hash_sum.get_or_init(|| {
            let texts: Vec<String> = self.table.iter().map(Device::to_string).collect();
            self.iter_slots().fold(0u128, |sum, (key, slot)| {
                sum.wrapping_add(entry_hash(key, &texts[slot as usize]))
            })
        });
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&sum.to_le_bytes());
        bytes[16..].copy_from_slice(&(self.len() as u64).to_le_bytes());
        xxh3_128(&bytes)
    }

    /// The fingerprint if it has been computed and kept up to date, without computing it.
    fn known_fingerprint(&self) -> Option<u128> {
        self.hash_sum.get().map(|_| self.fingerprint())
    }
}

/// The live entries of a map, skipping tombstones, with an exact length (so Python lists and
/// dicts built from them are sized once).
struct LiveEntries<'a> {
    entries: std::slice::Iter<'a, Entry>,
    remaining: usize,
}

impl<'a> Iterator for LiveEntries<'a> {
    type Item = &'a Entry;

    #[inline]
    fn next(&mut self) -> Option<&'a Entry> {
        if self.remaining == 0 {
            return None;
        }
        let entry = self.entries.find(|e| e.is_live())?;
        self.remaining -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for LiveEntries<'_> {}

/// An entry's key. Entries only ever cover whole keys pushed as `str`, so the bytes are UTF-8
/// and the char-boundary checks of `&text[range]` (a third of `==` on big maps) are skipped.
#[inline]
fn key_in<'a>(text: &'a str, entry: &Entry) -> &'a str {
    let bytes = &text.as_bytes()[entry.start..entry.start + entry.len as usize];
    // SAFETY: see above; the range is bounds-checked by the slice.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// `key`'s bit in [`DeviceMap::key_depths`].
#[inline]
fn depth_bit(key: &str) -> u64 {
    if key.is_empty() {
        return 0;
    }
    let depth = 1 + key.bytes().filter(|&b| b == b'.').count();
    1 << depth.min(63)
}

/// Hash of one entry. `0xFF` never occurs in UTF-8, so it separates key from device unambiguously.
fn entry_hash(key: &str, device_text: &str) -> u128 {
    let mut buf = [0u8; 192];
    let len = key.len() + 1 + device_text.len();
    if len <= buf.len() {
        buf[..key.len()].copy_from_slice(key.as_bytes());
        buf[key.len()] = 0xFF;
        buf[key.len() + 1..len].copy_from_slice(device_text.as_bytes());
        xxh3_128(&buf[..len])
    } else {
        let mut long = Vec::with_capacity(len);
        long.extend_from_slice(key.as_bytes());
        long.push(0xFF);
        long.extend_from_slice(device_text.as_bytes());
        xxh3_128(&long)
    }
}

impl PartialEq for DeviceMap {
    /// Same keys with equal devices; insertion order is ignored, as in Haystack.
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        if let (Some(a), Some(b)) = (self.known_fingerprint(), other.known_fingerprint()) {
            if a != b {
                return false;
            }
        }
        // Our slot -> their slot, so entries compare as integers.
        let translate: Vec<Option<Slot>> = self
            .table
            .iter()
            .map(|device| other.slots.get(device).copied())
            .collect();
        let same_slot = |slot: Slot, theirs: Slot| translate[slot as usize] == Some(theirs);
        // Maps built from the same source share key order: compare position by position and
        // fall back to a lookup only where the keys differ.
        self.iter_slots()
            .zip(other.iter_slots())
            .all(|((key, slot), (their_key, their_slot))| {
                if key == their_key {
                    same_slot(slot, their_slot)
                } else {
                    other
                        .position(key)
                        .is_some_and(|p| same_slot(slot, other.entries[p].slot))
                }
            })
    }
}

impl Eq for DeviceMap {}

impl FromIterator<(String, Device)> for DeviceMap {
    fn from_iter<I: IntoIterator<Item = (String, Device)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut map = DeviceMap::with_capacity(iter.size_hint().0);
        for (key, device) in iter {
            map.insert(&key, device);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Device)]) -> DeviceMap {
        pairs.iter().map(|(k, d)| (k.to_string(), *d)).collect()
    }

    #[test]
    fn keeps_insertion_order_and_position_on_overwrite() {
        let mut m = map(&[
            ("a", Device::cpu()),
            ("b", Device::gpu(1)),
            ("c", Device::disk()),
        ]);
        m.insert("a", Device::gpu(0));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.to_owned()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(m.get("a"), Some(Device::gpu(0)));
        assert_eq!(m.remove("b"), Some(Device::gpu(1)));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.to_owned()).collect();
        assert_eq!(keys, ["a", "c"]);
    }

    #[test]
    fn stores_each_device_once() {
        let m: DeviceMap = (0..1000)
            .map(|i| (format!("layer.{i}"), Device::gpu(i % 4)))
            .collect();
        assert_eq!(m.table().len(), 4);
        assert_eq!(m.len(), 1000);
    }

    #[test]
    fn equality_ignores_order() {
        let a = map(&[("a", Device::cpu()), ("b", Device::gpu(1))]);
        let b = map(&[("b", Device::gpu(1)), ("a", Device::cpu())]);
        assert_eq!(a, b);
        let c = map(&[("b", Device::gpu(2)), ("a", Device::cpu())]);
        assert_ne!(a, c);
        let d = map(&[("b", Device::gpu(1)), ("x", Device::cpu())]);
        assert_ne!(a, d);
        assert_ne!(a, map(&[("a", Device::cpu())]));
    }

    #[test]
    fn fingerprint_ignores_order_and_tracks_mutation() {
        let mut a = map(&[("a", Device::cpu()), ("b", Device::gpu(1))]);
        let b = map(&[("b", Device::gpu(1)), ("a", Device::cpu())]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let before = a.fingerprint();
        a.insert("b", Device::gpu(2));
        assert_ne!(a.fingerprint(), before);
        assert_eq!(
            a.fingerprint(),
            map(&[("a", Device::cpu()), ("b", Device::gpu(2))]).fingerprint()
        );
        a.insert("b", Device::gpu(1));
        assert_eq!(a.fingerprint(), before);
        a.remove("a");
        assert_eq!(a.fingerprint(), map(&[("b", Device::gpu(1))]).fingerprint());
        assert_ne!(
            DeviceMap::new().fingerprint(),
            map(&[("", Device::cpu())]).fingerprint()
        );
    }

    #[test]
    fn fingerprint_is_stable_across_processes() {
        // A fixed value: changing the hash changes every stored fingerprint, so it must be deliberate.
        let m = map(&[("a", Device::cpu()), ("b", Device::gpu(1))]);
        assert_eq!(
            format!("{:032x}", m.fingerprint()),
            format!("{:032x}", m.clone().fingerprint())
        );
        assert_eq!(format!("{:032x}", m.fingerprint()), FIXED_FINGERPRINT);
    }
    const FIXED_FINGERPRINT: &str = "6454e087eed4caba46868d93402881af";

    #[test]
    fn key_and_device_do_not_run_together() {
        let a = map(&[("ab", Device::cpu())]);
        let b = map(&[("a", Device::new(DeviceType::Cpu, None))]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        let long_key = "x".repeat(500);
        let c = map(&[(long_key.as_str(), Device::cpu())]);
        assert_ne!(c.fingerprint(), a.fingerprint());
    }

    #[test]
    fn appended_keys_are_found_before_and_after_the_index_exists() {
        let mut m = DeviceMap::new();
        let cpu = m.intern(Device::cpu());
        m.push_new("a", cpu);
        m.push_new("b", cpu);
        assert_eq!(m.get("b"), Some(Device::cpu()));
        // The index now exists; later appends must reach it.
        let gpu = m.intern(Device::gpu(1));
        m.push_new("c", gpu);
        assert_eq!(m.get("c"), Some(Device::gpu(1)));
        assert_eq!(m.insert("a", Device::disk()), Some(Device::cpu()));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn removals_keep_order_lookups_and_reclaim_text() {
        let mut m: DeviceMap = (0..100)
            .map(|i| (format!("key.{i}"), Device::gpu(i % 3)))
            .collect();
        for i in (0..100).filter(|i| i % 4 != 0) {
            assert_eq!(m.remove(&format!("key.{i}")), Some(Device::gpu(i % 3)));
        }
        let live: usize = m.iter().map(|(k, _)| k.len()).sum();
        assert!(m.text.len() <= 2 * live, "removed keys' text is reclaimed");
        let keys: Vec<_> = m.iter().map(|(k, _)| k.to_owned()).collect();
        let expected: Vec<_> = (0..100).step_by(4).map(|i| format!("key.{i}")).collect();
        assert_eq!(keys, expected);
        for i in (0..100).step_by(4) {
            assert_eq!(m.get(&format!("key.{i}")), Some(Device::gpu(i % 3)));
        }
        assert!(!m.contains_key("key.1"));
        m.insert("key.1", Device::cpu());
        assert_eq!(m.last(), Some(("key.1", Device::cpu())));
    }

    /// Removal against a Vec model: order, lookups, first/last and length after every step,
    /// through compactions, with the index built and not.
    #[test]
    fn removals_match_a_vec_model() {
        let mut model: Vec<(String, Device)> = Vec::new();
        let mut m = DeviceMap::new();
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..20_000 {
            let key = format!("k.{}", next() % 300);
            let op = next() % 10;
            if op < 5 {
                let device = Device::gpu(next() % 4);
                let old = m.insert(&key, device);
                match model.iter_mut().find(|(k, _)| *k == key) {
                    Some(pair) => assert_eq!(old, Some(std::mem::replace(&mut pair.1, device))),
                    None => {
                        assert_eq!(old, None);
                        model.push((key, device));
                    }
                }
            } else if op < 9 {
                let found = model.iter().position(|(k, _)| *k == key);
                assert_eq!(m.remove(&key), found.map(|p| model.remove(p).1));
            } else if let Some((k, _)) = model.first().cloned() {
                // Deleting from the front exercises `head`.
                assert!(m.remove(&k).is_some());
                model.remove(0);
            }
            assert_eq!(m.len(), model.len());
            assert_eq!(m.first(), model.first().map(|p| p.1));
            assert_eq!(
                m.last().map(|(k, d)| (k.to_owned(), d)),
                model.last().cloned()
            );
            if step % 97 == 0 {
                let got: Vec<(String, Device)> = m.iter().map(|(k, d)| (k.to_owned(), d)).collect();
                assert_eq!(got, model);
                let mut cursor = 0;
                let mut walked = Vec::new();
                while let Some((next_cursor, k, d)) = m.next_from(cursor) {
                    walked.push((k.to_owned(), d));
                    cursor = next_cursor;
                }
                assert_eq!(walked, model);
                assert!(m.dead <= m.len() + 1, "tombstones are swept");
            }
            if step % 1000 == 0 {
                let rebuilt: DeviceMap = model.iter().cloned().collect();
                assert_eq!(m, rebuilt);
                assert_eq!(m.fingerprint(), rebuilt.fingerprint());
            }
        }
    }

    #[test]
    fn key_depths_are_kept_up_to_date_once_computed() {
        let mut m = map(&[("a.b", Device::cpu()), ("", Device::disk())]);
        assert_eq!(m.known_key_depths(), None);
        assert_eq!(m.key_depths(), 1 << 2);
        m.insert("x.y.z.w", Device::gpu(0));
        assert_eq!(m.known_key_depths(), Some((1 << 2) | (1 << 4)));
        let deep = vec!["k"; 70].join(".");
        m.insert(&deep, Device::gpu(1));
        assert_eq!(
            m.key_depths() >> 63,
            1,
            "63 or more components share the top bit"
        );
        m.remove("a.b");
        assert_eq!(
            m.key_depths() & (1 << 2),
            1 << 2,
            "a superset after removals"
        );
        let position = m.position("x.y.z.w").unwrap();
        assert_eq!(m.slot_at(position), Some(m.intern(Device::gpu(0))));
    }

    #[test]
    fn counts_in_order_of_appearance() {
        let m = map(&[
            ("a", Device::gpu(1)),
            ("b", Device::cpu()),
            ("c", Device::gpu(1)),
        ]);
        assert_eq!(
            m.device_counts(),
            vec![(Device::gpu(1), 2), (Device::cpu(), 1)]
        );
    }

    #[test]
    fn gpu_without_id_is_named() {
        let m = map(&[
            ("a", Device::gpu(1)),
            ("b", Device::new(DeviceType::Gpu, None)),
        ]);
        let err = m.check_gpu_ids("HuggingFace's device map").unwrap_err();
        assert!(err.to_string().contains("key 'b'"), "{err}");
    }
}
