//! A torch module's `state_dict(keep_vars=True)`, read in one walk of its module tree: the same
//! names in the same order, each to its parameter or buffer object. `Module.state_dict` makes
//! the dict through a Python call per module (`_save_to_state_dict`, hooks, prefixes), about
//! 2 ms for a 500-tensor model on the meta device; the plan from a checkpoint asks it once per
//! plan, after the model is built, where that is a twentieth of the whole call.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyType};

use super::guard::guard;
use super::walk::{walk, Found, Member, NoSplitNames, Step, Visitor};

/// `(state, no-split names)`: `module.state_dict(keep_vars=True)`'s items, or `None` when a
/// module could make it differently from the plain rule (a state-dict hook, its own
/// `_save_to_state_dict`, `state_dict` or `get_extra_state`): the caller then asks
/// `state_dict` itself; and, in the same walk, what `_no_split_names(module, no_split)` gives.
/// `transient`: the non-persistent buffers too, each where its module's buffers are (no
/// checkpoint stores them, but the loader places their modules: a rotary embedding's
/// `inv_freq` is a module's only tensor).
#[pyfunction]
#[pyo3(signature = (module, no_split = None, transient = false))]
pub fn _state_tensors<'py>(
    module: &Bound<'py, PyAny>,
    no_split: Option<Vec<String>>,
    transient: bool,
) -> PyResult<StateAndNames<'py>> {
    guard("_state_tensors", || {
        let py = module.py();
        let base = py
            .import("torch.nn")?
            .getattr("Module")?
            .cast_into::<PyType>()?;
        let mut visitor = State {
            base,
            state: Some(PyDict::new(py)),
            transient: None,
            keep_transient: transient,
            names: no_split.map(NoSplitNames::new),
        };
        walk(module, &mut visitor)?;
        Ok((visitor.state, visitor.names.map(|names| names.names)))
    })
}

/// A state dict (or `None`) and no-split names (or `None`).
type StateAndNames<'py> = (Option<Bound<'py, PyDict>>, Option<Vec<String>>);

/// Whether `module`'s class makes its state dict as `torch.nn.Module` does.
fn plain(module: &Bound<'_, PyAny>, base: &Bound<'_, PyType>) -> PyResult<bool> {
    let py = module.py();
    for hooks in [
        intern!(py, "_state_dict_hooks"),
        intern!(py, "_state_dict_pre_hooks"),
    ] {
        if module.getattr(hooks)?.len()? != 0 {
            return Ok(false);
        }
    }
    let class = module.get_type();
    for method in [
        intern!(py, "_save_to_state_dict"),
        intern!(py, "state_dict"),
        intern!(py, "get_extra_state"),
    ] {
        if !class.getattr(method)?.is(base.getattr(method)?) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `_state_tensors`'s visitor: `state` until a module is not plain (then `None`), and the
/// no-split names when asked for.
struct State<'py> {
    base: Bound<'py, PyType>,
    state: Option<Bound<'py, PyDict>>,
    /// The non-persistent buffers of the module being read.
    transient: Option<Bound<'py, PySet>>,
    /// Whether the non-persistent buffers go in `state` too.
    keep_transient: bool,
    names: Option<NoSplitNames>,
}

impl<'py> Visitor<'py> for State<'py> {
    fn module(&mut self, module: &Bound<'py, PyAny>, name: &str, listed: bool) -> PyResult<Step> {
        if let Some(names) = &mut self.names {
            names.see(module, name, listed)?;
        }
        if self.state.is_some() && !plain(module, &self.base)? {
            self.state = None;
        }
        if self.state.is_none() {
            // Only the names are left to find: they are under listed modules only.
            return Ok(match (&self.names, listed) {
                (None, _) => Step::Stop,
                (Some(_), true) => Step::Enter,
                (Some(_), false) => Step::Skip,
            });
        }
        if !self.keep_transient {
            let transient = module.getattr(intern!(module.py(), "_non_persistent_buffers_set"))?;
            self.transient = Some(transient.cast_into::<PySet>()?);
        }
        Ok(Step::Enter)
    }

    fn wants_tensors(&self) -> bool {
        self.state.is_some()
    }

    fn tensor(&mut self, found: Found<'_, 'py>) -> PyResult<()> {
        let kept = match (found.member, &self.transient) {
            (Member::Buffer, Some(transient)) => !transient.contains(found.key)?,
            _ => true,
        };
        if let (true, Some(state)) = (kept, &self.state) {
            state.set_item(found.name, found.tensor)?;
        }
        Ok(())
    }
}
