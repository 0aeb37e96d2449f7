//! Which entry of a map covers a tensor name: the key that is the longest prefix of the name
//! ending at a dot boundary.
//!
//! A key covers a name when it is `""`, equals the name, or is a prefix of it followed by `.`
//! in the name. Keys are literal text (no patterns), so `model.layers.1` never covers
//! `model.layers.10.x` and `lm_head` never covers `lm_head_extra.weight`.
//!
//! A lookup probes the map's own key index (built once per map, kept up to date by every
//! change) with the name, then with each dot-prefix of it, longest first: at most one probe
//! per component, whatever the number of keys. A trie of components was measured against
//! this (93,696 DeepSeek-V3 expert names, release build) and lost: 246 vs 186 ns per name with
//! a key per layer, 503 vs 121 ns with a key per expert, because the deepest key is usually a
//! few components from the end of the name and hashing a whole prefix costs about as much as
//! hashing one component.

use std::collections::HashMap;

use ahash::RandomState;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::map::{DeviceMap, Slot};
use crate::units::{human_bytes, thousands};

/// The position of the key covering `name`, if any. `name` is taken as it is (see
/// [`check_name`] for what callers should refuse first).
#[inline]
pub fn find(map: &DeviceMap, name: &str) -> Option<usize> {
    if let Some(position) = map.position(name) {
        return Some(position);
    }
    let bytes = name.as_bytes();
    let mut end = bytes.len();
    while let Some(dot) = bytes[..end].iter().rposition(|&b| b == b'.') {
        if let Some(position) = map.position(&name[..dot]) {
            return Some(position);
        }
        end = dot;
    }
    map.position("")
}

/// A lookup for many names against one map. It knows which key depths (in components) occur,
/// so it probes only prefixes of those depths: with a key per layer (depth 3) a 9-component
/// expert name costs one probe instead of seven. It checks each name and finds its dots in one
/// pass, and keeps each entry's slot by position. Built per batch in O(keys).
pub struct Finder<'m> {
    map: &'m DeviceMap,
    /// Bit `d` is set when some key has `d` components (`d` < 63); bit 63 stands for 63 or more.
    depths: u64,
    /// Each entry's slot, by position; empty for a batch too small to pay for it.
    slots: Vec<Slot>,
}

/// Dots remembered per name on the fast path; deeper names take the plain path.
const FAST_DOTS: usize = 32;

/// Writes the positions of the dots of `bytes` into `dots` and returns how many there are, or
/// `None` when there are more than `dots` holds. Eight bytes at a time: a name is 40-60 bytes.
#[inline]
fn find_dots(bytes: &[u8], dots: &mut [u32; FAST_DOTS]) -> Option<usize> {
    const DOTS: u64 = u64::from_ne_bytes([b'.'; 8]);
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let mut count = 0usize;
    let mut push = |at: usize| {
        if count == FAST_DOTS {
            return false;
        }
        dots[count] = at as u32;
        count += 1;
        true
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0usize;
    let mut scan = |word: [u8; 8], base: usize| -> bool {
        let x = u64::from_le_bytes(word) ^ DOTS;
        // The high bit of each byte of `x` that is zero, exactly (no carries between bytes).
        let mut zeros = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
        while zeros != 0 {
            if !push(base + zeros.trailing_zeros() as usize / 8) {
                return false;
            }
            zeros &= zeros - 1;
        }
        true
    };
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if !scan(word, base) {
            return None;
        }
        base += 8;
    }
    // The last bytes as one word, padded with zeros (never a dot).
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        if !scan(word, base) {
            return None;
        }
    }
    Some(count)
}

impl<'m> Finder<'m> {
    /// For a batch of `names` names: a batch much smaller than the map skips the O(keys) scan
    /// and probes every prefix.
    pub fn new(map: &'m DeviceMap, names: usize) -> Self {
        if names.saturating_mul(4) < map.len() {
            return Finder {
                map,
                depths: u64::MAX,
                slots: Vec::new(),
            };
        }
        let mut depths = 0u64;
        for (key, _) in map.iter() {
            if !key.is_empty() {
                let depth = 1 + key.bytes().filter(|&b| b == b'.').count();
                depths |= 1 << depth.min(63);
            }
        }
        Finder {
            map,
            depths,
            slots: map.slots().collect(),
        }
    }

    #[inline]
    fn may_have(&self, depth: usize) -> bool {
        depth >= 63 || self.depths & (1 << depth) != 0
    }

    /// The slot of the entry at `position`.
    #[inline]
    pub fn slot(&self, position: usize) -> Slot {
        if let Some(&slot) = self.slots.get(position) {
            return slot;
        }
        let device = self.map.get_index(position).map(|(_, device)| device);
        self.map
            .table()
            .iter()
            .position(|d| Some(*d) == device)
            .unwrap_or(0) as Slot
    }

    /// [`check_name`] then [`find`], in one pass over the name where it can.
    #[inline]
    pub fn find_checked(&self, name: &str) -> Result<Option<usize>> {
        let bytes = name.as_bytes();
        let mut dots = [0u32; FAST_DOTS];
        let found = if bytes.is_empty() || bytes.len() > MAX_NAME_BYTES {
            None
        } else {
            find_dots(bytes, &mut dots)
        };
        let Some(count) = found else {
            check_name(name)?;
            return Ok(self.find(name));
        };
        // Dots at either end or side by side make an empty component.
        let dots_seen = &dots[..count];
        let bad = dots_seen.first() == Some(&0)
            || dots_seen.last() == Some(&(bytes.len() as u32 - 1))
            || dots_seen.windows(2).any(|pair| pair[1] == pair[0] + 1);
        if bad {
            check_name(name)?;
            return Ok(self.find(name));
        }
        let depth = count + 1;
        if self.may_have(depth) {
            if let Some(position) = self.map.position(name) {
                return Ok(Some(position));
            }
        }
        for k in (1..depth).rev() {
            if self.may_have(k) {
                let end = dots[k - 1] as usize;
                if let Some(position) = self.map.position(&name[..end]) {
                    return Ok(Some(position));
                }
            }
        }
        Ok(self.map.position(""))
    }

    /// Same answer as [`find`], without checking the name.
    pub fn find(&self, name: &str) -> Option<usize> {
        let bytes = name.as_bytes();
        let mut depth = 1 + bytes.iter().filter(|&&b| b == b'.').count();
        if self.may_have(depth) {
            if let Some(position) = self.map.position(name) {
                return Some(position);
            }
        }
        let mut end = bytes.len();
        while let Some(dot) = bytes[..end].iter().rposition(|&b| b == b'.') {
            depth -= 1;
            if self.may_have(depth) {
                if let Some(position) = self.map.position(&name[..dot]) {
                    return Some(position);
                }
            }
            end = dot;
        }
        self.map.position("")
    }
}

/// Calls `f` with the position of every key covering `name`, longest first.
pub fn for_each_covering(map: &DeviceMap, name: &str, mut f: impl FnMut(usize)) {
    if let Some(position) = map.position(name) {
        f(position);
    }
    if name.is_empty() {
        return;
    }
    let bytes = name.as_bytes();
    let mut end = bytes.len();
    while let Some(dot) = bytes[..end].iter().rposition(|&b| b == b'.') {
        if let Some(position) = map.position(&name[..dot]) {
            f(position);
        }
        end = dot;
    }
    if let Some(position) = map.position("") {
        f(position);
    }
}

/// The deepest name looked up, in components: far past any real module tree (torch's own
/// recursive module walks stop near Python's recursion limit of 1,000).
pub const MAX_NAME_DEPTH: usize = 1024;
/// The longest name looked up, in bytes.
pub const MAX_NAME_BYTES: usize = 64 * 1024;

/// Why a tensor name cannot be looked up: torch module and parameter names are never empty and
/// never contain an empty component, so such a name is a caller's bug (`f"{prefix}.{name}"`
/// with an empty prefix), not something a key should silently cover. The limits bound the cost
/// of one lookup (a probe per component, each hashing a prefix).
pub fn check_name(name: &str) -> Result<()> {
    let bad = |reason: String| Error::BadName {
        name: shorten(name),
        reason,
    };
    if name.is_empty() {
        return Err(bad("is empty".to_owned()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(format!(
            "is {} bytes long; names are looked up up to {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    let bytes = name.as_bytes();
    if bytes[0] == b'.' {
        return Err(bad("starts with '.'".to_owned()));
    }
    if bytes[bytes.len() - 1] == b'.' {
        return Err(bad("ends with '.'".to_owned()));
    }
    let mut depth = 1;
    let mut previous = 0u8;
    for &b in bytes {
        if b == b'.' {
            if previous == b'.' {
                return Err(bad("has an empty component ('..')".to_owned()));
            }
            depth += 1;
        }
        previous = b;
    }
    if depth > MAX_NAME_DEPTH {
        return Err(bad(format!(
            "is {depth} components deep; names are looked up up to {MAX_NAME_DEPTH}"
        )));
    }
    Ok(())
}

/// A name as shown in an error: the first 80 characters.
fn shorten(name: &str) -> String {
    if name.chars().count() <= 80 {
        return name.to_owned();
    }
    format!("{}...", name.chars().take(77).collect::<String>())
}

/// The key covering `name` and its device, or `None` when no key covers it.
pub fn key_for<'m>(map: &'m DeviceMap, name: &str) -> Result<Option<(&'m str, Device)>> {
    check_name(name)?;
    Ok(find(map, name).and_then(|position| map.get_index(position)))
}

/// The device of `name`, or `None` when no key covers it.
pub fn device_for(map: &DeviceMap, name: &str) -> Result<Option<Device>> {
    Ok(key_for(map, name)?.map(|(_, device)| device))
}

/// The device of `name`, or an error naming it when no key covers it.
pub fn require_device(map: &DeviceMap, name: &str) -> Result<Device> {
    device_for(map, name)?.ok_or_else(|| Error::Uncovered {
        name: name.to_owned(),
    })
}

/// The slot (in `map.table()`) of each name's device, or `None` where no key covers it. The
/// first bad name is an error naming its position.
pub fn slots_for<S: AsRef<str>>(map: &DeviceMap, names: &[S]) -> Result<Vec<Option<Slot>>> {
    let finder = Finder::new(map, names.len());
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let found = finder
                .find_checked(name.as_ref())
                .map_err(|e| e.at_position(i))?;
            Ok(found.map(|position| finder.slot(position)))
        })
        .collect()
}

/// Like [`slots_for`], but every name must be covered: the first that is not is an error
/// naming it and its position.
pub fn require_slots<S: AsRef<str>>(map: &DeviceMap, names: &[S]) -> Result<Vec<Slot>> {
    let slots = slots_for(map, names)?;
    slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            slot.ok_or_else(|| {
                Error::Uncovered {
                    name: names[i].as_ref().to_owned(),
                }
                .at_position(i)
            })
        })
        .collect()
}

/// The indices of `names` per device slot, in order of each device's first name.
pub fn group_by_slot<S: AsRef<str>>(
    map: &DeviceMap,
    names: &[S],
) -> Result<Vec<(Slot, Vec<usize>)>> {
    let slots = require_slots(map, names)?;
    let mut group_of: Vec<Option<usize>> = vec![None; map.table().len()];
    let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
    for (i, slot) in slots.into_iter().enumerate() {
        let group = *group_of[slot as usize].get_or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(i);
    }
    Ok(groups)
}

/// How a map covers a list of tensor names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// How many names were checked.
    pub names: usize,
    /// Indices of the names no key covers, in input order.
    pub uncovered: Vec<usize>,
    /// Positions of the keys that cover no name at all (likely typos), in map order.
    pub unused: Vec<usize>,
}

impl Coverage {
    pub fn is_complete(&self) -> bool {
        self.uncovered.is_empty()
    }
}

/// Which names no key covers and which keys cover no name. O(names x depth) for the names,
/// then O(keys x depth) for the keys.
pub fn coverage<S: AsRef<str>>(map: &DeviceMap, names: &[S]) -> Result<Coverage> {
    let mut matched = vec![false; map.len()];
    let mut uncovered = Vec::new();
    let finder = Finder::new(map, names.len());
    for (i, name) in names.iter().enumerate() {
        match finder
            .find_checked(name.as_ref())
            .map_err(|e| e.at_position(i))?
        {
            Some(position) => matched[position] = true,
            None => uncovered.push(i),
        }
    }
    // A key covers some name exactly when it is a dot-prefix of (or equal to) a key that some
    // name matched: so walk the prefixes of the matched keys, not of every name.
    let mut covers = vec![false; map.len()];
    for (position, _) in matched.iter().enumerate().filter(|(_, &m)| m) {
        if covers[position] {
            continue;
        }
        let Some((key, _)) = map.get_index(position) else {
            continue;
        };
        let mut stop = false;
        for_each_covering(map, key, |p| {
            // A key already marked had all its prefixes marked when it was.
            if stop || (covers[p] && p != position) {
                stop = true;
                return;
            }
            covers[p] = true;
        });
    }
    let unused = (0..map.len()).filter(|&p| !covers[p]).collect();
    Ok(Coverage {
        names: names.len(),
        uncovered,
        unused,
    })
}

/// A group of names that differ only in numeric components, as one line:
/// `model.layers.{3..60}.mlp.gate.weight`, with how many names it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameGroup {
    pub pattern: String,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Part<'a> {
    Text(&'a str),
    Numbers(Vec<u64>),
}

/// A component that is a number written without leading zeros (so it prints back the same).
fn number(component: &str) -> Option<u64> {
    let bytes = component.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= 18
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes[0] != b'0');
    plain.then(|| component.parse().ok()).flatten()
}

/// Groups names that differ only in numeric components, merging one numeric position at a
/// time from the last (experts) to the first (layers), so a full grid of layers x experts
/// becomes one line and a hole in it stays visible. Groups come in order of their first name.
pub fn compact<S: AsRef<str>>(names: &[S]) -> Vec<NameGroup> {
    let mut groups: Vec<(Vec<Part<'_>>, usize)> = names
        .iter()
        .map(|name| {
            let parts = name
                .as_ref()
                .split('.')
                .map(|c| match number(c) {
                    Some(n) => Part::Numbers(vec![n]),
                    None => Part::Text(c),
                })
                .collect();
            (parts, 1)
        })
        .collect();
    let depth = groups
        .iter()
        .map(|(parts, _)| parts.len())
        .max()
        .unwrap_or(0);
    for at in (0..depth).rev() {
        let mut merged: Vec<(Vec<Part<'_>>, usize)> = Vec::with_capacity(groups.len());
        let mut index: HashMap<Vec<Part<'_>>, usize, RandomState> = HashMap::default();
        for (mut parts, count) in groups {
            let numbers = match parts.get_mut(at) {
                Some(Part::Numbers(numbers)) => std::mem::take(numbers),
                _ => {
                    merged.push((parts, count));
                    continue;
                }
            };
            match index.get(&parts) {
                Some(&i) => {
                    if let Part::Numbers(into) = &mut merged[i].0[at] {
                        into.extend(numbers);
                    }
                    merged[i].1 += count;
                }
                None => {
                    index.insert(parts.clone(), merged.len());
                    parts[at] = Part::Numbers(numbers);
                    merged.push((parts, count));
                }
            }
        }
        for (parts, _) in &mut merged {
            if let Some(Part::Numbers(numbers)) = parts.get_mut(at) {
                numbers.sort_unstable();
                numbers.dedup();
            }
        }
        groups = merged;
    }
    groups
        .into_iter()
        .map(|(parts, count)| NameGroup {
            pattern: parts.iter().map(render).collect::<Vec<_>>().join("."),
            count,
        })
        .collect()
}

fn render(part: &Part<'_>) -> String {
    let numbers = match part {
        Part::Text(text) => return (*text).to_owned(),
        Part::Numbers(numbers) if numbers.len() == 1 => return numbers[0].to_string(),
        Part::Numbers(numbers) => numbers,
    };
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
            j += 1;
        }
        match j - i {
            0 => runs.push(numbers[i].to_string()),
            1 => runs.push(format!("{},{}", numbers[i], numbers[j])),
            _ => runs.push(format!("{}..{}", numbers[i], numbers[j])),
        }
        i = j + 1;
    }
    format!("{{{}}}", runs.join(","))
}

/// Why a key that does not cover a name is worth showing next to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The key is a text prefix of the name, but the name goes on with something other than
    /// `.` (`model.layers.1` against `model.layers.10.x`, `lm_head` against `lm_head_extra`).
    NoDotBoundary,
    /// The key has the name's first components but one, which differs.
    ComponentDiffers {
        index: usize,
        key_part: String,
        name_part: String,
    },
    /// The key lies inside the name (`a.b.c` against `a.b`): it covers part of that module only.
    Inside,
}

impl Miss {
    /// A short code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Miss::NoDotBoundary => "no-dot-boundary",
            Miss::ComponentDiffers { .. } => "component-differs",
            Miss::Inside => "inside-name",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Miss::NoDotBoundary => {
                "a text prefix of the name, but not at a '.' boundary".to_owned()
            }
            Miss::ComponentDiffers {
                index,
                key_part,
                name_part,
            } => format!(
                "component {} differs: '{key_part}' in the key, '{name_part}' in the name",
                index + 1
            ),
            Miss::Inside => "lies inside the name, so it covers only part of it".to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearMiss {
    pub key: String,
    pub device: Device,
    pub miss: Miss,
}

/// Why `name` goes where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    /// The key that decides, with its device.
    pub matched: Option<(String, Device)>,
    /// Shorter keys that also cover the name and lose to `matched`, longest first.
    pub shadowed: Vec<(String, Device)>,
    /// Keys that do not cover the name but nearly do, in map order (at most `NEAR_MISSES`).
    pub near_misses: Vec<NearMiss>,
}

/// How many near misses an explanation lists.
pub const NEAR_MISSES: usize = 20;

/// Which key decides `name`'s device, which shorter keys it shadows, and the keys that nearly
/// cover it. Scans every key for near misses: a diagnostic, not a hot path.
pub fn explain(map: &DeviceMap, name: &str) -> Result<Explanation> {
    check_name(name)?;
    let mut covering = Vec::new();
    for_each_covering(map, name, |position| {
        if let Some((key, device)) = map.get_index(position) {
            covering.push((key.to_owned(), device));
        }
    });
    let mut covering = covering.into_iter();
    let matched = covering.next();
    let shadowed = covering.collect();
    let name_parts: Vec<&str> = name.split('.').collect();
    let mut near_misses = Vec::new();
    for (key, device) in map.iter() {
        if near_misses.len() == NEAR_MISSES {
            break;
        }
        if key.is_empty() || key == name {
            continue;
        }
        let miss = if let Some(rest) = name.strip_prefix(key) {
            if rest.starts_with('.') {
                continue;
            }
            Miss::NoDotBoundary
        } else if key
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
        {
            Miss::Inside
        } else {
            match one_component_differs(key, &name_parts) {
                Some(miss) => miss,
                None => continue,
            }
        };
        near_misses.push(NearMiss {
            key: key.to_owned(),
            device,
            miss,
        });
    }
    Ok(Explanation {
        name: name.to_owned(),
        matched,
        shadowed,
        near_misses,
    })
}

fn one_component_differs(key: &str, name_parts: &[&str]) -> Option<Miss> {
    let mut differing = None;
    // A key sharing no component with the name is not near it (`lm_head` against `model.x`).
    let mut shared = 0;
    for (index, key_part) in key.split('.').enumerate() {
        let name_part = name_parts.get(index)?;
        if key_part == *name_part {
            shared += 1;
        } else {
            if differing.is_some() {
                return None;
            }
            differing = Some((index, key_part, *name_part));
        }
    }
    if shared == 0 {
        return None;
    }
    differing.map(|(index, key_part, name_part)| Miss::ComponentDiffers {
        index,
        key_part: key_part.to_owned(),
        name_part: name_part.to_owned(),
    })
}

/// What changed from one map to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Keys only in the new map, in its order.
    pub added: Vec<(String, Device)>,
    /// Keys only in the old map, in its order.
    pub removed: Vec<(String, Device)>,
    /// Keys in both whose device changed: (key, old, new), in the old map's order.
    pub moved: Vec<(String, Device, Device)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty()
    }
}

pub fn diff(old: &DeviceMap, new: &DeviceMap) -> Diff {
    let mut result = Diff::default();
    for (key, device) in old.iter() {
        match new.get(key) {
            None => result.removed.push((key.to_owned(), device)),
            Some(now) if now != device => result.moved.push((key.to_owned(), device, now)),
            Some(_) => {}
        }
    }
    for (key, device) in new.iter() {
        if !old.contains_key(key) {
            result.added.push((key.to_owned(), device));
        }
    }
    result
}

/// One device's share of a map (and of a model's tensors, when sizes were given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceUsage {
    pub device: Device,
    /// Map entries with this device.
    pub entries: usize,
    /// Tensors placed on it (0 without sizes).
    pub tensors: usize,
    /// Their total size in bytes (0 without sizes).
    pub bytes: u64,
}

/// Entries per device, and tensors and bytes per device when sizes were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// In order of each device's first entry.
    pub devices: Vec<DeviceUsage>,
    /// Whether tensor sizes were given (so `tensors` and `bytes` mean something).
    pub sized: bool,
    /// Tensors no key covers, and their bytes.
    pub uncovered_tensors: usize,
    pub uncovered_bytes: u64,
}

/// Entries per device.
pub fn summary(map: &DeviceMap) -> Summary {
    Summary {
        devices: map
            .device_counts()
            .into_iter()
            .map(|(device, entries)| DeviceUsage {
                device,
                entries,
                tensors: 0,
                bytes: 0,
            })
            .collect(),
        sized: false,
        uncovered_tensors: 0,
        uncovered_bytes: 0,
    }
}

/// Entries, tensors and bytes per device for tensors given as `(name, bytes)`. Byte totals
/// saturate rather than wrap. The first bad name is an error naming its position.
pub fn summary_with_sizes<'a>(
    map: &DeviceMap,
    sizes: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<Summary> {
    let mut result = summary(map);
    result.sized = true;
    let mut usage_of: HashMap<Device, usize, RandomState> = result
        .devices
        .iter()
        .enumerate()
        .map(|(i, usage)| (usage.device, i))
        .collect();
    let sizes = sizes.into_iter();
    let finder = Finder::new(map, sizes.size_hint().0);
    for (i, (name, bytes)) in sizes.enumerate() {
        match finder
            .find_checked(name)
            .map_err(|e| e.at_position(i))?
            .and_then(|position| map.get_index(position))
        {
            Some((_, device)) => {
                let index = *usage_of.entry(device).or_insert_with(|| {
                    result.devices.push(DeviceUsage {
                        device,
                        entries: 0,
                        tensors: 0,
                        bytes: 0,
                    });
                    result.devices.len() - 1
                });
                let usage = &mut result.devices[index];
                usage.tensors += 1;
                usage.bytes = usage.bytes.saturating_add(bytes);
            }
            None => {
                result.uncovered_tensors += 1;
                result.uncovered_bytes = result.uncovered_bytes.saturating_add(bytes);
            }
        }
    }
    Ok(result)
}

// ---- Text forms, shared by the Python objects' `str()` and the command line ----

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(n as u64),
        if n == 1 { one } else { many }
    )
}

/// Quoted like Python's repr of a plain string.
pub fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// How many name groups and unused keys a coverage text lists before `... and N more`.
pub const TEXT_MAX_LINES: usize = 20;

/// The uncovered names grouped into runs, then the unused keys when `with_unused`.
pub fn coverage_text<S: AsRef<str>>(
    map: &DeviceMap,
    names: &[S],
    coverage: &Coverage,
    with_unused: bool,
) -> String {
    let mut lines = Vec::new();
    if coverage.uncovered.is_empty() {
        lines.push(format!(
            "every one of {} is covered by the device map",
            plural(coverage.names, "tensor name", "tensor names")
        ));
    } else {
        lines.push(format!(
            "{} of {} {} not covered by the device map:",
            thousands(coverage.uncovered.len() as u64),
            plural(coverage.names, "tensor name", "tensor names"),
            if coverage.uncovered.len() == 1 {
                "is"
            } else {
                "are"
            }
        ));
        let uncovered: Vec<&str> = coverage
            .uncovered
            .iter()
            .map(|&i| names[i].as_ref())
            .collect();
        let groups = compact(&uncovered);
        for group in groups.iter().take(TEXT_MAX_LINES) {
            if group.count == 1 {
                lines.push(format!("  {}", group.pattern));
            } else {
                lines.push(format!(
                    "  {}  ({} names)",
                    group.pattern,
                    thousands(group.count as u64)
                ));
            }
        }
        if groups.len() > TEXT_MAX_LINES {
            lines.push(format!(
                "  ... and {} more groups",
                thousands((groups.len() - TEXT_MAX_LINES) as u64)
            ));
        }
        lines.push(format!(
            "{} not covered",
            plural(coverage.uncovered.len(), "tensor name", "tensor names")
        ));
    }
    if with_unused && !coverage.unused.is_empty() {
        let keys: Vec<String> = coverage
            .unused
            .iter()
            .take(TEXT_MAX_LINES)
            .filter_map(|&p| map.get_index(p))
            .map(|(key, _)| quoted(key))
            .collect();
        let more = coverage.unused.len().saturating_sub(TEXT_MAX_LINES);
        lines.push(format!(
            "{} of the device map {} no tensor name (a typo?): {}{}",
            plural(coverage.unused.len(), "key", "keys"),
            if coverage.unused.len() == 1 {
                "covers"
            } else {
                "cover"
            },
            keys.join(", "),
            if more > 0 {
                format!(" and {} more", thousands(more as u64))
            } else {
                String::new()
            }
        ));
    }
    lines.join("\n")
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.matched {
            Some((key, device)) => write!(f, "{} -> {device} (key {})", self.name, quoted(key))?,
            None => write!(f, "{} -> no key covers it", self.name)?,
        }
        if !self.shadowed.is_empty() {
            let shadowed: Vec<String> = self
                .shadowed
                .iter()
                .map(|(key, device)| format!("{} ({device})", quoted(key)))
                .collect();
            write!(
                f,
                "\n  shorter keys that also cover it: {}",
                shadowed.join(", ")
            )?;
        }
        if !self.near_misses.is_empty() {
            write!(f, "\n  near misses (do not cover it):")?;
            for near in &self.near_misses {
                write!(
                    f,
                    "\n    {} ({}): {}",
                    quoted(&near.key),
                    near.device,
                    near.miss.describe()
                )?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("no differences");
        }
        write!(
            f,
            "{} added, {} removed, {} moved",
            thousands(self.added.len() as u64),
            thousands(self.removed.len() as u64),
            thousands(self.moved.len() as u64)
        )?;
        for (key, device) in &self.added {
            write!(f, "\n+ {}: {device}", quoted(key))?;
        }
        for (key, device) in &self.removed {
            write!(f, "\n- {}: {device}", quoted(key))?;
        }
        for (key, old, new) in &self.moved {
            write!(f, "\n~ {}: {old} -> {new}", quoted(key))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: usize = self.devices.iter().map(|u| u.entries).sum();
        write!(
            f,
            "{} on {}",
            plural(entries, "entry", "entries"),
            plural(
                self.devices.iter().filter(|u| u.entries > 0).count(),
                "device",
                "devices"
            )
        )?;
        let width = self
            .devices
            .iter()
            .map(|u| u.device.to_string().len())
            .chain(["device".len()])
            .max()
            .unwrap_or(0);
        write!(f, "\n  {:<width$}  {:>9}", "device", "entries")?;
        if self.sized {
            write!(f, "  {:>9}  {:>10}", "tensors", "bytes")?;
        }
        for usage in &self.devices {
            write!(
                f,
                "\n  {:<width$}  {:>9}",
                usage.device.to_string(),
                thousands(usage.entries as u64)
            )?;
            if self.sized {
                write!(
                    f,
                    "  {:>9}  {:>10}",
                    thousands(usage.tensors as u64),
                    human_bytes(usage.bytes)
                )?;
            }
        }
        if self.sized && self.uncovered_tensors > 0 {
            write!(
                f,
                "\n  not covered: {}, {}",
                plural(self.uncovered_tensors, "tensor", "tensors"),
                human_bytes(self.uncovered_bytes)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Device)]) -> DeviceMap {
        pairs.iter().map(|(k, d)| (k.to_string(), *d)).collect()
    }

    /// The definition, one key at a time.
    fn reference(map: &DeviceMap, name: &str) -> Option<Device> {
        map.iter()
            .filter(|(key, _)| {
                key.is_empty()
                    || *key == name
                    || (name.starts_with(*key) && name.as_bytes()[key.len()] == b'.')
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(_, device)| device)
    }

    #[test]
    fn longest_dot_prefix_wins() {
        let m = map(&[
            ("model", Device::gpu(1)),
            ("model.layers.1", Device::gpu(0)),
            ("lm_head", Device::cpu()),
        ]);
        let get = |name: &str| device_for(&m, name).unwrap();
        assert_eq!(get("model.layers.1.mlp.weight"), Some(Device::gpu(0)));
        assert_eq!(get("model.layers.10.mlp.weight"), Some(Device::gpu(1)));
        assert_eq!(get("model.layers.1"), Some(Device::gpu(0)));
        assert_eq!(get("lm_head.weight"), Some(Device::cpu()));
        assert_eq!(get("lm_head_extra.weight"), None);
        assert_eq!(get("modelx.weight"), None);
    }

    #[test]
    fn empty_key_covers_everything_and_loses_to_any_other() {
        let m = map(&[("", Device::disk()), ("a.b", Device::gpu(2))]);
        assert_eq!(device_for(&m, "a.b.c").unwrap(), Some(Device::gpu(2)));
        assert_eq!(device_for(&m, "a.bc").unwrap(), Some(Device::disk()));
        assert_eq!(device_for(&m, "zzz").unwrap(), Some(Device::disk()));
    }

    #[test]
    fn keys_are_literal_text() {
        let m = map(&[
            ("model.layers.[0-9]", Device::gpu(0)),
            ("a.*", Device::gpu(1)),
        ]);
        assert_eq!(device_for(&m, "model.layers.3.w").unwrap(), None);
        assert_eq!(
            device_for(&m, "model.layers.[0-9].w").unwrap(),
            Some(Device::gpu(0))
        );
        assert_eq!(device_for(&m, "a.b").unwrap(), None);
        assert_eq!(device_for(&m, "a.*.b").unwrap(), Some(Device::gpu(1)));
    }

    #[test]
    fn bad_names_are_refused() {
        let m = map(&[("", Device::cpu())]);
        for bad in ["", ".a", "a.", "a..b", "."] {
            let err = device_for(&m, bad).unwrap_err();
            assert!(matches!(err, Error::BadName { .. }), "{bad:?}: {err}");
        }
        for finder in [Finder::new(&m, 0), Finder::new(&m, 100)] {
            for bad in ["", ".a", "a.", "a..b", ".", "a.b..", "..a"] {
                assert_eq!(finder.find_checked(bad), Err(check_name(bad).unwrap_err()));
            }
        }
        let err = slots_for(&m, &["a", "b", "c."]).unwrap_err();
        assert!(err.to_string().contains("position 2"), "{err}");
    }

    #[test]
    fn dots_are_found_at_every_offset() {
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let len = rng.below(70) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => b'.',
                    1 => b'-', // 0x2D, next to '.' (0x2E)
                    2 => b'/', // 0x2F
                    _ => 0xAE, // '.' with the high bit set
                })
                .collect();
            let expected: Vec<u32> = (0..len as u32)
                .filter(|&i| text[i as usize] == b'.')
                .collect();
            let mut dots = [0u32; FAST_DOTS];
            match find_dots(&text, &mut dots) {
                Some(count) => assert_eq!(&dots[..count], &expected[..]),
                None => assert!(expected.len() > FAST_DOTS),
            }
        }
    }

    #[test]
    fn finder_agrees_at_every_depth_around_its_fast_path() {
        for key_depth in [1, 2, 31, 32, 33, 34, 40] {
            let key = vec!["k"; key_depth].join(".");
            let m = map(&[(key.as_str(), Device::gpu(1)), ("k.k", Device::gpu(2))]);
            for depth in 1..45 {
                let name = vec!["k"; depth].join(".");
                for finder in [Finder::new(&m, 0), Finder::new(&m, 100)] {
                    assert_eq!(
                        finder.find_checked(&name).unwrap(),
                        find(&m, &name),
                        "{depth}"
                    );
                }
            }
        }
    }

    #[test]
    fn deep_names_work_up_to_the_limit() {
        let name = vec!["x"; MAX_NAME_DEPTH].join(".");
        let key = vec!["x"; MAX_NAME_DEPTH / 2].join(".");
        let m = map(&[(key.as_str(), Device::gpu(3))]);
        assert_eq!(device_for(&m, &name).unwrap(), Some(Device::gpu(3)));
        assert_eq!(Finder::new(&m, 1).find_checked(&name).unwrap(), Some(0));
        assert_eq!(Finder::new(&m, 0).find_checked(&name).unwrap(), Some(0));
        let deeper = format!("{name}.x");
        let err = device_for(&m, &deeper).unwrap_err().to_string();
        assert!(err.contains("1025 components deep"), "{err}");
        assert!(err.len() < 200, "the name is shortened: {err}");
        let long = "y".repeat(MAX_NAME_BYTES + 1);
        assert!(device_for(&m, &long).is_err());
        assert_eq!(device_for(&m, &long[1..]).unwrap(), None);
    }

    #[test]
    fn mutations_are_seen_by_the_next_lookup() {
        let mut m = map(&[("a", Device::cpu())]);
        assert_eq!(device_for(&m, "a.b.c").unwrap(), Some(Device::cpu()));
        m.insert("a.b", Device::gpu(0));
        assert_eq!(device_for(&m, "a.b.c").unwrap(), Some(Device::gpu(0)));
        m.insert("a.b", Device::gpu(1));
        assert_eq!(device_for(&m, "a.b.c").unwrap(), Some(Device::gpu(1)));
        m.remove("a.b");
        assert_eq!(device_for(&m, "a.b.c").unwrap(), Some(Device::cpu()));
        let slot = m.intern(Device::disk());
        m.push_new("a.b.c", slot);
        assert_eq!(device_for(&m, "a.b.c").unwrap(), Some(Device::disk()));
        m.clear();
        assert_eq!(device_for(&m, "a.b.c").unwrap(), None);
    }

    /// A small deterministic generator, so the crate needs no test dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn agrees_with_the_definition() {
        let parts = ["a", "b", "1", "10", "1a", "é", "", "a.b"];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..300 {
            let mut m = DeviceMap::new();
            let random_name = |rng: &mut Rng| {
                let depth = 1 + rng.below(5);
                (0..depth)
                    .map(|_| parts[rng.below(parts.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(".")
            };
            for i in 0..rng.below(12) {
                let key = if rng.below(10) == 0 {
                    String::new()
                } else {
                    random_name(&mut rng)
                };
                m.insert(&key, Device::gpu(i));
            }
            let names: Vec<String> = (0..50)
                .map(|_| random_name(&mut rng))
                .filter(|name| check_name(name).is_ok())
                .collect();
            let finder = Finder::new(&m, names.len());
            let small = Finder::new(&m, 0);
            for name in &names {
                assert_eq!(finder.find(name), find(&m, name), "{name:?}");
                assert_eq!(
                    finder.find_checked(name).unwrap(),
                    find(&m, name),
                    "{name:?}"
                );
                assert_eq!(
                    small.find_checked(name).unwrap(),
                    find(&m, name),
                    "{name:?}"
                );
                assert_eq!(
                    device_for(&m, name).unwrap(),
                    reference(&m, name),
                    "{name:?} in {m:?}"
                );
            }
            // Coverage: a name is uncovered iff the definition finds no key; a key is unused
            // iff it covers no name by the definition.
            let cov = coverage(&m, &names).unwrap();
            let uncovered: Vec<usize> = (0..names.len())
                .filter(|&i| reference(&m, &names[i]).is_none())
                .collect();
            assert_eq!(cov.uncovered, uncovered);
            let unused: Vec<usize> = m
                .iter()
                .enumerate()
                .filter(|(_, (key, _))| !names.iter().any(|n| covers(key, n)))
                .map(|(p, _)| p)
                .collect();
            assert_eq!(cov.unused, unused, "{names:?} {m:?}");
        }
    }

    fn covers(key: &str, name: &str) -> bool {
        key.is_empty()
            || key == name
            || (name.starts_with(key) && name.as_bytes()[key.len()] == b'.')
    }

    #[test]
    fn slots_and_groups_agree_with_single_lookups() {
        let m = map(&[
            ("a", Device::cpu()),
            ("b", Device::gpu(1)),
            ("a.x", Device::gpu(1)),
        ]);
        let names = ["a.y", "b.z", "a.x.w", "a"];
        let slots = require_slots(&m, &names).unwrap();
        for (name, slot) in names.iter().zip(&slots) {
            assert_eq!(
                Some(m.table()[*slot as usize]),
                device_for(&m, name).unwrap()
            );
        }
        let groups = group_by_slot(&m, &names).unwrap();
        let shown: Vec<(Device, Vec<usize>)> = groups
            .into_iter()
            .map(|(slot, idx)| (m.table()[slot as usize], idx))
            .collect();
        assert_eq!(
            shown,
            vec![(Device::cpu(), vec![0, 3]), (Device::gpu(1), vec![1, 2])]
        );
        let err = require_slots(&m, &["a.y", "c.q"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "No key of the device map covers tensor 'c.q' (at position 1)"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Key);
    }

    #[test]
    fn coverage_names_gaps_and_unused_keys() {
        let m = map(&[
            ("model.embed", Device::gpu(0)),
            ("model.layers.0", Device::gpu(0)),
            ("model.layers.1", Device::gpu(1)),
            ("model.layer.2", Device::gpu(1)),
            ("model", Device::cpu()),
        ]);
        let names = [
            "model.embed.weight",
            "model.layers.0.w",
            "model.layers.2.w",
            "lm_head.weight",
        ];
        let cov = coverage(&m, &names).unwrap();
        assert_eq!(cov.uncovered, vec![3]);
        // `model` covers `model.layers.2.w`; `model.layers.1` and the typo cover nothing.
        assert_eq!(cov.unused, vec![2, 3]);
        assert!(!cov.is_complete());
        let text = coverage_text(&m, &names, &cov, true);
        assert_eq!(
            text,
            "1 of 4 tensor names is not covered by the device map:\n  lm_head.weight\n\
             1 tensor name not covered\n\
             2 keys of the device map cover no tensor name (a typo?): 'model.layers.1', 'model.layer.2'"
        );
    }

    #[test]
    fn compact_groups_numeric_runs() {
        let mut names = Vec::new();
        for layer in 3..61 {
            for expert in 0..4 {
                names.push(format!("model.layers.{layer}.mlp.experts.{expert}.w"));
            }
            names.push(format!("model.layers.{layer}.mlp.gate.weight"));
        }
        names.retain(|n| n != "model.layers.17.mlp.experts.2.w");
        names.push("lm_head.weight".to_owned());
        names.push("model.layers.07.x".to_owned());
        let groups = compact(&names);
        let shown: Vec<(&str, usize)> = groups
            .iter()
            .map(|g| (g.pattern.as_str(), g.count))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("model.layers.{3..16,18..60}.mlp.experts.{0..3}.w", 57 * 4),
                ("model.layers.{3..60}.mlp.gate.weight", 58),
                ("model.layers.17.mlp.experts.{0,1,3}.w", 3),
                ("lm_head.weight", 1),
                ("model.layers.07.x", 1),
            ]
        );
    }

    #[test]
    fn explain_names_the_match_the_shadowed_and_near_misses() {
        let m = map(&[
            ("model.layers.1", Device::gpu(0)),
            ("model", Device::gpu(1)),
            ("model.layer.10", Device::gpu(2)),
            ("model.layers.10.mlp.up", Device::gpu(3)),
            ("", Device::cpu()),
            ("lm_head", Device::disk()),
        ]);
        let e = explain(&m, "model.layers.10.mlp").unwrap();
        assert_eq!(e.matched, Some(("model".to_owned(), Device::gpu(1))));
        assert_eq!(e.shadowed, vec![(String::new(), Device::cpu())]);
        let misses: Vec<(&str, &str)> = e
            .near_misses
            .iter()
            .map(|n| (n.key.as_str(), n.miss.code()))
            .collect();
        assert_eq!(
            misses,
            vec![
                ("model.layers.1", "no-dot-boundary"),
                ("model.layer.10", "component-differs"),
                ("model.layers.10.mlp.up", "inside-name"),
            ]
        );
        let e = explain(&m, "lm_head_extra.weight").unwrap();
        assert_eq!(e.matched, Some((String::new(), Device::cpu())));
        assert_eq!(e.near_misses[0].key, "lm_head");
        assert!(explain(&m, "a..b").is_err());
    }

    #[test]
    fn diff_lists_added_removed_and_moved() {
        let old = map(&[
            ("a", Device::cpu()),
            ("b", Device::gpu(0)),
            ("c", Device::gpu(1)),
        ]);
        let new = map(&[
            ("c", Device::gpu(2)),
            ("b", Device::gpu(0)),
            ("d", Device::disk()),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.removed, vec![("a".to_owned(), Device::cpu())]);
        assert_eq!(d.added, vec![("d".to_owned(), Device::disk())]);
        assert_eq!(
            d.moved,
            vec![("c".to_owned(), Device::gpu(1), Device::gpu(2))]
        );
        assert!(diff(&old, &old.clone()).is_empty());
        assert_eq!(
            d.to_string(),
            "1 added, 1 removed, 1 moved\n+ 'd': disk\n- 'a': cpu\n~ 'c': cuda:1 -> cuda:2"
        );
    }

    #[test]
    fn summary_counts_entries_and_bytes() {
        let m = map(&[
            ("a", Device::gpu(0)),
            ("b", Device::cpu()),
            ("c", Device::gpu(0)),
        ]);
        let s = summary(&m);
        assert!(!s.sized);
        assert_eq!(
            s.devices
                .iter()
                .map(|u| (u.device, u.entries))
                .collect::<Vec<_>>(),
            vec![(Device::gpu(0), 2), (Device::cpu(), 1)]
        );
        let s = summary_with_sizes(
            &m,
            [
                ("a.w", 10),
                ("c.w", 5),
                ("b.w", 7),
                ("z", 1),
                ("a.x", u64::MAX),
            ],
        )
        .unwrap();
        assert_eq!(
            s.devices
                .iter()
                .map(|u| (u.device, u.entries, u.tensors, u.bytes))
                .collect::<Vec<_>>(),
            vec![(Device::gpu(0), 2, 3, u64::MAX), (Device::cpu(), 1, 1, 7)]
        );
        assert_eq!((s.uncovered_tensors, s.uncovered_bytes), (1, 1));
        let text = s.to_string();
        assert!(text.starts_with("3 entries on 2 devices"), "{text}");
        assert!(text.contains("not covered: 1 tensor, 1 B"), "{text}");
        assert!(summary_with_sizes(&m, [("ok", 1), ("", 2)])
            .unwrap_err()
            .to_string()
            .contains("position 1"));
    }
}
