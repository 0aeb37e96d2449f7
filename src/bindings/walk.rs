//! One walk of a torch module tree, read from each module's `_parameters`, `_buffers` and
//! `_modules` dicts (without `named_*`'s generators: three walks of a 50k-module model cost
//! about 0.3 s in them). `_module_walk` (sizes for planning), `_state_tensors` (a state dict)
//! and `_no_split_names` are visitors of it.

use std::collections::HashSet;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::checkpoint::module_tensor;
use super::dtype::accelerate_dtype;
use super::guard::guard;
use crate::plan::{self, ModuleTensor};

/// Sizes, tied groups and the names of the no-split blocks.
type WalkedModule = (Vec<(String, u64)>, Vec<Vec<String>>, Vec<String>);

/// Which of a module's dicts a tensor is in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Member {
    Parameter,
    Buffer,
}

/// What the walk does with a module a visitor has seen.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Read its tensors (when the visitor wants them), then its children.
    Enter,
    /// Neither its tensors nor its children.
    Skip,
    /// End the whole walk.
    Stop,
}

pub(super) trait Visitor<'py> {
    /// `module` under `name` (`""` for the root; names joined with `.`), before its tensors and
    /// children. `listed`: `named_modules()` lists it under this name (it dedups: a module
    /// reached again is not listed, nor is anything under it).
    fn module(&mut self, module: &Bound<'py, PyAny>, name: &str, listed: bool) -> PyResult<Step>;

    /// Whether the walk reads tensors for [`Visitor::tensor`].
    fn wants_tensors(&self) -> bool {
        true
    }

    /// One tensor of the module last given to [`Visitor::module`] (when [`Visitor::wants_tensors`]).
    fn tensor(&mut self, _found: Found<'_, 'py>) -> PyResult<()> {
        Ok(())
    }
}

/// A tensor the walk found (never `None`): `key` in its module's `member` dict, `name` its full
/// name.
pub(super) struct Found<'a, 'py> {
    pub(super) member: Member,
    pub(super) key: &'a Bound<'py, PyAny>,
    pub(super) name: String,
    pub(super) tensor: &'a Bound<'py, PyAny>,
}

/// Walks `root` as `Module.state_dict` and `named_parameters(remove_duplicate=False)` do:
/// each module, its parameters, its buffers, then each child's (a shared module under each of
/// its names). False when the visitor stopped it.
pub(super) fn walk<'py>(
    root: &Bound<'py, PyAny>,
    visitor: &mut impl Visitor<'py>,
) -> PyResult<bool> {
    let mut seen = HashSet::new();
    visit(root, "", true, &mut seen, visitor)
}

fn visit<'py>(
    module: &Bound<'py, PyAny>,
    name: &str,
    parent_listed: bool,
    seen: &mut HashSet<usize>,
    visitor: &mut impl Visitor<'py>,
) -> PyResult<bool> {
    let py = module.py();
    let listed = parent_listed && seen.insert(module.as_ptr() as usize);
    match visitor.module(module, name, listed)? {
        Step::Stop => return Ok(false),
        Step::Skip => return Ok(true),
        Step::Enter => {}
    }
    let join = |key: &Bound<'_, PyAny>| -> PyResult<String> {
        let key = key.cast::<PyString>()?.to_str()?;
        Ok(if name.is_empty() {
            key.to_owned()
        } else {
            format!("{name}.{key}")
        })
    };
    if visitor.wants_tensors() {
        let members = [
            (Member::Parameter, intern!(py, "_parameters")),
            (Member::Buffer, intern!(py, "_buffers")),
        ];
        for (member, attribute) in members {
            for (key, tensor) in module.getattr(attribute)?.cast_into::<PyDict>()?.iter() {
                if !tensor.is_none() {
                    let name = join(&key)?;
                    visitor.tensor(Found {
                        member,
                        key: &key,
                        name,
                        tensor: &tensor,
                    })?;
                }
            }
        }
    }
    for (key, child) in module
        .getattr(intern!(py, "_modules"))?
        .cast_into::<PyDict>()?
        .iter()
    {
        if !child.is_none() && !visit(&child, &join(&key)?, listed, seen, visitor)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `module`'s class is one of `classes` (by `__name__`, as transformers matches
/// `_no_split_modules`).
fn class_in(module: &Bound<'_, PyAny>, classes: &[String]) -> PyResult<bool> {
    let class = module.get_type().name()?;
    let class = class.to_str()?;
    Ok(classes.iter().any(|wanted| wanted == class))
}

/// The names of the submodules whose class is in `classes`, as
/// `[name for name, m in module.named_modules() if name and type(m).__name__ in classes]`
/// gives them: a module reached by several names once, under the first, and nothing under its
/// later names.
pub(super) struct NoSplitNames {
    classes: Vec<String>,
    pub(super) names: Vec<String>,
}

impl NoSplitNames {
    pub(super) fn new(classes: Vec<String>) -> Self {
        NoSplitNames {
            classes,
            names: Vec::new(),
        }
    }

    /// Notes `module` under `name` (see [`Visitor::module`] for `listed`).
    pub(super) fn see(
        &mut self,
        module: &Bound<'_, PyAny>,
        name: &str,
        listed: bool,
    ) -> PyResult<()> {
        if listed
            && !name.is_empty()
            && !self.classes.is_empty()
            && class_in(module, &self.classes)?
        {
            self.names.push(name.to_owned());
        }
        Ok(())
    }
}

impl<'py> Visitor<'py> for NoSplitNames {
    fn module(&mut self, module: &Bound<'py, PyAny>, name: &str, listed: bool) -> PyResult<Step> {
        if !listed {
            return Ok(Step::Skip);
        }
        self.see(module, name, listed)?;
        Ok(Step::Enter)
    }

    fn wants_tensors(&self) -> bool {
        false
    }
}

/// The no-split module names of `module` for the class names `no_split` (see
/// [`NoSplitNames`]); `None` for `None`.
#[pyfunction]
pub fn _no_split_names(
    module: &Bound<'_, PyAny>,
    no_split: Option<Vec<String>>,
) -> PyResult<Option<Vec<String>>> {
    guard("_no_split_names", || {
        let Some(classes) = no_split else {
            return Ok(None);
        };
        let mut names = NoSplitNames::new(classes);
        if !names.classes.is_empty() {
            walk(module, &mut names)?;
        }
        Ok(Some(names.names))
    })
}

/// `_module_sizes` in one walk of the module tree, and the names of the submodules whose class
/// is named in `no_split`: `(sizes, tied groups, no-split names)`. Parameters and buffers in
/// the order `named_parameters` and `named_buffers(remove_duplicate=False)` visit them; a
/// shared module's no-split name under each of its names. `dtype` re-sizes as the loaders'
/// `compute_module_sizes` does (see [`accelerate_dtype`]).
#[pyfunction]
#[pyo3(signature = (module, dtype = None, no_split = None))]
pub fn _module_walk(
    module: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    no_split: Option<Vec<String>>,
) -> PyResult<WalkedModule> {
    guard("_module_walk", || {
        let resize = accelerate_dtype(dtype)?;
        let mut sizes = Sizes {
            resize: resize.is_some(),
            classes: no_split.unwrap_or_default(),
            parameters: Vec::new(),
            buffers: Vec::new(),
            blocks: Vec::new(),
        };
        walk(module, &mut sizes)?;
        let mut tensors = sizes.parameters;
        tensors.append(&mut sizes.buffers);
        let (sizes_found, tied) = plan::module_sizes(tensors, resize);
        Ok((sizes_found, tied, sizes.blocks))
    })
}

/// `_module_walk`'s visitor.
struct Sizes {
    resize: bool,
    classes: Vec<String>,
    parameters: Vec<ModuleTensor>,
    buffers: Vec<ModuleTensor>,
    blocks: Vec<String>,
}

impl<'py> Visitor<'py> for Sizes {
    fn module(&mut self, module: &Bound<'py, PyAny>, name: &str, _: bool) -> PyResult<Step> {
        if !name.is_empty() && !self.classes.is_empty() && class_in(module, &self.classes)? {
            self.blocks.push(name.to_owned());
        }
        Ok(Step::Enter)
    }

    fn tensor(&mut self, found: Found<'_, 'py>) -> PyResult<()> {
        let read = module_tensor(found.name, found.tensor, self.resize)?;
        match found.member {
            Member::Parameter => self.parameters.push(read),
            Member::Buffer => self.buffers.push(read),
        }
        Ok(())
    }
}
