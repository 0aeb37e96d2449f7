//! Per-tensor sizes from safetensors checkpoints, without reading any tensor data.
//!
//! - `source.rs`: where the bytes come from (the `Source` trait, local files), and which files
//!   of a checkpoint hold its tensors.
//! - `header.rs`: one safetensors header from its bytes.
//! - `index.rs`: the `model.safetensors.index.json` reader.
//! - `read.rs`: reading the headers on several threads, and the model order of the result.
//! - `checks.rs`: the checks across files (names, and against the index).
//! - `order.rs`: model order of tensor names.
//! - `config.rs`: what `config.json` says.
//! - `pytorch.rs`: PyTorch (`torch.save`) checkpoints, from the metadata of their archives.
//! - `loaded.rs`: sizes in the names of the model the loader builds.
//! - `hub/`: a checkpoint on the Hugging Face Hub, its headers read by HTTP range requests.
//! - `error.rs`: the reader's errors.

mod checks;
mod config;
mod error;
mod header;
pub mod hub;
mod index;
mod loaded;
pub mod order;
mod pytorch;
mod read;
mod source;
#[cfg(test)]
mod tests;

#[cfg(test)]
use config::config_ties;
pub use config::{config_text, ties_of_config, HEAD, TIED_BY_DEFAULT};
pub use error::{CheckpointError, Problem};
pub use header::{loaded_bytes, parse_header, Dtype, Header, TensorInfo, MAX_HEADER_SIZE};
pub use loaded::{
    checkpoint_names_note, key_templates, loaded_sizes, renamed_keys, KeyTemplates, Renamed,
    TemplateRename,
};
pub use pytorch::{sizes_of_files, PytorchFile};
pub use source::{
    file_kind, format_of, pytorch_checkpoint, shard_name, shown_path, Checkpoint, Format, Layout,
    LocalFiles, Source, CONFIG_FILE, INDEX_FILE, PYTORCH_FILE, PYTORCH_INDEX_FILE, SINGLE_FILE,
};

use crate::error::Result;
use order::FileOrder;

/// What `checkpoint_sizes` shows its observer of each file, once it and the files before it
/// passed the checks that can be made so far (a check against the index may only settle after
/// the last file, and its error then ends the call): its tensors, and their model order
/// (positions into `header.tensors`) while the files so far follow the model (see
/// [`FileOrder`]). While every file has an `order`, the files' orders put one after another are
/// the order of the result.
pub struct Observed<'a> {
    pub header: &'a Header,
    pub order: Option<&'a [u32]>,
    /// How many files the checkpoint has.
    pub files: usize,
}

/// A tensor's size as loaded, and its place in the order the observer saw the tensors (file by
/// file, each in file order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub seen: u32,
}

/// A checkpoint's checked headers and the model order of their tensors (see
/// [`order::model_order`]).
#[derive(Debug)]
pub struct CheckpointSizes {
    headers: Vec<Header>,
    /// `(file, position in its header)` of each tensor, in model order.
    order: Vec<(u32, u32)>,
    /// Where each file's tensors start in the order the observer saw them.
    seen: Vec<u32>,
    dtype: Option<Dtype>,
    /// Whether every file followed the model, so that the order was known file by file.
    followed: bool,
}

impl CheckpointSizes {
    /// Whether every file followed the model: then the order of the tensors was known file by
    /// file, as [`Observed::order`] told (else it was made once all were read).
    pub fn followed_model(&self) -> bool {
        self.followed
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Each tensor's name and size as loaded, in model order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Size)> {
        self.order.iter().map(|&(file, at)| {
            let header = &self.headers[file as usize];
            let tensor = &header.tensors[at as usize];
            let size = Size {
                bytes: loaded_bytes(tensor, self.dtype),
                seen: self.seen[file as usize] + at,
            };
            (header.name(tensor), size)
        })
    }

    /// `(name, bytes as loaded)` in model order.
    pub fn to_vec(&self) -> Vec<(String, u64)> {
        self.iter()
            .map(|(name, size)| (name.to_owned(), size.bytes))
            .collect()
    }
}

/// Per-tensor bytes of a checkpoint, in model order. `dtype` re-sizes floating-point tensors as
/// loading with that `torch_dtype` would. Headers are read by up to `threads` threads. On the
/// calling thread, `progress(done, total)` is called as files are read, and `observe` with each
/// file (see [`Observed`]), in file order, while later files may still be read (so a caller can
/// convert names, and while the files follow the model, build its result, meanwhile).
pub fn checkpoint_sizes(
    checkpoint: &Checkpoint,
    dtype: Option<Dtype>,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(Observed<'_>),
) -> Result<CheckpointSizes> {
    let read = match checkpoint.source().take_read(checkpoint.layout()) {
        Some(read) => {
            // Read ahead: each file told as the read saw it.
            let files = read.headers.len();
            for (at, (header, order)) in read.headers.iter().zip(&read.orders).enumerate() {
                let order = order.as_deref();
                observe(Observed {
                    header,
                    order,
                    files,
                });
                progress(at + 1, files);
            }
            read
        }
        None => {
            let read = read_observed(checkpoint, threads, progress, observe)?;
            checkpoint.source().keep_read(checkpoint.layout(), &read);
            read
        }
    };
    Ok(CheckpointSizes::from_read(read, dtype))
}

/// A checkpoint read by [`read_ahead`]: what [`checkpoint_sizes`] makes of the same files
/// before it applies a dtype.
#[derive(Debug)]
pub struct ReadAhead {
    headers: Vec<Header>,
    /// Each file's order, as [`Observed::order`] tells it.
    orders: Vec<Option<Vec<u32>>>,
    order: Vec<(u32, u32)>,
    seen: Vec<u32>,
}

/// Reads `checkpoint` as [`checkpoint_sizes`] does, with no one to tell: for a source that
/// reads before it is asked (see [`Source::take_read`]).
pub fn read_ahead(checkpoint: &Checkpoint, threads: usize) -> Result<ReadAhead> {
    read_observed(checkpoint, threads, &mut |_, _| {}, &mut |_| {})
}

fn read_observed(
    checkpoint: &Checkpoint,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(Observed<'_>),
) -> Result<ReadAhead> {
    let mut file_order = FileOrder::default();
    let mut orders: Vec<Option<Vec<u32>>> = Vec::new();
    let mut observe_file = |header: &Header, files: usize| {
        let names: Vec<&str> = header.iter().map(|(name, _)| name).collect();
        let order = file_order.add(&names);
        observe(Observed {
            header,
            order: order.as_deref(),
            files,
        });
        orders.push(order);
    };
    let headers = read::checked_headers(checkpoint, threads, progress, &mut observe_file)?;
    ReadAhead::new(headers, orders)
}

impl ReadAhead {
    /// `headers` read, given each file's model order while the files followed the model (see
    /// [`read::model_order_of`]).
    fn new(headers: Vec<Header>, orders: Vec<Option<Vec<u32>>>) -> Result<ReadAhead> {
        let (order, seen) = read::model_order_of(&headers, &orders)?;
        Ok(ReadAhead {
            headers,
            orders,
            order,
            seen,
        })
    }
}

impl CheckpointSizes {
    /// The sizes of `headers`, given each file's model order while the files followed the
    /// model.
    fn new(
        headers: Vec<Header>,
        orders: Vec<Option<Vec<u32>>>,
        dtype: Option<Dtype>,
    ) -> Result<CheckpointSizes> {
        Ok(CheckpointSizes::from_read(
            ReadAhead::new(headers, orders)?,
            dtype,
        ))
    }

    /// The sizes of what was read, each floating-point tensor re-sized to `dtype`.
    fn from_read(read: ReadAhead, dtype: Option<Dtype>) -> CheckpointSizes {
        CheckpointSizes {
            followed: read.orders.iter().all(Option::is_some),
            headers: read.headers,
            order: read.order,
            seen: read.seen,
            dtype,
        }
    }
}
