//! The model as placement sees it: its tensors (names checked, tied storage counted once), cut
//! into units that are never split (no-split blocks, modules), tied units joined, and the module
//! tree of the units that the compact map is made from.

use std::collections::hash_map::{Entry, HashMap};

use ahash::RandomState;

use super::cost::Cost;
use super::error::PlanError;

/// Module-name patterns whose matches are never split; `*` stands for one component.
#[derive(Clone, Debug, Default)]
pub struct NoSplit {
    exact: std::collections::HashSet<String, RandomState>,
    wildcard: Vec<Vec<String>>,
}

impl NoSplit {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<NoSplit, PlanError> {
        let mut no_split = NoSplit::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
                return Err(PlanError::BadNoSplit {
                    pattern: pattern.to_owned(),
                });
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

    /// Every pattern, split at dots (for `validate.rs`).
    pub(super) fn patterns(&self) -> Vec<Vec<String>> {
        let exact = self
            .exact
            .iter()
            .map(|p| p.split('.').map(str::to_owned).collect());
        exact.chain(self.wildcard.iter().cloned()).collect()
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
    /// Whether the caller knows that no name is in `sizes` twice (the keys of a dict, the
    /// tensors of a checkpoint), so `plan` need not look; otherwise it does, and a name listed
    /// twice is an error.
    pub names_distinct: bool,
}

pub(super) const NONE: u32 = u32::MAX;

/// What a unit is: a no-split block, the tensors of one module, or a lone top-level tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Block,
    Module,
    Tensor,
}

/// The unit a tensor belongs to: the prefix of its outermost no-split block (a `no_split`
/// pattern match, or by default the first numbered component: `model.layers.3`), else its
/// module (the name less its last component), else the tensor itself.
fn unit_of<'a>(
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

/// The tensors planning sees: the model's, then tied names its sizes lack (a tied weight the
/// checkpoint stores once), each with its bytes; a tied group's storage counts once, on its
/// first member that has a size.
pub(super) struct Tensors<'a> {
    pub(super) names: Vec<&'a str>,
    pub(super) bytes: Vec<u64>,
    /// Name -> position, built only when ties or the check for names listed twice need it.
    index: HashMap<&'a str, u32, RandomState>,
}

impl<'a> Tensors<'a> {
    /// The table of `model`'s tensors; a name listed twice is an error.
    pub(super) fn new(model: &'a Model) -> Result<Tensors<'a>, PlanError> {
        let mut index: HashMap<&str, u32, RandomState> = HashMap::default();
        if !model.tied.is_empty() || !model.names_distinct {
            index.reserve(model.sizes.len());
            for (i, (name, _)) in model.sizes.iter().enumerate() {
                if index.insert(name.as_str(), i as u32).is_some() {
                    return Err(PlanError::NameTwice { name: name.clone() });
                }
            }
        }
        let mut names: Vec<&str> = model.sizes.iter().map(|(n, _)| n.as_str()).collect();
        let mut bytes: Vec<u64> = model.sizes.iter().map(|&(_, b)| b).collect();
        let sized = model.sizes.len();
        for group in &model.tied {
            // Shared storage counts once, on the first member that has a size of its own (a
            // name the sizes lack is added with 0): the rest count 0.
            let mut counted = false;
            for name in group {
                match index.entry(name.as_str()) {
                    Entry::Occupied(at) => {
                        let at = *at.get() as usize;
                        if at < sized {
                            if counted {
                                bytes[at] = 0;
                            }
                            counted = true;
                        }
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(names.len() as u32);
                        names.push(name.as_str());
                        bytes.push(0);
                    }
                }
            }
        }
        Ok(Tensors {
            names,
            bytes,
            index,
        })
    }

    /// Where `name` is among the names (built only with ties or when names are checked for
    /// being listed twice; `None` otherwise).
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&i| i as usize)
    }

    /// Every name is dotted: no empty name, no empty component.
    pub(super) fn check_names(&self) -> Result<(), PlanError> {
        for name in &self.names {
            if name.is_empty()
                || name.starts_with('.')
                || name.ends_with('.')
                || name.contains("..")
            {
                return Err(PlanError::BadTensorName {
                    name: (*name).to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// A unit: tensors placed together.
#[derive(Clone, Debug)]
pub(super) struct Unit<'a> {
    pub(super) prefix: &'a str,
    pub(super) cost: Cost,
    /// The tensors in it (indices into the names).
    pub(super) tensors: Vec<u32>,
    /// Other units tied into this one.
    pub(super) tied: Vec<u32>,
}

/// The units of a model, the module tree of their prefixes, and which were joined by ties.
pub(super) struct Units<'a> {
    /// In order of first appearance.
    pub(super) list: Vec<Unit<'a>>,
    /// The unit of each tensor.
    pub(super) of_tensor: Vec<u32>,
    pub(super) tree: Tree<'a>,
    /// The unit each one was joined into (itself if none).
    joined_into: Vec<u32>,
    /// What placement places, in order: the units not joined into another.
    pub(super) order: Vec<u32>,
}

impl<'a> Units<'a> {
    pub(super) fn new(tensors: &Tensors<'a>, model: &Model) -> Units<'a> {
        let (list, of_tensor) = cut(tensors, model.no_split.as_ref());
        let prefixes: Vec<&str> = list.iter().map(|u| u.prefix).collect();
        let tree = Tree::build(&prefixes);
        let mut units = Units {
            joined_into: (0..list.len() as u32).collect(),
            list,
            of_tensor,
            tree,
            order: Vec::new(),
        };
        units.join_ties(&model.tied, &tensors.index);
        units.order = (0..units.list.len() as u32)
            .filter(|&u| units.joined_into[u as usize] == u)
            .collect();
        units
    }

    /// Tied groups join the unit that comes first. Leaves `joined_into` pointing straight at
    /// each unit's final unit.
    fn join_ties(&mut self, tied: &[Vec<String>], index: &HashMap<&str, u32, RandomState>) {
        fn find(root: &mut [u32], mut u: u32) -> u32 {
            while root[u as usize] != u {
                root[u as usize] = root[root[u as usize] as usize];
                u = root[u as usize];
            }
            u
        }
        let root = &mut self.joined_into;
        for group in tied {
            let mut members: Vec<u32> = group
                .iter()
                .filter_map(|n| index.get(n.as_str()))
                .map(|&t| find(root, self.of_tensor[t as usize]))
                .collect();
            members.sort_unstable();
            members.dedup();
            if let Some((&first, rest)) = members.split_first() {
                for &other in rest {
                    root[other as usize] = first;
                    let cost = self.list[other as usize].cost;
                    let unit = &mut self.list[first as usize];
                    unit.cost = unit.cost.saturating_add(cost);
                    unit.tied.push(other);
                }
            }
        }
        for u in 0..root.len() as u32 {
            root[u as usize] = find(root, u);
        }
    }

    /// The cost of each unit of `order`.
    pub(super) fn costs(&self) -> Vec<Cost> {
        self.order
            .iter()
            .map(|&u| self.list[u as usize].cost)
            .collect()
    }

    /// The device of every unit, from the device of each unit of `order` (`assigned`).
    pub(super) fn devices(&self, assigned: &[usize], unplaced: usize) -> Vec<usize> {
        let mut device = vec![unplaced; self.list.len()];
        for (&u, &d) in self.order.iter().zip(assigned) {
            device[u as usize] = d;
        }
        for (u, &root) in self.joined_into.iter().enumerate() {
            device[u] = device[root as usize];
        }
        device
    }

    /// For every unit of `list`, the position in `order` of the unit it was joined into.
    pub(super) fn order_slots(&self) -> Vec<usize> {
        let mut slot = vec![0usize; self.list.len()];
        for (k, &u) in self.order.iter().enumerate() {
            slot[u as usize] = k;
        }
        self.joined_into
            .iter()
            .map(|&root| slot[root as usize])
            .collect()
    }

    /// A unit's name in reports: its prefix, and those of the units tied into it.
    pub(super) fn name(&self, u: u32) -> String {
        let unit = &self.list[u as usize];
        let mut name = unit.prefix.to_owned();
        for &other in &unit.tied {
            name.push_str(" + ");
            name.push_str(self.list[other as usize].prefix);
        }
        name
    }
}

/// Units in order of first appearance, and the unit of each tensor. Names in model order share
/// their block, so the previous tensor's block is tried before anything is split or hashed.
fn cut<'a>(tensors: &Tensors<'a>, no_split: Option<&NoSplit>) -> (Vec<Unit<'a>>, Vec<u32>) {
    let names = &tensors.names;
    let mut units: Vec<Unit<'a>> = Vec::new();
    let mut unit_index: HashMap<&str, u32, RandomState> = HashMap::default();
    let mut tensor_unit = vec![0u32; names.len()];
    let mut components = Vec::with_capacity(16);
    let mut last_block: Option<(&str, u32)> = None;
    for (t, &name) in names.iter().enumerate() {
        let cached = last_block.filter(|(prefix, _)| crate::names::inside(name, prefix));
        let unit = match cached {
            Some((_, unit)) => unit,
            None => {
                let (prefix, kind) = unit_of(name, no_split, &mut components);
                let unit = *unit_index.entry(prefix).or_insert_with(|| {
                    units.push(Unit {
                        prefix,
                        cost: Cost::default(),
                        tensors: Vec::new(),
                        tied: Vec::new(),
                    });
                    (units.len() - 1) as u32
                });
                last_block = (kind == Kind::Block).then_some((prefix, unit));
                unit
            }
        };
        let entry = &mut units[unit as usize];
        entry.cost = entry
            .cost
            .saturating_add(Cost::of_weights(tensors.bytes[t]));
        entry.tensors.push(t as u32);
        tensor_unit[t] = unit;
    }
    (units, tensor_unit)
}
