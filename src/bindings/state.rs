//! A torch module's `state_dict(keep_vars=True)`, read in one walk of its module tree: the same
//! names in the same order, each to its parameter or buffer object. `Module.state_dict` makes
//! the dict through a Python call per module (`_save_to_state_dict`, hooks, prefixes), about
//! 2 ms for a 500-tensor model on the meta device; the plan from a checkpoint asks it once per
//! plan, after the model is built, where that is a twentieth of the whole call.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyType};

use super::guard::guard;
use super::walk::{walk, Member, Step, Visitor};

/// `module.state_dict(keep_vars=True)`'s items, or `None` when a module could make it
/// differently from the plain rule (a state-dict hook, its own `_save_to_state_dict`,
/// `state_dict` or `get_extra_state`): the caller then asks `state_dict` itself.
#[pyfunction]
pub fn _state_tensors<'py>(module: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    guard("_state_tensors", || {
        let py = module.py();
        let base = py
            .import("torch.nn")?
            .getattr("Module")?
            .cast_into::<PyType>()?;
        let mut visitor = State {
            base,
            state: PyDict::new(py),
            transient: None,
        };
        Ok(walk(module, &mut visitor)?.then_some(visitor.state))
    })
}

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

/// `_state_tensors`'s visitor: `state` until a module is not plain.
struct State<'py> {
    base: Bound<'py, PyType>,
    state: Bound<'py, PyDict>,
    /// The non-persistent buffers of the module being read.
    transient: Option<Bound<'py, PySet>>,
}

impl<'py> Visitor<'py> for State<'py> {
    fn module(&mut self, module: &Bound<'py, PyAny>, _: &str, _: bool) -> PyResult<Step> {
        if !plain(module, &self.base)? {
            return Ok(Step::Stop);
        }
        let transient = module.getattr(intern!(module.py(), "_non_persistent_buffers_set"))?;
        self.transient = Some(transient.cast_into::<PySet>()?);
        Ok(Step::Enter)
    }

    fn tensor(
        &mut self,
        member: Member,
        key: &Bound<'py, PyAny>,
        name: String,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let kept = match (member, &self.transient) {
            (Member::Buffer, Some(transient)) => !transient.contains(key)?,
            _ => true,
        };
        if kept {
            self.state.set_item(name, tensor)?;
        }
        Ok(())
    }
}
