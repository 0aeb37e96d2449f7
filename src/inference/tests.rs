//! Hand computations of each family's cache against `kv_cache`. The byte-exact comparison
//! with transformers' real caches is in `tests/test_kv_cache.py`.

use serde_json::{json, Value};

use super::*;

const GIB: u64 = 1 << 30;

fn request(tokens: u64, mode: CacheMode) -> Request {
    Request {
        tokens,
        batch: 1,
        dtype: None,
        mode,
        encoder_tokens: None,
    }
}

fn sized(config: Value, request: Request) -> KvCache {
    kv_cache(&config, &request).unwrap()
}

#[test]
fn llama_gqa_is_heads_times_head_dim_per_token() {
    let config = json!({"model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192,
        "num_attention_heads": 64, "num_key_value_heads": 8, "torch_dtype": "bfloat16"});
    let cache = sized(config, request(32768, CacheMode::Static));
    // K and V, 8 heads of 128, 2 bytes, per token and layer.
    let per_token = 80 * 2 * 8 * 128 * 2;
    assert_eq!(cache.per_token, Some(per_token));
    assert_eq!(cache.total, per_token * 32768);
    assert_eq!(cache.total, 10 * GIB);
    assert_eq!(cache.layer_kinds(), vec!["full_attention"; 80]);
}

#[test]
fn defaults_fill_what_the_config_omits() {
    // LlamaConfig(): 32 layers, 32 heads of 128, no GQA.
    let cache = sized(
        json!({"model_type": "llama"}),
        request(1, CacheMode::Static),
    );
    assert_eq!(cache.total, 32 * 2 * 32 * 128 * 2);
    assert_eq!(cache.dtype, Dtype::BF16);
}

#[test]
fn sliding_layers_hold_their_window() {
    let config = json!({"model_type": "mistral", "num_hidden_layers": 2, "hidden_size": 32,
        "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 4,
        "dtype": "float32"});
    let per_token_layer = 2 * 2 * 8 * 4;
    let at = |tokens, mode| sized(config.clone(), request(tokens, mode)).total;
    assert_eq!(at(8, CacheMode::Static), 2 * 4 * per_token_layer);
    assert_eq!(at(3, CacheMode::Static), 2 * 3 * per_token_layer);
    // DynamicCache keeps the last window - 1 tokens.
    assert_eq!(at(8, CacheMode::Dynamic), 2 * 3 * per_token_layer);
    assert_eq!(at(2, CacheMode::Dynamic), 2 * 2 * per_token_layer);
    assert_eq!(sized(config, request(8, CacheMode::Static)).per_token, None);
}

#[test]
fn gemma2_27b_at_32k_charges_sliding_layers_their_window() {
    let config = json!({"model_type": "gemma2", "num_hidden_layers": 46, "hidden_size": 4608,
        "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128});
    let cache = sized(config, request(32768, CacheMode::Static));
    let per_token_layer = 2 * 16 * 128 * 2;
    assert_eq!(
        cache.total,
        23 * per_token_layer * 32768 + 23 * per_token_layer * 4096
    );
    assert_eq!(
        cache.layer_kinds()[..2],
        ["sliding_attention", "full_attention"]
    );
    assert!(cache
        .text()
        .contains("23 x sliding_attention (window 4,096)"));
}

#[test]
fn gemma3_pattern_and_nested_text_config() {
    let config = json!({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text",
        "num_hidden_layers": 12, "sliding_window": 1024}});
    let cache = sized(config, request(8192, CacheMode::Static));
    let kinds = cache.layer_kinds();
    assert_eq!(kinds.iter().filter(|k| **k == "full_attention").count(), 2);
    assert_eq!(kinds[5], "full_attention");
    let per_token_layer = 2 * 4 * 256 * 2;
    assert_eq!(cache.total, per_token_layer * (2 * 8192 + 10 * 1024));
}

#[test]
fn deepseek_v3_caches_the_latent() {
    let cache = sized(
        json!({"model_type": "deepseek_v3"}),
        request(32768, CacheMode::Static),
    );
    // 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes per token: about 2.1 GiB.
    assert_eq!(cache.total, 61 * 576 * 2 * 32768);
    assert_eq!(cache.layer_kinds()[0], "mla");
    assert!(cache.total < 22 * GIB / 10);
}

#[test]
fn qwen3_moe_window_only_with_use_sliding_window() {
    let base = json!({"model_type": "qwen3_moe", "num_hidden_layers": 2, "head_dim": 128,
        "sliding_window": 8});
    assert_eq!(
        sized(base.clone(), request(100, CacheMode::Static)).layers[0].window,
        None
    );
    let mut on = base;
    on["use_sliding_window"] = json!(true);
    assert_eq!(
        sized(on, request(100, CacheMode::Static)).layers[0].window,
        Some(8)
    );
}

#[test]
fn gpt2_is_multi_head() {
    let cache = sized(
        json!({"model_type": "gpt2"}),
        request(1024, CacheMode::Dynamic),
    );
    assert_eq!(cache.total, 12 * 2 * 768 * 2 * 1024);
}

#[test]
fn qwen3_next_linear_layers_hold_fixed_states() {
    let cache = sized(
        json!({"model_type": "qwen3_next"}),
        request(4096, CacheMode::Static),
    );
    let conv = (2 * 16 * 128 + 32 * 128) * 4 * 2;
    let recurrent = 32 * 128 * 128 * 4;
    let full = 2 * 2 * 256 * 2 * 4096;
    assert_eq!(cache.per_layer[0], conv + recurrent);
    assert_eq!(cache.per_layer[3], full);
    assert_eq!(cache.total, 36 * (conv + recurrent) + 12 * full);
    assert_eq!(cache.per_token, None);
}

#[test]
fn jamba_and_falcon_h1_mamba_states() {
    let jamba = sized(
        json!({"model_type": "jamba"}),
        request(10, CacheMode::Dynamic),
    );
    let channels = 2 * 4096;
    assert_eq!(jamba.per_layer[0], channels * 4 * 2 + channels * 16 * 4);
    assert_eq!(jamba.per_layer[4], 2 * 8 * 128 * 2 * 10);
    let falcon = sized(
        json!({"model_type": "falcon_h1"}),
        request(10, CacheMode::Static),
    );
    let conv = (1024 + 2 * 256) * 4 * 2;
    let ssm = 128 * (1024 / 128) * 256 * 4;
    assert_eq!(falcon.per_layer[0], 2 * 8 * 128 * 2 * 10 + conv + ssm);
    assert_eq!(falcon.layer_kinds(), vec!["hybrid"; 32]);
}

#[test]
fn t5_self_and_cross_attention() {
    let config = json!({"model_type": "t5", "num_layers": 6, "num_decoder_layers": 4});
    let mut req = request(20, CacheMode::Dynamic);
    assert!(matches!(
        kv_cache(&config, &req),
        Err(InferenceError::NeedsEncoderTokens { .. })
    ));
    req.encoder_tokens = Some(100);
    let cache = kv_cache(&config, &req).unwrap();
    assert_eq!(cache.per_layer, vec![2 * 8 * 64 * 2 * (20 + 100); 4]);
    req.encoder_tokens = Some(1);
    let llama = json!({"model_type": "llama"});
    assert!(matches!(
        kv_cache(&llama, &req),
        Err(InferenceError::NoEncoder { .. })
    ));
}

#[test]
fn batch_dtype_and_nothing_written() {
    let config = json!({"model_type": "llama", "num_hidden_layers": 1});
    let mut req = request(10, CacheMode::Static);
    req.batch = 3;
    req.dtype = Some(Dtype::F8_E4M3);
    assert_eq!(sized(config.clone(), req).total, 3 * 10 * 2 * 4096);
    req.tokens = 0;
    assert_eq!(sized(config.clone(), req).total, 0);
    req.dtype = Some(Dtype::I8);
    assert!(matches!(
        kv_cache(&config, &req),
        Err(InferenceError::NotFloating { .. })
    ));
}

#[test]
fn layer_types_are_read_and_checked() {
    let config = json!({"model_type": "llama", "num_hidden_layers": 3, "sliding_window": 16,
        "layer_types": ["full_attention", "attention", "mlp"]});
    let cache = sized(config, request(64, CacheMode::Static));
    assert_eq!(
        cache.layer_kinds(),
        ["full_attention", "full_attention", "dummy"]
    );
    let bad = json!({"model_type": "llama", "num_hidden_layers": 2,
        "layer_types": ["full_attention", "linear_attention"]});
    let err = kv_cache(&bad, &request(1, CacheMode::Static)).unwrap_err();
    assert!(err
        .to_string()
        .contains("layer 1 has layer type 'linear_attention'"));
    let short = json!({"model_type": "llama", "num_hidden_layers": 2, "layer_types": []});
    assert!(kv_cache(&short, &request(1, CacheMode::Static)).is_err());
}

#[test]
fn sizes_past_64_bits_are_refused() {
    let config = json!({"model_type": "llama", "num_hidden_layers": 1});
    let mut req = request(u64::MAX / 2, CacheMode::Static);
    req.batch = 1 << 20;
    let err = kv_cache(&config, &req).unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::Overflow);
}

#[test]
fn config_files_and_directories() {
    let dir = std::env::temp_dir().join(format!("devicemap-kv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    assert_eq!(read_config(&dir).unwrap()["model_type"], "gpt2");
    std::fs::write(dir.join("bad.json"), "{").unwrap();
    assert!(matches!(
        read_config(&dir.join("bad.json")),
        Err(InferenceError::ConfigNotJson { .. })
    ));
    assert!(matches!(
        read_config(&dir.join("absent.json")),
        Err(InferenceError::ConfigUnreadable { .. })
    ));
    // Neither read until memory runs out nor blocked on.
    #[cfg(unix)]
    assert!(matches!(
        read_config(Path::new("/dev/zero")),
        Err(InferenceError::ConfigNotFile { .. })
    ));
    let big = std::fs::File::create(dir.join("big.json")).unwrap();
    big.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    assert!(matches!(
        read_config(&dir.join("big.json")),
        Err(InferenceError::ConfigTooLarge { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
