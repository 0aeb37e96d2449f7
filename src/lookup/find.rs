//! The lookup itself, for one name or a batch, and the names it refuses.
//!
//! A lookup probes the map's own key index (built once per map, kept up to date by every
//! change) with the name, then with each dot-prefix of it, longest first: at most one probe
//! per component, whatever the number of keys. A trie of components was measured against
//! this (93,696 DeepSeek-V3 expert names, release build) and lost: 246 vs 186 ns per name with
//! a key per layer, 503 vs 121 ns with a key per expert, because the deepest key is usually a
//! few components from the end of the name and hashing a whole prefix costs about as much as
//! hashing one component.
//!
//! A batch first tries the position found for the previous name ([`Finder::near`]): names
//! listed in the map's order are the next key, or share the previous name's covering key, and
//! then cost a comparison of text instead of hashes and probes (devices_for on 100k names in
//! order, release build, loaded machine, best of 40: 202-214 -> 96-109 ns per name with a key
//! per tensor, 106-128 -> 56-71 with a key per layer).
//!
//! Where a batch's time went (`perf`, release build, 100k names in map order, `devices_for`):
//! before the one-pass bindings, the lookup itself 30% (about half of it [`find_dots`]'s loop
//! over each dot), copying the names into one buffer 15% (memmove, the push, the `&str`
//! list), fresh pages 6%, the two intermediate slot lists 8%, reading each `str`'s UTF-8 4%;
//! after, the lookup 37-44% and reading each name 8%. A branch-free variant of the dot scan
//! (one mask per eight bytes, popcounts instead of a loop over the dots) measured slower,
//! 40-46 -> 52-60 ns per name, and was dropped. In random order the exact-key lookup waits on
//! memory: the key's text compare 34% and the index probe 26%, each a cache miss per name.

use super::error::{LookupError, NameProblem};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::map::{DeviceMap, Slot};

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
    /// For a batch of `names` names: the map's key depths, computed once per map (O(keys))
    /// and kept by it; a batch much smaller than a map that has not computed them yet probes
    /// every prefix instead.
    pub fn new(map: &'m DeviceMap, names: usize) -> Self {
        let depths = match map.known_key_depths() {
            Some(depths) => depths,
            None if names.saturating_mul(4) < map.len() => u64::MAX,
            None => map.key_depths(),
        };
        Finder { map, depths }
    }

    #[inline]
    fn may_have(&self, depth: usize) -> bool {
        depth >= 63 || self.depths & (1 << depth) != 0
    }

    /// The slot of the entry at `position` (a position this finder returned).
    #[inline]
    pub fn slot(&self, position: usize) -> Slot {
        self.map.slot_at(position).unwrap_or(0)
    }

    /// [`check_name`] then [`find`], in one pass over the name where it can.
    #[inline]
    pub fn find_checked(&self, name: &str) -> Result<Option<usize>> {
        self.find_checked_after(name, None)
    }

    /// [`find_checked`](Self::find_checked) for the next name of a batch, given the position
    /// found for an earlier one (`previous`): where that position settles the answer (see
    /// [`near`](Self::near)) no key is hashed or probed.
    #[inline]
    pub fn find_checked_after(&self, name: &str, previous: Option<usize>) -> Result<Option<usize>> {
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
        if let Some(position) = previous.and_then(|p| self.near(name, dots_seen, p)) {
            return Ok(Some(position));
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

    /// The position covering `name` (a checked name whose dots are at `dots`) read off the
    /// position found for the previous name, where that settles it without a probe; `None`
    /// where it does not. Names listed in the map's own order (a model's parameters against a
    /// map made from that model) are the next key, or share the previous name's covering key:
    /// - the key at `previous`, or the next live entry's key, is `name` itself: an exact key;
    /// - the key at `previous` is a dot-prefix of `name` and no key has a depth between the two
    ///   (the finder knows the depths), so no longer key can cover `name`.
    ///
    /// Names in another order cost one or two comparisons of text just read, then the probes.
    #[inline]
    fn near(&self, name: &str, dots: &[u32], previous: usize) -> Option<usize> {
        let (key, _) = self.map.get_index(previous)?;
        let depth = dots.len() + 1;
        if self.may_have(depth) {
            if key == name {
                return Some(previous);
            }
            if let Some((after, next, _)) = self.map.next_from(previous + 1) {
                if next == name {
                    return Some(after - 1);
                }
            }
        }
        // The key's depth, if it ends at one of the name's dots, and then whether it is the
        // name's prefix; keys of depths `key_depth + 1 ..= depth` could cover `name` better.
        let key_depth = dots.iter().position(|&dot| dot as usize == key.len())? + 1;
        if depth >= 63 || !name.as_bytes().starts_with(key.as_bytes()) {
            return None;
        }
        let deeper = ((1u64 << (depth + 1)) - 1) & !((1u64 << (key_depth + 1)) - 1);
        (self.depths & deeper == 0).then_some(previous)
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
    let bad = |problem: NameProblem| -> Error {
        LookupError::BadName {
            name: shorten(name),
            problem,
        }
        .into()
    };
    if name.is_empty() {
        return Err(bad(NameProblem::Empty));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(NameProblem::TooLong { bytes: name.len() }));
    }
    let bytes = name.as_bytes();
    if bytes[0] == b'.' {
        return Err(bad(NameProblem::StartsWithDot));
    }
    if bytes[bytes.len() - 1] == b'.' {
        return Err(bad(NameProblem::EndsWithDot));
    }
    let mut depth = 1;
    let mut previous = 0u8;
    for &b in bytes {
        if b == b'.' {
            if previous == b'.' {
                return Err(bad(NameProblem::EmptyComponent));
            }
            depth += 1;
        }
        previous = b;
    }
    if depth > MAX_NAME_DEPTH {
        return Err(bad(NameProblem::TooDeep { depth }));
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
    device_for(map, name)?.ok_or_else(|| {
        LookupError::Uncovered {
            name: name.to_owned(),
        }
        .into()
    })
}

/// How far past the previous name's position the next name may be found and still count as
/// following the map's order (a few keys the batch does not name in between).
const IN_ORDER_GAP: usize = 8;

/// A batch lookup fed one name at a time, for callers that read each name where it lies (the
/// bindings borrow each Python `str`'s UTF-8) instead of collecting the names first. Each name
/// starts from the position found for the previous one ([`Finder::find_checked_after`]) while
/// the names follow the map's order.
pub struct Batch<'m> {
    finder: Finder<'m>,
    previous: Option<usize>,
    /// Whether the last name was found at or just after the position of the one before it:
    /// names in the map's order. Names in another order skip the previous position, whose key
    /// text is then a cache miss that settles nothing (`devices_for` of 100k shuffled exact
    /// keys, release build: 146-154 -> 119-120 ns a name; deep names 52-55 -> 47), until they
    /// follow the map's order again.
    in_order: bool,
    /// Names looked up so far: the next name's position in the batch.
    count: usize,
    /// The first name no key covered, with its position, for [`require`](Self::require).
    uncovered: Option<(String, usize)>,
}

impl<'m> Batch<'m> {
    /// For a batch of about `names` names.
    pub fn new(map: &'m DeviceMap, names: usize) -> Self {
        Batch {
            finder: Finder::new(map, names),
            previous: None,
            in_order: true,
            count: 0,
            uncovered: None,
        }
    }

    /// The slot (in `map.table()`) of the next name's device, or `None` where no key covers
    /// it; a bad name is an error naming its position.
    #[inline]
    pub fn slot(&mut self, name: &str) -> Result<Option<Slot>> {
        let at = self.count;
        self.count += 1;
        let start = self.previous.filter(|_| self.in_order);
        let found = self
            .finder
            .find_checked_after(name, start)
            .map_err(|e| e.at_position(at))?;
        if let (Some(found), Some(previous)) = (found, self.previous) {
            self.in_order = (previous..=previous + IN_ORDER_GAP).contains(&found);
        }
        self.previous = found.or(self.previous);
        Ok(found.map(|position| self.finder.slot(position)))
    }

    /// [`slot`](Self::slot) for a batch where every name must be covered: an uncovered name
    /// gets slot 0 and the first one is reported by [`finish`](Self::finish), after every
    /// name has been checked (a bad name later in the batch is the error, as it is for
    /// [`require_slots`]).
    #[inline]
    pub fn require(&mut self, name: &str) -> Result<Slot> {
        let slot = self.slot(name)?;
        if slot.is_none() && self.uncovered.is_none() {
            self.uncovered = Some((name.to_owned(), self.count - 1));
        }
        Ok(slot.unwrap_or(0))
    }

    /// The error for the first uncovered name given to [`require`](Self::require), if any.
    pub fn finish(self) -> Result<()> {
        match self.uncovered {
            None => Ok(()),
            Some((name, at)) => Err(Error::from(LookupError::Uncovered { name }).at_position(at)),
        }
    }
}

/// The slot (in `map.table()`) of each name's device, or `None` where no key covers it. The
/// first bad name is an error naming its position.
pub fn slots_for<S: AsRef<str>>(map: &DeviceMap, names: &[S]) -> Result<Vec<Option<Slot>>> {
    let mut batch = Batch::new(map, names.len());
    names.iter().map(|name| batch.slot(name.as_ref())).collect()
}

/// Like [`slots_for`], but every name must be covered: the first that is not is an error
/// naming it and its position.
pub fn require_slots<S: AsRef<str>>(map: &DeviceMap, names: &[S]) -> Result<Vec<Slot>> {
    let mut batch = Batch::new(map, names.len());
    let slots = names
        .iter()
        .map(|name| batch.require(name.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    batch.finish()?;
    Ok(slots)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::coverage::coverage;
    use crate::lookup::testing::map;

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
            assert!(
                matches!(err, Error::Lookup(LookupError::BadName { .. })),
                "{bad:?}: {err}"
            );
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
            // A batch, as given and in the map's order (where the previous position settles
            // most names): each name's slot is the definition's device.
            let mut in_order = names.clone();
            in_order.sort_by_key(|name| find(&m, name));
            in_order.extend(m.iter().map(|(key, _)| key.to_owned()));
            in_order.retain(|name| check_name(name).is_ok());
            // In order, then as given, then in order again: the batch stops and resumes
            // starting from the previous position.
            let mixed: Vec<String> = [&in_order[..], &names[..], &in_order[..]].concat();
            for batch in [&names, &in_order, &mixed] {
                assert_batch_agrees(&m, batch);
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
    fn the_previous_names_key_never_hides_a_longer_one() {
        let m = map(&[
            ("model.layers.0", Device::gpu(0)),
            ("model.layers.1", Device::gpu(1)),
            ("model.layers.1.mlp", Device::cpu()),
            ("model.layers.2", Device::gpu(2)),
            ("", Device::disk()),
        ]);
        let names = [
            "model.layers.1.attn.w",
            "model.layers.1.mlp.w", // the previous key covers it, a longer one wins
            "model.layers.1.attn.b",
            "model.layers.1",
            "model.layers.1.mlp", // the next entry's key exactly
            "model.layers.1.mlp",
            "model.layers.2.x",
            "model.layers.0.x", // out of order
            "lm_head",
            "model.layers.0.y",
        ];
        // A big batch (the map's key depths known) and, through a map too big for the batch
        // to compute them, one that probes every depth.
        let mut big = m.clone();
        for i in 0..100 {
            big.insert(&format!("other.{i}"), Device::gpu(7));
        }
        for (map, batch) in [(&m, &names[..]), (&big, &names[..2])] {
            assert_batch_agrees(map, batch);
        }
    }

    /// Each name's slot from one batch gives the definition's device.
    fn assert_batch_agrees<S: AsRef<str>>(map: &DeviceMap, batch: &[S]) {
        let slots = slots_for(map, batch).unwrap();
        for (name, slot) in batch.iter().zip(slots) {
            let device = slot.map(|slot| map.table()[slot as usize]);
            assert_eq!(device, reference(map, name.as_ref()), "{:?}", name.as_ref());
        }
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
}
