//! Built-in example models: tensor names, dtypes and shapes of well-known checkpoints,
//! generated here (nothing is downloaded). They give the command line a real plan on any
//! machine and the tests and benchmarks a model of real scale.
//!
//! - `deepseek-v3`: DeepSeek-V3's FP8 release as transformers loads it (61 layers, the first 3
//!   dense, 256 routed experts + 1 shared per MoE layer, MLA attention; the multi-token
//!   prediction layer 61 left out). Linear weights are F8_E4M3 with one F32
//!   `weight_scale_inv` per 128 x 128 block; norms, embeddings, router and head BF16.
//!   90,427 tensors, 627 GiB.
//! - `deepseek-v3-bf16`: the same model in BF16, without scales (45,395 tensors, 1.22 TiB).
//! - `llama-3-70b`: Llama-3-70B in BF16 (80 layers, GQA with 8 KV heads; 723 tensors).
//!
//! Each carries its `config.json` as published on the Hub (`examples/*.json`, written here from
//! deepseek-ai/DeepSeek-V3 and meta-llama/Meta-Llama-3-70B), so a plan for inference sizes
//! its KV cache offline.

use crate::dtype::{loaded_bytes, Dtype};
use crate::error::{Error, Result};

pub const NAMES: [&str; 3] = ["deepseek-v3", "deepseek-v3-bf16", "llama-3-70b"];

/// One tensor of an example: name, dtype, element count.
pub type ExampleTensor = (String, Dtype, u64);

struct Out {
    tensors: Vec<ExampleTensor>,
    fp8: bool,
}

impl Out {
    fn plain(&mut self, name: String, dtype: Dtype, shape: &[u64]) {
        self.tensors.push((name, dtype, shape.iter().product()));
    }

    /// A linear weight `[rows, cols]`: FP8 with its block scales, or BF16.
    fn linear(&mut self, module: &str, rows: u64, cols: u64) {
        if self.fp8 {
            self.plain(format!("{module}.weight"), Dtype::F8_E4M3, &[rows, cols]);
            self.plain(
                format!("{module}.weight_scale_inv"),
                Dtype::F32,
                &[rows.div_ceil(128), cols.div_ceil(128)],
            );
        } else {
            self.plain(format!("{module}.weight"), Dtype::BF16, &[rows, cols]);
        }
    }

    /// A gated MLP (`gate_proj`, `up_proj`, `down_proj`), as Llama and DeepSeek write one.
    fn gated_mlp(&mut self, module: &str, hidden: u64, intermediate: u64) {
        self.linear(&format!("{module}.gate_proj"), intermediate, hidden);
        self.linear(&format!("{module}.up_proj"), intermediate, hidden);
        self.linear(&format!("{module}.down_proj"), hidden, intermediate);
    }

    /// A norm's weight: one BF16 vector.
    fn norm(&mut self, name: String, size: u64) {
        self.plain(name, Dtype::BF16, &[size]);
    }

    /// The input embedding, BF16 `[vocab, hidden]`.
    fn embed(&mut self, hidden: u64, vocab: u64) {
        self.plain(
            "model.embed_tokens.weight".into(),
            Dtype::BF16,
            &[vocab, hidden],
        );
    }

    /// The model's end: final norm and output head.
    fn head(&mut self, hidden: u64, vocab: u64) {
        self.norm("model.norm.weight".into(), hidden);
        self.plain("lm_head.weight".into(), Dtype::BF16, &[vocab, hidden]);
    }
}

fn deepseek_v3(fp8: bool) -> Vec<ExampleTensor> {
    const HIDDEN: u64 = 7168;
    const INTERMEDIATE: u64 = 18432;
    const MOE_INTERMEDIATE: u64 = 2048;
    const VOCAB: u64 = 129280;
    const LAYERS: u64 = 61;
    const DENSE_LAYERS: u64 = 3;
    const EXPERTS: u64 = 256;
    const Q_LORA: u64 = 1536;
    const KV_LORA: u64 = 512;
    const HEADS: u64 = 128;
    const QK_NOPE: u64 = 128;
    const QK_ROPE: u64 = 64;
    const V_HEAD: u64 = 128;
    let mut out = Out {
        tensors: Vec::with_capacity(if fp8 { 90_500 } else { 45_400 }),
        fp8,
    };
    out.embed(HIDDEN, VOCAB);
    for layer in 0..LAYERS {
        let p = format!("model.layers.{layer}");
        out.norm(format!("{p}.input_layernorm.weight"), HIDDEN);
        let a = format!("{p}.self_attn");
        out.linear(&format!("{a}.q_a_proj"), Q_LORA, HIDDEN);
        out.norm(format!("{a}.q_a_layernorm.weight"), Q_LORA);
        out.linear(
            &format!("{a}.q_b_proj"),
            HEADS * (QK_NOPE + QK_ROPE),
            Q_LORA,
        );
        out.linear(
            &format!("{a}.kv_a_proj_with_mqa"),
            KV_LORA + QK_ROPE,
            HIDDEN,
        );
        out.norm(format!("{a}.kv_a_layernorm.weight"), KV_LORA);
        out.linear(
            &format!("{a}.kv_b_proj"),
            HEADS * (QK_NOPE + V_HEAD),
            KV_LORA,
        );
        out.linear(&format!("{a}.o_proj"), HIDDEN, HEADS * V_HEAD);
        let m = format!("{p}.mlp");
        if layer < DENSE_LAYERS {
            out.gated_mlp(&m, HIDDEN, INTERMEDIATE);
        } else {
            out.plain(format!("{m}.gate.weight"), Dtype::BF16, &[EXPERTS, HIDDEN]);
            out.plain(
                format!("{m}.gate.e_score_correction_bias"),
                Dtype::F32,
                &[EXPERTS],
            );
            for expert in 0..EXPERTS {
                let e = format!("{m}.experts.{expert}");
                out.gated_mlp(&e, HIDDEN, MOE_INTERMEDIATE);
            }
            let s = format!("{m}.shared_experts");
            out.gated_mlp(&s, HIDDEN, MOE_INTERMEDIATE);
        }
        out.norm(format!("{p}.post_attention_layernorm.weight"), HIDDEN);
    }
    out.head(HIDDEN, VOCAB);
    out.tensors
}

fn llama_3_70b() -> Vec<ExampleTensor> {
    const HIDDEN: u64 = 8192;
    const INTERMEDIATE: u64 = 28672;
    const HEADS: u64 = 64;
    const KV_HEADS: u64 = 8;
    const HEAD_DIM: u64 = HIDDEN / HEADS;
    const VOCAB: u64 = 128256;
    const LAYERS: u64 = 80;
    let mut out = Out {
        tensors: Vec::with_capacity(730),
        fp8: false,
    };
    out.embed(HIDDEN, VOCAB);
    for layer in 0..LAYERS {
        let p = format!("model.layers.{layer}");
        out.norm(format!("{p}.input_layernorm.weight"), HIDDEN);
        out.linear(&format!("{p}.self_attn.q_proj"), HEADS * HEAD_DIM, HIDDEN);
        out.linear(
            &format!("{p}.self_attn.k_proj"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
        );
        out.linear(
            &format!("{p}.self_attn.v_proj"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
        );
        out.linear(&format!("{p}.self_attn.o_proj"), HIDDEN, HEADS * HEAD_DIM);
        out.gated_mlp(&format!("{p}.mlp"), HIDDEN, INTERMEDIATE);
        out.norm(format!("{p}.post_attention_layernorm.weight"), HIDDEN);
    }
    out.head(HIDDEN, VOCAB);
    out.tensors
}

/// The tensors of the example called `name`.
pub fn tensors(name: &str) -> Result<Vec<ExampleTensor>> {
    match name {
        "deepseek-v3" => Ok(deepseek_v3(true)),
        "deepseek-v3-bf16" => Ok(deepseek_v3(false)),
        "llama-3-70b" => Ok(llama_3_70b()),
        _ => Err(Error::UnknownExample {
            name: name.to_owned(),
        }),
    }
}

/// The `config.json` of the example called `name`, as text.
pub fn config(name: &str) -> Result<&'static str> {
    match name {
        "deepseek-v3" | "deepseek-v3-bf16" => Ok(include_str!("examples/deepseek-v3.json")),
        "llama-3-70b" => Ok(include_str!("examples/llama-3-70b.json")),
        _ => tensors(name).map(|_| ""),
    }
}

/// Per-tensor bytes of an example, floating-point tensors re-sized to `dtype` if given.
pub fn sizes(name: &str, dtype: Option<Dtype>) -> Result<Vec<(String, u64)>> {
    Ok(tensors(name)?
        .into_iter()
        .map(|(n, d, elements)| (n, loaded_bytes(d, elements, dtype)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_counts_and_sizes() {
        let fp8 = sizes("deepseek-v3", None).unwrap();
        assert_eq!(fp8.len(), 90_427);
        let bf16 = sizes("deepseek-v3-bf16", None).unwrap();
        assert_eq!(bf16.len(), 45_395);
        let params: u64 = tensors("deepseek-v3-bf16")
            .unwrap()
            .iter()
            .map(|t| t.2)
            .sum();
        // DeepSeek-V3's 671B parameters (its 14B multi-token-prediction layer comes on top).
        assert!((670e9..672e9).contains(&(params as f64)), "{params}");
        let llama: u64 = tensors("llama-3-70b").unwrap().iter().map(|t| t.2).sum();
        assert!((70.0e9..71.0e9).contains(&(llama as f64)), "{llama}");
        assert!(sizes("gpt-5", None).is_err());
    }

    #[test]
    fn configs_size_the_cache_of_their_layers() {
        use crate::inference::{kv_cache, CacheMode, Request};
        let request = Request {
            tokens: 32768,
            batch: 1,
            dtype: None,
            mode: CacheMode::Static,
            encoder_tokens: None,
        };
        for (name, layers, per_token) in [
            // MLA: the 512-wide latent and the 64-wide rotary key, BF16, 61 layers.
            ("deepseek-v3", 61, 61 * 576 * 2),
            // GQA: 8 KV heads of 128 for keys and values, BF16, 80 layers.
            ("llama-3-70b", 80, 80 * 2 * 8 * 128 * 2),
        ] {
            let config: serde_json::Value = serde_json::from_str(config(name).unwrap()).unwrap();
            let cache = kv_cache(&config, &request).unwrap();
            assert_eq!(cache.per_layer.len(), layers);
            assert_eq!(cache.per_token, Some(per_token), "{name}");
        }
        assert!(config("gpt-5").is_err());
    }
}
