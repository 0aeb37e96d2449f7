//! Where a checkpoint's bytes come from. The reader asks a [`Source`] for all it reads (a
//! listing, lengths, byte ranges, small whole files), so another source (the Hugging Face Hub,
//! over HTTP range requests) plugs in by implementing the trait; [`LocalFiles`] reads a folder.
//!
//! Files are named by their path inside the checkpoint. The names an index lists become such
//! names in one place, [`shard_name`], which refuses those that would leave the checkpoint.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::error::{bad, CheckpointError, Problem};
use crate::error::Result;

/// The index file transformers writes beside sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The model's configuration, beside its weights.
pub const CONFIG_FILE: &str = "config.json";

/// A place that holds a checkpoint's files. Shared by the reader threads, hence `Send + Sync`.
pub trait Source: Send + Sync {
    /// The names of what the checkpoint's top level holds.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The length of file `name` in bytes; an error when there is no such file (a folder is
    /// not a file).
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Appends bytes `start..start + len` of file `name` to `buffer`, fewer if the file ends
    /// first.
    fn read_range(&self, name: &str, start: u64, len: u64, buffer: &mut Vec<u8>) -> io::Result<()>;
    /// The whole of a small file: an index, `config.json`.
    fn read_whole(&self, name: &str) -> io::Result<Vec<u8>>;
    /// `name` as messages show it (a path, a URL); `""` is the checkpoint itself.
    fn show(&self, name: &str) -> String;
    /// The checkpoint read already with `layout`, by [`super::read_ahead`] of the same files
    /// (the Hub's source reads its cache while it waits on the network), handed over once:
    /// [`super::checkpoint_sizes`] then tells its observer what that read saw instead of
    /// reading again.
    fn take_read(&self, _layout: &Layout) -> Option<super::ReadAhead> {
        None
    }
    /// What [`super::checkpoint_sizes`] read with `layout`, shown to the source once read (the
    /// Hub's keeps a compact copy, for [`Source::take_read`] of a later plan).
    fn keep_read(&self, _layout: &Layout, _read: &super::ReadAhead) {}
}

/// Files under a local folder (`""`: the working directory, where any path names itself).
#[derive(Clone, Debug, Default)]
pub struct LocalFiles {
    root: PathBuf,
}

impl LocalFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalFiles { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl Source for LocalFiles {
    fn list(&self) -> io::Result<Vec<String>> {
        // A name that is not Unicode cannot be named to the reader: it is left out.
        let names = std::fs::read_dir(&self.root)?
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok());
        Ok(names.collect())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let path = self.path(name);
        let metadata = std::fs::metadata(&path)?;
        if metadata.is_dir() {
            // Reading it gives the system's own words ("Is a directory").
            let refused = File::open(&path).and_then(|mut file| file.read(&mut [0; 1]));
            return Err(refused
                .err()
                .unwrap_or_else(|| io::Error::other("is a directory")));
        }
        if !metadata.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(metadata.len())
    }

    fn read_range(&self, name: &str, start: u64, len: u64, buffer: &mut Vec<u8>) -> io::Result<()> {
        let mut file = File::open(self.path(name))?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))?;
        }
        file.take(len).read_to_end(buffer)?;
        Ok(())
    }

    fn read_whole(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(name))
    }

    fn show(&self, name: &str) -> String {
        if name.is_empty() {
            return self.root.display().to_string();
        }
        self.path(name).display().to_string()
    }
}

/// Which of a checkpoint's files hold its tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Safetensors files.
    Files(Vec<String>),
    /// An index, whose `weight_map` names the shards.
    Index(String),
}

/// A checkpoint: where its bytes come from, and which files hold its tensors. Nothing is
/// parsed until it is read.
pub struct Checkpoint {
    source: Box<dyn Source>,
    layout: Layout,
}

impl Checkpoint {
    /// A checkpoint of `source` laid out as `layout` (at least one file).
    pub fn new(source: Box<dyn Source>, layout: Layout) -> Result<Checkpoint> {
        if matches!(&layout, Layout::Files(files) if files.is_empty()) {
            return Err(CheckpointError::NoFiles.into());
        }
        Ok(Checkpoint { source, layout })
    }

    /// The checkpoint at the top level of `source`: `model.safetensors.index.json` (or one
    /// `*.safetensors.index.json`), `model.safetensors`, or exactly one `*.safetensors` file.
    pub fn find(source: Box<dyn Source>) -> Result<Checkpoint> {
        if source.len(INDEX_FILE).is_ok() {
            return Checkpoint::new(source, Layout::Index(INDEX_FILE.to_owned()));
        }
        if source.len(SINGLE_FILE).is_ok() {
            return Checkpoint::new(source, Layout::Files(vec![SINGLE_FILE.to_owned()]));
        }
        let names = source
            .list()
            .map_err(|e| bad(&source.show(""), None, Problem::CannotList(e.to_string())))?;
        let mut indexes = Vec::new();
        let mut singles = Vec::new();
        for name in names {
            if name.ends_with(".safetensors.index.json") {
                indexes.push(name);
            } else if name.ends_with(".safetensors") {
                singles.push(name);
            }
        }
        match (indexes.as_slice(), singles.as_slice()) {
            ([index], _) => Checkpoint::new(source, Layout::Index(index.clone())),
            ([], [single]) => Checkpoint::new(source, Layout::Files(vec![single.clone()])),
            _ => {
                let problem = Problem::NoCheckpoint {
                    indexes: indexes.len(),
                    singles: singles.len(),
                };
                Err(bad(&source.show(""), None, problem))
            }
        }
    }

    /// A local path: a `.safetensors` file, an index file, or a folder holding a checkpoint
    /// (see [`Checkpoint::find`]).
    pub fn local(path: &Path) -> Result<Checkpoint> {
        if path.is_file() {
            let root = path.parent().unwrap_or(Path::new(""));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let layout = if name.ends_with(".index.json") {
                Layout::Index(name.into_owned())
            } else {
                Layout::Files(vec![name.into_owned()])
            };
            return Checkpoint::new(Box::new(LocalFiles::new(root)), layout);
        }
        if !path.is_dir() {
            return Err(bad(&path.display().to_string(), None, Problem::NotFound));
        }
        Checkpoint::find(Box::new(LocalFiles::new(path)))
    }

    /// Local `.safetensors` files, wherever they are.
    pub fn local_files(paths: &[PathBuf]) -> Result<Checkpoint> {
        let names = paths.iter().map(|p| p.to_string_lossy().into_owned());
        Checkpoint::new(
            Box::new(LocalFiles::default()),
            Layout::Files(names.collect()),
        )
    }

    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The name `config.json` would have: beside the index, or the first file.
    pub fn config_name(&self) -> String {
        let first = match &self.layout {
            Layout::Files(files) => files.first().map(String::as_str).unwrap_or_default(),
            Layout::Index(index) => index,
        };
        let folder = Path::new(first).parent().unwrap_or(Path::new(""));
        folder.join(CONFIG_FILE).to_string_lossy().into_owned()
    }
}

/// The name of the shard that `index` lists as `entry`: `entry` in the index's folder. An
/// entry that would leave the checkpoint (a path from the root, or one that goes up a folder
/// with `..`) is refused, naming it, before anything reads it.
pub fn shard_name(source: &dyn Source, index: &str, entry: &str) -> Result<String> {
    let leaves = Path::new(entry).components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if leaves {
        let problem = Problem::ShardOutside {
            shard: entry.to_owned(),
        };
        return Err(bad(&source.show(index), None, problem));
    }
    let folder = Path::new(index).parent().unwrap_or(Path::new(""));
    Ok(folder.join(entry).to_string_lossy().into_owned())
}
