//! The checkpoint reader's errors. Most are about one file (or the path given, or the index):
//! [`CheckpointError::File`] names it, and the tensor when the error is about one, before the
//! [`Problem`]. Every one is a `ValueError` in Python.

use thiserror::Error;

use super::header::MAX_HEADER_SIZE;
use super::source::{INDEX_FILE, SINGLE_FILE};
use crate::dtype::Dtype;
use crate::error::{quoted, Error, ErrorKind};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// What is wrong in one file, naming it (as the source shows it) and the tensor if any.
    #[error("{file}: {}{problem}", in_tensor(.tensor))]
    File {
        file: String,
        tensor: Option<String>,
        problem: Problem,
    },

    #[error("The checkpoint '{what}' holds no tensors")]
    NoTensors { what: String },

    #[error("The checkpoint holds more than {} tensors", u32::MAX)]
    TooManyTensors,

    #[error("The list of checkpoint files is empty")]
    NoFiles,

    /// Reading a checkpoint from the Hugging Face Hub.
    #[error(transparent)]
    Hub(#[from] super::hub::HubError),
}

fn in_tensor(tensor: &Option<String>) -> String {
    tensor
        .as_ref()
        .map(|t| format!("tensor '{t}': "))
        .unwrap_or_default()
}

impl CheckpointError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CheckpointError::Hub(error) => error.kind(),
            _ => ErrorKind::Value,
        }
    }
}

/// What is wrong in one file: the path, the file's framing, its header, the names across files,
/// the index, `config.json`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("no such file or directory")]
    NotFound,

    #[error("cannot list: {0}")]
    CannotList(String),

    #[error("holds neither {INDEX_FILE} nor {SINGLE_FILE} (found {indexes} index files and {singles} .safetensors files)")]
    NoCheckpoint { indexes: usize, singles: usize },

    #[error("cannot read: {0}")]
    CannotRead(String),

    #[error("file is {len} bytes, too short for a safetensors header (8-byte length first)")]
    TooShort { len: u64 },

    #[error("header length {len} is above the safetensors limit of {MAX_HEADER_SIZE} bytes")]
    HeaderLengthTooLarge { len: u64 },

    #[error("header length {len} runs past the end of the file ({file_len} bytes): truncated or not safetensors")]
    HeaderPastEnd { len: u64, file_len: u64 },

    #[error("the file ended after {read} of its {len} header bytes")]
    HeaderCut { read: u64, len: u64 },

    #[error("header of {len} bytes is above the safetensors limit of {MAX_HEADER_SIZE} bytes")]
    HeaderTooLarge { len: u64 },

    #[error("header is not a valid safetensors JSON object: not UTF-8 ({0})")]
    HeaderNotUtf8(String),

    #[error("header is not a valid safetensors JSON object: {0}")]
    HeaderNotJson(String),

    #[error("unknown dtype '{0}'")]
    UnknownDtype(String),

    /// `shape` as the message shows it (cut after a few dimensions).
    #[error("shape {shape} overflows")]
    ShapeOverflows { shape: String },

    #[error("data offsets [{begin}, {end}] end before they begin")]
    OffsetsReversed { begin: u64, end: u64 },

    #[error("data offsets [{begin}, {end}] run past the end of the file (its data section is {data_len} bytes)")]
    OffsetsPastEnd { begin: u64, end: u64, data_len: u64 },

    #[error("data offsets [{begin}, {end}] span {} bytes, but shape {shape} of {dtype} needs {bytes}", end - begin)]
    WrongSpan {
        begin: u64,
        end: u64,
        shape: String,
        dtype: Dtype,
        bytes: u64,
    },

    #[error("data offsets [{begin}, {end}] overlap those of tensor '{other}'")]
    Overlap { begin: u64, end: u64, other: String },

    #[error("duplicate tensor name (twice in its header)")]
    TwiceInHeader,

    /// `first`: the file that holds the name already.
    #[error("duplicate tensor name (also in '{first}')")]
    AlsoIn { first: String },

    #[error("not a safetensors index (a JSON object with a 'weight_map' object of tensor names to files): {0}")]
    NotIndex(String),

    /// An entry of the index that names a file outside the checkpoint's folder.
    #[error("the index names shard {}, a path outside the checkpoint's folder", quoted(.shard))]
    ShardOutside { shard: String },

    /// `path`: where the shard was looked for.
    #[error("the index names shard '{shard}', which is missing ({path})")]
    ShardMissing { shard: String, path: String },

    #[error("the index lists this tensor twice")]
    ListedTwice,

    /// `named`: the shard's file name; `found`: the file that holds the tensor.
    #[error("the index puts this tensor in '{named}', but it is in '{found}'")]
    WrongShard { named: String, found: String },

    #[error("the index puts this tensor in '{named}', but no shard has it")]
    NotInShard { named: String },

    // Paths and formats that are not safetensors (issue 14).
    #[error("is {kind}, not a checkpoint file or folder")]
    NotAFile { kind: &'static str },

    #[error("the file name is not UTF-8; rename it")]
    NameNotUtf8,

    #[error("holds a PyTorch checkpoint ('{file}'), not safetensors: reading its sizes needs torch (pip install torch)")]
    PytorchFolder { file: String },

    #[error("is a PyTorch checkpoint (torch.save's zip archive), not safetensors: reading its sizes needs torch (pip install torch)")]
    TorchZip,

    #[error("is a pickle (torch.save's legacy format before PyTorch 1.6), not safetensors: its sizes cannot be read without loading its tensors; save it again with torch.save or as safetensors")]
    Pickle,

    #[error("is a JSON file, not safetensors: give the checkpoint's folder, its model.safetensors.index.json or its .safetensors files")]
    Json,

    #[error("is neither torch.save's zip archive nor safetensors")]
    NotPytorch,

    /// `path`: where the shard was looked for; `reason`: the system's words.
    #[error("the index names shard '{shard}', which cannot be read ({path}: {reason})")]
    ShardUnreadable {
        shard: String,
        path: String,
        reason: String,
    },

    #[error("is not valid JSON: {0}")]
    ConfigNotJson(String),

    /// The value as JSON.
    #[error("'tie_word_embeddings' must be true or false, got {0}")]
    TieNotBool(String),
}

/// `problem` in `file` (as the source shows it), about `tensor` if given.
pub(super) fn bad(file: &str, tensor: Option<&str>, problem: Problem) -> Error {
    CheckpointError::File {
        file: file.to_owned(),
        tensor: tensor.map(str::to_owned),
        problem,
    }
    .into()
}
