//! `kv_cache` for Python: a config (path, dict or config object) and the arguments in,
//! `KvCache` out. Only translation: the work is in `crate::inference`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use super::dtype::dtype_name;
use super::errors::{short_repr, str_text, wrong_type};
use super::guard::guard;
use crate::dtype;
use crate::error::Error;
use crate::inference::defaults::{FieldDefault, FAMILIES};
use crate::inference::{self, CacheMode, InferenceError, KvCache, Request};

/// Nesting a config may have (transformers' configs nest two or three levels).
const MAX_DEPTH: usize = 32;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKvCache>()?;
    m.add_function(wrap_pyfunction!(kv_cache, m)?)?;
    m.add_function(wrap_pyfunction!(_kv_defaults, m)?)
}

/// The per-model_type defaults table, `{model_type: {field: default}}`, for the tests that
/// check it against transformers' config classes.
#[pyfunction]
pub fn _kv_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for family in FAMILIES {
        let fields = PyDict::new(py);
        for (name, default) in family.defaults {
            match default {
                FieldDefault::Int(n) => fields.set_item(name, n)?,
                FieldDefault::Bool(b) => fields.set_item(name, b)?,
                FieldDefault::Str(s) => fields.set_item(name, s)?,
                FieldDefault::Null => fields.set_item(name, py.None())?,
            }
        }
        out.set_item(family.model_type, fields)?;
    }
    Ok(out)
}

/// A Python value as JSON: what `json.dumps` would write, with non-finite floats as their repr
/// (`"nan"`), ints past 64 bits as floats and other objects (a `torch.dtype`) as their `str()`.
fn to_json(value: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(wrong_type("config nested too deeply", value).into());
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(n) = value.extract::<i64>() {
            return Ok(Value::from(n));
        }
        if let Ok(n) = value.extract::<u64>() {
            return Ok(Value::from(n));
        }
        // Past 64 bits: a float, as serde_json reads such a number in a config.json, so the
        // field that holds it is refused by name rather than read as missing (`null`).
        let float = value.extract::<f64>().ok().and_then(Number::from_f64);
        return Ok(float.map_or_else(|| Value::String(short_repr(value)), Value::Number));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        // NaN and infinities as their repr: a field that is read refuses them by name, where
        // `null` would have meant "absent" and its default been used.
        return Ok(Number::from_f64(f.value())
            .map_or_else(|| Value::String(short_repr(value)), Value::Number));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(str_text(s, "config text")?.to_owned()));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items = value.try_iter()?;
        return items
            .map(|item| to_json(&item?, depth + 1))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::Array);
    }
    if let Ok(mapping) = value.cast::<PyMapping>() {
        let mut object = Map::new();
        for item in mapping.items()?.iter() {
            let (key, item): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            let key = match key.cast::<PyString>() {
                Ok(s) => str_text(s, "config key")?.to_owned(),
                Err(_) => key.str()?.to_string_lossy().into_owned(),
            };
            object.insert(key, to_json(&item, depth + 1)?);
        }
        return Ok(Value::Object(object));
    }
    Ok(Value::String(value.str()?.to_string_lossy().into_owned()))
}

/// `config`: a `config.json` path or a directory holding one, a dict, or an object with
/// `to_dict()` (a transformers config; transformers is not imported).
pub(super) fn config_from_py(config: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(text) = config.cast::<PyString>() {
        let text = str_text(text, "config path")?.to_owned();
        // A Hub repository (`org/name`, `hf://...`): its config.json, read by the checkpoint room.
        if let Some(hub) = config.py().detach(|| {
            crate::checkpoint::hub::hub_config(&text, None, Some(super::checkpoint::hf_get_token))
        })? {
            return Ok(hub);
        }
        let path = PathBuf::from(text);
        return Ok(inference::read_config(&path).map_err(Error::from)?);
    }
    if config.hasattr("__fspath__")? {
        let path = config
            .py()
            .import("os")?
            .call_method1("fspath", (config,))?;
        return config_from_py(&path);
    }
    if config.is_instance_of::<PyDict>() || config.cast::<PyMapping>().is_ok() {
        return to_json(config, 0);
    }
    if config.hasattr("to_dict")? {
        return to_json(&config.call_method0("to_dict")?, 0);
    }
    Err(wrong_type(
        "config must be a config.json path, a dict or a transformers config",
        config,
    )
    .into())
}

/// A count argument: an `int` (not a `bool`) at least `min`.
pub(super) fn count(value: &Bound<'_, PyAny>, what: &'static str, min: u64) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(wrong_type(&format!("{what} must be an int"), value).into());
    }
    if let Ok(n) = value.extract::<u64>() {
        if n >= min {
            return Ok(n);
        }
    }
    // Python's ints have no bound: one past u64's range is too big, one below `min` (however
    // negative) too small; either is named as given.
    let got = short_repr(value);
    let error = if value.lt(0)? || value.extract::<u64>().is_ok() {
        InferenceError::TooSmall { what, min, got }
    } else {
        InferenceError::TooBig { what, got }
    };
    Err(Error::from(error).into())
}

/// The bytes transformers' cache holds per decoder layer once `tokens` positions are written.
#[pyfunction]
#[pyo3(signature = (config, tokens, *, batch = None, dtype = None, cache = "static", encoder_tokens = None))]
pub fn kv_cache(
    config: &Bound<'_, PyAny>,
    tokens: &Bound<'_, PyAny>,
    batch: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    cache: &str,
    encoder_tokens: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyKvCache> {
    guard("kv_cache", || {
        let request = Request {
            tokens: count(tokens, "tokens", 0)?,
            batch: match batch {
                Some(b) => count(b, "batch", 1)?,
                None => 1,
            },
            dtype: match dtype_name(dtype)? {
                Some(name) => Some(dtype::parse_dtype(&name)?),
                None => None,
            },
            mode: CacheMode::parse(cache).map_err(Error::from)?,
            encoder_tokens: match encoder_tokens.filter(|e| !e.is_none()) {
                Some(e) => Some(count(e, "encoder_tokens", 0)?),
                None => None,
            },
        };
        let config = config_from_py(config)?;
        let cache = inference::kv_cache(&config, &request).map_err(Error::from)?;
        Ok(PyKvCache { cache })
    })
}

/// The cache of each decoder layer, in bytes.
#[pyclass(frozen, module = "devicemap", name = "KvCache")]
pub struct PyKvCache {
    cache: KvCache,
}

#[pymethods]
impl PyKvCache {
    /// Bytes of each decoder layer's cache, in layer order.
    #[getter]
    fn per_layer(&self) -> Vec<u64> {
        self.cache.per_layer.clone()
    }
    #[getter]
    fn total(&self) -> u64 {
        self.cache.total
    }
    /// Bytes per token (for the whole batch) where the cache is exactly that times `tokens`.
    #[getter]
    fn per_token(&self) -> Option<u64> {
        self.cache.per_token
    }
    /// Each layer's cache kind: `full_attention`, `sliding_attention`, `mla`, ...
    #[getter]
    fn layer_kinds(&self) -> Vec<&'static str> {
        self.cache.layer_kinds()
    }
    #[getter]
    fn model_type(&self) -> &'static str {
        self.cache.model_type
    }
    #[getter]
    fn tokens(&self) -> u64 {
        self.cache.tokens
    }
    #[getter]
    fn batch(&self) -> u64 {
        self.cache.batch
    }
    #[getter]
    fn encoder_tokens(&self) -> Option<u64> {
        self.cache.encoder_tokens
    }
    /// The cache dtype (safetensors' name, `BF16`); recurrent states are fp32 whatever it is.
    #[getter]
    fn dtype(&self) -> String {
        self.cache.dtype.to_string()
    }
    #[getter]
    fn cache(&self) -> &'static str {
        self.cache.mode.as_str()
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("model_type", self.cache.model_type)?;
        d.set_item("tokens", self.cache.tokens)?;
        d.set_item("batch", self.cache.batch)?;
        d.set_item("encoder_tokens", self.cache.encoder_tokens)?;
        d.set_item("dtype", self.dtype())?;
        d.set_item("cache", self.cache())?;
        d.set_item("layer_kinds", self.layer_kinds())?;
        d.set_item("per_layer", self.per_layer())?;
        d.set_item("total", self.cache.total)?;
        d.set_item("per_token", self.cache.per_token)?;
        Ok(d)
    }
    fn __str__(&self) -> String {
        self.cache.text()
    }
    fn __repr__(&self) -> String {
        format!(
            "<KvCache {} {} layers, {} tokens x batch {}, {} {}: {} bytes>",
            self.cache.model_type,
            self.cache.layers.len(),
            self.cache.tokens,
            self.cache.batch,
            self.cache.mode.as_str(),
            self.cache.dtype,
            self.cache.total
        )
    }
}
