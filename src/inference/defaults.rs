//! What a `config.json` means by omitting a field: the default of each field the cache's shape
//! depends on, per `model_type`, as transformers' config classes declare it. The Python tests
//! instantiate every class and compare (`tests/test_kv_cache.py`).

/// A config class's default for one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldDefault {
    Int(u64),
    Bool(bool),
    Str(&'static str),
    /// `None`: the class derives a value in `__post_init__` (or the feature is off).
    Null,
}

/// How a model_type lays out its decoder's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Attention in every layer; `layer_types`, else each layer's type from `sliding_window`
    /// / `attention_chunk_size`, else `rule`.
    Attention(LayerRule),
    /// DeepSeek-V3's multi-head latent attention: the cache holds the compressed latent.
    Mla,
    /// Qwen3-Next: gated-delta-net linear attention, full attention every
    /// `full_attention_interval`-th layer.
    GatedDeltaNet,
    /// GPT-2: multi-head attention whose width is `n_embd` (no GQA, no `head_dim`).
    Gpt2,
    /// Jamba: Mamba layers, attention where `i % attn_layer_period == attn_layer_offset`.
    Jamba,
    /// Falcon-H1: attention and Mamba-2 side by side in every layer.
    FalconH1,
    /// T5: decoder self-attention plus cross-attention over the encoder's tokens.
    EncoderDecoder,
    /// A composite config (vision-language) whose decoder is a nested `text_config` of this
    /// model_type when the nested dict does not name one.
    Composite { text_model_type: &'static str },
}

/// Layer types a class fills in when the config has no `layer_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRule {
    /// Left to transformers' cache: each layer from the window fields.
    FromWindow,
    /// Qwen2: with a window, layers from `max_window_layers` on slide, those before are full.
    SlidingFrom { first_key: &'static str },
    /// Layer `i` is full attention when `(i + 1) % period == 0`, sliding otherwise; the period
    /// from the keyword `period_key` (kept on the config), else `period`.
    Alternating {
        period_key: Option<&'static str>,
        period: u64,
    },
}

/// One supported `model_type`.
#[derive(Debug)]
pub struct Family {
    pub model_type: &'static str,
    pub arch: Arch,
    /// Defaults of the fields read, as the config class declares them.
    pub defaults: &'static [(&'static str, FieldDefault)],
    /// The class's `attribute_map`: a config may spell a field by its generic name.
    pub aliases: &'static [(&'static str, &'static str)],
}

use FieldDefault::{Bool, Int, Null, Str};

const FROM_WINDOW: Arch = Arch::Attention(LayerRule::FromWindow);
const QWEN2: Arch = Arch::Attention(LayerRule::SlidingFrom {
    first_key: "max_window_layers",
});
const EVERY_SECOND: Arch = Arch::Attention(LayerRule::Alternating {
    period_key: None,
    period: 2,
});

pub static FAMILIES: &[Family] = &[
    Family {
        model_type: "llama",
        arch: FROM_WINDOW,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(4096)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Null),
            ("head_dim", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "mistral",
        arch: FROM_WINDOW,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(4096)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Int(8)),
            ("head_dim", Null),
            ("sliding_window", Int(4096)),
        ],
        aliases: &[],
    },
    Family {
        model_type: "gemma2",
        arch: EVERY_SECOND,
        defaults: &[
            ("num_hidden_layers", Int(26)),
            ("hidden_size", Int(2304)),
            ("num_attention_heads", Int(8)),
            ("num_key_value_heads", Int(4)),
            ("head_dim", Int(256)),
            ("sliding_window", Int(4096)),
            ("layer_types", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "gemma3_text",
        arch: Arch::Attention(LayerRule::Alternating {
            period_key: Some("sliding_window_pattern"),
            period: 6,
        }),
        defaults: &[
            ("num_hidden_layers", Int(26)),
            ("hidden_size", Int(2304)),
            ("num_attention_heads", Int(8)),
            ("num_key_value_heads", Int(4)),
            ("head_dim", Int(256)),
            ("sliding_window", Int(4096)),
            ("layer_types", Null),
            ("use_bidirectional_attention", Bool(false)),
        ],
        aliases: &[],
    },
    Family {
        model_type: "gemma3",
        arch: Arch::Composite {
            text_model_type: "gemma3_text",
        },
        defaults: &[],
        aliases: &[],
    },
    Family {
        model_type: "qwen3_moe",
        arch: FROM_WINDOW,
        defaults: &[
            ("num_hidden_layers", Int(24)),
            ("hidden_size", Int(2048)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Int(4)),
            ("sliding_window", Int(4096)),
            ("use_sliding_window", Bool(false)),
        ],
        aliases: &[],
    },
    Family {
        model_type: "deepseek_v3",
        arch: Arch::Mla,
        defaults: &[
            ("num_hidden_layers", Int(61)),
            ("kv_lora_rank", Int(512)),
            ("qk_rope_head_dim", Int(64)),
        ],
        aliases: &[],
    },
    Family {
        model_type: "gpt2",
        arch: Arch::Gpt2,
        defaults: &[
            ("n_layer", Int(12)),
            ("n_embd", Int(768)),
            ("n_head", Int(12)),
            ("add_cross_attention", Bool(false)),
        ],
        aliases: &[
            ("hidden_size", "n_embd"),
            ("num_attention_heads", "n_head"),
            ("num_hidden_layers", "n_layer"),
        ],
    },
    Family {
        model_type: "gpt_oss",
        arch: EVERY_SECOND,
        defaults: &[
            ("num_hidden_layers", Int(36)),
            ("hidden_size", Int(2880)),
            ("num_attention_heads", Int(64)),
            ("num_key_value_heads", Int(8)),
            ("head_dim", Int(64)),
            ("sliding_window", Int(128)),
            ("layer_types", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "qwen3_next",
        arch: Arch::GatedDeltaNet,
        defaults: &[
            ("num_hidden_layers", Int(48)),
            ("hidden_size", Int(2048)),
            ("num_attention_heads", Int(16)),
            ("num_key_value_heads", Int(2)),
            ("head_dim", Int(256)),
            ("linear_conv_kernel_dim", Int(4)),
            ("linear_key_head_dim", Int(128)),
            ("linear_value_head_dim", Int(128)),
            ("linear_num_key_heads", Int(16)),
            ("linear_num_value_heads", Int(32)),
            ("layer_types", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "jamba",
        arch: Arch::Jamba,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(4096)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Int(8)),
            ("attn_layer_period", Int(8)),
            ("attn_layer_offset", Int(4)),
            ("mamba_d_state", Int(16)),
            ("mamba_d_conv", Int(4)),
            ("mamba_expand", Int(2)),
        ],
        aliases: &[],
    },
    Family {
        model_type: "falcon_h1",
        arch: Arch::FalconH1,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(4096)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Int(8)),
            ("mamba_d_ssm", Int(1024)),
            ("mamba_n_heads", Int(128)),
            ("mamba_d_head", Str("auto")),
            ("mamba_n_groups", Int(1)),
            ("mamba_d_state", Int(256)),
            ("mamba_d_conv", Int(4)),
            ("mamba_expand", Int(2)),
        ],
        aliases: &[],
    },
    Family {
        model_type: "t5",
        arch: Arch::EncoderDecoder,
        defaults: &[
            ("num_layers", Int(6)),
            ("num_decoder_layers", Null),
            ("d_model", Int(512)),
            ("num_heads", Int(8)),
            ("d_kv", Int(64)),
        ],
        aliases: &[
            ("hidden_size", "d_model"),
            ("num_attention_heads", "num_heads"),
            ("num_hidden_layers", "num_layers"),
            ("head_dim", "d_kv"),
        ],
    },
    Family {
        model_type: "mixtral",
        arch: FROM_WINDOW,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(4096)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Int(8)),
            ("head_dim", Null),
            ("sliding_window", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "phi3",
        arch: FROM_WINDOW,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(3072)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Null),
            ("sliding_window", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "qwen2",
        arch: QWEN2,
        defaults: &[
            ("num_hidden_layers", Int(32)),
            ("hidden_size", Int(4096)),
            ("num_attention_heads", Int(32)),
            ("num_key_value_heads", Int(32)),
            ("sliding_window", Int(4096)),
            ("use_sliding_window", Bool(false)),
            ("max_window_layers", Int(28)),
            ("layer_types", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "qwen2_vl_text",
        arch: QWEN2,
        defaults: &[
            ("num_hidden_layers", Int(80)),
            ("hidden_size", Int(8192)),
            ("num_attention_heads", Int(64)),
            ("num_key_value_heads", Int(8)),
            ("sliding_window", Int(4096)),
            ("use_sliding_window", Bool(false)),
            ("max_window_layers", Int(80)),
            ("layer_types", Null),
        ],
        aliases: &[],
    },
    Family {
        model_type: "qwen2_vl",
        arch: Arch::Composite {
            text_model_type: "qwen2_vl_text",
        },
        defaults: &[],
        aliases: &[],
    },
];

/// The family of `model_type`, if supported.
pub fn family(model_type: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.model_type == model_type)
}

/// The supported model_types, for messages.
pub fn known() -> String {
    FAMILIES
        .iter()
        .map(|f| f.model_type)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Family {
    pub fn default_of(&self, field: &str) -> Option<FieldDefault> {
        self.defaults
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, d)| *d)
    }
    /// The field name a config spells `name` as (`attribute_map`), else `name`.
    pub fn canonical<'a>(&self, name: &'a str) -> &'a str {
        self.aliases
            .iter()
            .find(|(alias, _)| *alias == name)
            .map(|(_, field)| *field)
            .unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_are_distinct_and_found() {
        for f in FAMILIES {
            assert!(std::ptr::eq(family(f.model_type).unwrap(), f));
        }
        assert!(family("bert").is_none());
        assert!(known().starts_with("llama, mistral"));
    }

    #[test]
    fn aliases_name_declared_fields() {
        for f in FAMILIES {
            for (alias, field) in f.aliases {
                assert!(f.default_of(field).is_some(), "{} {alias}", f.model_type);
                assert_eq!(f.canonical(alias), *field);
            }
        }
    }
}
