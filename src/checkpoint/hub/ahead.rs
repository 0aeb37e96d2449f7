//! A checkpoint read ahead: on a second plan of a repository, the files cached for the commit
//! its branch resolved to last time are read (as the reader reads them, headers parsed and
//! checked) while the Hub is asked where the branch is now, and handed to the reader (see
//! [`Source::take_read`]) when the answer is that same commit. A warm plan then waits on one
//! round trip, not on one round trip and then the reading.
//!
//! [`Source::take_read`]: crate::checkpoint::Source::take_read

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::cache::{Cache, Entry};
use super::client::Client;
use super::{HubOptions, HubSource, Inner, Repo};
use crate::checkpoint::{read_ahead, Checkpoint, Layout, ReadAhead};

/// Threads that read ahead: one per core, at most 8 (as the reader has).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// `repo` at `commit` read from devicemap's cache (`entries`, read from it already) as the
/// plan of it that recorded what it fetched read it; `None` when anything of it is not
/// cached, or when reading it fails (the reader then reads again, and says what is wrong).
pub(super) fn read(
    client: &Arc<Client>,
    options: &HubOptions,
    repo: &Repo,
    commit: &str,
    entries: &HashMap<String, Arc<Entry>>,
) -> Option<(Layout, ReadAhead)> {
    let cache = Cache::new(options.cache.as_deref(), &client.endpoint, repo);
    let record = cache.prefetched(commit)?;
    let listing = cache.listing(commit, false)?;
    let layout = match record.index {
        Some(index) => Layout::Index(index),
        None => Layout::Files(record.files),
    };
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
    let checkpoint = Checkpoint::new(Box::new(source), layout.clone()).ok()?;
    let read = read_ahead(&checkpoint, threads()).ok()?;
    Some((layout, read))
}
