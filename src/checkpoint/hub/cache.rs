//! devicemap's own cache of what it read from the Hub, under `$HF_HOME/devicemap/` (never in
//! huggingface_hub's `hub/models--*` folders, which it only reads): per repository, which
//! commit each revision was last resolved to, and per commit (whose files never change) its
//! file listing and each file read (a safetensors file's header bytes and length; a small
//! file whole). Also where huggingface_hub keeps downloaded files, read when present.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::repo::{encode, Repo};

/// The start of every cached file entry, with its format's version.
const MAGIC: &[u8; 8] = b"DMHUB\x001\n";

/// What planning a commit fetched, recorded once it all was: its layout (an index, or the
/// files), and every file read. A commit's files never change, so neither does this: a later
/// plan of it fetches these files (from the cache) without looking for the checkpoint again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefetched {
    pub index: Option<String>,
    pub files: Vec<String>,
    pub fetched: Vec<String>,
}

/// The record's file in a commit's folder (its format's version in the name).
const PREFETCHED: &str = "prefetched-1.json";
/// The checkpoint as read (`compact.rs`), per devicemap version: a newer reader reads again.
const READ: &str = concat!("read-", env!("CARGO_PKG_VERSION"), ".bin");

/// A file as read: its length, and its first bytes (a safetensors file's length prefix and
/// header) or all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub len: u64,
    pub bytes: Vec<u8>,
}

/// `$HF_HOME` (`$XDG_CACHE_HOME/huggingface`, `~/.cache/huggingface`), as huggingface_hub has it.
pub fn hf_home() -> PathBuf {
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("huggingface")
}

/// huggingface_hub's cache of downloads: `$HF_HUB_CACHE`, else `$HF_HOME/hub`.
pub fn hf_hub_cache() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => hf_home().join("hub"),
    }
}

/// The cache of one repository on one endpoint.
pub struct Cache {
    /// `None`: caching is off (the folder could not be made, or was not wanted).
    folder: Option<PathBuf>,
    /// huggingface_hub's folder for the repository.
    hf: PathBuf,
}

impl Cache {
    /// Under `root` (devicemap's cache folder), for `repo` on `endpoint`.
    pub fn new(root: Option<&Path>, endpoint: &str, repo: &Repo) -> Cache {
        let host = endpoint.split("://").nth(1).unwrap_or(endpoint);
        let folder = root.map(|root| root.join(encode(host, true)).join(repo.folder()));
        Cache {
            folder,
            hf: hf_hub_cache().join(repo.folder()),
        }
    }

    /// Where it looks, for messages.
    pub fn places(&self) -> String {
        let mut places: Vec<String> = self
            .folder
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        places.push(self.hf.display().to_string());
        places.join(" and ")
    }

    /// The commit `revision` was last resolved to, by devicemap or huggingface_hub.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        let name = encode(revision, true);
        let ours = self.folder.as_ref().map(|f| f.join("refs").join(&name));
        let theirs = self.hf.join("refs").join(revision);
        [ours, Some(theirs)].into_iter().flatten().find_map(|path| {
            let text = fs::read_to_string(path).ok()?;
            let commit = text.trim();
            super::repo::is_commit(commit).then(|| commit.to_owned())
        })
    }

    pub fn set_commit(&self, revision: &str, commit: &str) {
        if let Some(folder) = &self.folder {
            write(
                &folder.join("refs").join(encode(revision, true)),
                commit.as_bytes(),
            );
        }
    }

    /// The file listing of `commit`: devicemap's (the Hub's whole listing, as read), else, when
    /// `offline`, what huggingface_hub downloaded of it (the files under its snapshot folder,
    /// which may be only some: online, the Hub is asked instead).
    pub fn listing(&self, commit: &str, offline: bool) -> Option<Vec<String>> {
        if let Some(folder) = &self.folder {
            if let Ok(text) = fs::read(folder.join(commit).join("listing.json")) {
                if let Ok(names) = serde_json::from_slice(&text) {
                    return Some(names);
                }
            }
        }
        if !offline {
            return None;
        }
        let mut names = Vec::new();
        walk(&self.hf.join("snapshots").join(commit), "", &mut names);
        (!names.is_empty()).then_some(names)
    }

    pub fn set_listing(&self, commit: &str, names: &[String]) {
        if let (Some(folder), Ok(text)) = (&self.folder, serde_json::to_vec(names)) {
            write(&folder.join(commit).join("listing.json"), &text);
        }
    }

    /// What devicemap read of `file` at `commit`.
    pub fn entry(&self, commit: &str, file: &str) -> Option<Entry> {
        let path = self.folder.as_ref()?.join(commit).join(entry_name(file));
        let mut file = fs::File::open(path).ok()?;
        // The bytes read straight into their own buffer: no copy of a header of megabytes.
        let mut start = [0; MAGIC.len() + 8];
        file.read_exact(&mut start).ok()?;
        let (magic, len) = start.split_first_chunk::<8>()?;
        if magic != MAGIC {
            return None;
        }
        let size = file.metadata().map_or(0, |m| m.len() as usize);
        let mut bytes = Vec::with_capacity(size.saturating_sub(start.len()));
        file.read_to_end(&mut bytes).ok()?;
        Some(Entry {
            len: u64::from_le_bytes(len.try_into().ok()?),
            bytes,
        })
    }

    /// What planning `commit` fetched, if it was recorded.
    pub fn prefetched(&self, commit: &str) -> Option<Prefetched> {
        let text = fs::read(self.folder.as_ref()?.join(commit).join(PREFETCHED)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn set_prefetched(&self, commit: &str, record: &Prefetched) {
        if let (Some(folder), Ok(text)) = (&self.folder, serde_json::to_vec(record)) {
            write(&folder.join(commit).join(PREFETCHED), &text);
        }
    }

    /// The checkpoint of `commit` as read when it was last planned (see `compact.rs`).
    pub fn read(&self, commit: &str) -> Option<Vec<u8>> {
        fs::read(self.folder.as_ref()?.join(commit).join(READ)).ok()
    }

    pub fn has_read(&self, commit: &str) -> bool {
        let folder = self.folder.as_ref();
        folder.is_some_and(|f| f.join(commit).join(READ).is_file())
    }

    pub fn remove_read(&self, commit: &str) {
        if let Some(folder) = &self.folder {
            let _ = fs::remove_file(folder.join(commit).join(READ));
        }
    }

    pub fn set_read(&self, commit: &str, bytes: &[u8]) {
        if let Some(folder) = &self.folder {
            write(&folder.join(commit).join(READ), bytes);
        }
    }

    /// Every file devicemap read of `commit` (of those its cached listing names).
    pub fn entries(&self, commit: &str) -> HashMap<String, Entry> {
        let listing = match &self.folder {
            Some(folder) => fs::read(folder.join(commit).join("listing.json")).ok(),
            None => None,
        };
        let names: Vec<String> = listing
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or_default();
        names
            .into_iter()
            .filter_map(|name| self.entry(commit, &name).map(|entry| (name, entry)))
            .collect()
    }

    pub fn set_entry(&self, commit: &str, file: &str, entry: &Entry) {
        if let Some(folder) = &self.folder {
            let mut data = Vec::with_capacity(16 + entry.bytes.len());
            data.extend_from_slice(MAGIC);
            data.extend_from_slice(&entry.len.to_le_bytes());
            data.extend_from_slice(&entry.bytes);
            write(&folder.join(commit).join(entry_name(file)), &data);
        }
    }

    /// `file` of `commit` where huggingface_hub downloaded it, if it did.
    pub fn downloaded(&self, commit: &str, file: &str) -> Option<PathBuf> {
        let path = self.hf.join("snapshots").join(commit).join(file);
        path.is_file().then_some(path)
    }
}

/// The files under `folder`, as `/`-joined names relative to it (`prefix` is the folder's own
/// name so far); names that are not Unicode are left out, and the depth is bounded.
fn walk(folder: &Path, prefix: &str, names: &mut Vec<String>) {
    if prefix.matches('/').count() >= 16 {
        return;
    }
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &name, names);
        } else {
            names.push(name);
        }
    }
}

fn entry_name(file: &str) -> String {
    format!("{}.entry", encode(file, true))
}

/// Writes `data` to `path` whole or not at all (another process may read it meanwhile). A
/// cache that cannot be written is no error: the next plan reads the Hub again.
fn write(path: &Path, data: &[u8]) {
    let Some(folder) = path.parent() else { return };
    if fs::create_dir_all(folder).is_err() {
        return;
    }
    let temporary = folder.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let written = fs::File::create(&temporary).and_then(|mut file| file.write_all(data));
    if written.is_err() || fs::rename(&temporary, path).is_err() {
        let _ = fs::remove_file(&temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_refs_and_listings_round_trip() {
        let root = std::env::temp_dir().join(format!("devicemap-hub-cache-{}", std::process::id()));
        let repo = Repo {
            id: "org/name".to_owned(),
            revision: "refs/pr/1".to_owned(),
        };
        let cache = Cache::new(Some(&root), "http://127.0.0.1:1", &repo);
        let commit = "c".repeat(40);
        assert_eq!(cache.entry(&commit, "a/b.safetensors"), None);
        let entry = Entry {
            len: 1 << 40,
            bytes: b"header".to_vec(),
        };
        cache.set_entry(&commit, "a/b.safetensors", &entry);
        assert_eq!(cache.entry(&commit, "a/b.safetensors"), Some(entry.clone()));
        cache.set_commit(&repo.revision, &commit);
        assert_eq!(cache.commit_of(&repo.revision), Some(commit.clone()));
        let names = vec!["config.json".to_owned(), "model.safetensors".to_owned()];
        cache.set_listing(&commit, &names);
        assert_eq!(cache.listing(&commit, false), Some(names));
        // Of the listed files, those read: none of `model.safetensors`.
        let read = cache.entries(&commit);
        assert_eq!(read.len(), 0);
        cache.set_entry(&commit, "config.json", &entry);
        let read = cache.entries(&commit);
        assert_eq!(read.keys().collect::<Vec<_>>(), ["config.json"]);
        assert_eq!(cache.prefetched(&commit), None);
        let record = Prefetched {
            index: None,
            files: vec!["model.safetensors".to_owned()],
            fetched: vec!["config.json".to_owned(), "model.safetensors".to_owned()],
        };
        cache.set_prefetched(&commit, &record);
        assert_eq!(cache.prefetched(&commit), Some(record));
        // Nothing is written into huggingface_hub's folders.
        assert!(root
            .join("127.0.0.1%3A1")
            .join("models--org--name")
            .is_dir());
        let _ = fs::remove_dir_all(&root);
    }
}
