//! The checks across a checkpoint's files: no tensor name twice, and each where its index
//! says.

use std::path::{Path, PathBuf};

use hashbrown::HashTable;

use super::error::{bad, CheckpointError, Problem};
use super::header::Header;
use super::index::{Digest, Index, Listed};
use super::read::Arrivals;
use crate::error::{Error, Result};

/// The checks across files, fed the files in order: no tensor name twice (JSON objects may
/// repeat a key, which a loader would resolve silently), and with an index, each tensor in the
/// shard the index names and every tensor the index names found. Fed in file order, the first
/// error found never depends on which file a thread finished first.
pub(super) struct Checks<'a> {
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
pub(super) struct IndexCheck<'a> {
    pub(super) index: Index<'a>,
    /// Each file's shard id.
    pub(super) ids: Vec<usize>,
    /// The digest of the index, and whether its names' hashes are distinct.
    pub(super) listed: Digest,
    pub(super) distinct: bool,
    /// The digest of the headers read so far.
    pub(super) read: Digest,
    pub(super) table: Option<IndexTable<'a>>,
}

/// An index's entries by name, and the file each was found in (`u32::MAX`: not yet).
pub(super) struct IndexTable<'a> {
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
                return Err(bad(path, Some(&listed.tensor), Problem::ListedTwice));
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
    pub(super) fn new(files: &'a [PathBuf], index: Option<IndexCheck<'a>>) -> Self {
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
    pub(super) fn run(
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
                        let problem = Problem::WrongShard {
                            named: file_name(&self.files[named]),
                            found: self.files[file].display().to_string(),
                        };
                        return Err(bad(table.path, Some(name), problem));
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
                let named = file_name(&self.files[listed.shard]);
                let problem = Problem::NotInShard { named };
                return Err(bad(table.path, Some(&listed.tensor), problem));
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
            return Err(CheckpointError::NoTensors { what }.into());
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
    let problem = if first == file {
        Problem::TwiceInHeader
    } else {
        Problem::AlsoIn {
            first: files[first].display().to_string(),
        }
    };
    bad(&files[file], Some(name), problem)
}
