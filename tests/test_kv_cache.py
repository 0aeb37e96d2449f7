"""`devicemap.kv_cache` against transformers' real caches: tiny models of every supported
family run a prompt and a few decode steps with a `DynamicCache(config=...)` and a
`StaticCache(config=..., max_cache_len=...)`; the cache's tensors are summed per layer and must
equal `kv_cache`'s bytes exactly, for batch 1 and 3, prompts shorter and longer than the
window, bfloat16 and float32.

What is summed: every tensor a cache layer holds for the sequences (keys, values, conv and
recurrent states); the per-layer bookkeeping scalars (`cumulative_length`,
`_sliding_window_tensor`: 8 bytes each) are not cache content and are left out, as in
`kv_cache`."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import devicemap
import pytest
from devicemap import _core

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BOOKKEEPING = {"cumulative_length", "_sliding_window_tensor", "indexer_cumulative_length"}
WINDOW = 4
DECODE_STEPS = 2
SMALL = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2
)


def _configs() -> dict[str, Any]:
    t = transformers
    return {
        "llama": lambda: t.LlamaConfig(**SMALL, num_hidden_layers=2),
        "mistral": lambda: t.MistralConfig(**SMALL, num_hidden_layers=2, sliding_window=WINDOW),
        "gemma2": lambda: t.Gemma2Config(**SMALL, num_hidden_layers=2, head_dim=8, sliding_window=WINDOW),
        "gemma3": lambda: t.Gemma3TextConfig(
            **SMALL, num_hidden_layers=3, head_dim=16, sliding_window=WINDOW, sliding_window_pattern=2
        ),
        "qwen3_moe": lambda: t.Qwen3MoeConfig(
            **SMALL,
            num_hidden_layers=2,
            head_dim=16,
            moe_intermediate_size=16,
            num_experts=4,
            num_experts_per_tok=2,
        ),
        "deepseek_v3": lambda: t.DeepseekV3Config(
            **{**SMALL, "num_key_value_heads": 4},
            num_hidden_layers=2,
            moe_intermediate_size=16,
            kv_lora_rank=16,
            q_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
            n_routed_experts=4,
            num_experts_per_tok=2,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        ),
        "gpt2": lambda: t.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
        ),
        "gpt_oss": lambda: t.GptOssConfig(
            **SMALL,
            num_hidden_layers=2,
            head_dim=8,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=WINDOW,
        ),
        "qwen3_next": lambda: t.Qwen3NextConfig(
            **SMALL,
            num_hidden_layers=4,
            head_dim=8,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
            num_experts=4,
            num_experts_per_tok=2,
            linear_num_value_heads=4,
            linear_num_key_heads=2,
            linear_key_head_dim=8,
            linear_value_head_dim=16,
            linear_conv_kernel_dim=4,
        ),
        "jamba": lambda: t.JambaConfig(
            **SMALL,
            num_hidden_layers=4,
            num_experts=2,
            attn_layer_period=2,
            attn_layer_offset=1,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=2,
            mamba_dt_rank=4,
        ),
        "falcon_h1": lambda: t.FalconH1Config(
            **SMALL,
            num_hidden_layers=2,
            head_dim=8,
            mamba_d_ssm=32,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_n_groups=1,
            mamba_chunk_size=8,
        ),
    }


CONFIGS = _configs()


def held_bytes(layer: object) -> int:
    """Bytes of every tensor a cache layer holds (tensors, and tensors in dicts of states)."""
    total = 0
    for name, value in vars(layer).items():
        if name in BOOKKEEPING:
            continue
        values = value.values() if isinstance(value, dict) else [value]
        total += sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))
    return total


@functools.cache
def tiny_model(family: str, dtype: str) -> Any:
    torch.manual_seed(0)
    config = CONFIGS[family]()
    return transformers.AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype)).eval()


def measured(model: Any, prompt: int, batch: int, mode: str) -> list[int]:
    """Runs `prompt` tokens then DECODE_STEPS single tokens; the cache's bytes per layer."""
    config = model.config
    tokens = prompt + DECODE_STEPS
    if mode == "dynamic":
        cache = transformers.DynamicCache(config=config)
    else:
        cache = transformers.StaticCache(config=config, max_cache_len=tokens)
    ids = torch.randint(0, config.vocab_size, (batch, prompt))
    with torch.no_grad():
        out = model(input_ids=ids, cache=cache, use_cache=True)
        for _ in range(DECODE_STEPS):
            out = model(input_ids=out.logits[:, -1:].argmax(-1), cache=cache, use_cache=True)
    return [held_bytes(layer) for layer in cache.layers]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_matches_transformers_caches(family: str, dtype: str) -> None:
    model = tiny_model(family, dtype)
    for batch in (1, 3):
        for prompt in (WINDOW - 3, WINDOW + 3):
            for mode in ("dynamic", "static"):
                real = measured(model, prompt, batch, mode)
                ours = devicemap.kv_cache(
                    model.config, prompt + DECODE_STEPS, batch=batch, dtype=getattr(torch, dtype), cache=mode
                )
                assert ours.per_layer == real, (family, dtype, batch, prompt, mode, ours.layer_kinds)
                assert ours.total == sum(real)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_t5_self_and_cross_attention(dtype: str) -> None:
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    model = transformers.T5ForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
    encoder_tokens, decoder_prompt = 7, 3
    tokens = decoder_prompt + DECODE_STEPS
    for batch in (1, 3):
        for mode in ("dynamic", "static"):
            if mode == "dynamic":
                caches = [transformers.DynamicCache(config=config) for _ in range(2)]
            else:
                caches = [
                    transformers.StaticCache(config=config, max_cache_len=tokens),
                    transformers.StaticCache(config=config, max_cache_len=encoder_tokens),
                ]
            cache = transformers.EncoderDecoderCache(*caches)
            encoder_ids = torch.randint(0, 64, (batch, encoder_tokens))
            decoder_ids = torch.randint(0, 64, (batch, decoder_prompt))
            with torch.no_grad():
                out = model(input_ids=encoder_ids, decoder_input_ids=decoder_ids, cache=cache, use_cache=True)
                encoded = (out.encoder_last_hidden_state,)
                for _ in range(DECODE_STEPS):
                    step = out.logits[:, -1:].argmax(-1)
                    out = model(encoder_outputs=encoded, decoder_input_ids=step, cache=cache, use_cache=True)
            real = [
                held_bytes(own) + held_bytes(cross)
                for own, cross in zip(
                    cache.self_attention_cache.layers, cache.cross_attention_cache.layers, strict=True
                )
            ]
            ours = devicemap.kv_cache(
                config, tokens, batch=batch, dtype=dtype, cache=mode, encoder_tokens=encoder_tokens
            )
            assert ours.per_layer == real, (dtype, batch, mode)
            assert ours.layer_kinds == ["self_and_cross_attention"] * 2


# --- defaults: the Rust table against transformers' config classes ---------------------------


def config_class(model_type: str) -> Any:
    return transformers.CONFIG_MAPPING[model_type]


@pytest.mark.parametrize("model_type", sorted(_core._kv_defaults()))
def test_defaults_table_matches_config_classes(model_type: str) -> None:
    table = _core._kv_defaults()[model_type]
    fields = {field.name: field for field in dataclasses.fields(config_class(model_type))}
    for name, default in table.items():
        assert name in fields, f"{model_type}: {name} is not a field of {config_class(model_type).__name__}"
        field = fields[name]
        declared = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert declared == default, (model_type, name, declared, default)


@pytest.mark.parametrize("model_type", sorted(_core._kv_defaults()))
def test_an_omitted_field_means_the_class_default(model_type: str) -> None:
    """A config.json naming only its model_type sizes as the class's full default config does,
    which checks both the table and the derivations (`head_dim`, `layer_types`, ...)."""
    encoder = {"encoder_tokens": 10} if model_type == "t5" else {}
    bare = devicemap.kv_cache({"model_type": model_type}, 100, cache="dynamic", **encoder)
    full = devicemap.kv_cache(config_class(model_type)(), 100, cache="dynamic", **encoder)
    assert bare.per_layer == full.per_layer
    assert bare.layer_kinds == full.layer_kinds
    assert bare.total > 0


# --- inputs, formula-only sizes, text ---------------------------------------------------------


def test_config_as_path_directory_dict_and_object(tmp_path) -> None:
    config = CONFIGS["gemma2"]()
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict(), default=str))
    results = [
        devicemap.kv_cache(source, 50, dtype="bfloat16")
        for source in (config, config.to_dict(), tmp_path, tmp_path / "config.json", str(tmp_path))
    ]
    assert all(r.to_dict() == results[0].to_dict() for r in results)


def test_nested_text_config_is_read_as_transformers_reads_it() -> None:
    text = CONFIGS["gemma3"]()
    outer = transformers.Gemma3Config(text_config=text.to_dict())
    assert outer.get_text_config(decoder=True).layer_types == text.layer_types
    nested = devicemap.kv_cache(outer, 40, dtype="float32")
    assert nested.per_layer == devicemap.kv_cache(text, 40, dtype="float32").per_layer


def test_fp8_is_sized_by_the_formula() -> None:
    """transformers keeps fp8 only in its quantized cache layers: not byte-compared."""
    config = CONFIGS["llama"]()
    bf16 = devicemap.kv_cache(config, 1000, dtype="bfloat16")
    fp8 = devicemap.kv_cache(config, 1000, dtype="float8_e4m3fn")
    assert fp8.total * 2 == bf16.total
    assert fp8.per_token == 2 * 2 * 2 * 8 * 1


def test_dtype_defaults_to_the_configs_then_bfloat16() -> None:
    assert devicemap.kv_cache({"model_type": "llama", "torch_dtype": "float16"}, 1).dtype == "F16"
    assert devicemap.kv_cache({"model_type": "llama"}, 1).dtype == "BF16"


def test_text_and_dict() -> None:
    cache = devicemap.kv_cache({"model_type": "gemma2"}, 32768, batch=2)
    text = str(cache)
    assert text.startswith("KV cache of gemma2 (26 layers, static cache, BF16)")
    assert "13 x sliding_attention (window 4,096)" in text
    assert cache.to_dict()["per_layer"] == cache.per_layer
    assert cache.per_token is None
    assert "KvCache gemma2" in repr(cache)
    assert type(cache).__module__ == "devicemap"
