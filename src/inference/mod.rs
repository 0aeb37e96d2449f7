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

use std::io::Read;
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
    let layout = cache_layout(config, request.dtype)?;
    let model_type = layout.model_type;
    match (layout.encoder_decoder, request.encoder_tokens) {
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
    kv_cache::size(model_type, layout.layers, request, layout.dtype)
}

/// A decoder's cache layout, read from its config once, with the cache dtype resolved: what
/// planning sizes again for each context it tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheLayout {
    pub model_type: &'static str,
    pub layers: Vec<LayerCache>,
    pub dtype: Dtype,
    /// Whether the model has an encoder (its decoder layers also cache cross-attention).
    pub encoder_decoder: bool,
}

/// The layout of `config`'s decoder cache in `dtype` (default: the config's, else bfloat16).
pub fn cache_layout(config: &Value, dtype: Option<Dtype>) -> Result<CacheLayout, InferenceError> {
    let fields = config::decoder_fields(config)?;
    let layers = attention::decoder_layers(&fields)?;
    let dtype = match dtype {
        Some(dtype) => dtype,
        None => fields.dtype()?.unwrap_or(DEFAULT_DTYPE),
    };
    if !crate::dtype::is_floating(dtype) {
        return Err(InferenceError::NotFloating {
            dtype: dtype.to_string(),
        });
    }
    Ok(CacheLayout {
        model_type: fields.model_type(),
        layers,
        dtype,
        encoder_decoder: fields.family.arch == defaults::Arch::EncoderDecoder,
    })
}

impl CacheLayout {
    /// Bytes of each layer's cache for `request` (its dtype ignored: the layout's is used);
    /// `None` past 2**64.
    pub fn per_layer(&self, request: &Request) -> Option<Vec<u64>> {
        self.layers
            .iter()
            .map(|layer| kv_cache::layer_bytes(layer, request, self.dtype))
            .collect()
    }
}

/// The most bytes a `config.json` is read for: real ones are a few KiB (a multimodal model's,
/// with its sub-configs, tens of KiB); a larger file is not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A model config from a `config.json` path, or a directory holding one. A path that is not a
/// regular file (`/dev/zero`, a FIFO) and a file over [`MAX_CONFIG_BYTES`] are refused before
/// they are read: either would otherwise be read until memory runs out, or block.
pub fn read_config(path: &Path) -> Result<Value, InferenceError> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let shown = crate::checkpoint::shown_path(&file);
    let unreadable = |e: std::io::Error| InferenceError::ConfigUnreadable {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let metadata = std::fs::metadata(&file).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(InferenceError::ConfigNotFile {
            path: shown,
            kind: crate::checkpoint::file_kind(&metadata),
        });
    }
    let too_large = || InferenceError::ConfigTooLarge {
        path: shown.clone(),
        limit: MAX_CONFIG_BYTES,
    };
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let mut text = Vec::new();
    std::fs::File::open(&file)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut text))
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    serde_json::from_slice(&text).map_err(|e| InferenceError::ConfigNotJson {
        path: shown,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
