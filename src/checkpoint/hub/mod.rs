//! A checkpoint on the Hugging Face Hub, read without downloading its weights: the revision
//! resolved once to a commit (every later request pinned to it), the index and `config.json`
//! fetched whole, and of each shard only its header, by an HTTP range request, on
//! [`HubOptions::concurrency`] threads. What was read is cached by (repo, commit, file)
//! ([`cache`]), so a second plan of the same model makes at most one request (resolving a
//! branch) and none when offline. The reader then reads the checkpoint through [`HubSource`]
//! as it reads a folder, so the result is the same as for the same files on disk.
//!
//! - `repo.rs`: repository ids and revisions. `client.rs`: HTTP. `cache.rs`: the cache.
//! - `fetch.rs`: what is fetched, and how. `error.rs`: [`HubError`]. `ahead.rs`: the cached
//!   checkpoint read while the branch resolves.

mod ahead;
mod cache;
mod client;
mod compact;
mod error;
mod fetch;
mod repo;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use cache::{hf_home, Entry};
pub use error::HubError;
pub use fetch::Fetched;
pub use repo::{is_commit, Repo};

use super::source::{Checkpoint, Layout, Source};
use super::ReadAhead;
use crate::error::Result;
use cache::Cache;
use client::Client;

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Requests in flight at once when not set otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Seconds to connect, and to wait for an answer, when not set otherwise.
pub const DEFAULT_TIMEOUT: f64 = 10.0;

/// How to reach the Hub; [`HubOptions::from_env`] reads what huggingface_hub reads.
#[derive(Clone, Debug)]
pub struct HubOptions {
    pub endpoint: String,
    pub token: Option<String>,
    /// Asked for a token when there is none and the Hub refuses without one (see
    /// [`TokenFallback`]); `None` when a token was given or implicit ones are disabled.
    pub fallback: Option<TokenFallback>,
    pub concurrency: usize,
    /// devicemap's cache folder; `None`: no cache.
    pub cache: Option<PathBuf>,
    pub offline: bool,
    pub timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// Environment variable `name` read by `parse`, or `default` when it is not set.
fn setting<T>(
    name: &'static str,
    expected: &'static str,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
) -> std::result::Result<T, HubError> {
    match env(name) {
        None => Ok(default),
        Some(value) => parse(value.trim()).ok_or(HubError::BadSetting {
            name,
            value,
            expected,
        }),
    }
}

/// A token from elsewhere, asked for when nothing else gave one and the Hub wants one:
/// huggingface_hub's `get_token()`, which the bindings can call (it also knows OAuth logins,
/// OIDC and Colab's secrets; importing it and its first call take about a second, which a
/// public repository should not pay).
pub type TokenFallback = fn() -> Option<String>;

/// Whether `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set: then only a token given is sent.
fn implicit_disabled() -> bool {
    truthy(env("HF_HUB_DISABLE_IMPLICIT_TOKEN"))
}

/// The token huggingface_hub would send, from the environment: `HF_TOKEN`, else the file at
/// `HF_TOKEN_PATH` (default `$HF_HOME/token`); none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is
/// set.
pub fn implicit_token() -> Option<String> {
    if implicit_disabled() {
        return None;
    }
    token_from_env()
}

fn token_from_env() -> Option<String> {
    if let Some(token) = env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")) {
        return Some(token.trim().to_owned());
    }
    let path = env("HF_TOKEN_PATH").map_or_else(|| hf_home().join("token"), PathBuf::from);
    let token = std::fs::read_to_string(path).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

impl HubOptions {
    /// `token` if given, else [`implicit_token`], else `fallback` when the Hub wants one; `HF_ENDPOINT`,
    /// `HF_HUB_OFFLINE`; devicemap's
    /// `DEVICEMAP_HUB_CACHE` (a folder, or `off`; default `$HF_HOME/devicemap`),
    /// `DEVICEMAP_HUB_CONCURRENCY` (default 16) and `DEVICEMAP_HUB_TIMEOUT` (seconds, default
    /// 10).
    pub fn from_env(
        token: Option<String>,
        fallback: Option<TokenFallback>,
    ) -> std::result::Result<HubOptions, HubError> {
        let concurrency = setting(
            "DEVICEMAP_HUB_CONCURRENCY",
            "a whole number from 1 to 256",
            DEFAULT_CONCURRENCY,
            |text| text.parse().ok().filter(|n| (1..=256).contains(n)),
        )?;
        let timeout = setting(
            "DEVICEMAP_HUB_TIMEOUT",
            "seconds above 0, at most 3600",
            DEFAULT_TIMEOUT,
            |text| text.parse().ok().filter(|s| *s > 0.0 && *s <= 3600.0),
        )?;
        let cache = match env("DEVICEMAP_HUB_CACHE") {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(folder) => Some(PathBuf::from(folder)),
            None => Some(hf_home().join("devicemap")),
        };
        Ok(HubOptions {
            endpoint: env("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            fallback: fallback.filter(|_| token.is_none() && !implicit_disabled()),
            token: token.or_else(implicit_token),
            concurrency,
            cache,
            offline: truthy(env("HF_HUB_OFFLINE")) || truthy(env("TRANSFORMERS_OFFLINE")),
            timeout: Duration::from_secs_f64(timeout),
        })
    }
}

/// Where a checkpoint given by name comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// On the Hub; `explicit`: named with `hf://`.
    Hub {
        repo: Repo,
        explicit: bool,
    },
}

/// Where `text` points: an existing local path; else `hf://...`, or an `org/name` (which then
/// is not a local path); else a local path (that does not exist, which reading it says).
pub fn locate(text: &str) -> std::result::Result<Location, HubError> {
    if let Some(repo) = Repo::parse(text, false)? {
        return Ok(Location::Hub {
            repo,
            explicit: true,
        });
    }
    let path = Path::new(text);
    if path.exists() {
        return Ok(Location::Local(path.to_owned()));
    }
    match Repo::parse(text, true)? {
        Some(repo) => Ok(Location::Hub {
            repo,
            explicit: false,
        }),
        None => Ok(Location::Local(path.to_owned())),
    }
}

/// The Hub repository `text` names (see [`locate`]), opened with `options()`; an error when
/// `text` names a local path. A repository not found by a bare `org/name` also says that no
/// such local path exists.
pub fn open_hub(
    text: &str,
    options: impl FnOnce() -> std::result::Result<HubOptions, HubError>,
    progress: &mut dyn FnMut(Fetched),
) -> Result<HubCheckpoint> {
    let Location::Hub { repo, explicit } = locate(text)? else {
        return Err(HubError::BadRepoId {
            text: text.to_owned(),
            reason: "it is a local path",
        }
        .into());
    };
    let opened = options().map_err(Into::into);
    let opened = opened.and_then(|options| HubCheckpoint::open(&repo, &options, progress));
    explain(text, explicit, opened)
}

/// `result` of reading `text` from the Hub; when `text` was a bare `org/name` (also a local
/// path that does not exist), its error says both.
fn explain<T>(text: &str, explicit: bool, result: Result<T>) -> Result<T> {
    let error = match result {
        Err(crate::error::Error::Checkpoint(super::CheckpointError::Hub(error))) if !explicit => {
            error
        }
        result => return result,
    };
    Err(match error {
        HubError::RepoNotFound { repo, endpoint, .. } => HubError::RepoNotFound {
            repo,
            endpoint,
            local: Some(text.to_owned()),
        },
        error @ (HubError::Network { .. } | HubError::BadResponse { .. }) => {
            HubError::NeitherLocalNorHub {
                text: text.to_owned(),
                error: Box::new(error),
            }
        }
        error => error,
    }
    .into())
}

/// `config.json` of the Hub repository `text` names (see [`locate`]), parsed, read with the
/// environment's settings and `token` if given (else as [`HubOptions::from_env`] says;
/// resolving the revision, then that file only, both cached); `None` when `text` names a local
/// path. For `kv_cache`.
pub fn hub_config(
    text: &str,
    token: Option<String>,
    fallback: Option<TokenFallback>,
) -> Result<Option<serde_json::Value>> {
    let Location::Hub { repo, explicit } = locate(text)? else {
        return Ok(None);
    };
    let read = || -> Result<serde_json::Value> {
        HubSource::connect(&repo, &HubOptions::from_env(token, fallback)?, false)?.config()
    };
    explain(text, explicit, read()).map(Some)
}

/// A local checkpoint path, or a Hub repository (see [`locate`]), read with `options()`.
pub fn open_any(
    text: &str,
    options: impl FnOnce() -> std::result::Result<HubOptions, HubError>,
    progress: &mut dyn FnMut(Fetched),
) -> Result<Checkpoint> {
    match locate(text)? {
        Location::Local(path) => Checkpoint::local(&path),
        Location::Hub { .. } => open_hub(text, options, progress)?.checkpoint(),
    }
}

/// A Hub repository at one commit, its files fetched (headers only for safetensors files).
pub struct HubCheckpoint {
    source: HubSource,
    layout: Layout,
}

/// What reading a repository took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// HTTP round trips (a redirect is one more).
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Files read (from the network, devicemap's cache or huggingface_hub's).
    pub files: u64,
    /// Of those, read from a cache.
    pub cached: u64,
}

impl HubCheckpoint {
    /// Resolves `repo`'s revision, finds its checkpoint as [`Checkpoint::find`] finds one in a
    /// folder, and fetches what the reader will read; `progress` sees each file fetched.
    pub fn open(
        repo: &Repo,
        options: &HubOptions,
        progress: &mut dyn FnMut(Fetched),
    ) -> Result<HubCheckpoint> {
        let source = HubSource::connect(repo, options, true)?;
        let layout = fetch::prefetch(&source, options.concurrency, progress)?;
        Ok(HubCheckpoint { source, layout })
    }

    /// The checkpoint, for the reader.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Checkpoint::new(Box::new(self.source.clone()), self.layout.clone())
    }

    pub fn repo(&self) -> &Repo {
        &self.source.0.repo
    }

    /// Its `config.json`, parsed (read with the checkpoint, at the same commit); an error when
    /// it has none. For a plan at a context: one resolving of the revision for both.
    pub fn config(&self) -> Result<serde_json::Value> {
        self.source.config()
    }

    pub fn commit(&self) -> &str {
        &self.source.0.commit
    }

    pub fn stats(&self) -> HubStats {
        let (requests, bytes) = self.source.0.client.counts();
        let kept = self
            .source
            .0
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        HubStats {
            requests,
            bytes,
            ..kept
        }
    }
}

/// A repository's files at one commit, for the reader: what was fetched, and anything else
/// fetched when first asked for.
#[derive(Clone)]
pub struct HubSource(Arc<Inner>);

struct Inner {
    client: Arc<Client>,
    cache: Cache,
    repo: Repo,
    commit: String,
    listing: HashSet<String>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// devicemap's cache of this commit, read while the revision was resolved; taken from
    /// here by [`fetch::file`] instead of reading the cache.
    preloaded: Mutex<HashMap<String, Arc<Entry>>>,
    /// The checkpoint read from those meanwhile, and its layout (see [`ahead`]); the reader
    /// takes it.
    read: Mutex<Option<(Layout, ReadAhead)>>,
    offline: bool,
    stats: Mutex<HubStats>,
}

impl HubSource {
    /// `repo` at the commit its revision resolves to, nothing else read yet; with `ahead`,
    /// the cached checkpoint of the commit the branch was at last time read meanwhile. When
    /// the Hub refuses without a token, [`HubOptions::fallback`] is asked for one, and with it
    /// the Hub again.
    fn connect(repo: &Repo, options: &HubOptions, ahead: bool) -> Result<HubSource> {
        let refused = match Self::connect_with(repo, options, ahead) {
            Err(crate::error::Error::Checkpoint(super::CheckpointError::Hub(error)))
                if options.token.is_none()
                    && matches!(
                        error,
                        HubError::RepoNotFound { .. }
                            | HubError::Gated { .. }
                            | HubError::Denied { .. }
                    ) =>
            {
                error
            }
            result => return result,
        };
        match options.fallback.and_then(|ask| ask()) {
            Some(token) => {
                let options = HubOptions {
                    token: Some(token),
                    fallback: None,
                    ..options.clone()
                };
                Self::connect_with(repo, &options, ahead)
            }
            None => Err(refused.into()),
        }
    }

    fn connect_with(repo: &Repo, options: &HubOptions, ahead: bool) -> Result<HubSource> {
        let client = Arc::new(Client::new(
            &options.endpoint,
            options.token.clone(),
            options.timeout,
            options.concurrency,
        ));
        let cache = Cache::new(options.cache.as_deref(), &client.endpoint, repo);
        // What was cached of the commit the branch resolved to last time is read while the Hub
        // is asked, and used only when the answer is that same commit.
        let guess = if options.offline || is_commit(&repo.revision) {
            None
        } else {
            cache.commit_of(&repo.revision)
        };
        let (resolved, read) = std::thread::scope(|scope| {
            let reading = guess.map(|commit| {
                scope.spawn(|| {
                    let (entries, read) = ahead::read(&client, options, repo, &commit, ahead);
                    (entries, read, commit)
                })
            });
            let resolved = fetch::resolve(&client, &cache, repo, options.offline);
            (resolved, reading.and_then(|r| r.join().ok()))
        });
        let fetch::Resolved {
            commit,
            listing,
            config,
        } = resolved?;
        let has_config = config.is_some();
        // `config.json` read in resolving is a file read (not one from a cache).
        let config = config.map(|c| (super::CONFIG_FILE.to_owned(), Arc::new(c)));
        let (preloaded, read) = read
            .filter(|(_, _, guessed)| *guessed == commit)
            .map(|(entries, read, _)| (entries, read))
            .unwrap_or_default();
        Ok(HubSource(Arc::new(Inner {
            client,
            cache,
            repo: repo.clone(),
            commit,
            listing: listing.into_iter().collect(),
            entries: Mutex::new(config.into_iter().collect()),
            preloaded: Mutex::new(preloaded),
            read: Mutex::new(read),
            offline: options.offline,
            stats: Mutex::new(HubStats {
                files: u64::from(has_config),
                ..HubStats::default()
            }),
        })))
    }

    /// `config.json`, parsed; an error when there is none.
    fn config(&self) -> Result<serde_json::Value> {
        let name = super::CONFIG_FILE;
        let shown = self.show(name);
        if !self.0.listing.contains(name) {
            return Err(super::error::bad(&shown, None, super::Problem::NotFound));
        }
        let entry = fetch::file(self, name, None)?;
        serde_json::from_slice(&entry.bytes).map_err(|e| {
            super::error::bad(&shown, None, super::Problem::ConfigNotJson(e.to_string()))
        })
    }

    fn entry(&self, name: &str) -> io::Result<Arc<Entry>> {
        if !self.0.listing.contains(name) {
            let message = format!("no such file in {}", self.show(""));
            return Err(io::Error::new(io::ErrorKind::NotFound, message));
        }
        fetch::file(self, name, None).map_err(io::Error::other)
    }
}

impl Source for HubSource {
    fn list(&self) -> io::Result<Vec<String>> {
        let top = self.0.listing.iter().filter(|name| !name.contains('/'));
        Ok(top.cloned().collect())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(self.entry(name)?.len)
    }

    fn read_range(&self, name: &str, start: u64, len: u64, buffer: &mut Vec<u8>) -> io::Result<()> {
        let entry = self.entry(name)?;
        let end = start.saturating_add(len).min(entry.len);
        if end <= entry.bytes.len() as u64 {
            if start < end {
                buffer.extend_from_slice(&entry.bytes[start as usize..end as usize]);
            }
            return Ok(());
        }
        fetch::range(self, name, start, end, buffer).map_err(io::Error::other)
    }

    fn read_whole(&self, name: &str) -> io::Result<Vec<u8>> {
        let entry = self.entry(name)?;
        if entry.bytes.len() as u64 != entry.len {
            return Err(io::Error::other("only the header of this file was read"));
        }
        Ok(entry.bytes.clone())
    }

    fn keep_read(&self, layout: &Layout, read: &ReadAhead) {
        let inner = &self.0;
        let recorded = ahead::recorded_layout(&inner.cache, &inner.commit);
        if recorded.as_ref() == Some(layout) && !inner.cache.has_read(&inner.commit) {
            inner
                .cache
                .set_read(&inner.commit, &compact::to_bytes(read));
        }
    }

    fn take_read(&self, layout: &Layout) -> Option<ReadAhead> {
        match self.0.read.lock().ok()?.take() {
            Some((read_with, read)) if read_with == *layout => Some(read),
            _ => None,
        }
    }

    fn show(&self, name: &str) -> String {
        let repo = self.0.repo.show(&self.0.commit);
        if name.is_empty() {
            repo
        } else {
            format!("{repo}/{name}")
        }
    }
}
