//! Checkpoints for Python: `tensor_sizes`, `_checkpoint_sizes` (`_CheckpointSizes`),
//! `example_model` and `_example_tensors`. Only translation: the work is in `crate::checkpoint`
//! and `crate::examples`, done with the GIL released.

use std::cell::RefCell;
use std::collections::hash_map::{Entry, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use ahash::RandomState;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

use super::convert::presized_dict;
use super::dtype::dtype_from_py;
use super::errors::wrong_type;
use super::guard::guard;
use super::reading::ConfigRead;
use crate::checkpoint::hub::{self, HubCheckpoint, HubOptions};
use crate::checkpoint::{self, Checkpoint, CheckpointSizes, Observed};
use crate::dtype::Dtype;
use crate::error::Error;
use crate::plan::{self, ModuleTensor};

/// Threads for reading headers: one per core, at most 8. Parsing JSON is the work, so more
/// threads than cores would only add start-up and fresh allocator heaps (page faults).
pub(super) fn reader_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8))
        .unwrap_or(1)
}

fn path_from_py(value: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let os = value.py().import("os")?;
    let text = os
        .call_method1("fspath", (value,))
        .map_err(|_| wrong_type("expected a path (str or os.PathLike)", value))?;
    match super::pytorch::path_bytes(&text)? {
        Some(path) => Ok(path),
        None => Err(wrong_type("expected a str path", value).into()),
    }
}

/// A checkpoint path (file, index, directory), a list of `.safetensors` files, a Hub
/// repository (`"org/name"` when no such path exists, `"hf://org/name[@revision]"`, read with
/// `token` if given) or one fetched already (`_HubCheckpoint`).
pub fn checkpoint_from_py(
    source: &Bound<'_, PyAny>,
    token: Option<String>,
) -> PyResult<Checkpoint> {
    if let Ok(hub) = source.cast::<PyHubCheckpoint>() {
        return Ok(hub.get().hub.checkpoint()?);
    }
    // A str that is not UTF-8 (a file name `os.fsdecode` made) is a local path.
    if let Some(text) = source.cast::<PyString>().ok().and_then(|s| s.to_str().ok()) {
        let text = text.to_owned();
        let options = || HubOptions::from_env(token, Some(hf_get_token));
        return Ok(source
            .py()
            .detach(|| hub::open_any(&text, options, &mut |_| {}))?);
    }
    if let Ok(list) = source.cast::<PyList>() {
        let files = list
            .iter()
            .map(|item| path_from_py(&item))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Checkpoint::local_files(&files)?);
    }
    if let Ok(tuple) = source.cast::<PyTuple>() {
        let list = PyList::new(source.py(), tuple.iter())?;
        return checkpoint_from_py(&list.into_any(), token);
    }
    let path = path_from_py(source)?;
    Ok(source.py().detach(|| Checkpoint::local(&path))?)
}

/// One int object per distinct size: a model has a few dozen (every expert's weight is the
/// same size), so a dict of 10^5 sizes holds a few dozen ints instead of one per tensor.
#[derive(Default)]
struct Ints(HashMap<u64, Py<PyInt>, RandomState>);

impl Ints {
    fn get<'a, 'py>(&'a mut self, py: Python<'py>, bytes: u64) -> PyResult<&'a Bound<'py, PyInt>> {
        let int = match self.0.entry(bytes) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => slot.insert(bytes.into_pyobject(py)?.unbind()),
        };
        Ok(int.bind(py))
    }
}

/// `{name: bytes}` from `(name, bytes)` entries, in their order.
fn sizes_dict<'py>(
    py: Python<'py>,
    len: usize,
    entries: impl Iterator<Item = (PyResult<Bound<'py, PyString>>, u64)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = presized_dict(py, len)?;
    let mut ints = Ints::default();
    for (key, bytes) in entries {
        dict.set_item(key?, ints.get(py, bytes)?)?;
    }
    Ok(dict)
}

pub(super) fn sizes_to_dict<'py>(
    py: Python<'py>,
    sizes: &[(String, u64)],
) -> PyResult<Bound<'py, PyDict>> {
    let entries = sizes
        .iter()
        .map(|(name, bytes)| (Ok(PyString::new(py, name)), *bytes));
    sizes_dict(py, sizes.len(), entries)
}

/// What `read_checkpoint` calls with each file as it is handed on (with the GIL).
type OnFile<'a> = dyn FnMut(Python<'_>, Observed<'_>) -> PyResult<()> + Send + 'a;

/// A checkpoint's sizes, read with the GIL released. `progress(done, total)` is called (with
/// the GIL) as files are read, and `on_file` with each file as `checkpoint_sizes` hands it on
/// (see `checkpoint::Observed`) while later files are still being read.
fn read_checkpoint(
    py: Python<'_>,
    checkpoint: &Checkpoint,
    dtype: Option<Dtype>,
    progress: Option<&Bound<'_, PyAny>>,
    mut on_file: Option<&mut OnFile<'_>>,
) -> PyResult<CheckpointSizes> {
    let progress = progress
        .filter(|p| !p.is_none())
        .map(|p| p.clone().unbind());
    let mut failure: Option<PyErr> = None;
    let result = py.detach(|| {
        let failure = RefCell::new(&mut failure);
        let mut report = |done: usize, total: usize| {
            let failed = failure.borrow().is_some();
            if let (Some(callback), false) = (&progress, failed) {
                Python::attach(|py| {
                    if let Err(err) = callback.bind(py).call1((done, total)) {
                        **failure.borrow_mut() = Some(err);
                    }
                });
            }
        };
        let mut observe = |observed: Observed<'_>| {
            let failed = failure.borrow().is_some();
            if let (Some(on_file), false) = (on_file.as_deref_mut(), failed) {
                Python::attach(|py| {
                    if let Err(err) = on_file(py, observed) {
                        **failure.borrow_mut() = Some(err);
                    }
                });
            }
        };
        checkpoint::checkpoint_sizes(
            checkpoint,
            dtype,
            reader_threads(),
            &mut report,
            &mut observe,
        )
    });
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(result?)
}

/// The `tensor_sizes` dict, built as the files are handed on while later ones are read:
/// each file's names become Python strings (their hashes computed, and cached in them), and
/// while the files follow the model, their entries go into the result in model order, so that
/// little is left to do after the last file.
struct SizesBuilder {
    dtype: Option<Dtype>,
    /// Every name so far, in file order (`Size::seen`).
    names: Vec<Py<PyString>>,
    /// The result, built file by file while the files follow the model.
    dict: Option<Py<PyDict>>,
    following: bool,
    ints: Ints,
}

impl SizesBuilder {
    fn new(dtype: Option<Dtype>) -> Self {
        SizesBuilder {
            dtype,
            names: Vec::new(),
            dict: None,
            following: true,
            ints: Ints::default(),
        }
    }

    fn add(&mut self, py: Python<'_>, observed: Observed<'_>) -> PyResult<()> {
        let first = self.names.len();
        for (name, _) in observed.header.iter() {
            let name = PyString::new(py, name);
            name.hash()?;
            self.names.push(name.unbind());
        }
        let order = match observed.order {
            Some(order) if self.following => order,
            _ => {
                self.following = false;
                self.dict = None;
                return Ok(());
            }
        };
        let dict = match &self.dict {
            Some(dict) => dict.bind(py).clone(),
            None => {
                // Shards are about the same size.
                let guess = observed.header.len().saturating_mul(observed.files);
                let dict = presized_dict(py, guess.min(1 << 24))?;
                self.dict = Some(dict.clone().unbind());
                dict
            }
        };
        for &at in order {
            let at = at as usize;
            let bytes = checkpoint::loaded_bytes(&observed.header.tensors[at], self.dtype);
            dict.set_item(self.names[first + at].bind(py), self.ints.get(py, bytes)?)?;
        }
        Ok(())
    }

    /// The result: the dict built as files came in when they all followed the model (then
    /// `true`), else one built now in the order of `sizes`.
    fn finish<'py>(
        mut self,
        py: Python<'py>,
        sizes: &CheckpointSizes,
    ) -> PyResult<(Bound<'py, PyDict>, bool)> {
        if let Some(dict) = self.dict.take().filter(|_| self.following) {
            let dict = dict.into_bound(py);
            if dict.len() == sizes.len() {
                return Ok((dict, true));
            }
            return Err(Error::Internal(format!(
                "the sizes built file by file hold {} tensors, not {}",
                dict.len(),
                sizes.len()
            ))
            .into());
        }
        let entries = sizes.iter().map(|(_, size)| {
            let name = self.names.get(size.seen as usize).ok_or_else(|| {
                PyErr::from(Error::Internal(
                    "a tensor name was not converted".to_owned(),
                ))
            });
            (name.map(|n| n.bind(py).clone()), size.bytes)
        });
        Ok((sizes_dict(py, sizes.len(), entries)?, false))
    }
}

/// The `tensor_sizes` dict, and whether it was built file by file as the files were read.
fn sizes_of<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
    token: Option<String>,
) -> PyResult<(Bound<'py, PyDict>, bool)> {
    let dtype = dtype_from_py(dtype)?;
    let checkpoint = checkpoint_from_py(path, token)?;
    let mut builder = SizesBuilder::new(dtype);
    let mut on_file = |py: Python<'_>, observed: Observed<'_>| builder.add(py, observed);
    let sizes = read_checkpoint(py, &checkpoint, dtype, progress, Some(&mut on_file))?;
    builder.finish(py, &sizes)
}

/// Per-tensor bytes from the safetensors headers of `path`, in model order.
#[pyfunction]
#[pyo3(signature = (path, dtype = None, *, progress = None, token = None))]
pub fn tensor_sizes<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
    token: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    guard("tensor_sizes", || {
        Ok(sizes_of(py, path, dtype, progress, token)?.0)
    })
}

/// For tests (only with the `testing` feature): `tensor_sizes(path, dtype)`, and which way it
/// was built: `"by file"` (file by file as the files were read, when they follow the model)
/// or `"at the end"` (once all were read).
#[cfg(feature = "testing")]
#[pyfunction]
#[pyo3(signature = (path, dtype = None))]
pub fn _tensor_sizes_and_path<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyDict>, &'static str)> {
    guard("_tensor_sizes_and_path", || {
        let (sizes, by_file) = sizes_of(py, path, dtype, None, None)?;
        Ok((sizes, if by_file { "by file" } else { "at the end" }))
    })
}

/// A checkpoint's sizes in model order, kept in Rust between reading them and planning with
/// them: `plan(checkpoint)` hands them from `_checkpoint_sizes` to `_plan` without making 10^5
/// Python tuples and reading them back.
#[pyclass(frozen, module = "devicemap._core", name = "_CheckpointSizes")]
pub struct PyCheckpointSizes {
    pub(super) sizes: Vec<(String, u64)>,
    /// The keys' name templates, for renaming them: made where the sizes were read (on the
    /// reading thread of `_checkpoint_sizes_started`), else when first asked for.
    pub(super) templates: OnceLock<checkpoint::KeyTemplates>,
    /// The `config.json` the reader read for the ties, handed on so that a plan reads it once.
    pub(super) config: ConfigRead,
}

impl PyCheckpointSizes {
    pub(super) fn new(sizes: Vec<(String, u64)>) -> Self {
        PyCheckpointSizes {
            sizes,
            templates: OnceLock::new(),
            config: ConfigRead::NotRead,
        }
    }

    /// Sizes a reader read with the checkpoint's `config.json` (`config`: its bytes, `None`
    /// when there is none), handed on with them, and the ties that text gives
    /// ([`checkpoint::ties_of_config`]).
    pub(super) fn with_config(
        checkpoint: &Checkpoint,
        sizes: Vec<(String, u64)>,
        config: Option<&[u8]>,
    ) -> crate::error::Result<(Self, Vec<Vec<String>>)> {
        let tied = checkpoint::ties_of_config(checkpoint, config, &sizes)?;
        let sizes = PyCheckpointSizes {
            config: ConfigRead::of(config),
            ..PyCheckpointSizes::new(sizes)
        };
        Ok((sizes, tied))
    }
}

#[pymethods]
impl PyCheckpointSizes {
    fn __len__(&self) -> usize {
        self.sizes.len()
    }

    /// The tensor names, in order.
    fn names(&self) -> Vec<String> {
        self.sizes.iter().map(|(name, _)| name.clone()).collect()
    }

    /// `(read, text)`: the `config.json` beside the checkpoint as the reader read it (`text`
    /// `None`: there is none), or `(False, None)` when this reader did not read it.
    fn config_read(&self) -> (bool, Option<String>) {
        self.config.for_python()
    }
}

/// One tensor as `plan::module_sizes` reads it. `nbytes` is one attribute read (meta tensors
/// have it too); the dtype and the element count only matter when the tensor may be re-sized.
pub(super) fn module_tensor(
    name: String,
    tensor: &Bound<'_, PyAny>,
    resize: bool,
) -> PyResult<ModuleTensor> {
    let stored = match resize {
        true => Some((
            tensor.getattr("dtype")?.str()?.to_string(),
            tensor.call_method0("numel")?.extract()?,
        )),
        false => None,
    };
    Ok(ModuleTensor {
        name,
        id: tensor.as_ptr() as usize,
        nbytes: tensor.getattr(intern!(tensor.py(), "nbytes"))?.extract()?,
        dtype: stored,
    })
}

/// A checkpoint's sizes in the names of the model the loader builds (`checkpoint::loaded_sizes`):
/// `renamed` is the loader's name for each tensor of `checkpoint` (in the order `names()`
/// gives), `state` the model's `state_dict()` (built on the meta device: its own sizes, in its
/// order), `shared` the groups of names one converter makes from the same tensors. Returns the
/// sizes and the groups of model names that share one tensor.
#[pyfunction]
#[pyo3(signature = (checkpoint, renamed, state, shared, dtype = None))]
pub fn _loaded_sizes(
    py: Python<'_>,
    checkpoint: &Bound<'_, PyCheckpointSizes>,
    renamed: &Bound<'_, PyAny>,
    state: &Bound<'_, PyAny>,
    shared: Vec<Vec<String>>,
    dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<(PyCheckpointSizes, Vec<Vec<String>>)> {
    guard("_loaded_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let stored = &checkpoint.get().sizes;
        let kept = renamed.cast::<PyRenamedKeys>().ok();
        let listed: Vec<String> = match kept {
            Some(_) => Vec::new(),
            None => renamed.extract()?,
        };
        let renamed: Vec<&str> = match &kept {
            Some(kept) => kept.get().renamed.keys(),
            None => listed.iter().map(String::as_str).collect(),
        };
        if renamed.len() != stored.len() {
            return Err(Error::Internal(format!(
                "{} renamed keys for {} checkpoint tensors",
                renamed.len(),
                stored.len()
            ))
            .into());
        }
        let mut tensors = Vec::new();
        for item in state.call_method0("items")?.try_iter()? {
            let (name, tensor): (String, Bound<'_, PyAny>) = item?.extract()?;
            tensors.push(module_tensor(name, &tensor, dtype.is_some())?);
        }
        let (model, tied) = plan::module_sizes(tensors, dtype.map(plan::Resize::To));
        let sizes = py.detach(|| checkpoint::loaded_sizes(stored, &renamed, &model, &shared));
        Ok((PyCheckpointSizes::new(sizes), tied))
    })
}

/// The distinct name templates of a checkpoint's keys (numbered components replaced by
/// stand-ins), each with its first key, for renaming once per template.
#[pyfunction]
pub fn _name_templates(keys: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    with_keys(keys, |names, keyed| {
        keyed
            .templates
            .iter()
            .map(|(template, first)| (template.clone(), names[*first].to_owned()))
            .collect()
    })
}

/// `work` on the keys of a `_CheckpointSizes` (borrowed, its templates made once) or of a list
/// of names, and their templates.
fn with_keys<T>(
    keys: &Bound<'_, PyAny>,
    work: impl FnOnce(&[&str], &checkpoint::KeyTemplates) -> T,
) -> PyResult<T> {
    if let Ok(sizes) = keys.cast::<PyCheckpointSizes>() {
        let sizes = sizes.get();
        let names: Vec<&str> = sizes.sizes.iter().map(|(name, _)| name.as_str()).collect();
        let keyed = sizes
            .templates
            .get_or_init(|| checkpoint::key_templates(names.iter().copied()));
        return Ok(work(&names, keyed));
    }
    let owned: Vec<String> = keys.extract()?;
    let names: Vec<&str> = owned.iter().map(String::as_str).collect();
    let keyed = checkpoint::key_templates(names.iter().copied());
    Ok(work(&names, &keyed))
}

/// One template's renames as `_renamed_keys` takes them: `(renamed, pattern, targets,
/// first key renamed, its pattern)`.
type TemplateTuple = (String, Option<String>, Vec<String>, String, Option<String>);

/// A checkpoint's keys as the loader renames them, kept in Rust between `_renamed_keys` and
/// `_loaded_sizes` (one name per distinct new name, not 10^4 Python strings).
#[pyclass(frozen, module = "devicemap._core", name = "_RenamedKeys")]
pub struct PyRenamedKeys {
    renamed: checkpoint::Renamed,
}

#[pymethods]
impl PyRenamedKeys {
    fn __len__(&self) -> usize {
        self.renamed.of_key.len()
    }

    /// The new names, key by key.
    fn names(&self) -> Vec<&str> {
        self.renamed.keys()
    }
}

/// Renamed keys (`_RenamedKeys` or a list) and the shared groups.
type RenamedPair<'py> = (Bound<'py, PyAny>, Vec<Vec<String>>);

/// A checkpoint's keys renamed from their templates' renames (`checkpoint::renamed_keys`):
/// `(renamed, shared groups)`, or `None` when a template's first key renames differently.
/// `kept`: the renamed keys as `_RenamedKeys`, else a list.
#[pyfunction]
#[pyo3(signature = (keys, templates, prefix, state, kept = false))]
pub fn _renamed_keys<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyAny>,
    templates: HashMap<String, TemplateTuple>,
    prefix: Option<String>,
    state: Vec<String>,
    kept: bool,
) -> PyResult<Option<RenamedPair<'py>>> {
    let templates: HashMap<String, checkpoint::TemplateRename, RandomState> = templates
        .into_iter()
        .map(
            |(template, (renamed, pattern, targets, first_renamed, first_pattern))| {
                let rename = checkpoint::TemplateRename {
                    renamed,
                    pattern,
                    targets,
                    first_renamed,
                    first_pattern,
                };
                (template, rename)
            },
        )
        .collect();
    let found = with_keys(keys, |names, keyed| {
        let prefix = prefix.as_deref();
        py.detach(|| checkpoint::renamed_keys(names, keyed, &templates, prefix, &state))
    })?;
    let Some(mut renamed) = found else {
        return Ok(None);
    };
    let shared = std::mem::take(&mut renamed.shared);
    let keys = match kept {
        true => Bound::new(py, PyRenamedKeys { renamed })?.into_any(),
        false => PyList::new(py, renamed.keys())?.into_any(),
    };
    Ok(Some((keys, shared)))
}

/// The `model_type`s whose config class ties the word embeddings by default (for a test that
/// compares them with transformers' classes).
#[pyfunction]
pub fn _tied_by_default() -> Vec<&'static str> {
    checkpoint::TIED_BY_DEFAULT.to_vec()
}

/// The report's note for a plan in a checkpoint's own names, saying `why`.
#[pyfunction]
pub fn _checkpoint_names_note(why: &str) -> String {
    checkpoint::checkpoint_names_note(why)
}

/// Sizes and tied groups (from `config.json` beside it) of a checkpoint, for `plan`.
#[pyfunction]
#[pyo3(signature = (path, dtype = None, progress = None, token = None))]
pub fn _checkpoint_sizes<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
    token: Option<String>,
) -> PyResult<(PyCheckpointSizes, Vec<Vec<String>>)> {
    guard("_checkpoint_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let checkpoint = checkpoint_from_py(path, token)?;
        let sizes = read_checkpoint(py, &checkpoint, dtype, progress, None)?.to_vec();
        let config = checkpoint::config_text(&checkpoint);
        Ok(PyCheckpointSizes::with_config(
            &checkpoint,
            sizes,
            config.as_deref(),
        )?)
    })
}

/// The tensor sizes of a built-in example model.
#[pyfunction]
#[pyo3(signature = (name, dtype = None))]
pub fn example_model<'py>(
    py: Python<'py>,
    name: &str,
    dtype: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    guard("example_model", || {
        let dtype = dtype_from_py(dtype)?;
        let name = name.to_owned();
        let sizes = py.detach(|| crate::examples::sizes(&name, dtype))?;
        sizes_to_dict(py, &sizes)
    })
}

/// The tensors of a built-in example as `(name, safetensors dtype, elements)`, for writing
/// checkpoints with real headers (benchmarks, tests).
#[pyfunction]
pub fn _example_tensors(name: &str) -> PyResult<Vec<(String, String, u64)>> {
    guard("_example_tensors", || {
        Ok(crate::examples::tensors(name)?
            .into_iter()
            .map(|(n, d, e)| (n, d.to_string(), e))
            .collect())
    })
}

/// A Hub repository at one commit, with what the reader reads of it fetched: a source for
/// `tensor_sizes` and `_checkpoint_sizes`, and what fetching it took (for the command line).
#[pyclass(frozen, module = "devicemap._core", name = "_HubCheckpoint")]
pub struct PyHubCheckpoint {
    hub: HubCheckpoint,
}

#[pymethods]
impl PyHubCheckpoint {
    /// `hf://org/name@revision` as asked for.
    #[getter]
    fn source(&self) -> String {
        let repo = self.hub.repo();
        repo.show(&repo.revision)
    }

    #[getter]
    fn commit(&self) -> &str {
        self.hub.commit()
    }

    /// Its `config.json` as JSON text, read at the same commit as its headers.
    fn config_json(&self) -> PyResult<String> {
        guard("_HubCheckpoint.config_json", || {
            Ok(self.hub.config()?.to_string())
        })
    }

    /// `(requests, bytes received, files read, of those from a cache)`.
    #[getter]
    fn stats(&self) -> (u64, u64, u64, u64) {
        let stats = self.hub.stats();
        (stats.requests, stats.bytes, stats.files, stats.cached)
    }
}

/// huggingface_hub's `get_token()` where huggingface_hub is installed (imported only now: it
/// is heavy), for [`hub::implicit_token`]; `None` when it is not, or when it fails.
pub(super) fn hf_get_token() -> Option<String> {
    Python::attach(|py| {
        let module = py.import("huggingface_hub").ok()?;
        let token = module.call_method0("get_token").ok()?;
        let token: Option<String> = token.extract().ok()?;
        token.filter(|t| !t.trim().is_empty())
    })
}

/// Whether `text` names a Hub repository (`hf://...`, or `org/name` with no such local path).
#[pyfunction]
pub fn _is_hub_source(text: &str) -> PyResult<bool> {
    guard("_is_hub_source", || {
        let location = hub::locate(text).map_err(Error::from)?;
        Ok(matches!(location, hub::Location::Hub { .. }))
    })
}

/// The `config.json` of the Hub repository `source` names, as JSON text, read with `token` if
/// given; `None` when `source` is a local path.
#[pyfunction]
#[pyo3(signature = (source, token = None))]
pub fn _hub_config(
    py: Python<'_>,
    source: &str,
    token: Option<String>,
) -> PyResult<Option<String>> {
    guard("_hub_config", || {
        let config = py.detach(|| hub::hub_config(source, token, Some(hf_get_token)))?;
        Ok(config.map(|value| value.to_string()))
    })
}

/// Fetches a Hub repository's headers, `index` and `config.json` (see `checkpoint::hub`),
/// calling `progress(files done, files, bytes received)` (with the GIL) as files arrive.
#[pyfunction]
#[pyo3(signature = (source, token = None, progress = None))]
pub fn _hub_checkpoint(
    py: Python<'_>,
    source: &str,
    token: Option<String>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyHubCheckpoint> {
    guard("_hub_checkpoint", || {
        let progress = progress
            .filter(|p| !p.is_none())
            .map(|p| p.clone().unbind());
        let mut failure: Option<PyErr> = None;
        let opened = py.detach(|| {
            let mut report = |fetched: hub::Fetched| {
                if let (Some(callback), None) = (&progress, &failure) {
                    let args = (fetched.done, fetched.total, fetched.bytes);
                    failure = Python::attach(|py| callback.bind(py).call1(args).err());
                }
            };
            let options = || HubOptions::from_env(token, Some(hf_get_token));
            hub::open_hub(source, options, &mut report)
        });
        if let Some(err) = failure {
            return Err(err);
        }
        Ok(PyHubCheckpoint { hub: opened? })
    })
}
