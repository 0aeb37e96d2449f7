//! What is fetched from the Hub, and how: the revision resolved to a commit with its file
//! listing (one API request), then the checkpoint's small files whole and each safetensors
//! file's header by a range request (a second range when the header is longer than the first
//! asked for), many at once. Each file comes from devicemap's cache, else huggingface_hub's
//! downloads, else the network (never when offline).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use serde::Deserialize;

use super::cache::{Cache, Entry, Prefetched};
use super::client::{describe, Client, Reply};
use super::error::HubError;
use super::repo::{encode, is_commit, Repo};
use super::HubSource;
use crate::checkpoint::header::MAX_HEADER_SIZE;
use crate::checkpoint::source::{shard_name, Checkpoint, Layout};
use crate::checkpoint::CheckpointError;
use crate::error::Result;

/// Bytes asked for first from a safetensors file the index says nothing about (what
/// huggingface_hub asks for: most headers are smaller).
const FIRST_RANGE: u64 = 100_000;
/// Per tensor an index lists in a shard: the bytes of its header entry besides its name
/// (`"":{"dtype":"BF16","shape":[7168,2048],"data_offsets":[…,…]},`), a little over.
const PER_TENSOR: u64 = 96;
/// Bytes of a header besides its tensors (`__metadata__`, padding), a little over.
const HEADER_EXTRA: u64 = 512;
/// The most a small file (an index, `config.json`) may be.
const SMALL_FILE_LIMIT: u64 = 1 << 30;

/// Progress of fetching: files done of all, and bytes received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub done: usize,
    pub total: usize,
    pub bytes: u64,
}

impl From<HubError> for crate::error::Error {
    fn from(error: HubError) -> Self {
        CheckpointError::Hub(error).into()
    }
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

#[derive(Deserialize)]
struct ModelInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

/// The error for an answer that is not a success.
fn refused(source_repo: &Repo, client: &Client, request: String, reply: &Reply) -> HubError {
    let repo = source_repo.id.clone();
    let endpoint = client.endpoint.clone();
    match (reply.error_code.as_deref(), reply.status) {
        (Some("RepoNotFound"), _) => HubError::RepoNotFound {
            repo,
            endpoint,
            local: None,
        },
        (Some("RevisionNotFound"), _) => HubError::RevisionNotFound {
            repo,
            revision: source_repo.revision.clone(),
        },
        (Some("GatedRepo"), _) => HubError::Gated {
            repo,
            endpoint,
            had_token: client.token.is_some(),
        },
        (_, status @ (401 | 403)) => HubError::Denied {
            request,
            status,
            had_token: client.token.is_some(),
        },
        (code, status) => HubError::BadResponse {
            request,
            reason: match code {
                Some(code) => format!("status {status} ({code})"),
                None => format!("status {status}"),
            },
        },
    }
}

/// The commit `repo`'s revision is at, and the commit's files. A commit (or, offline, the
/// commit the revision was at last time) is looked up in the cache. Else the revision is
/// resolved once, as huggingface_hub resolves it: by the `X-Repo-Commit` of a request for a
/// file of it ([`commit_of`]); the listing then comes from the cache, or from the Hub's API
/// pinned to that commit. With no listing cached, the API is asked for the revision's listing
/// meanwhile, which is used when its `sha` is that same commit (it is, unless the branch
/// moved in between): a plan made cold waits on one round trip for both.
pub(super) fn resolve(
    client: &Client,
    cache: &Cache,
    repo: &Repo,
    offline: bool,
) -> std::result::Result<Resolved, HubError> {
    let pinned = is_commit(&repo.revision).then(|| repo.revision.to_lowercase());
    let known = match &pinned {
        Some(commit) => Some(commit.clone()),
        None if offline => cache.commit_of(&repo.revision),
        None => None,
    };
    if let Some(commit) = known {
        if let Some(listing) = cache.listing(&commit, offline) {
            return Ok(Resolved {
                commit,
                listing,
                config: None,
            });
        }
    }
    if offline {
        return Err(HubError::Offline {
            what: repo.show(&repo.revision),
            looked: cache.places(),
        });
    }
    let (commit, listed) = match pinned {
        Some(commit) => (Ok((commit, None)), None),
        None => {
            let last = cache.commit_of(&repo.revision);
            let cached = last.is_some_and(|commit| cache.listing(&commit, false).is_some());
            std::thread::scope(|scope| {
                let listing =
                    (!cached).then(|| scope.spawn(|| model_info(client, repo, &repo.revision)));
                let commit = commit_of(client, cache, repo);
                (commit, listing.and_then(|l| l.join().ok()))
            })
        }
    };
    let (commit, config) = commit?;
    if !is_commit(&repo.revision) {
        cache.set_commit(&repo.revision, &commit);
    }
    let listing = match (cache.listing(&commit, false), listed) {
        (Some(listing), _) => listing,
        (None, Some(Ok((sha, listing)))) if sha == commit => listing,
        (None, _) => model_info(client, repo, &commit)?.1,
    };
    cache.set_listing(&commit, &listing);
    Ok(Resolved {
        commit,
        listing,
        config,
    })
}

/// A revision resolved: its commit, the commit's files, and `config.json` when it was read
/// in resolving.
pub(super) struct Resolved {
    pub commit: String,
    pub listing: Vec<String>,
    pub config: Option<Entry>,
}

/// The commit `repo`'s revision is at, by the `X-Repo-Commit` the Hub sends with a file of it
/// (as huggingface_hub reads it): `config.json`, kept in the cache of that commit, or its
/// `EntryNotFound` when the repository has none.
fn commit_of(
    client: &Client,
    cache: &Cache,
    repo: &Repo,
) -> std::result::Result<(String, Option<Entry>), HubError> {
    let name = crate::checkpoint::CONFIG_FILE;
    let url = format!(
        "{}/{}/resolve/{}/{name}",
        client.endpoint,
        repo.id,
        encode(&repo.revision, true)
    );
    let request = describe(&url, None);
    let reply = client.get(&url, None, SMALL_FILE_LIMIT)?;
    let absent = reply.status == 404 && reply.error_code.as_deref() == Some("EntryNotFound");
    if reply.status != 200 && !absent {
        return Err(refused(repo, client, request, &reply));
    }
    let Some(commit) = reply.repo_commit.as_deref().filter(|c| is_commit(c)) else {
        return Err(HubError::BadResponse {
            request,
            reason: "no X-Repo-Commit header naming a commit (is HF_ENDPOINT a Hugging Face Hub?)"
                .to_owned(),
        });
    };
    let commit = commit.to_lowercase();
    if reply.status != 200 {
        return Ok((commit, None));
    }
    let config = Entry {
        len: reply.body.len() as u64,
        bytes: reply.body,
    };
    cache.set_entry(&commit, name, &config);
    Ok((commit, Some(config)))
}

/// The commit `revision` is at by the Hub's API (its `sha`), and that commit's files.
fn model_info(
    client: &Client,
    repo: &Repo,
    revision: &str,
) -> std::result::Result<(String, Vec<String>), HubError> {
    let url = format!(
        "{}/api/models/{}/revision/{}",
        client.endpoint,
        repo.id,
        encode(revision, true)
    );
    let reply = client.get(&url, None, SMALL_FILE_LIMIT)?;
    if reply.status != 200 {
        if reply.status == 404 && reply.error_code.is_none() {
            return Err(refused(
                repo,
                client,
                describe(&url, None),
                &Reply {
                    error_code: Some("RepoNotFound".to_owned()),
                    ..reply
                },
            ));
        }
        return Err(refused(repo, client, describe(&url, None), &reply));
    }
    let info: ModelInfo =
        serde_json::from_slice(&reply.body).map_err(|e| HubError::BadResponse {
            request: describe(&url, None),
            reason: format!("not the model's information: {e}"),
        })?;
    if !is_commit(&info.sha) {
        return Err(HubError::BadResponse {
            request: describe(&url, None),
            reason: format!("'sha' is not a commit: {:?}", info.sha),
        });
    }
    let listing = info.siblings.into_iter().map(|s| s.rfilename).collect();
    Ok((info.sha.to_lowercase(), listing))
}

/// The formats of weights a repository has, for saying it has no safetensors.
fn formats(listing: &[String]) -> String {
    const KNOWN: [(&str, &str); 7] = [
        (".bin", "PyTorch .bin"),
        (".pt", "PyTorch .pt"),
        (".pth", "PyTorch .pth"),
        (".gguf", "GGUF"),
        (".h5", "TensorFlow .h5"),
        (".msgpack", "Flax .msgpack"),
        (".onnx", "ONNX"),
    ];
    let found: Vec<&str> = KNOWN
        .iter()
        .filter(|(ext, _)| listing.iter().any(|name| name.ends_with(ext)))
        .map(|(_, format)| *format)
        .collect();
    if found.is_empty() {
        let mut some: Vec<&str> = listing.iter().map(String::as_str).take(8).collect();
        some.sort_unstable();
        let more = if listing.len() > 8 { ", ..." } else { "" };
        return format!("no weights; files: {}{more}", some.join(", "));
    }
    found.join(", ")
}

/// One file to fetch: its name, and how many bytes to ask for first (`None`: whole).
type Job = (String, Option<u64>);

/// Finds the checkpoint (as in a folder) and fetches all that the reader will read; for a
/// commit planned before, the files that plan fetched (see [`Prefetched`]).
pub(super) fn prefetch(
    source: &HubSource,
    concurrency: usize,
    progress: &mut dyn FnMut(Fetched),
) -> Result<Layout> {
    let inner = &source.0;
    if let Some(record) = inner.cache.prefetched(&inner.commit) {
        // Read ahead: nothing is left to read (a file asked for is fetched then).
        let read = inner.read.lock().is_ok_and(|read| read.is_some());
        let jobs: Vec<Job> = record.fetched.iter().map(|n| (n.clone(), None)).collect();
        if !read {
            fetch_all(source, &jobs, concurrency, progress)?;
        }
        return Ok(match record.index {
            Some(index) => Layout::Index(index),
            None => Layout::Files(record.files),
        });
    }
    let (layout, jobs) = find(source)?;
    fetch_all(source, &jobs, concurrency, progress)?;
    let fetched = match inner.entries.lock() {
        Ok(entries) => entries.keys().cloned().collect(),
        Err(_) => return Ok(layout),
    };
    let (index, files) = match &layout {
        Layout::Index(index) => (Some(index.clone()), Vec::new()),
        Layout::Files(files) => (None, files.clone()),
    };
    let record = Prefetched {
        index,
        files,
        fetched,
    };
    inner.cache.set_prefetched(&inner.commit, &record);
    Ok(layout)
}

/// The checkpoint's layout, found as in a folder, and the files the reader will read.
fn find(source: &HubSource) -> Result<(Layout, Vec<Job>)> {
    let inner = &source.0;
    let listing: Vec<String> = inner.listing.iter().cloned().collect();
    if !listing.iter().any(|name| name.ends_with(".safetensors")) {
        return Err(HubError::NoSafetensors {
            repo: inner.repo.id.clone(),
            commit: inner.commit.clone(),
            formats: formats(&listing),
        }
        .into());
    }
    // The files `Checkpoint::find` looks at, fetched first so their errors are this one's;
    // `config.json` (always at the top, as the checkpoint is) meanwhile.
    let config = super::super::CONFIG_FILE;
    std::thread::scope(|scope| {
        if inner.listing.contains(config) {
            // Its error, if any, comes again with the other files.
            scope.spawn(|| file(source, config, None).ok());
        }
        let candidates = [super::super::INDEX_FILE, super::super::SINGLE_FILE];
        for name in candidates
            .into_iter()
            .filter(|n| inner.listing.contains(*n))
        {
            let estimate = name.ends_with(".safetensors").then_some(FIRST_RANGE);
            file(source, name, estimate)?;
            if name == super::super::INDEX_FILE {
                break;
            }
        }
        Ok::<_, HubError>(())
    })?;
    let layout = Checkpoint::find(Box::new(source.clone()))?.layout().clone();
    let mut jobs: Vec<Job> = match &layout {
        Layout::Files(files) => files
            .iter()
            .map(|f| (f.clone(), Some(FIRST_RANGE)))
            .collect(),
        Layout::Index(index) => {
            file(source, index, None)?;
            shard_jobs(source, index)
        }
    };
    let probe = Checkpoint::new(Box::new(source.clone()), layout.clone())?;
    let config = probe.config_name();
    if inner.listing.contains(&config) {
        jobs.push((config, None));
    }
    jobs.retain(|(name, _)| inner.listing.contains(name));
    Ok((layout, jobs))
}

/// The shards an index names, with how long their headers will be about (from the names of
/// their tensors). An index that cannot be read gives none: the reader then says what is
/// wrong with it, as for a folder.
fn shard_jobs(source: &HubSource, index: &str) -> Vec<Job> {
    // Names borrowed from the index where they hold no escapes: no allocation per tensor.
    #[derive(Deserialize)]
    struct Index<'a> {
        #[serde(borrow)]
        weight_map: HashMap<Cow<'a, str>, Cow<'a, str>>,
    }
    let Ok(entry) = file(source, index, None) else {
        return Vec::new();
    };
    let Ok(parsed) = serde_json::from_slice::<Index>(&entry.bytes) else {
        return Vec::new();
    };
    let mut shards: HashMap<&str, u64> = HashMap::new();
    for (tensor, shard) in &parsed.weight_map {
        *shards.entry(shard.as_ref()).or_insert(HEADER_EXTRA) += tensor.len() as u64 + PER_TENSOR;
    }
    let mut jobs: Vec<Job> = shards
        .into_iter()
        .filter_map(|(shard, estimate)| {
            let name = shard_name(source, index, shard).ok()?;
            // An index may list more tensors than a shard's header holds: the first request
            // never asks past the largest header a file may have, so it cannot pull weights.
            Some((name, Some(8 + estimate.min(MAX_HEADER_SIZE))))
        })
        .collect();
    jobs.sort_unstable();
    jobs
}

/// Fetches `jobs` on up to `concurrency` threads, telling `progress` on this one. The first
/// failure (in job order, of those that ran) ends it.
fn fetch_all(
    source: &HubSource,
    jobs: &[Job],
    concurrency: usize,
    progress: &mut dyn FnMut(Fetched),
) -> Result<()> {
    let total = jobs.len();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (sender, results) = mpsc::channel();
    let mut failure: Option<(usize, HubError)> = None;
    std::thread::scope(|scope| {
        for _ in 0..concurrency.clamp(1, total.max(1)) {
            let (next, stop, sender) = (&next, &stop, sender.clone());
            scope.spawn(move || loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                if at >= total || stop.load(Ordering::Relaxed) {
                    break;
                }
                let (name, estimate) = &jobs[at];
                let result = file(source, name, *estimate);
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                if sender.send((at, result)).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        let mut done = 0;
        for (at, result) in results {
            match result {
                Ok(_) => {
                    done += 1;
                    let bytes = source.0.client.counts().1;
                    progress(Fetched { done, total, bytes });
                }
                Err(error) => {
                    if failure.as_ref().map_or(true, |(first, _)| at < *first) {
                        failure = Some((at, error));
                    }
                }
            }
        }
    });
    match failure {
        Some((_, error)) => Err(error.into()),
        None => Ok(()),
    }
}

/// File `name`: from memory, devicemap's cache, huggingface_hub's downloads, or the Hub
/// (a safetensors file's header, asking for `estimate` bytes first; anything else whole).
pub(super) fn file(
    source: &HubSource,
    name: &str,
    estimate: Option<u64>,
) -> std::result::Result<Arc<Entry>, HubError> {
    let inner = &source.0;
    if let Some(entry) = inner.entries.lock().ok().and_then(|e| e.get(name).cloned()) {
        return Ok(entry);
    }
    let header_only = name.ends_with(".safetensors");
    let preloaded = inner.preloaded.lock().ok().and_then(|mut p| p.remove(name));
    let cached = preloaded.or_else(|| inner.cache.entry(&inner.commit, name).map(Arc::new));
    let (entry, cached) = if let Some(entry) = cached {
        (entry, true)
    } else if let Some(path) = inner.cache.downloaded(&inner.commit, name) {
        let entry = local(&path, header_only).map_err(|e| HubError::BadResponse {
            request: path.display().to_string(),
            reason: e.to_string(),
        })?;
        (Arc::new(entry), true)
    } else if inner.offline {
        return Err(HubError::Offline {
            what: source_name(source, name),
            looked: inner.cache.places(),
        });
    } else {
        let entry = if header_only {
            header(source, name, estimate.unwrap_or(FIRST_RANGE))?
        } else {
            whole(source, name)?
        };
        inner.cache.set_entry(&inner.commit, name, &entry);
        (Arc::new(entry), false)
    };
    if let Ok(mut stats) = inner.stats.lock() {
        stats.files += 1;
        stats.cached += u64::from(cached);
    }
    if let Ok(mut entries) = inner.entries.lock() {
        entries.insert(name.to_owned(), entry.clone());
    }
    Ok(entry)
}

fn source_name(source: &HubSource, name: &str) -> String {
    use crate::checkpoint::source::Source;
    source.show(name)
}

fn url(source: &HubSource, name: &str) -> String {
    let inner = &source.0;
    format!(
        "{}/{}/resolve/{}/{}",
        inner.client.endpoint,
        inner.repo.id,
        inner.commit,
        encode(name, false)
    )
}

/// A local file: its header's bytes (or all of it) and its length.
fn local(path: &std::path::Path, header_only: bool) -> std::io::Result<Entry> {
    use std::io::Read;
    let len = std::fs::metadata(path)?.len();
    if !header_only {
        return Ok(Entry {
            len,
            bytes: std::fs::read(path)?,
        });
    }
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    (&mut file).take(8).read_to_end(&mut bytes)?;
    if let Ok(prefix) = <[u8; 8]>::try_from(bytes.as_slice()) {
        let header_len = u64::from_le_bytes(prefix).min(MAX_HEADER_SIZE);
        file.take(header_len).read_to_end(&mut bytes)?;
    }
    Ok(Entry { len, bytes })
}

fn whole(source: &HubSource, name: &str) -> std::result::Result<Entry, HubError> {
    let inner = &source.0;
    let url = url(source, name);
    let reply = inner.client.get(&url, None, SMALL_FILE_LIMIT)?;
    if reply.status != 200 {
        return Err(refused(
            &inner.repo,
            &inner.client,
            describe(&url, None),
            &reply,
        ));
    }
    Ok(Entry {
        len: reply.body.len() as u64,
        bytes: reply.body,
    })
}

/// The length in `Content-Range: bytes a-b/LENGTH` (or `bytes */LENGTH`).
fn range_total(reply: &Reply) -> Option<u64> {
    let value = reply.content_range.as_deref()?;
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('/')
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Bytes `start..end` of `name`, appended to `buffer`, and the file's length.
fn get_range(
    source: &HubSource,
    name: &str,
    start: u64,
    end: u64,
    buffer: &mut Vec<u8>,
) -> std::result::Result<u64, HubError> {
    let inner = &source.0;
    let url = url(source, name);
    let range = (start, end.max(start + 1) - 1);
    let request = describe(&url, Some(range));
    let reply = inner
        .client
        .get(&url, Some(range), end.saturating_sub(start) + 1)?;
    let total = range_total(&reply);
    match (reply.status, total) {
        (206, Some(total)) => {
            buffer.extend_from_slice(&reply.body);
            Ok(total)
        }
        // Asked for bytes past the end: an empty file.
        (416, Some(total)) => Ok(total),
        (206 | 416, None) => Err(HubError::BadResponse {
            request,
            reason: "no file length in Content-Range".to_owned(),
        }),
        _ => Err(refused(&inner.repo, &inner.client, request, &reply)),
    }
}

/// A safetensors file's length prefix and header, and its length.
fn header(source: &HubSource, name: &str, first: u64) -> std::result::Result<Entry, HubError> {
    let mut bytes = Vec::new();
    let len = get_range(source, name, 0, first.max(8), &mut bytes)?;
    if let Ok(prefix) = <[u8; 8]>::try_from(&bytes[..bytes.len().min(8)]) {
        let header_len = u64::from_le_bytes(prefix);
        let need = 8 + header_len;
        // A length above the limit, or past the end, is the reader's to refuse, as on disk.
        if header_len <= MAX_HEADER_SIZE && need <= len {
            if need > bytes.len() as u64 {
                let have = bytes.len() as u64;
                get_range(source, name, have, need, &mut bytes)?;
            }
            bytes.truncate(need as usize);
        }
    }
    Ok(Entry { len, bytes })
}

/// Bytes `start..end` of `name` past what was fetched of it.
pub(super) fn range(
    source: &HubSource,
    name: &str,
    start: u64,
    end: u64,
    buffer: &mut Vec<u8>,
) -> std::result::Result<(), HubError> {
    if source.0.offline {
        return Err(HubError::Offline {
            what: format!("bytes {start}-{end} of {}", source_name(source, name)),
            looked: source.0.cache.places(),
        });
    }
    get_range(source, name, start, end, buffer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_named() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            formats(&names(&["pytorch_model.bin", "model.gguf", "config.json"])),
            "PyTorch .bin, GGUF"
        );
        assert!(formats(&names(&["README.md"])).contains("README.md"));
    }
}
