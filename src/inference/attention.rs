//! The decoder's cache layout read from its config: for each layer, what transformers' cache
//! keeps per sequence (elements per token of keys and values, the window that bounds them,
//! fixed convolution and recurrent states, cross-attention per encoder token).

use super::config::Fields;
use super::defaults::{Arch, LayerRule};
use super::error::InferenceError;

/// What one decoder layer's cache is, by transformers' layer-type names (plus `mla`, full
/// attention caching DeepSeek's latent, and T5's `self_and_cross_attention`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Full,
    Sliding,
    Chunked,
    Mla,
    Linear,
    Hybrid,
    SelfAndCross,
    Dummy,
}

impl LayerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Full => "full_attention",
            LayerKind::Sliding => "sliding_attention",
            LayerKind::Chunked => "chunked_attention",
            LayerKind::Mla => "mla",
            LayerKind::Linear => "linear_attention",
            LayerKind::Hybrid => "hybrid",
            LayerKind::SelfAndCross => "self_and_cross_attention",
            LayerKind::Dummy => "dummy",
        }
    }
}

/// One layer's cache per sequence, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerCache {
    pub kind: LayerKind,
    /// Per cached token: the key tensor's and the value tensor's elements (for MLA, the
    /// compressed latent and the rotary key).
    pub key_width: u64,
    pub value_width: u64,
    /// The most tokens a sliding or chunked layer keeps.
    pub window: Option<u64>,
    /// A fixed convolution state (in the cache dtype) and recurrent state (fp32).
    pub conv: u64,
    pub recurrent: u64,
    /// Per encoder token, each of the cross-attention keys and values.
    pub cross_width: u64,
}

impl LayerCache {
    const EMPTY: LayerCache = LayerCache {
        kind: LayerKind::Dummy,
        key_width: 0,
        value_width: 0,
        window: None,
        conv: 0,
        recurrent: 0,
        cross_width: 0,
    };

    fn attention(kind: LayerKind, widths: (u64, u64), window: Option<u64>) -> Self {
        LayerCache {
            kind,
            key_width: widths.0,
            value_width: widths.1,
            window,
            ..Self::EMPTY
        }
    }

    fn state(kind: LayerKind, (conv, recurrent): (u64, u64)) -> Self {
        LayerCache {
            kind,
            conv,
            recurrent,
            ..Self::EMPTY
        }
    }
}

/// The decoder's layers, in order.
pub fn decoder_layers(fields: &Fields<'_>) -> Result<Vec<LayerCache>, InferenceError> {
    fields.refuse_unsupported()?;
    let layers = match fields.family.arch {
        Arch::Attention(rule) => typed_layers(fields, rule, gqa(fields)?, None)?,
        Arch::Gpt2 => {
            if fields.flag("add_cross_attention")? {
                return Err(InferenceError::Unsupported {
                    model_type: fields.model_type().to_owned(),
                    what: "GPT-2 with cross-attention ('add_cross_attention')",
                });
            }
            let heads = fields.divisor("n_head")?;
            let width = mul(fields, heads, fields.required("n_embd")? / heads)?;
            typed_layers(fields, LayerRule::FromWindow, (width, width), None)?
        }
        Arch::Mla => {
            let widths = (
                fields.required("kv_lora_rank")?,
                fields.required("qk_rope_head_dim")?,
            );
            let mut layers = typed_layers(fields, LayerRule::FromWindow, widths, None)?;
            for layer in layers.iter_mut().filter(|l| l.kind == LayerKind::Full) {
                layer.kind = LayerKind::Mla;
            }
            layers
        }
        Arch::GatedDeltaNet => {
            let rule = LayerRule::Alternating {
                period_key: Some("full_attention_interval"),
                period: 4,
            };
            typed_layers(fields, rule, gqa(fields)?, Some(gated_delta_state(fields)?))?
        }
        Arch::Jamba => jamba_layers(fields)?,
        Arch::FalconH1 => {
            let attention = gqa(fields)?;
            let state = mamba2_state(fields)?;
            let layer = LayerCache {
                conv: state.0,
                recurrent: state.1,
                ..LayerCache::attention(LayerKind::Hybrid, attention, None)
            };
            vec![layer; layer_count(fields, "num_hidden_layers")?]
        }
        Arch::EncoderDecoder => {
            let width = mul(
                fields,
                fields.required("num_heads")?,
                fields.required("d_kv")?,
            )?;
            let count = match fields.int("num_decoder_layers")? {
                Some(n) => n,
                None => fields.required("num_layers")?,
            };
            let layer = LayerCache {
                cross_width: width,
                ..LayerCache::attention(LayerKind::SelfAndCross, (width, width), None)
            };
            vec![layer; to_count(fields, count)?]
        }
        Arch::Composite { .. } => unreachable!("config.rs resolves composites"),
    };
    fields.finish()?;
    Ok(layers)
}

/// Keys' and values' widths of grouped-query attention: `num_key_value_heads` (default: the
/// attention heads) times `head_dim` (default: `hidden_size / num_attention_heads`).
fn gqa(fields: &Fields<'_>) -> Result<(u64, u64), InferenceError> {
    let heads = fields.divisor("num_attention_heads")?;
    let kv_heads = match fields.int("num_key_value_heads")? {
        Some(n) => n,
        None => heads,
    };
    let head_dim = match fields.int("head_dim")? {
        Some(d) => d,
        None => fields.required("hidden_size")? / heads,
    };
    let width = mul(fields, kv_heads, head_dim)?;
    Ok((width, width))
}

/// Each layer by its type: `layer_types` when the config has them, else `rule`; then
/// transformers' renames, `moe`/`mlp` and KV-sharing layers as dummies.
fn typed_layers(
    fields: &Fields<'_>,
    rule: LayerRule,
    widths: (u64, u64),
    linear: Option<(u64, u64)>,
) -> Result<Vec<LayerCache>, InferenceError> {
    let count = layer_count(fields, "num_hidden_layers")?;
    let types = layer_types(fields, rule, count, linear.is_some())?;
    let reused = fields.reused_layers()?;
    let mut layers = Vec::with_capacity(count);
    for (i, layer_type) in types.iter().enumerate() {
        let layer_type = match *layer_type {
            "mamba" => "linear_attention",
            "attention" => "full_attention",
            "moe" | "mlp" => "dummy",
            _ if reused.get(i) == Some(&true) => "dummy",
            other => other,
        };
        layers.push(match (layer_type, linear) {
            ("full_attention", _) => LayerCache::attention(LayerKind::Full, widths, None),
            ("sliding_attention", _) => {
                let window = match sliding_window(fields)? {
                    Some(0) => Some(fields.divisor("sliding_window")?),
                    Some(w) => Some(w),
                    None => Some(fields.required("sliding_window")?),
                };
                LayerCache::attention(LayerKind::Sliding, widths, window)
            }
            ("chunked_attention", _) => {
                let window = Some(fields.divisor("attention_chunk_size")?);
                LayerCache::attention(LayerKind::Chunked, widths, window)
            }
            ("linear_attention", Some(state)) => LayerCache::state(LayerKind::Linear, state),
            ("dummy", _) => LayerCache::EMPTY,
            (other, _) => {
                return Err(InferenceError::UnknownLayerType {
                    model_type: fields.model_type().to_owned(),
                    layer: i,
                    layer_type: other.to_owned(),
                })
            }
        });
    }
    Ok(layers)
}

fn layer_types<'a>(
    fields: &Fields<'a>,
    rule: LayerRule,
    count: usize,
    linear: bool,
) -> Result<Vec<&'a str>, InferenceError> {
    if let Some(types) = fields.layer_types()? {
        if types.len() != count {
            return Err(InferenceError::LayerCount {
                model_type: fields.model_type().to_owned(),
                got: types.len(),
                expected: count as u64,
            });
        }
        return Ok(types);
    }
    let (other, period) = match rule {
        LayerRule::FromWindow => {
            let kind = if sliding_window(fields)?.is_some() {
                "sliding_attention"
            } else if fields.int("attention_chunk_size")?.is_some() {
                "chunked_attention"
            } else {
                "full_attention"
            };
            return Ok(vec![kind; count]);
        }
        LayerRule::SlidingFrom { first_key } => {
            let first = match sliding_window(fields)? {
                Some(_) => fields.int(first_key)?.unwrap_or(0),
                None => count as u64,
            };
            return Ok((0..count as u64)
                .map(|i| {
                    if i >= first {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect());
        }
        LayerRule::Alternating { period_key, period } => {
            let period = match period_key {
                Some(key) if fields.int(key)?.is_some() => fields.divisor(key)?,
                _ => period,
            };
            let other = if linear {
                "linear_attention"
            } else {
                "sliding_attention"
            };
            (other, period)
        }
    };
    Ok((0..count as u64)
        .map(|i| {
            if (i + 1) % period == 0 {
                "full_attention"
            } else {
                other
            }
        })
        .collect())
}

/// `sliding_window` as the class leaves it after `__post_init__`: Qwen3-MoE keeps it only with
/// `use_sliding_window`; Gemma-3 with bidirectional attention halves it (`w // 2 + 1`).
fn sliding_window(fields: &Fields<'_>) -> Result<Option<u64>, InferenceError> {
    let window = fields.int("sliding_window")?;
    Ok(match fields.model_type() {
        "qwen3_moe" | "qwen2" | "qwen2_vl_text" if !fields.flag("use_sliding_window")? => None,
        "gemma3_text" if fields.flag("use_bidirectional_attention")? => window.map(|w| w / 2 + 1),
        _ => window,
    })
}

/// Qwen3-Next's gated delta net: a convolution over queries, keys and values
/// (`2 * key heads * key dim + value heads * value dim` channels, `linear_conv_kernel_dim`
/// wide) and an fp32 recurrent state of `value heads * key dim * value dim`.
fn gated_delta_state(fields: &Fields<'_>) -> Result<(u64, u64), InferenceError> {
    let key_dim = fields.required("linear_key_head_dim")?;
    let value_dim = fields.required("linear_value_head_dim")?;
    let key_heads = fields.required("linear_num_key_heads")?;
    let value_heads = fields.required("linear_num_value_heads")?;
    let keys = mul(fields, key_heads, key_dim)?;
    let values = mul(fields, value_heads, value_dim)?;
    let channels = add(fields, mul(fields, keys, 2)?, values)?;
    let conv = mul(fields, channels, fields.required("linear_conv_kernel_dim")?)?;
    let recurrent = mul(fields, mul(fields, value_heads, key_dim)?, value_dim)?;
    Ok((conv, recurrent))
}

/// Jamba: attention where `i % attn_layer_period == attn_layer_offset`, Mamba elsewhere, whose
/// state is a convolution over `mamba_expand * hidden_size` channels (`mamba_d_conv` wide) and
/// an fp32 SSM state of those channels times `mamba_d_state`.
fn jamba_layers(fields: &Fields<'_>) -> Result<Vec<LayerCache>, InferenceError> {
    let count = layer_count(fields, "num_hidden_layers")?;
    let period = fields.divisor("attn_layer_period")?;
    let offset = fields.required("attn_layer_offset")?;
    let attention = gqa(fields)?;
    let channels = mul(
        fields,
        fields.required("mamba_expand")?,
        fields.required("hidden_size")?,
    )?;
    let conv = mul(fields, channels, fields.required("mamba_d_conv")?)?;
    let recurrent = mul(fields, channels, fields.required("mamba_d_state")?)?;
    Ok((0..count as u64)
        .map(|i| {
            if i % period == offset {
                LayerCache::attention(LayerKind::Full, attention, None)
            } else {
                LayerCache::state(LayerKind::Linear, (conv, recurrent))
            }
        })
        .collect())
}

/// Falcon-H1's Mamba-2: `mamba_d_ssm` channels (else `mamba_expand * hidden_size`), a
/// convolution over them plus `2 * mamba_n_groups * mamba_d_state` (`mamba_d_conv` wide), and
/// an fp32 SSM state of `mamba_n_heads * mamba_d_head * mamba_d_state` (`mamba_d_head` "auto":
/// channels / heads).
fn mamba2_state(fields: &Fields<'_>) -> Result<(u64, u64), InferenceError> {
    let channels = match fields.int("mamba_d_ssm")? {
        Some(n) => n,
        None => mul(
            fields,
            fields.required("mamba_expand")?,
            fields.required("hidden_size")?,
        )?,
    };
    let heads = fields.divisor("mamba_n_heads")?;
    let head_dim = match fields.int_or_auto("mamba_d_head")? {
        Some(d) => d,
        None => channels / heads,
    };
    let d_state = fields.required("mamba_d_state")?;
    let groups = mul(fields, fields.required("mamba_n_groups")?, 2 * d_state)?;
    let conv = mul(
        fields,
        add(fields, channels, groups)?,
        fields.required("mamba_d_conv")?,
    )?;
    let recurrent = mul(fields, mul(fields, heads, head_dim)?, d_state)?;
    Ok((conv, recurrent))
}

fn layer_count(fields: &Fields<'_>, field: &str) -> Result<usize, InferenceError> {
    let count = fields.required(fields.family.canonical(field))?;
    to_count(fields, count)
}

/// A layer count small enough to list (a config claiming 2**40 layers is refused).
fn to_count(fields: &Fields<'_>, count: u64) -> Result<usize, InferenceError> {
    const MAX_LAYERS: u64 = 1 << 20;
    if count > MAX_LAYERS {
        return Err(InferenceError::BadField {
            model_type: fields.model_type().to_owned(),
            field: "num_hidden_layers".to_owned(),
            expected: "at most 2**20 layers",
            got: count.to_string(),
        });
    }
    Ok(count as usize)
}

fn mul(fields: &Fields<'_>, a: u64, b: u64) -> Result<u64, InferenceError> {
    a.checked_mul(b).ok_or_else(|| too_large(fields))
}

fn add(fields: &Fields<'_>, a: u64, b: u64) -> Result<u64, InferenceError> {
    a.checked_add(b).ok_or_else(|| too_large(fields))
}

fn too_large(fields: &Fields<'_>) -> InferenceError {
    InferenceError::TooLarge {
        model_type: fields.model_type().to_owned(),
    }
}
