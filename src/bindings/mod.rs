//! The Python face of the core: each file here only translates between Python and `crate::*`.

mod check;
mod checkpoint;
mod component;
mod convert;
mod cuda;
mod device;
mod dtype;
mod errors;
mod guard;
mod haystack;
mod inference;
mod keys;
mod lookup;
mod map;
mod map_iter;
mod plan;
mod pytorch;
mod reading;
mod sizes;
mod state;
mod walk;

use pyo3::prelude::*;

// Every class is safe to share between threads without the GIL (frozen, with interior locks
// that are never held while calling into Python; tests/test_threads.py stresses it).
#[pymodule(gil_used = false)]
pub fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    guard::install_panic_hook();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<device::PyDevice>()?;
    m.add_class::<map::PyDeviceMap>()?;
    m.add_class::<map::MappingView>()?;
    m.add_class::<map_iter::ViewIter>()?;
    m.add_class::<component::PyComponentDevice>()?;
    m.add_function(wrap_pyfunction!(device::_device_type_index, m)?)?;
    m.add_class::<cuda::PyCudaDevice>()?;
    m.add_function(wrap_pyfunction!(cuda::cuda_devices, m)?)?;
    m.add_function(wrap_pyfunction!(cuda::cuda_device_count, m)?)?;
    m.add_function(wrap_pyfunction!(cuda::cuda_status, m)?)?;
    m.add_class::<cuda::PyCudaDiscovery>()?;
    m.add_function(wrap_pyfunction!(cuda::cuda_discover, m)?)?;
    m.add_class::<lookup::PyCoverage>()?;
    m.add_class::<lookup::PyExplanation>()?;
    m.add_class::<lookup::PyNearMiss>()?;
    m.add_class::<lookup::PyMapDiff>()?;
    m.add_class::<lookup::PySummary>()?;
    m.add_function(wrap_pyfunction!(check::_check_map, m)?)?;
    // Set as an attribute, not added to `__all__`: the stub (checked by stubtest) describes
    // the module as released, without test-only entry points.
    #[cfg(feature = "testing")]
    m.setattr(
        "_panic_for_tests",
        wrap_pyfunction!(guard::_panic_for_tests, m)?,
    )?;
    m.add_class::<plan::PyPlanReport>()?;
    m.add_class::<checkpoint::PyCheckpointSizes>()?;
    m.add_function(wrap_pyfunction!(checkpoint::tensor_sizes, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::example_model, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_example_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_checkpoint_sizes, m)?)?;
    m.add_function(wrap_pyfunction!(reading::_checkpoint_sizes_started, m)?)?;
    m.add_class::<reading::PySizesReading>()?;
    m.add_function(wrap_pyfunction!(pytorch::_pytorch_files, m)?)?;
    m.add_function(wrap_pyfunction!(pytorch::_pytorch_sizes, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_loaded_sizes, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_name_templates, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_renamed_keys, m)?)?;
    m.add_class::<checkpoint::PyRenamedKeys>()?;
    m.add_function(wrap_pyfunction!(checkpoint::_checkpoint_names_note, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_tied_by_default, m)?)?;
    m.add_class::<checkpoint::PyHubCheckpoint>()?;
    m.add_function(wrap_pyfunction!(checkpoint::_hub_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_is_hub_source, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::_hub_config, m)?)?;
    #[cfg(feature = "testing")]
    m.setattr(
        "_tensor_sizes_and_path",
        wrap_pyfunction!(checkpoint::_tensor_sizes_and_path, m)?,
    )?;
    m.add_function(wrap_pyfunction!(plan::_plan, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_stages, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_module_sizes, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_largest_conversion, m)?)?;
    m.add_function(wrap_pyfunction!(walk::_module_walk, m)?)?;
    m.add_function(wrap_pyfunction!(walk::_no_split_names, m)?)?;
    m.add_function(wrap_pyfunction!(state::_state_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_system_memory, m)?)?;
    // What the planning command line offers, from the core, so it keeps no copies.
    m.add_function(wrap_pyfunction!(plan::_headroom, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_human_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_example_config, m)?)?;
    m.add("_DEFAULT_RESERVE", crate::plan::DEFAULT_RESERVE)?;
    m.add(
        "_EXAMPLE_NAMES",
        pyo3::types::PyTuple::new(m.py(), crate::examples::NAMES)?,
    )?;
    m.add(
        "_STRATEGY_NAMES",
        pyo3::types::PyTuple::new(m.py(), crate::plan::Strategy::NAMES)?,
    )?;
    inference::register(m)?;
    let values: Vec<&str> = crate::device::DeviceType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    m.add(
        "_DEVICE_TYPE_VALUES",
        pyo3::types::PyTuple::new(m.py(), values)?,
    )?;
    Ok(())
}
