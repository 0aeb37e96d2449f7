//! Bytes per layer of transformers' cache for a number of tokens, a batch, a dtype and a cache
//! class, from the layout `attention.rs` reads.

use super::attention::{LayerCache, LayerKind};
use super::error::InferenceError;
use crate::dtype::{self, Dtype};
use crate::units::{human_bytes, thousands};

/// Which of transformers' cache classes is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// `StaticCache(config=..., max_cache_len=tokens)`: every layer allocated for `tokens`
    /// (sliding layers for at most their window).
    Static,
    /// `DynamicCache(config=...)` after the last decode step: what was written, sliding layers
    /// trimmed to their last `window - 1` tokens.
    Dynamic,
}

impl CacheMode {
    pub fn parse(text: &str) -> Result<Self, InferenceError> {
        match text {
            "static" => Ok(CacheMode::Static),
            "dynamic" => Ok(CacheMode::Dynamic),
            other => Err(InferenceError::BadCacheMode {
                got: other.to_owned(),
            }),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Static => "static",
            CacheMode::Dynamic => "dynamic",
        }
    }
}

/// What to size: `tokens` positions written for each of `batch` sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub tokens: u64,
    pub batch: u64,
    /// The cache's dtype; `None`: the config's, else bfloat16.
    pub dtype: Option<Dtype>,
    pub mode: CacheMode,
    /// Encoder-decoder models: the encoder's input length (the cross-attention cache).
    pub encoder_tokens: Option<u64>,
}

/// The cache of every decoder layer, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCache {
    pub model_type: &'static str,
    pub tokens: u64,
    pub batch: u64,
    pub encoder_tokens: Option<u64>,
    pub dtype: Dtype,
    pub mode: CacheMode,
    pub layers: Vec<LayerCache>,
    pub per_layer: Vec<u64>,
    pub total: u64,
    /// Bytes per token (the whole batch's) where the cache is exactly that times `tokens`:
    /// full attention and MLA only, no windows, fixed states or cross-attention.
    pub per_token: Option<u64>,
}

/// Tokens a layer's keys hold once `tokens` positions were written.
fn held(layer: &LayerCache, tokens: u64, mode: CacheMode) -> u64 {
    match (layer.window, mode) {
        (None, _) => tokens,
        (Some(window), CacheMode::Static) => window.min(tokens),
        // DynamicSlidingWindowLayer keeps `[-window + 1:]`, which for a window of 1 is all.
        (Some(1), CacheMode::Dynamic) => tokens,
        (Some(window), CacheMode::Dynamic) => (window - 1).min(tokens),
    }
}

/// One layer's bytes; `None` past 2**64.
pub(super) fn layer_bytes(layer: &LayerCache, request: &Request, dtype: Dtype) -> Option<u64> {
    if request.tokens == 0 {
        return Some(0);
    }
    let batch = request.batch;
    let sequences_of = |elements: u64| batch.checked_mul(elements);
    let tensor = |elements: u64| dtype::dtype_bytes(dtype, sequences_of(elements)?);
    let held = held(layer, request.tokens, request.mode);
    let keys = tensor(held.checked_mul(layer.key_width)?)?;
    let values = tensor(held.checked_mul(layer.value_width)?)?;
    let conv = tensor(layer.conv)?;
    let recurrent = dtype::dtype_bytes(Dtype::F32, sequences_of(layer.recurrent)?)?;
    let encoder_tokens = request.encoder_tokens.unwrap_or(0);
    let cross = tensor(encoder_tokens.checked_mul(layer.cross_width)?)?.checked_mul(2)?;
    [values, conv, recurrent, cross]
        .into_iter()
        .try_fold(keys, u64::checked_add)
}

/// Sizes `layers` for `request`; `dtype` is already resolved.
pub fn size(
    model_type: &'static str,
    layers: Vec<LayerCache>,
    request: &Request,
    dtype: Dtype,
) -> Result<KvCache, InferenceError> {
    if !dtype::is_floating(dtype) {
        return Err(InferenceError::NotFloating {
            dtype: dtype.to_string(),
        });
    }
    let too_large = || InferenceError::TooLarge {
        model_type: model_type.to_owned(),
    };
    let per_layer = layers
        .iter()
        .map(|layer| layer_bytes(layer, request, dtype))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(too_large)?;
    let total = per_layer
        .iter()
        .try_fold(0u64, |sum, b| sum.checked_add(*b))
        .ok_or_else(too_large)?;
    let proportional = layers
        .iter()
        .all(|l| l.window.is_none() && l.conv == 0 && l.recurrent == 0 && l.cross_width == 0);
    let one_token = Request {
        tokens: 1,
        ..*request
    };
    let per_token = layers
        .iter()
        .try_fold(0u64, |sum, layer| {
            sum.checked_add(layer_bytes(layer, &one_token, dtype)?)
        })
        .filter(|&bytes| proportional && bytes.checked_mul(request.tokens) == Some(total));
    Ok(KvCache {
        model_type,
        tokens: request.tokens,
        batch: request.batch,
        encoder_tokens: request.encoder_tokens,
        dtype,
        mode: request.mode,
        layers,
        per_layer,
        total,
        per_token,
    })
}

impl KvCache {
    pub fn layer_kinds(&self) -> Vec<&'static str> {
        self.layers.iter().map(|l| l.kind.as_str()).collect()
    }

    /// A few lines: the whole, then each kind of layer with its count and bytes.
    pub fn text(&self) -> String {
        let encoder = match self.encoder_tokens {
            Some(n) => format!(", {} encoder tokens", thousands(n)),
            None => String::new(),
        };
        let mut out = format!(
            "KV cache of {} ({} layers, {} cache, {}): {} for {} tokens x batch {}{encoder}",
            self.model_type,
            self.layers.len(),
            self.mode.as_str(),
            self.dtype,
            human_bytes(self.total),
            thousands(self.tokens),
            thousands(self.batch),
        );
        if let Some(per_token) = self.per_token {
            out.push_str(&format!(" ({} per token)", human_bytes(per_token)));
        }
        let mut kinds: Vec<(LayerKind, Option<u64>)> = Vec::new();
        for layer in &self.layers {
            if !kinds.contains(&(layer.kind, layer.window)) {
                kinds.push((layer.kind, layer.window));
            }
        }
        for (kind, window) in kinds {
            let bytes: Vec<u64> = self
                .layers
                .iter()
                .zip(&self.per_layer)
                .filter(|(l, _)| l.kind == kind && l.window == window)
                .map(|(_, b)| *b)
                .collect();
            let window = window.map(|w| format!(" (window {})", thousands(w)));
            let each = if bytes.iter().all(|b| *b == bytes[0]) {
                format!("{} each", human_bytes(bytes[0]))
            } else {
                format!("{} in all", human_bytes(bytes.iter().sum()))
            };
            out.push_str(&format!(
                "\n  {} x {}{}: {each}",
                bytes.len(),
                kind.as_str(),
                window.unwrap_or_default()
            ));
        }
        out
    }
}
