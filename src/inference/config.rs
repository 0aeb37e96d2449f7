//! Reading a model config as transformers reads it: the decoder's text config (a nested
//! `text_config`, as `get_text_config(decoder=True)` picks it), each field from the config or
//! else its class's default, and the fields that could not be read, all named at once.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::defaults::{self, Arch, Family, FieldDefault};
use super::error::InferenceError;
use crate::dtype::{self, Dtype};

/// Where `get_text_config(decoder=True)` looks for a nested decoder config.
const TEXT_CONFIG_NAMES: [&str; 3] = ["decoder", "generator", "text_config"];

/// One config object with its family's defaults. Reads record what could not be read, so a
/// config missing several fields is refused with all of them named ([`Fields::finish`]).
pub struct Fields<'a> {
    pub family: &'static Family,
    object: &'a Map<String, Value>,
    /// The enclosing config of a nested text config (for `dtype`).
    outer: Option<&'a Map<String, Value>>,
    missing: RefCell<Vec<String>>,
}

/// The decoder's config: the nested text config when there is one, with its family.
pub fn decoder_fields(root: &Value) -> Result<Fields<'_>, InferenceError> {
    let Value::Object(root) = root else {
        return Err(InferenceError::ConfigNotObject {
            got: json_kind(root),
        });
    };
    let outer_type = model_type_of(root)?;
    let nested: Vec<&str> = TEXT_CONFIG_NAMES
        .into_iter()
        .filter(|name| root.get(*name).is_some_and(|v| !v.is_null()))
        .collect();
    if nested.len() > 1 {
        return Err(InferenceError::AmbiguousTextConfig {
            names: nested.join(", "),
        });
    }
    let outer_family = outer_type.and_then(defaults::family);
    let text_type = match outer_family.map(|f| f.arch) {
        Some(Arch::Composite { text_model_type }) => Some(text_model_type),
        _ => None,
    };
    let Some(name) = nested.first() else {
        // A composite config without its text config: the class's default text config.
        if let Some(text_type) = text_type {
            return Ok(Fields::new(family_of(text_type)?, &EMPTY, Some(root)));
        }
        let model_type = outer_type.ok_or(InferenceError::NoModelType)?;
        return Ok(Fields::new(family_of(model_type)?, root, None));
    };
    let Value::Object(text) = &root[*name] else {
        return Err(InferenceError::BadField {
            model_type: outer_type.unwrap_or_default().to_owned(),
            field: (*name).to_owned(),
            expected: "a dict (a nested config)",
            got: short_json(&root[*name]),
        });
    };
    let model_type = model_type_of(text)?
        .filter(|t| !t.is_empty())
        .or(text_type)
        .ok_or(InferenceError::NoModelType)?;
    Ok(Fields::new(family_of(model_type)?, text, Some(root)))
}

/// A config's `model_type`: `None` when absent or `null`; a value of another kind than a str is
/// refused (it would otherwise read as "no model_type").
fn model_type_of(config: &Map<String, Value>) -> Result<Option<&str>, InferenceError> {
    match config.get("model_type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(InferenceError::BadModelType {
            got: short_json(other),
        }),
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

fn family_of(model_type: &str) -> Result<&'static Family, InferenceError> {
    match defaults::family(model_type) {
        Some(family) if !matches!(family.arch, Arch::Composite { .. }) => Ok(family),
        _ => Err(InferenceError::UnknownModelType {
            model_type: model_type.to_owned(),
            known: defaults::known(),
        }),
    }
}

/// What a field holds once the config and the class defaults are read.
enum Read<'a> {
    Json(&'a Value),
    Default(FieldDefault),
    Missing,
}

impl<'a> Fields<'a> {
    fn new(
        family: &'static Family,
        object: &'a Map<String, Value>,
        outer: Option<&'a Map<String, Value>>,
    ) -> Self {
        Fields {
            family,
            object,
            outer,
            missing: RefCell::new(Vec::new()),
        }
    }

    pub fn model_type(&self) -> &'static str {
        self.family.model_type
    }

    /// The config's value for `field` (or for a name the class maps to it), else the default.
    fn read(&self, field: &str) -> Read<'a> {
        if let Some(value) = self.object.get(field) {
            return Read::Json(value);
        }
        let spelled = self.family.aliases.iter().filter(|(_, f)| *f == field);
        for (alias, _) in spelled {
            if let Some(value) = self.object.get(*alias) {
                return Read::Json(value);
            }
        }
        match self.family.default_of(field) {
            Some(default) => Read::Default(default),
            None => Read::Missing,
        }
    }

    fn bad(&self, field: &str, expected: &'static str, got: &Value) -> InferenceError {
        InferenceError::BadField {
            model_type: self.model_type().to_owned(),
            field: field.to_owned(),
            expected,
            got: short_json(got),
        }
    }

    /// An integer field; `None` when the config says `null`, the default is `None`, or the
    /// field is absent with no default (a class without it: `getattr` falls back).
    pub fn int(&self, field: &str) -> Result<Option<u64>, InferenceError> {
        match self.read(field) {
            Read::Json(Value::Null) | Read::Default(FieldDefault::Null) | Read::Missing => Ok(None),
            Read::Json(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(field, "a non-negative integer", value)),
            Read::Default(FieldDefault::Int(n)) => Ok(Some(n)),
            Read::Default(_) => Err(self.bad(field, "an integer", &Value::Null)),
        }
    }

    /// An integer the cache's shape needs: a missing one is recorded for [`Fields::finish`].
    pub fn required(&self, field: &str) -> Result<u64, InferenceError> {
        Ok(self.int(field)?.unwrap_or_else(|| {
            self.missing.borrow_mut().push(format!("'{field}'"));
            0
        }))
    }

    /// An integer that divides another (a head count): it must be positive.
    pub fn divisor(&self, field: &str) -> Result<u64, InferenceError> {
        let before = self.missing.borrow().len();
        match self.required(field)? {
            0 if self.missing.borrow().len() == before => {
                Err(self.bad(field, "a positive integer", &Value::from(0)))
            }
            n => Ok(n.max(1)),
        }
    }

    pub fn flag(&self, field: &str) -> Result<bool, InferenceError> {
        match self.read(field) {
            Read::Json(Value::Null) | Read::Missing => Ok(false),
            Read::Json(Value::Bool(b)) => Ok(*b),
            Read::Json(value) => Err(self.bad(field, "true or false", value)),
            Read::Default(FieldDefault::Bool(b)) => Ok(b),
            Read::Default(_) => Ok(false),
        }
    }

    /// A field that is an integer or the string `"auto"` (`None`).
    pub fn int_or_auto(&self, field: &str) -> Result<Option<u64>, InferenceError> {
        match self.read(field) {
            Read::Json(Value::String(s)) if s == "auto" => Ok(None),
            Read::Default(FieldDefault::Str("auto")) => Ok(None),
            _ => self.int(field),
        }
    }

    /// `layer_types` as written (legacy names are remapped by the caller), if any.
    pub fn layer_types(&self) -> Result<Option<Vec<&'a str>>, InferenceError> {
        let value = match self.read("layer_types") {
            Read::Json(Value::Null) | Read::Default(_) | Read::Missing => return Ok(None),
            Read::Json(value) => value,
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.bad("layer_types", "a list of strings", value))?;
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| self.bad("layer_types", "a list of strings", value))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The per-layer `kv_sharing_modes` (`"reuse"` marks a layer that holds no cache), if any.
    pub fn reused_layers(&self) -> Result<Vec<bool>, InferenceError> {
        match self.object.get("kv_sharing_modes") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(modes)) => {
                Ok(modes.iter().map(|m| m.as_str() == Some("reuse")).collect())
            }
            Some(other) => Err(self.bad("kv_sharing_modes", "a list of strings", other)),
        }
    }

    /// Refuses configs transformers reads in ways this module does not model.
    pub fn refuse_unsupported(&self) -> Result<(), InferenceError> {
        if self
            .object
            .get("per_layer_config")
            .is_some_and(|v| !v.is_null())
        {
            return Err(InferenceError::Unsupported {
                model_type: self.model_type().to_owned(),
                what: "a heterogeneous config ('per_layer_config')",
            });
        }
        Ok(())
    }

    /// The dtype the model (and so its cache) is loaded in: `dtype` or `torch_dtype` of the
    /// text config, else of the enclosing config; `None` when neither says.
    pub fn dtype(&self) -> Result<Option<Dtype>, InferenceError> {
        for object in std::iter::once(self.object).chain(self.outer) {
            for field in ["dtype", "torch_dtype"] {
                match object.get(field) {
                    None | Some(Value::Null) => continue,
                    Some(Value::String(name)) => {
                        return dtype::parse_dtype(name)
                            .map(Some)
                            .map_err(|_| self.bad(field, "a torch dtype name", &object[field]))
                    }
                    Some(other) => return Err(self.bad(field, "a torch dtype name", other)),
                }
            }
        }
        Ok(None)
    }

    /// Fails naming every required field that could not be read.
    pub fn finish(&self) -> Result<(), InferenceError> {
        let missing = self.missing.borrow();
        if missing.is_empty() {
            return Ok(());
        }
        let mut fields: Vec<&str> = missing.iter().map(String::as_str).collect();
        fields.dedup();
        Err(InferenceError::MissingFields {
            model_type: self.model_type().to_owned(),
            fields: fields.join(", "),
        })
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A JSON value for a message, cut to 60 characters.
fn short_json(value: &Value) -> String {
    crate::error::clipped(&value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_fall_back_to_defaults_and_aliases() {
        let config = json!({"model_type": "gpt2", "hidden_size": 64});
        let fields = decoder_fields(&config).unwrap();
        assert_eq!(fields.required("n_embd").unwrap(), 64);
        assert_eq!(fields.required("n_head").unwrap(), 12);
        assert_eq!(fields.int("head_dim").unwrap(), None);
        fields.finish().unwrap();
    }

    #[test]
    fn missing_fields_are_named_together() {
        let config = json!({"model_type": "llama"});
        let fields = decoder_fields(&config).unwrap();
        fields.required("sliding_window").unwrap();
        fields.required("attention_chunk_size").unwrap();
        let err = fields.finish().unwrap_err().to_string();
        assert!(
            err.contains("'sliding_window', 'attention_chunk_size'"),
            "{err}"
        );
    }

    #[test]
    fn text_config_is_found_as_transformers_finds_it() {
        let config = json!({"model_type": "gemma3", "text_config": {"num_hidden_layers": 2}});
        let fields = decoder_fields(&config).unwrap();
        assert_eq!(fields.model_type(), "gemma3_text");
        assert_eq!(fields.required("num_hidden_layers").unwrap(), 2);
        let bare = json!({"model_type": "gemma3", "dtype": "float16"});
        let fields = decoder_fields(&bare).unwrap();
        assert_eq!(fields.required("num_hidden_layers").unwrap(), 26);
        assert_eq!(fields.dtype().unwrap(), Some(Dtype::F16));
        let both = json!({"text_config": {}, "decoder": {}});
        assert!(matches!(
            decoder_fields(&both),
            Err(InferenceError::AmbiguousTextConfig { .. })
        ));
    }

    #[test]
    fn bad_values_name_the_field() {
        let config = json!({"model_type": "llama", "num_hidden_layers": "two"});
        let fields = decoder_fields(&config).unwrap();
        let err = fields
            .required("num_hidden_layers")
            .unwrap_err()
            .to_string();
        assert!(err.contains("'num_hidden_layers' must be a non-negative integer, got \"two\""));
        assert!(decoder_fields(&json!([])).is_err());
        assert!(decoder_fields(&json!({"model_type": "bert"})).is_err());
        assert!(decoder_fields(&json!({})).is_err());
    }
}
