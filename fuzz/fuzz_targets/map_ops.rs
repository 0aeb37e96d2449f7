//! `DeviceMap` driven by arbitrary sequences of building and mutation, checked step by step
//! against a model (an `IndexMap`: insertion order, order-keeping removal): lookups, iteration order,
//! the first devices, counts, the GPU-id check, the fingerprint (kept up to date by mutations
//! after it was first asked for, equal for equal content in any order) and equality.
//!
//! Only the map's long-standing public API is used, so the target also runs against later
//! layouts of the map (tombstoned deletion, compaction).
#![no_main]

use _core::device::{Device, DeviceType};
use _core::error::Error;
use _core::map::DeviceMap;
use arbitrary::Arbitrary;
use indexmap::IndexMap;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Dev {
    kind: u8,
    id: Option<u8>,
    big: bool,
}

impl Dev {
    fn device(self) -> Device {
        let kind = DeviceType::ALL[usize::from(self.kind) % DeviceType::ALL.len()];
        // Mostly small ids (so devices repeat and share slots), sometimes the extremes.
        let id = self.id.map(|id| {
            if self.big {
                u64::MAX - u64::from(id)
            } else {
                u64::from(id % 8)
            }
        });
        Device::new(kind, id)
    }
}

/// A key from a small space, so inserts, removals and lookups meet the same keys often.
#[derive(Arbitrary, Debug, Clone)]
enum Key {
    Small(u8),
    Text(String),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Small(0) => String::new(),
            Key::Small(1) => "ключ.é\u{1F600}".to_owned(),
            Key::Small(n) => format!("model.layers.{}.weight", n % 64),
            Key::Text(text) => text.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Insert(Key, Dev),
    /// Through `intern` and `insert_slot`, as the bindings do.
    InsertSlot(Key, Dev),
    /// `push_new`, only for a key the map does not hold (its contract).
    PushNew(Key, Dev),
    Remove(Key),
    Get(Key),
    /// `popitem`: the last entry in order, as a dict does.
    PopLast,
    PopFirst,
    /// Many keys at once, then (with `thin`) every other one removed: exercises reclaiming
    /// the text and the slots of removed entries.
    Bulk {
        start: u8,
        count: u8,
        dev: Dev,
        thin: bool,
    },
    Clear,
    Shrink,
    /// Asking for the fingerprint makes later mutations keep it up to date.
    Fingerprint,
    Check,
    /// A clone goes on independently; the original must not see its changes.
    CloneDiverge(Key, Dev),
}

struct State {
    map: DeviceMap,
    model: IndexMap<String, Device>,
    /// Full checks left for this input: each is quadratic in the model, so a long input of
    /// `Check`s would be slow without finding more.
    checks_left: u32,
}

impl State {
    fn model_insert(&mut self, key: &str, device: Device) -> Option<Device> {
        // An existing key keeps its position, as in a dict.
        self.model.insert(key.to_owned(), device)
    }

    fn model_remove(&mut self, key: &str) -> Option<Device> {
        self.model.shift_remove(key)
    }

    fn remove(&mut self, key: &str) {
        assert_eq!(
            self.map.remove(key),
            self.model_remove(key),
            "remove {key:?}"
        );
        assert!(!self.map.contains_key(key));
        assert_eq!(self.map.len(), self.model.len());
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Insert(key, dev) => {
                let key = key.text();
                let device = dev.device();
                assert_eq!(
                    self.map.insert(&key, device),
                    self.model_insert(&key, device)
                );
            }
            Op::InsertSlot(key, dev) => {
                let key = key.text();
                let device = dev.device();
                let slot = self.map.intern(device);
                assert_eq!(self.map.table()[slot as usize], device);
                assert_eq!(self.map.intern(device), slot, "interning is stable");
                assert_eq!(
                    self.map.insert_slot(&key, slot),
                    self.model_insert(&key, device)
                );
            }
            Op::PushNew(key, dev) => {
                let key = key.text();
                if !self.model.contains_key(&key) {
                    let device = dev.device();
                    let slot = self.map.intern(device);
                    self.map.push_new(&key, slot);
                    self.model.insert(key, device);
                }
            }
            Op::Remove(key) => self.remove(&key.text()),
            Op::Get(key) => {
                let key = key.text();
                let expected = self.model.get(&key).copied();
                assert_eq!(self.map.get(&key), expected, "get {key:?}");
                assert_eq!(self.map.contains_key(&key), expected.is_some());
            }
            Op::PopLast => {
                let last = self.map.iter().last().map(|(k, d)| (k.to_owned(), d));
                assert_eq!(last, self.model.last().map(|(k, d)| (k.clone(), *d)));
                if let Some((key, _)) = last {
                    self.remove(&key);
                }
            }
            Op::PopFirst => {
                let first = self.map.iter().next().map(|(k, d)| (k.to_owned(), d));
                assert_eq!(first, self.model.first().map(|(k, d)| (k.clone(), *d)));
                if let Some((key, _)) = first {
                    self.remove(&key);
                }
            }
            Op::Bulk {
                start,
                count,
                dev,
                thin,
            } => {
                let device = dev.device();
                let keys: Vec<String> = (0..u32::from(*count))
                    .map(|i| format!("bulk.{}", u32::from(*start) + i))
                    .collect();
                for key in &keys {
                    assert_eq!(self.map.insert(key, device), self.model_insert(key, device));
                }
                if *thin {
                    for key in keys.iter().step_by(2) {
                        self.remove(key);
                    }
                }
            }
            Op::Clear => {
                self.map.clear();
                self.model.clear();
                assert!(self.map.is_empty());
            }
            Op::Shrink => self.map.shrink_to_fit(),
            Op::Fingerprint => {
                let _ = self.map.fingerprint();
            }
            Op::Check => {
                if self.checks_left > 0 {
                    self.checks_left -= 1;
                    self.check();
                }
            }
            Op::CloneDiverge(key, dev) => {
                let before = self.map.clone();
                let mut other = self.map.clone();
                assert_eq!(other, self.map);
                other.insert(&key.text(), dev.device());
                other.remove("bulk.0");
                assert_eq!(before, self.map, "a clone's changes reached the original");
            }
        }
        assert_eq!(self.map.len(), self.model.len());
        assert_eq!(self.map.is_empty(), self.model.is_empty());
    }

    fn check(&self) {
        let map = &self.map;
        let model = &self.model;
        let items: Vec<(String, Device)> = map.iter().map(|(k, d)| (k.to_owned(), d)).collect();
        let expected: Vec<(String, Device)> = model.iter().map(|(k, d)| (k.clone(), *d)).collect();
        assert_eq!(items, expected, "iteration order and content");
        assert_eq!(map.iter().len(), model.len());
        let via_slots: Vec<Device> = map
            .iter_slots()
            .map(|(_, slot)| map.table()[slot as usize])
            .collect();
        let slots: Vec<Device> = map.slots().map(|slot| map.table()[slot as usize]).collect();
        let devices: Vec<Device> = model.iter().map(|(_, d)| *d).collect();
        assert_eq!(via_slots, devices);
        assert_eq!(slots, devices);
        for (key, device) in model {
            assert_eq!(map.get(key), Some(*device));
        }
        assert_eq!(map.first(), devices.first().copied());
        assert_eq!(
            map.first_usable(),
            devices.iter().copied().find(|d| d.kind != DeviceType::Disk)
        );
        let mut counts: Vec<(Device, usize)> = Vec::new();
        for device in &devices {
            match counts.iter_mut().find(|(d, _)| d == device) {
                Some((_, n)) => *n += 1,
                None => counts.push((*device, 1)),
            }
        }
        assert_eq!(map.device_counts(), counts);
        let gpu_without_id = model
            .iter()
            .find(|(_, d)| d.kind == DeviceType::Gpu && d.id.is_none());
        match (map.check_gpu_ids("fuzz"), gpu_without_id) {
            (Ok(()), None) => {}
            // The error names the first such key (structurally: how a message quotes a key
            // is the message's business).
            (Err(Error::Entry { key: named, source }), Some((key, _))) => {
                assert_eq!(&named, key);
                assert!(matches!(*source, Error::GpuWithoutId { .. }), "{source}");
            }
            (result, expected) => panic!("check_gpu_ids: {result:?}, expected {expected:?}"),
        }
        // Equal content in reverse order: equal maps with equal fingerprints, whichever side
        // computed its fingerprint first.
        let reversed: DeviceMap = expected.iter().rev().cloned().collect();
        assert_eq!(&reversed, map);
        assert_eq!(reversed.fingerprint(), map.fingerprint());
        assert_eq!(map, &reversed);
        let rebuilt: DeviceMap = expected.iter().cloned().collect();
        assert_eq!(rebuilt.fingerprint(), map.fingerprint());
        // A different device under one key: unequal, and (128-bit) a different fingerprint.
        if let Some((key, device)) = model.first() {
            let key = key.as_str();
            let mut changed = map.clone();
            let other = if *device == Device::cpu() {
                Device::disk()
            } else {
                Device::cpu()
            };
            changed.insert(key, other);
            assert_ne!(&changed, map);
            assert_ne!(changed.fingerprint(), map.fingerprint());
            let mut smaller = map.clone();
            smaller.remove(key);
            assert_ne!(&smaller, map);
            assert_ne!(smaller.fingerprint(), map.fingerprint());
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut state = State {
        map: DeviceMap::new(),
        model: IndexMap::new(),
        checks_left: 8,
    };
    for op in &ops {
        state.apply(op);
    }
    state.check();
});
