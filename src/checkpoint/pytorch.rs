//! PyTorch (`torch.save`) checkpoints: `pytorch_model.bin`, or the shards an index names. The
//! bindings hand over what `torch.load(map_location="meta")` read of each file's archive (each
//! tensor's name, dtype, shape and storage), and the sizes are made as those of safetensors
//! files are: the same model order, and the same `loaded_bytes`.

use std::collections::{HashMap, HashSet};

use ahash::RandomState;

use super::error::{bad, Problem};
use super::order::FileOrder;
use super::{CheckpointSizes, Dtype, Header};
use crate::error::Result;

/// One file's tensors, as its archive's metadata tells them.
#[derive(Debug, Default)]
pub struct PytorchFile {
    /// The file, as messages show it.
    file: String,
    header: Header,
    /// The storages seen so far.
    storages: HashSet<u64, RandomState>,
}

impl PytorchFile {
    pub fn new(file: String) -> Self {
        PytorchFile {
            file,
            ..PytorchFile::default()
        }
    }

    /// Adds tensor `name` of `dtype` and `shape`, in `storage` (an identity of the storage it
    /// views, if known). A tensor whose storage an earlier tensor of the file holds already
    /// (tied weights saved twice, as `torch.save` keeps them) takes no more memory and is left
    /// out, as `save_pretrained` leaves it out of safetensors files; `config.json`'s ties name
    /// it.
    pub fn add(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        storage: Option<u64>,
    ) -> Result<()> {
        if let Some(storage) = storage {
            if !self.storages.insert(storage) {
                return Ok(());
            }
        }
        self.header.push(&self.file, name, dtype, shape)
    }
}

/// Per-tensor bytes of a PyTorch checkpoint's `files`, in model order, as
/// [`super::checkpoint_sizes`] gives those of safetensors files. A name in two files is
/// refused.
pub fn sizes_of_files(files: Vec<PytorchFile>, dtype: Option<Dtype>) -> Result<CheckpointSizes> {
    let (names, headers): (Vec<String>, Vec<Header>) = files
        .into_iter()
        .map(|file| (file.file, file.header))
        .unzip();
    let files = names;
    // As a safetensors checkpoint with no tensors is (`torch.save({}, ...)` gave `{}`).
    if headers.iter().all(Header::is_empty) {
        let what = files.first().cloned().unwrap_or_default();
        return Err(super::CheckpointError::NoTensors { what }.into());
    }
    let mut first = HashMap::<&str, usize, RandomState>::default();
    for (file, header) in headers.iter().enumerate() {
        for (name, _) in header.iter() {
            if let Some(&earlier) = first.get(name) {
                let shown = files.get(file).map(String::as_str).unwrap_or_default();
                let problem = Problem::AlsoIn {
                    first: files.get(earlier).cloned().unwrap_or_default(),
                };
                return Err(bad(shown, Some(name), problem));
            }
            first.insert(name, file);
        }
    }
    let mut file_order = FileOrder::default();
    let orders: Vec<Option<Vec<u32>>> = headers
        .iter()
        .map(|header| file_order.add(&header.iter().map(|(name, _)| name).collect::<Vec<_>>()))
        .collect();
    CheckpointSizes::new(headers, orders, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointError, Problem};
    use crate::error::Error;

    fn file(name: &str, tensors: &[(&str, Dtype, &[u64], Option<u64>)]) -> PytorchFile {
        let mut file = PytorchFile::new(name.to_owned());
        for &(tensor, dtype, shape, storage) in tensors {
            file.add(tensor, dtype, shape, storage).unwrap();
        }
        file
    }

    #[test]
    fn files_are_sized_in_model_order_and_shared_storages_once() {
        let first = file(
            "a.bin",
            &[
                ("model.layers.1.w", Dtype::F32, &[2, 3], Some(1)),
                ("model.embed_tokens.weight", Dtype::BF16, &[10, 4], Some(2)),
                ("lm_head.weight", Dtype::BF16, &[10, 4], Some(2)),
            ],
        );
        let second = file("b.bin", &[("model.layers.0.w", Dtype::F32, &[2, 3], None)]);
        let sizes = sizes_of_files(vec![first, second], None).unwrap().to_vec();
        let expected = [
            ("model.embed_tokens.weight", 80),
            ("model.layers.0.w", 24),
            ("model.layers.1.w", 24),
        ];
        let expected: Vec<(String, u64)> =
            expected.iter().map(|&(n, b)| (n.to_owned(), b)).collect();
        assert_eq!(sizes, expected);
        let half = file("a.bin", &[("w", Dtype::F32, &[2, 3], None)]);
        let half = sizes_of_files(vec![half], Some(Dtype::F16))
            .unwrap()
            .to_vec();
        assert_eq!(half, vec![("w".to_owned(), 12)]);
    }

    #[test]
    fn a_name_in_two_files_and_an_overflowing_shape_are_refused() {
        let twice = vec![
            file("a.bin", &[("w", Dtype::F32, &[1], None)]),
            file("b.bin", &[("w", Dtype::F32, &[1], None)]),
        ];
        let refused = sizes_of_files(twice, None).unwrap_err();
        let Error::Checkpoint(CheckpointError::File {
            file,
            tensor,
            problem,
        }) = refused
        else {
            panic!("{refused:?}");
        };
        assert_eq!((file.as_str(), tensor.as_deref()), ("b.bin", Some("w")));
        assert_eq!(
            problem,
            Problem::AlsoIn {
                first: "a.bin".to_owned()
            }
        );
        let mut huge = PytorchFile::new("c.bin".to_owned());
        let refused = huge
            .add("w", Dtype::F32, &[1 << 40, 1 << 40], None)
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("c.bin: tensor 'w': shape [1099511627776, 1099511627776] overflows"),
            "{refused}"
        );
    }
}
