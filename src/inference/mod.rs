//! Memory for inference: the bytes transformers' cache holds for each decoder layer, read from
//! a model's `config.json` alone (no torch, no weights).
//!
//! - `config.rs` reads a config as transformers does (nested text configs, class defaults);
//! - `defaults.rs` holds those defaults per supported `model_type`;
//! - `attention.rs` turns a config into each layer's cache layout;
//! - `kv_cache.rs` sizes a layout for tokens, batch, dtype and cache class.

pub mod attention;
pub mod config;
pub mod defaults;
pub mod error;
pub mod kv_cache;

use std::path::Path;

use serde_json::Value;

pub use attention::{LayerCache, LayerKind};
pub use error::InferenceError;
pub use kv_cache::{CacheMode, KvCache, Request};

use crate::dtype::Dtype;

/// The dtype of a cache when neither the caller nor the config names one.
pub const DEFAULT_DTYPE: Dtype = Dtype::BF16;

/// The cache transformers holds for `request` on the model `config` describes.
pub fn kv_cache(config: &Value, request: &Request) -> Result<KvCache, InferenceError> {
    let fields = config::decoder_fields(config)?;
    let layers = attention::decoder_layers(&fields)?;
    let model_type = fields.model_type();
    let encoder_decoder = fields.family.arch == defaults::Arch::EncoderDecoder;
    match (encoder_decoder, request.encoder_tokens) {
        (true, None) => {
            return Err(InferenceError::NeedsEncoderTokens {
                model_type: model_type.to_owned(),
            })
        }
        (false, Some(_)) => {
            return Err(InferenceError::NoEncoder {
                model_type: model_type.to_owned(),
            })
        }
        _ => {}
    }
    let dtype = match request.dtype {
        Some(dtype) => dtype,
        None => fields.dtype()?.unwrap_or(DEFAULT_DTYPE),
    };
    kv_cache::size(model_type, layers, request, dtype)
}

/// A model config from a `config.json` path, or a directory holding one.
pub fn read_config(path: &Path) -> Result<Value, InferenceError> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let shown = file.display().to_string();
    let text = std::fs::read(&file).map_err(|e| InferenceError::ConfigUnreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&text).map_err(|e| InferenceError::ConfigNotJson {
        path: shown,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
