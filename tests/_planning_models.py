"""Models and map checks shared by the planning-integration tests: tiny models of several
architectures from real config classes (saved and loaded in the tests), real-size configs
built on the meta device (no weights), and what a device map must satisfy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

GIB = 2**30
OFF_GPU = ("cpu", "disk")


def tiny(arch: str, layers: int = 3) -> Any:
    """A tiny model of `arch` with seeded weights (`layers` decoder layers for "llama-tied")."""
    import torch
    import transformers

    torch.manual_seed(0)
    small = {"vocab_size": 64, "hidden_size": 16, "num_attention_heads": 2}
    if arch == "llama-tied":
        config = transformers.LlamaConfig(
            **small,
            intermediate_size=32,
            num_hidden_layers=layers,
            num_key_value_heads=1,
            tie_word_embeddings=True,
        )
        return transformers.LlamaForCausalLM(config)
    if arch == "mixtral":
        config = transformers.MixtralConfig(
            **small,
            intermediate_size=32,
            num_hidden_layers=3,
            num_key_value_heads=1,
            num_local_experts=4,
            num_experts_per_tok=2,
        )
        return transformers.MixtralForCausalLM(config)
    if arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32)
        return transformers.GPT2LMHeadModel(config)
    if arch == "t5":
        config = transformers.T5Config(
            vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2
        )
        return transformers.T5ForConditionalGeneration(config)
    raise ValueError(arch)


@dataclass(frozen=True)
class Published:
    """A published model's sizes: its config class, the fields of its published config.json that
    set the sizes (the rest are the class's defaults), the parameters of its published weights
    (`test_plan_published.py` checks the built model has exactly these), and the model class
    when it is not a causal LM."""

    config_class: str
    fields: dict[str, Any]
    parameters: int
    model_class: str | None = None


# The one table of published configs (the planning tests and benches/bench_integration_planning.py
# build from it). Each entry's fields are its Hub repository's config.json (named above it) for
# hidden, layers, heads, kv heads, head_dim, intermediate, experts, vocab and the tie flag; a
# head_dim not in config.json is hidden / heads, as the class derives it. `parameters` is the
# published weights' count (the safetensors total on the model's page).
CONFIGS: dict[str, Published] = {
    # meta-llama/Meta-Llama-3-70B: head_dim 8192 / 64 = 128.
    "llama-3-70b": Published("LlamaConfig", {
        "vocab_size": 128256, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
        "num_attention_heads": 64, "num_key_value_heads": 8, "tie_word_embeddings": False,
    }, 70_553_706_496),
    # mistralai/Mixtral-8x7B-v0.1: head_dim 4096 / 32 = 128.
    "mixtral-8x7b": Published("MixtralConfig", {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
        "tie_word_embeddings": False,
    }, 46_702_792_704),
    # Qwen/Qwen3-30B-A3B: head_dim 128 is in config.json (not 2048 / 32 = 64, the class's default).
    "qwen3-30b-a3b": Published("Qwen3MoeConfig", {
        "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "num_experts": 128, "num_experts_per_tok": 8, "tie_word_embeddings": False,
    }, 30_532_122_624),
    # google/gemma-2-27b: head_dim 128 in config.json (4608 / 32 would be 144); embeddings tied.
    "gemma-2-27b": Published("Gemma2Config", {
        "vocab_size": 256000, "hidden_size": 4608, "intermediate_size": 36864, "num_hidden_layers": 46,
        "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128, "tie_word_embeddings": True,
    }, 27_227_128_320),
    # google/gemma-3-27b-it: SigLIP tower without its pooling head (`vision_use_head: false`).
    "gemma-3-27b": Published("Gemma3Config", {
        "text_config": {
            "vocab_size": 262208, "hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62,
            "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
        },
        "vision_config": {
            "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
            "num_attention_heads": 16, "image_size": 896, "patch_size": 14, "vision_use_head": False,
        },
        "tie_word_embeddings": True,
    }, 27_432_406_640, "Gemma3ForConditionalGeneration"),
    # Qwen/Qwen2-VL-7B-Instruct: head_dim 3584 / 28 = 128.
    "qwen2-vl-7b": Published("Qwen2VLConfig", {
        "text_config": {
            "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4,
        },
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16},
        "tie_word_embeddings": False,
    }, 8_291_375_616, "Qwen2VLForConditionalGeneration"),
    # llava-hf/llava-1.5-7b-hf: Vicuna-7B (head_dim 4096 / 32 = 128) and CLIP ViT-L/14-336.
    "llava-1.5-7b": Published("LlavaConfig", {
        "text_config": {
            "model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
            "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        },
        "tie_word_embeddings": False,
    }, 7_063_427_072, "LlavaForConditionalGeneration"),
    # google-t5/t5-large: 24 encoder and 24 decoder layers, `shared` tied to both embeddings and lm_head.
    "t5-large": Published("T5Config", {
        "vocab_size": 32128, "d_model": 1024, "d_kv": 64, "d_ff": 4096, "num_layers": 24, "num_heads": 16,
        "tie_word_embeddings": True,
    }, 737_668_096, "T5ForConditionalGeneration"),
    # openai-community/gpt2-xl: vocab 50257 and 1024 positions (the class's defaults); head_dim 64.
    "gpt2-xl": Published("GPT2Config", {
        "vocab_size": 50257, "n_positions": 1024, "n_embd": 1600, "n_layer": 48, "n_head": 25,
        "tie_word_embeddings": True,
    }, 1_557_611_200),
    # microsoft/Phi-3-medium-4k-instruct: head_dim 5120 / 40 = 128.
    "phi-3-medium": Published("Phi3Config", {
        "vocab_size": 32064, "hidden_size": 5120, "intermediate_size": 17920, "num_hidden_layers": 40,
        "num_attention_heads": 40, "num_key_value_heads": 10, "tie_word_embeddings": False,
    }, 13_960_238_080),
}  # fmt: skip


def real_size(name: str, **overrides: Any) -> Any:
    """The published model `name` of `CONFIGS` on the meta device (bf16, no weights); `overrides`
    change its config's top-level fields."""
    import torch
    import transformers

    published = CONFIGS[name]
    config = getattr(transformers, published.config_class)(**{**published.fields, **overrides})
    with torch.device("meta"):
        if published.model_class is None:
            return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        return getattr(transformers, published.model_class)._from_config(config, dtype=torch.bfloat16)


def _linear(n_in: int, n_out: int) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=False)


class Expert(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = _linear(hidden, inner), _linear(hidden, inner)
        self.down_proj = _linear(inner, hidden)


class Moe(nn.Module):
    def __init__(self, hidden: int, inner: int, experts: int) -> None:
        super().__init__()
        self.gate = _linear(hidden, experts)
        self.experts = nn.ModuleList(Expert(hidden, inner) for _ in range(experts))
        self.shared_experts = Expert(hidden, inner)


class Attention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q_a_proj, self.q_b_proj = _linear(hidden, 1536), _linear(1536, 128 * 192)
        self.kv_a_proj_with_mqa, self.kv_b_proj = _linear(hidden, 576), _linear(512, 128 * 256)
        self.o_proj = _linear(128 * 128, hidden)
        self.q_a_layernorm, self.kv_a_layernorm = nn.RMSNorm(1536), nn.RMSNorm(512)


class DecoderLayer(nn.Module):
    def __init__(self, hidden: int, moe: bool, experts: int) -> None:
        super().__init__()
        self.self_attn = Attention(hidden)
        self.mlp = Moe(hidden, 2048, experts) if moe else Expert(hidden, 18432)
        self.input_layernorm, self.post_attention_layernorm = nn.RMSNorm(hidden), nn.RMSNorm(hidden)


class Body(nn.Module):
    def __init__(self, hidden: int, layers: int, experts: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(129280, hidden)
        self.layers = nn.ModuleList(DecoderLayer(hidden, i >= 3, experts) for i in range(layers))
        self.norm = nn.RMSNorm(hidden)


class PerExpertDeepSeekV3(nn.Module):
    """DeepSeek-V3's shapes, one module per expert, with what transformers' loader reads.

    From deepseek-ai/DeepSeek-V3's config.json: hidden 7168, 61 layers (the first 3 dense, of
    intermediate 18432), 128 heads (q_lora_rank 1536, kv_lora_rank 512, qk_nope_head_dim 128,
    qk_rope_head_dim 64, v_head_dim 128), 256 routed experts and 1 shared of
    moe_intermediate 2048, vocab 129280, untied. Left out: the router's
    `e_score_correction_bias` (256 floats a layer) and the multi-token-prediction layer."""

    _no_split_modules = ["DecoderLayer"]  # noqa: RUF012
    all_tied_weights_keys: dict[str, str] = {}  # noqa: RUF012

    def __init__(self, layers: int = 61, experts: int = 256) -> None:
        super().__init__()
        self.model = Body(7168, layers, experts)
        self.lm_head = _linear(7168, 129280)


def per_expert_dsv3(layers: int = 61, experts: int = 256) -> Any:
    """DeepSeek-V3's shapes (bf16, meta device) with one module per expert: at full size about
    45k tensors and 1.25 TiB."""
    import torch

    with torch.device("meta"):
        return PerExpertDeepSeekV3(layers, experts).to(torch.bfloat16)


def covering_key(device_map: dict[str, Any], name: str) -> str | None:
    """The longest key of `device_map` that is `name` or ends at a dot boundary of it."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in device_map:
            return prefix
    return "" if "" in device_map else None


def tensor_bytes(model: Any) -> dict[str, int]:
    """Bytes of every parameter and buffer, a shared tensor counted once (at its first name)."""
    seen: set[int] = set()
    sizes: dict[str, int] = {}
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        sizes[name] = 0 if id(tensor) in seen else tensor.numel() * tensor.element_size()
        seen.add(id(tensor))
    return sizes


def placed_bytes(model: Any, device_map: dict[str, Any], ties: list[list[str]] = ()) -> dict[Any, int]:  # type: ignore[assignment]
    """Bytes per device of `device_map` on `model`, after checking that it covers every
    parameter and buffer, never splits a no-split block, and keeps each tie on one device.
    A tied key counts 0 bytes (its source is counted), as transformers counts it."""
    sizes = tensor_bytes(model)
    tied_keys = set(getattr(model, "all_tied_weights_keys", None) or {})
    per_device: dict[Any, int] = {}
    for name, size in sizes.items():
        key = covering_key(device_map, name)
        assert key is not None, f"{name} is not covered by {device_map}"
        device = device_map[key]
        per_device[device] = per_device.get(device, 0) + (0 if name in tied_keys else size)
    classes = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [name for name, module in model.named_modules() if name and type(module).__name__ in classes]
    for block in blocks:
        inside = [key for key in device_map if key.startswith(block + ".")]
        assert not inside, f"{block} is split: {inside}"
    groups = [[source, key] for key, source in (getattr(model, "all_tied_weights_keys", None) or {}).items()]
    for group in [*groups, *ties]:
        devices = {device_map[covering_key(device_map, name)] for name in group if name in sizes}
        assert len(devices) <= 1, f"tie {group} split over {devices}"
    return per_device


def off_gpu(per_device: dict[Any, int]) -> int:
    return sum(size for device, size in per_device.items() if device in OFF_GPU)


def fullest_gpu(per_device: dict[Any, int]) -> int:
    return max((size for device, size in per_device.items() if device not in OFF_GPU), default=0)
