//! Per-tensor sizes from safetensors checkpoints, without reading any tensor data.
//!
//! - `header.rs`: one header from its bytes.
//! - `source.rs`: what a checkpoint path names (files, or an index).
//! - `index.rs`: the `model.safetensors.index.json` reader.
//! - `read.rs`: reading headers on several threads.
//! - `checks.rs`: the checks across files (names, and against the index).
//! - `order.rs`: model order of the names.
//! - `config.rs`: what `config.json` says.
//! - `error.rs`: the reader's errors.

mod checks;
mod config;
mod error;
mod header;
mod index;
pub mod order;
mod read;
mod source;

pub use config::{config_ties, HEAD};
pub use error::{CheckpointError, Problem};
pub use header::{loaded_bytes, parse_header, Dtype, Header, TensorInfo, MAX_HEADER_SIZE};
pub use source::{resolve, Checkpoint, INDEX_FILE, SINGLE_FILE};

use crate::error::{Error, Result};
use checks::Checks;
use order::{model_order, FileOrder};
use read::{index_headers, read_headers, FILES_PER_THREAD};

/// passed the checks that can be made so far (a check against the index may only settle after
/// the last file, and its error then ends the call): its tensors, and their model order (positions into `header.tensors`) while the files so far
/// follow the model (see [`FileOrder`]). While every file has an `order`, the files' orders put
/// one after another are the order of the result.
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
/// [`crate::order::model_order`]).
#[derive(Debug)]
pub struct CheckpointSizes {
    headers: Vec<Header>,
    /// `(file, position in its header)` of each tensor, in model order.
    order: Vec<(u32, u32)>,
    /// Where each file's tensors start in the order the observer saw them.
    seen: Vec<u32>,
    dtype: Option<Dtype>,
}

impl CheckpointSizes {
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
    let headers = match checkpoint {
        Checkpoint::Files(files) => read_headers(
            threads.min(files.len() / FILES_PER_THREAD),
            |submit| files.iter().for_each(|file| submit(file)),
            |(), total, arrivals| {
                let order: Vec<usize> = (0..total).collect();
                let hasher = ahash::RandomState::new();
                Checks::new(files, &hasher, None).run(&order, arrivals, progress, &mut observe_file)
            },
        )?,
        Checkpoint::Index(index) => index_headers(index, threads, progress, &mut observe_file)?,
    };
    let mut seen = Vec::with_capacity(headers.len());
    let mut count = 0u32;
    for header in &headers {
        seen.push(count);
        count = u32::try_from(header.len())
            .ok()
            .and_then(|len| count.checked_add(len))
            .ok_or_else(|| Error::from(CheckpointError::TooManyTensors))?;
    }
    let mut order = Vec::with_capacity(count as usize);
    if orders.iter().all(Option::is_some) {
        for (file, positions) in orders.iter().flatten().enumerate() {
            order.extend(positions.iter().map(|&at| (file as u32, at)));
        }
    } else {
        let mut names = Vec::with_capacity(count as usize);
        let mut places = Vec::with_capacity(count as usize);
        for (file, header) in headers.iter().enumerate() {
            for (at, (name, _)) in header.iter().enumerate() {
                names.push(name);
                places.push((file as u32, at as u32));
            }
        }
        order.extend(model_order(&names).iter().map(|&i| places[i as usize]));
    }
    Ok(CheckpointSizes {
        headers,
        order,
        seen,
        dtype,
    })
}
