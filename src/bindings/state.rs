//! A torch module's `state_dict(keep_vars=True)`, read in one walk of its module tree: the same
//! names in the same order, each to its parameter or buffer object. `Module.state_dict` makes
//! the dict through a Python call per module (`_save_to_state_dict`, hooks, prefixes), about
//! 2 ms for a 500-tensor model on the meta device; the plan from a checkpoint asks it once per
//! plan, after the model is built, where that is a twentieth of the whole call.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyString, PyType};

use super::guard::guard;

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
        let state = PyDict::new(py);
        Ok(walk(module, "", &base, &state)?.then_some(state))
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

/// Adds `module`'s entries under `prefix` as `Module.state_dict` visits them (its parameters,
/// its persistent buffers, then each child's); false as soon as a module is not plain.
fn walk(
    module: &Bound<'_, PyAny>,
    prefix: &str,
    base: &Bound<'_, PyType>,
    state: &Bound<'_, PyDict>,
) -> PyResult<bool> {
    let py = module.py();
    if !plain(module, base)? {
        return Ok(false);
    }
    let join = |name: &Bound<'_, PyAny>| -> PyResult<String> {
        let name = name.cast::<PyString>()?.to_str()?;
        Ok(format!("{prefix}{name}"))
    };
    let transient = module
        .getattr(intern!(py, "_non_persistent_buffers_set"))?
        .cast_into::<PySet>()?;
    for (key, tensor) in module
        .getattr(intern!(py, "_parameters"))?
        .cast_into::<PyDict>()?
        .iter()
    {
        if !tensor.is_none() {
            state.set_item(join(&key)?, tensor)?;
        }
    }
    for (key, tensor) in module
        .getattr(intern!(py, "_buffers"))?
        .cast_into::<PyDict>()?
        .iter()
    {
        if !tensor.is_none() && !transient.contains(&key)? {
            state.set_item(join(&key)?, tensor)?;
        }
    }
    for (key, child) in module
        .getattr(intern!(py, "_modules"))?
        .cast_into::<PyDict>()?
        .iter()
    {
        if !child.is_none() && !walk(&child, &format!("{}.", join(&key)?), base, state)? {
            return Ok(false);
        }
    }
    Ok(true)
}
