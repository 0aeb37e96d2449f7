//! The model as placement sees it: tensors cut into units (no-split blocks, modules), the
//! module tree of the units.

use std::collections::HashMap;

use ahash::RandomState;

use crate::error::{Error, Result};

/// Module-name patterns whose matches are never split; `*` stands for one component.
#[derive(Clone, Debug, Default)]
pub struct NoSplit {
    exact: std::collections::HashSet<String, RandomState>,
    wildcard: Vec<Vec<String>>,
}

impl NoSplit {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<NoSplit> {
        let mut no_split = NoSplit::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
                return Err(Error::Invalid(format!(
                    "Invalid no_split pattern '{pattern}': expected a dotted module name such as 'model.layers.*'"
                )));
            }
            if pattern.split('.').any(|c| c == "*") {
                no_split
                    .wildcard
                    .push(pattern.split('.').map(str::to_owned).collect());
            } else {
                no_split.exact.insert(pattern.to_owned());
            }
        }
        Ok(no_split)
    }

    pub(super) fn matches(&self, prefix: &str, components: &[&str]) -> bool {
        self.exact.contains(prefix)
            || self.wildcard.iter().any(|p| {
                p.len() == components.len()
                    && p.iter().zip(components).all(|(p, c)| p == "*" || p == c)
            })
    }
}

/// What to plan: tensor sizes in model order, which tensors share storage, and what not to split.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub sizes: Vec<(String, u64)>,
    /// Groups of tensor names that share storage and must sit together. A name missing from
    /// `sizes` (a tied weight the checkpoint stores once) is added to its group's device.
    pub tied: Vec<Vec<String>>,
    /// `None`: detect the outermost numbered blocks.
    pub no_split: Option<NoSplit>,
}

pub(super) const NONE: u32 = u32::MAX;

/// What a unit is: a no-split block, the tensors of one module, or a lone top-level tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Block,
    Module,
    Tensor,
}

/// The unit a tensor belongs to: the prefix of its outermost no-split block (a `no_split`
/// pattern match, or by default the first numbered component: `model.layers.3`), else its
/// module (the name less its last component), else the tensor itself.
pub(super) fn unit_of<'a>(
    name: &'a str,
    no_split: Option<&NoSplit>,
    components: &mut Vec<&'a str>,
) -> (&'a str, Kind) {
    components.clear();
    let mut start = 0;
    for (end, component) in name
        .match_indices('.')
        .map(|(i, _)| i)
        .chain(std::iter::once(name.len()))
        .map(|end| {
            let component = &name[start..end];
            start = end + 1;
            (end, component)
        })
    {
        components.push(component);
        let block = match no_split {
            Some(patterns) => patterns.matches(&name[..end], components),
            None => crate::names::number(component).is_some(),
        };
        if block {
            return (&name[..end], Kind::Block);
        }
    }
    match name.rfind('.') {
        Some(dot) => (&name[..dot], Kind::Module),
        None => (name, Kind::Tensor),
    }
}

/// The module tree of the unit prefixes (only down to units: a unit never parts, so the
/// compact map never names anything below one). Node 0 is the root (`""`).
pub(super) struct Tree<'a> {
    /// Full dotted name of each node.
    pub(super) names: Vec<&'a str>,
    pub(super) parent: Vec<u32>,
    pub(super) children: Vec<Vec<u32>>,
    /// The unit at this node, if one.
    pub(super) unit: Vec<u32>,
}

impl<'a> Tree<'a> {
    pub(super) fn build(prefixes: &[&'a str]) -> Tree<'a> {
        let mut tree = Tree {
            names: vec![""],
            parent: vec![NONE],
            children: vec![Vec::new()],
            unit: vec![NONE],
        };
        let mut index: HashMap<(u32, &'a str), u32, RandomState> =
            HashMap::with_capacity_and_hasher(prefixes.len() * 2, RandomState::new());
        for (u, &name) in prefixes.iter().enumerate() {
            let mut node = 0u32;
            let mut start = 0;
            loop {
                let end = name[start..].find('.').map_or(name.len(), |p| start + p);
                let component = &name[start..end];
                node = match index.get(&(node, component)) {
                    Some(&child) => child,
                    None => {
                        let child = tree.names.len() as u32;
                        tree.names.push(&name[..end]);
                        tree.parent.push(node);
                        tree.children.push(Vec::new());
                        tree.unit.push(NONE);
                        tree.children[node as usize].push(child);
                        index.insert((node, component), child);
                        child
                    }
                };
                if end == name.len() {
                    break;
                }
                start = end + 1;
            }
            tree.unit[node as usize] = u as u32;
        }
        tree
    }
}

/// A unit in placement order.
#[derive(Clone, Debug)]
pub(super) struct Unit<'a> {
    pub(super) prefix: &'a str,
    pub(super) bytes: u64,
    /// The tensors in it (indices into the names).
    pub(super) tensors: Vec<u32>,
    /// Other units tied into this one.
    pub(super) tied: Vec<u32>,
}
