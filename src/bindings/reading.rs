//! A checkpoint's headers read on a thread of their own (`_checkpoint_sizes_started`,
//! `_SizesReading`) while Python builds the loader's model, and the `config.json` read once
//! for both (`ConfigRead`). Only translation: the reading is `crate::checkpoint`'s.

use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use pyo3::prelude::*;

use super::checkpoint::{checkpoint_from_py, reader_threads, PyCheckpointSizes};
use super::dtype::dtype_from_py;
use super::guard::guard;
use crate::checkpoint::{self, Checkpoint};
use crate::dtype::Dtype;
use crate::error::Error;

/// A checkpoint's `config.json` as a reader read it ([`checkpoint::config_text`]).
#[derive(Clone, Default)]
pub(super) enum ConfigRead {
    /// Not read by this reader (or not UTF-8): whoever wants it reads it.
    #[default]
    NotRead,
    /// Read, and there is none.
    Absent,
    Text(String),
}

impl ConfigRead {
    pub(super) fn of(bytes: Option<&[u8]>) -> Self {
        match bytes.map(std::str::from_utf8) {
            None => ConfigRead::Absent,
            Some(Ok(text)) => ConfigRead::Text(text.to_owned()),
            Some(Err(_)) => ConfigRead::NotRead,
        }
    }

    /// `(read, text)` for Python: `(False, None)` when not read.
    pub(super) fn for_python(&self) -> (bool, Option<String>) {
        match self {
            ConfigRead::NotRead => (false, None),
            ConfigRead::Absent => (true, None),
            ConfigRead::Text(text) => (true, Some(text.clone())),
        }
    }
}

/// What the reading thread of `_checkpoint_sizes_started` gives back.
type ReadApart = Result<(PyCheckpointSizes, Vec<Vec<String>>), ReadFailure>;

/// Why a reading apart failed: the core's error, or the progress callback's own.
enum ReadFailure {
    Core(Error),
    Callback(PyErr),
}

impl From<Error> for ReadFailure {
    fn from(error: Error) -> Self {
        ReadFailure::Core(error)
    }
}

/// `_checkpoint_sizes`'s reading and ties, and the keys' templates, on a thread that holds no
/// GIL: `progress` is
/// called with the GIL taken for the call alone.
fn read_apart(
    checkpoint: Checkpoint,
    dtype: Option<Dtype>,
    progress: Option<Py<PyAny>>,
    config: Option<Vec<u8>>,
) -> ReadApart {
    let mut failure: Option<PyErr> = None;
    let mut report = |done: usize, total: usize| {
        if let (Some(callback), true) = (&progress, failure.is_none()) {
            Python::attach(|py| {
                if let Err(err) = callback.bind(py).call1((done, total)) {
                    failure = Some(err);
                }
            });
        }
    };
    let threads = reader_threads();
    let read = checkpoint::checkpoint_sizes(&checkpoint, dtype, threads, &mut report, &mut |_| {});
    if let Some(progress) = progress {
        Python::attach(|_| drop(progress));
    }
    if let Some(err) = failure {
        return Err(ReadFailure::Callback(err));
    }
    let sizes = read?.to_vec();
    let (sizes, tied) = PyCheckpointSizes::with_config(&checkpoint, sizes, config.as_deref())?;
    let templates = checkpoint::key_templates(sizes.sizes.iter().map(|(name, _)| name.as_str()));
    let sizes = PyCheckpointSizes {
        templates: OnceLock::from(templates),
        ..sizes
    };
    Ok((sizes, tied))
}

/// A checkpoint's headers being read on a thread of their own (`_checkpoint_sizes_started`),
/// while Python does other work (builds the loader's model on the meta device).
#[pyclass(frozen, module = "devicemap._core", name = "_SizesReading")]
pub struct PySizesReading {
    thread: Mutex<Option<JoinHandle<ReadApart>>>,
    /// The `config.json`, read before the thread started (Python builds the model from it
    /// meanwhile; the thread reads the ties from the same text).
    config: ConfigRead,
}

impl PySizesReading {
    fn take(&self) -> Option<JoinHandle<ReadApart>> {
        self.thread.lock().ok().and_then(|mut thread| thread.take())
    }
}

#[pymethods]
impl PySizesReading {
    /// Waits for the reading (the GIL released) and gives what `_checkpoint_sizes` gives, or
    /// raises what it raises. Once.
    fn join(&self, py: Python<'_>) -> PyResult<(PyCheckpointSizes, Vec<Vec<String>>)> {
        guard("_checkpoint_sizes", || {
            let Some(thread) = self.take() else {
                return Err(Error::Internal("a checkpoint reading joined twice".to_owned()).into());
            };
            match py.detach(|| thread.join()) {
                Ok(Ok(read)) => Ok(read),
                Ok(Err(ReadFailure::Core(error))) => Err(error.into()),
                Ok(Err(ReadFailure::Callback(error))) => Err(error),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `_CheckpointSizes.config_read()`, before the reading ends.
    fn config_read(&self) -> (bool, Option<String>) {
        self.config.for_python()
    }
}

impl Drop for PySizesReading {
    /// A reading never joined (the caller failed first) is waited for, so that no thread of
    /// ours outlives its caller's interest (its progress calls included).
    fn drop(&mut self) {
        if let Some(thread) = self.take() {
            Python::attach(|py| py.detach(|| drop(thread.join())));
        }
    }
}

/// `_checkpoint_sizes` started on a thread of its own: the source is opened here (its errors
/// raised here), the headers read there; `join()` on the result gives the sizes and ties.
#[pyfunction]
#[pyo3(signature = (path, dtype = None, progress = None, token = None))]
pub fn _checkpoint_sizes_started<'py>(
    path: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
    token: Option<String>,
) -> PyResult<PySizesReading> {
    guard("_checkpoint_sizes", || {
        let dtype = dtype_from_py(dtype)?;
        let checkpoint = checkpoint_from_py(path, token)?;
        let progress = progress
            .filter(|p| !p.is_none())
            .map(|p| p.clone().unbind());
        // Read here, once: Python builds the model from it while the headers are read.
        let config = path.py().detach(|| checkpoint::config_text(&checkpoint));
        let read = ConfigRead::of(config.as_deref());
        let thread = std::thread::Builder::new()
            .name("devicemap-headers".to_owned())
            .spawn(move || read_apart(checkpoint, dtype, progress, config))
            .map_err(|err| Error::Internal(format!("no thread to read the headers on: {err}")))?;
        Ok(PySizesReading {
            thread: Mutex::new(Some(thread)),
            config: read,
        })
    })
}
