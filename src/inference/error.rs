//! What can go wrong while sizing a cache: the config cannot be read, names an architecture
//! this module does not know, or lacks a field the cache's shape depends on; or an argument is
//! out of range. Every message names the `model_type` and the fields concerned.

use thiserror::Error;

use crate::error::{quoted, ErrorKind};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InferenceError {
    #[error("cannot read the model config {path}: {reason}")]
    ConfigUnreadable { path: String, reason: String },

    #[error("cannot read the model config {path}: it is {kind}, not a file")]
    ConfigNotFile { path: String, kind: &'static str },

    #[error("the model config {path} is more than {limit} bytes, far more than a config.json holds; is it the right file?")]
    ConfigTooLarge { path: String, limit: u64 },

    #[error("the model config {path} is not JSON: {reason}")]
    ConfigNotJson { path: String, reason: String },

    #[error("the model config must be a JSON object (a dict), got {got}")]
    ConfigNotObject { got: &'static str },

    #[error(
        "the model config has no 'model_type', so its architecture (and cache layout) is unknown"
    )]
    NoModelType,

    #[error("the model config's 'model_type' must be a str such as \"llama\", got {got}")]
    BadModelType { got: String },

    #[error("kv_cache does not know model_type {}; it knows: {known}", quoted(.model_type))]
    UnknownModelType { model_type: String, known: String },

    #[error("model_type {}: field '{field}' must be {expected}, got {got}", quoted(.model_type))]
    BadField {
        model_type: String,
        field: String,
        expected: &'static str,
        got: String,
    },

    #[error("model_type {}: cannot read {fields}: the config lacks them and they have no default", quoted(.model_type))]
    MissingFields { model_type: String, fields: String },

    #[error("model_type {}: layer {layer} has layer type {}, whose cache this model_type does not have", quoted(.model_type), quoted(.layer_type))]
    UnknownLayerType {
        model_type: String,
        layer: usize,
        layer_type: String,
    },

    #[error("model_type {}: 'layer_types' lists {got} layers, but the model has {expected} ('num_hidden_layers')", quoted(.model_type))]
    LayerCount {
        model_type: String,
        got: usize,
        expected: u64,
    },

    #[error("model_type {}: {what} is not supported by kv_cache", quoted(.model_type))]
    Unsupported {
        model_type: String,
        what: &'static str,
    },

    #[error("the model config holds several text configs ({names}); transformers' get_text_config(decoder=True) refuses it as ambiguous")]
    AmbiguousTextConfig { names: String },

    #[error("cache must be 'static' or 'dynamic', got {}", quoted(.got))]
    BadCacheMode { got: String },

    #[error("{what} must be >= {min}, got {got}")]
    TooSmall {
        what: &'static str,
        min: u64,
        got: String,
    },

    /// A count past what 64 bits hold (a Python int has no bound).
    #[error("{what} must be at most 18446744073709551615 (2**64 - 1), got {got}")]
    TooBig { what: &'static str, got: String },

    #[error("model_type {} is an encoder-decoder model: pass encoder_tokens= (the encoder's input length), which sizes the cross-attention cache", quoted(.model_type))]
    NeedsEncoderTokens { model_type: String },

    #[error("encoder_tokens= is only for encoder-decoder models; model_type {} is decoder-only", quoted(.model_type))]
    NoEncoder { model_type: String },

    #[error("the cache dtype must be a floating-point dtype, got {dtype}")]
    NotFloating { dtype: String },

    #[error("the cache of model_type {} for these arguments is larger than 2**64 bytes", quoted(.model_type))]
    TooLarge { model_type: String },
}

impl InferenceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InferenceError::TooLarge { .. } => ErrorKind::Overflow,
            _ => ErrorKind::Value,
        }
    }
}
