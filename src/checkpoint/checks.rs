//! The checks across a checkpoint's files: no tensor name twice, and each where its index
//! says.

use std::path::Path;

use ahash::RandomState;
use hashbrown::HashTable;

use super::error::{bad, CheckpointError, Problem};
use super::header::Header;
use super::index::IndexTable;
use super::read::Arrivals;
use super::source::Source;
use crate::error::{Error, Result};

/// The checks across files, fed the files in order: no tensor name twice (JSON objects may
/// repeat a key, which a loader would resolve silently), and with an index, each tensor in the
/// shard the index names and every tensor the index names found. Every name is looked up, in
/// file order, so the first error found never depends on which file a thread finished first.
pub(super) struct Checks<'a> {
    source: &'a dyn Source,
    /// The files' names in `source`.
    files: &'a [String],
    per_file: Vec<Header>,
    /// Names seen so far that the index does not list (all of them without an index), as
    /// (file, position).
    seen: HashTable<(u32, u32)>,
    /// The hasher of `seen` and of the index's table, so a name is hashed once for both.
    hasher: &'a RandomState,
    index: Option<IndexTable<'a>>,
}

impl<'a> Checks<'a> {
    pub(super) fn new(
        source: &'a dyn Source,
        files: &'a [String],
        hasher: &'a RandomState,
        index: Option<IndexTable<'a>>,
    ) -> Self {
        Checks {
            source,
            files,
            per_file: Vec::with_capacity(files.len()),
            seen: HashTable::new(),
            hasher,
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
                self.add(result?)?;
                if let Some(header) = self.per_file.last() {
                    observe(header, total);
                }
                next += 1;
            }
        }
        self.finish()
    }

    fn add(&mut self, header: Header) -> Result<()> {
        let file = self.per_file.len();
        if file == 0 && self.index.is_none() {
            // Shards are about the same size: room for all without growing step by step.
            let guess = header.len().saturating_mul(self.files.len());
            // (The table is still empty: the hasher is never called.)
            self.seen.reserve(guess.min(1 << 24), |_| 0);
        }
        let Checks {
            source,
            files,
            per_file,
            seen,
            hasher,
            index,
        } = self;
        let name_at = |(f, p): (u32, u32)| -> &str {
            let header = if f as usize == file {
                &header
            } else {
                &per_file[f as usize]
            };
            header.name(&header.tensors[p as usize])
        };
        for (position, (name, _)) in header.iter().enumerate() {
            let hash = hasher.hash_one(name);
            if let Some(table) = index.as_mut() {
                if let Some(e) = table.find(hash, name) {
                    let first = table.found[e];
                    if first != u32::MAX {
                        return Err(duplicate(*source, files, first as usize, file, name));
                    }
                    let named = table.entries[e].shard;
                    if named != file {
                        let problem = Problem::WrongShard {
                            named: file_name(&files[named]),
                            found: source.show(&files[file]),
                        };
                        return Err(bad(table.path, Some(name), problem));
                    }
                    table.found[e] = file as u32;
                    continue;
                }
            }
            if let Some(&(first, _)) = seen.find(hash, |&other| name_at(other) == name) {
                return Err(duplicate(*source, files, first as usize, file, name));
            }
            seen.insert_unique(hash, (file as u32, position as u32), |&other| {
                hasher.hash_one(name_at(other))
            });
        }
        self.per_file.push(header);
        Ok(())
    }

    fn finish(self) -> Result<Vec<Header>> {
        if self.per_file.len() < self.files.len() {
            return Err(Error::Internal(
                "a header reader thread stopped before reading every file".to_owned(),
            ));
        }
        if let Some(table) = &self.index {
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
                .map(|table| table.path.to_owned())
                .or(self.files.first().map(|file| self.source.show(file)))
                .unwrap_or_default();
            return Err(CheckpointError::NoTensors { what }.into());
        }
        Ok(self.per_file)
    }
}

/// The last component of a file's name.
fn file_name(name: &str) -> String {
    Path::new(name)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn duplicate(
    source: &dyn Source,
    files: &[String],
    first: usize,
    file: usize,
    name: &str,
) -> Error {
    let problem = if first == file {
        Problem::TwiceInHeader
    } else {
        Problem::AlsoIn {
            first: source.show(&files[first]),
        }
    };
    bad(&source.show(&files[file]), Some(name), problem)
}
