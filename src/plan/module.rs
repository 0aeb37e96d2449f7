//! The tensors of a torch module, as the bindings read them, made into what planning takes:
//! sizes in order (re-sized to a dtype if asked) and the groups of names that share a tensor.

use std::collections::HashMap;

use ahash::RandomState;

use crate::dtype::{self, Dtype};

/// One parameter or buffer of a module (`named_parameters`, then `named_buffers`, with
/// duplicates kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleTensor {
    pub name: String,
    /// The tensor object's identity: a tied weight is one tensor under several names.
    pub id: usize,
    pub nbytes: u64,
    /// Its dtype as torch names it (`"torch.bfloat16"`) and its element count: needed only to
    /// re-size it, so read only when a dtype is asked for.
    pub dtype: Option<(String, u64)>,
}

/// How a dtype argument re-sizes a module's floating-point tensors (integer and bool tensors
/// keep their bytes either way, as both loaders leave them unconverted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// They become this dtype: a `torch_dtype` load converts them to it.
    To(Dtype),
    /// They count at most this dtype's element size: accelerate's `compute_module_sizes(dtype=)`,
    /// whose callers pass e.g. `torch.int8` to size a model an 8-bit quantizer will load.
    AtMost(Dtype),
}

/// Per name, in order, the bytes of its tensor (floating-point ones re-sized as `resize` says,
/// if given), and the groups of names that share one tensor. A tensor seen again under another
/// name counts 0 bytes there and joins the group of the name it was first seen under. A dtype
/// the table lacks (complex128, quantized ints) is never a float a `torch_dtype` converts, so
/// such a tensor keeps its bytes.
pub fn module_sizes(
    tensors: Vec<ModuleTensor>,
    resize: Option<Resize>,
) -> (Vec<(String, u64)>, Vec<Vec<String>>) {
    let mut sizes: Vec<(String, u64)> = Vec::with_capacity(tensors.len());
    let mut first_seen: HashMap<usize, usize, RandomState> = HashMap::default();
    let mut group_of: HashMap<usize, usize, RandomState> = HashMap::default();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for tensor in tensors {
        if let Some(&first) = first_seen.get(&tensor.id) {
            let g = *group_of.entry(tensor.id).or_insert_with(|| {
                groups.push(vec![sizes[first].0.clone()]);
                groups.len() - 1
            });
            groups[g].push(tensor.name.clone());
            sizes.push((tensor.name, 0));
            continue;
        }
        let stored = match (&tensor.dtype, resize) {
            (Some((name, elements)), Some(_)) => {
                dtype::parse_dtype(name).ok().map(|d| (d, *elements))
            }
            _ => None,
        };
        let bytes = match (stored, resize) {
            (Some((stored, elements)), Some(Resize::To(target))) => {
                dtype::loaded_bytes(stored, elements, Some(target))
            }
            (Some((stored, elements)), Some(Resize::AtMost(target))) => {
                let smaller = if target.bitsize() < stored.bitsize() {
                    target
                } else {
                    stored
                };
                dtype::loaded_bytes(stored, elements, Some(smaller))
            }
            _ => tensor.nbytes,
        };
        first_seen.insert(tensor.id, sizes.len());
        sizes.push((tensor.name, bytes));
    }
    (sizes, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, id: usize, dtype: &str, elements: u64, nbytes: u64) -> ModuleTensor {
        ModuleTensor {
            name: name.to_owned(),
            id,
            nbytes,
            dtype: Some((dtype.to_owned(), elements)),
        }
    }

    #[test]
    fn ties_by_identity_and_resizing() {
        let tensors = vec![
            tensor("embed.weight", 1, "torch.float32", 10, 40),
            tensor("layers.0.w", 2, "torch.float32", 4, 16),
            tensor("layers.0.steps", 3, "torch.int64", 2, 16),
            tensor("head.weight", 1, "torch.float32", 10, 40),
            tensor("extra.weight", 1, "torch.float32", 10, 40),
            tensor("odd", 4, "torch.complex128", 1, 16),
        ];
        let (sizes, tied) = module_sizes(tensors.clone(), None);
        assert_eq!(
            sizes,
            [
                ("embed.weight".to_owned(), 40),
                ("layers.0.w".to_owned(), 16),
                ("layers.0.steps".to_owned(), 16),
                ("head.weight".to_owned(), 0),
                ("extra.weight".to_owned(), 0),
                ("odd".to_owned(), 16),
            ]
        );
        assert_eq!(tied, [["embed.weight", "head.weight", "extra.weight"]]);
        // Floats become bfloat16; integers and a dtype the table lacks keep their bytes.
        let bytes = |resize| -> Vec<u64> {
            let (sizes, _) = module_sizes(tensors.clone(), Some(resize));
            sizes.iter().map(|&(_, b)| b).collect()
        };
        assert_eq!(bytes(Resize::To(Dtype::BF16)), [20, 8, 16, 0, 0, 16]);
        // accelerate's rule: floats never grow, and an integer dtype sizes them too.
        assert_eq!(bytes(Resize::AtMost(Dtype::BF16)), [20, 8, 16, 0, 0, 16]);
        assert_eq!(bytes(Resize::AtMost(Dtype::F64)), [40, 16, 16, 0, 0, 16]);
        assert_eq!(bytes(Resize::AtMost(Dtype::I8)), [10, 4, 16, 0, 0, 16]);
        assert_eq!(bytes(Resize::To(Dtype::F64)), [80, 32, 16, 0, 0, 16]);
    }
}
