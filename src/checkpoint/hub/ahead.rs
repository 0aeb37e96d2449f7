//! A checkpoint read ahead: on a second plan of a repository, the checkpoint cached for the
//! commit its branch resolved to last time is read (as the reader read it: the compact copy
//! the last plan kept, else the cached files, headers parsed and checked) while the Hub is
//! asked where the branch is now, and handed to the reader (see [`Source::take_read`]) when
//! the answer is that same commit. A warm plan then waits on one round trip, not on one round
//! trip and then the reading.
//!
//! [`Source::take_read`]: crate::checkpoint::Source::take_read

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::cache::{Cache, Entry};
use super::client::Client;
use super::compact;
use super::{HubOptions, HubSource, Inner, Repo};
use crate::checkpoint::{read_ahead, Checkpoint, Layout, ReadAhead};

/// Threads that read ahead: one per core, at most 8 (as the reader has).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// What devicemap's cache holds of `repo` at `commit`, read: with `ahead`, the checkpoint as
/// the plan that recorded what it fetched read it ([`compact`] when kept, else read again from
/// the cached files, and then kept); else, and when that fails, the cached files (for the
/// reader, which then reads them and says what is wrong).
pub(super) fn read(
    client: &Arc<Client>,
    options: &HubOptions,
    repo: &Repo,
    commit: &str,
    ahead: bool,
) -> (Files, Option<(Layout, ReadAhead)>) {
    let cache = Cache::new(options.cache.as_deref(), &client.endpoint, repo);
    let layout = ahead.then(|| recorded_layout(&cache, commit)).flatten();
    if let (Some(layout), Some(kept)) = (&layout, cache.read(commit)) {
        match compact::from_bytes(&kept) {
            Some(read) => return (Files::new(), Some((layout.clone(), read))),
            // Kept again once the checkpoint is read.
            None => cache.remove_read(commit),
        }
    }
    let entries: Files = cache
        .entries(commit)
        .into_iter()
        .map(|(name, entry)| (name, Arc::new(entry)))
        .collect();
    let read = layout.and_then(|layout| {
        let read = read_files(client, cache, repo, commit, &entries, &layout)?;
        Some((layout, read))
    });
    (entries, read)
}

/// Files by name.
pub(super) type Files = HashMap<String, Arc<Entry>>;

/// The layout the plan that recorded what it fetched of `commit` found.
pub(super) fn recorded_layout(cache: &Cache, commit: &str) -> Option<Layout> {
    let record = cache.prefetched(commit)?;
    Some(match record.index {
        Some(index) => Layout::Index(index),
        None => Layout::Files(record.files),
    })
}

/// The checkpoint read from `entries` with `layout`, kept in the cache once read.
fn read_files(
    client: &Arc<Client>,
    cache: Cache,
    repo: &Repo,
    commit: &str,
    entries: &Files,
    layout: &Layout,
) -> Option<ReadAhead> {
    let listing = cache.listing(commit, false)?;
    let source = HubSource(Arc::new(Inner {
        client: client.clone(),
        cache,
        repo: repo.clone(),
        commit: commit.to_owned(),
        listing: listing.into_iter().collect(),
        entries: Mutex::new(entries.clone()),
        preloaded: Mutex::default(),
        read: Mutex::default(),
        // Nothing from the network: the commit is only a guess until the Hub answers.
        offline: true,
        stats: Mutex::default(),
    }));
    let checkpoint = Checkpoint::new(Box::new(source.clone()), layout.clone()).ok()?;
    let read = read_ahead(&checkpoint, threads()).ok()?;
    source.0.cache.set_read(commit, &compact::to_bytes(&read));
    Some(read)
}
