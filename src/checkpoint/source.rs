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
use super::index::{not_index, parse_index};
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
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)?.flatten() {
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                // A checkpoint file that cannot be named to the reader is refused: leaving it
                // out would plan without its tensors. Other such names are not ours to read.
                Err(raw) if is_checkpoint_file(raw.as_encoded_bytes()) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: the file name is not UTF-8; rename it",
                            shown_path(&entry.path())
                        ),
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(names)
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
            return shown_path(&self.root);
        }
        shown_path(&self.path(name))
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
        let pytorch = pytorch_file(source.as_ref());
        match (indexes.as_slice(), singles.as_slice()) {
            ([index], _) => Checkpoint::new(source, Layout::Index(index.clone())),
            ([], [single]) => Checkpoint::new(source, Layout::Files(vec![single.clone()])),
            ([], []) if pytorch.is_some() => {
                let file = pytorch.unwrap_or_default().to_owned();
                Err(bad(&source.show(""), None, Problem::PytorchFolder { file }))
            }
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
    /// (see [`Checkpoint::find`]). A path that is neither a file nor a folder (a device, a
    /// FIFO), or that cannot be looked at (a symlink loop), is refused saying so.
    pub fn local(path: &Path) -> Result<Checkpoint> {
        let metadata = path_kind(path)?;
        if metadata.is_file() {
            let root = path.parent().unwrap_or(Path::new(""));
            let name = utf8_file_name(path)?;
            let layout = if name.ends_with(".index.json") {
                Layout::Index(name)
            } else {
                Layout::Files(vec![name])
            };
            return Checkpoint::new(Box::new(LocalFiles::new(root)), layout);
        }
        Checkpoint::find(Box::new(LocalFiles::new(path)))
    }

    /// Local `.safetensors` files, wherever they are.
    pub fn local_files(paths: &[PathBuf]) -> Result<Checkpoint> {
        let names = paths.iter().map(|path| match path.to_str() {
            Some(name) => Ok(name.to_owned()),
            None => Err(bad(&shown_path(path), None, Problem::NameNotUtf8)),
        });
        let names = names.collect::<Result<Vec<_>>>()?;
        Checkpoint::new(Box::new(LocalFiles::default()), Layout::Files(names))
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

/// The index transformers writes beside sharded PyTorch (`torch.save`) checkpoints.
pub const PYTORCH_INDEX_FILE: &str = "pytorch_model.bin.index.json";
/// The file of an unsharded PyTorch checkpoint.
pub const PYTORCH_FILE: &str = "pytorch_model.bin";

/// The PyTorch checkpoint file at the top level of `source`, if any: its index, else
/// `pytorch_model.bin`.
fn pytorch_file(source: &dyn Source) -> Option<&'static str> {
    [PYTORCH_INDEX_FILE, PYTORCH_FILE]
        .into_iter()
        .find(|name| source.len(name).is_ok())
}

/// The metadata of a local checkpoint path, which must be a regular file or a folder: other
/// kinds, and paths that cannot be looked at, are refused saying what they are.
fn path_kind(path: &Path) -> Result<std::fs::Metadata> {
    let shown = shown_path(path);
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(bad(&shown, None, Problem::NotFound));
        }
        Err(e) => return Err(bad(&shown, None, Problem::CannotRead(e.to_string()))),
    };
    if metadata.is_file() || metadata.is_dir() {
        return Ok(metadata);
    }
    let kind = file_kind(&metadata);
    Err(bad(&shown, None, Problem::NotAFile { kind }))
}

/// What a path that is neither a file nor a folder is, in words.
pub fn file_kind(metadata: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = metadata.file_type();
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    let _ = metadata;
    "neither a file nor a folder"
}

/// Whether a file name (bytes) is one a checkpoint folder is read for: shards, indexes, the
/// config.
fn is_checkpoint_file(name: &[u8]) -> bool {
    [b".safetensors".as_slice(), b".bin", b".json"]
        .iter()
        .any(|end| name.ends_with(end))
}

/// The file name of `path` as text; a name that is not UTF-8 is refused, naming the path with
/// its odd bytes escaped.
fn utf8_file_name(path: &Path) -> Result<String> {
    let name = path.file_name().unwrap_or_default();
    match name.to_str() {
        Some(name) => Ok(name.to_owned()),
        None => Err(bad(&shown_path(path), None, Problem::NameNotUtf8)),
    }
}

/// `path` for a message: as is when it is UTF-8, else with each byte that is not shown as
/// `\xNN` (as Python's `os.fsdecode` round trip names it).
pub fn shown_path(path: &Path) -> String {
    match path.to_str() {
        // An empty path would leave a message starting ": no such file or directory".
        Some("") => "''".to_owned(),
        Some(text) => text.to_owned(),
        None => path
            .as_os_str()
            .as_encoded_bytes()
            .utf8_chunks()
            .flat_map(|chunk| {
                let invalid = chunk.invalid().iter().map(|b| format!("\\x{b:02x}"));
                std::iter::once(chunk.valid().to_owned()).chain(invalid)
            })
            .collect(),
    }
}

/// The files of a local PyTorch (`torch.save`) checkpoint, with the checkpoint they make (for
/// `config.json`): a folder without safetensors files that holds `pytorch_model.bin.index.json`
/// (its shards) or `pytorch_model.bin`; a `*.bin.index.json` file; a file in torch.save's zip
/// format. `None` for anything else (a safetensors checkpoint, or a path the safetensors reader
/// will refuse).
pub fn pytorch_checkpoint(path: &Path) -> Result<Option<Checkpoint>> {
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(None);
    };
    let (root, name, from_folder) = if metadata.is_dir() {
        let source = LocalFiles::new(path);
        if Checkpoint::find(Box::new(source.clone())).is_ok() {
            return Ok(None);
        }
        match pytorch_file(&source) {
            Some(name) => (path.to_path_buf(), name.to_owned(), true),
            None => return Ok(None),
        }
    } else if metadata.is_file() {
        let root = path.parent().unwrap_or(Path::new("")).to_path_buf();
        (root, utf8_file_name(path)?, false)
    } else {
        return Ok(None);
    };
    let source = LocalFiles::new(root);
    let files = if name.ends_with(".bin.index.json") {
        pytorch_shards(&source, &name)?
    } else if from_folder
        || !name.ends_with(".safetensors") && sniff(&source, &name) == Some(Format::TorchZip)
    {
        vec![name]
    } else {
        return Ok(None);
    };
    for file in &files {
        match sniff(&source, file) {
            Some(Format::TorchZip) => {}
            Some(format) => return Err(not_safetensors(&source, file, format)),
            None => {
                let problem = Problem::NotPytorch;
                return Err(bad(&source.show(file), None, problem));
            }
        }
    }
    Checkpoint::new(Box::new(source), Layout::Files(files)).map(Some)
}

/// The shards a PyTorch index names, each once, in the order they first appear.
fn pytorch_shards(source: &LocalFiles, index: &str) -> Result<Vec<String>> {
    let shown = source.show(index);
    let text = source
        .read_whole(index)
        .map_err(|e| bad(&shown, None, Problem::CannotRead(e.to_string())))?;
    let text = std::str::from_utf8(&text).map_err(|e| not_index(&shown, &e))?;
    let mut names = Vec::new();
    let mut outside = None;
    let parsed = parse_index(text, &mut |entry: &str| {
        if outside.is_none() {
            match shard_name(source, index, entry) {
                Ok(name) => names.push((entry.to_owned(), name)),
                Err(error) => outside = Some(error),
            }
        }
    });
    if let Some(error) = outside {
        return Err(error);
    }
    parsed.map_err(|e| not_index(&shown, &e))?;
    for (shard, name) in &names {
        if let Some(problem) = shard_problem(source, name, shard) {
            return Err(bad(&shown, None, problem));
        }
    }
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

/// What is wrong with shard `file`, which an index names as `shard`, if it cannot be read:
/// missing, or not a file (a folder: the system's words say so).
pub(super) fn shard_problem(source: &dyn Source, file: &str, shard: &str) -> Option<Problem> {
    let e = source.len(file).err()?;
    let (shard, path) = (shard.to_owned(), source.show(file));
    Some(if e.kind() == io::ErrorKind::NotFound {
        Problem::ShardMissing { shard, path }
    } else {
        let reason = e.to_string();
        Problem::ShardUnreadable {
            shard,
            path,
            reason,
        }
    })
}

/// What a file's first bytes say it is, when it is not safetensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// torch.save's zip archive (PyTorch 1.6 and later).
    TorchZip,
    /// A bare pickle: torch.save's legacy format, or `pickle.dump`.
    Pickle,
    /// JSON text (a `config.json` given where a checkpoint file belongs).
    Json,
}

/// The format `start` (a file's first bytes) shows, if it is one of [`Format`].
pub fn format_of(start: &[u8]) -> Option<Format> {
    match start {
        [b'P', b'K', 3, 4, ..] => Some(Format::TorchZip),
        [0x80, 2..=5, ..] => Some(Format::Pickle),
        _ => match start.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Some(Format::Json),
            _ => None,
        },
    }
}

fn sniff(source: &dyn Source, name: &str) -> Option<Format> {
    let mut start = Vec::new();
    source.read_range(name, 0, 4, &mut start).ok()?;
    format_of(&start)
}

/// The refusal of file `name`, which is `format`, not safetensors.
pub(super) fn not_safetensors(
    source: &dyn Source,
    name: &str,
    format: Format,
) -> crate::error::Error {
    let problem = match format {
        Format::TorchZip => Problem::TorchZip,
        Format::Pickle => Problem::Pickle,
        Format::Json => Problem::Json,
    };
    bad(&source.show(name), None, problem)
}
