"""Tiny models (2 layers, hidden 16-64) built from transformers' real config classes, for tests
that save them with `save_pretrained` and load them back. Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_TEXT = {
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 64,
}
_VISION_SIGLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 28,
    "patch_size": 14,
}


def _llama(tied: bool) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**_TEXT, tie_word_embeddings=tied))


def _mixtral() -> Any:
    from transformers import MixtralConfig, MixtralForCausalLM

    return MixtralForCausalLM(MixtralConfig(**_TEXT, num_local_experts=4, num_experts_per_tok=2))


def _qwen3_moe() -> Any:
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(**_TEXT, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    return Qwen3MoeForCausalLM(config)


def _gemma2() -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(**_TEXT))


def _gemma3() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config={**_TEXT, "model_type": "gemma3_text", "sliding_window": 16},
        vision_config={**_VISION_SIGLIP, "model_type": "siglip_vision_model"},
        mm_tokens_per_image=4,
        image_token_index=95,
        boi_token_index=93,
        eoi_token_index=94,
    )
    return Gemma3ForConditionalGeneration(config)


def _qwen2_vl() -> Any:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    rope = {"type": "mrope", "mrope_section": [1, 1, 2]}
    text = {**_TEXT, "model_type": "qwen2_vl_text", "rope_scaling": rope}
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2, "in_chans": 3}
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=95, video_token_id=94)
    return Qwen2VLForConditionalGeneration(config)


def _llava() -> Any:
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vision = {**_VISION_SIGLIP, "model_type": "clip_vision_model", "projection_dim": 32}
    text = {**_TEXT, "model_type": "llama"}
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=95)
    return LlavaForConditionalGeneration(config)


def _t5() -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    return T5ForConditionalGeneration(config)


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64))


def _phi3() -> Any:
    from transformers import Phi3Config, Phi3ForCausalLM

    text = {key: value for key, value in _TEXT.items() if key != "head_dim"}
    return Phi3ForCausalLM(Phi3Config(**text, pad_token_id=0))


BUILDERS: dict[str, Callable[[], Any]] = {
    "llama-tied": lambda: _llama(True),
    "llama": lambda: _llama(False),
    "mixtral": _mixtral,
    "qwen3-moe": _qwen3_moe,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "qwen2-vl": _qwen2_vl,
    "llava": _llava,
    "t5": _t5,
    "gpt2": _gpt2,
    "phi3": _phi3,
}


def build(name: str) -> Any:
    """The tiny model `name`, with seeded random weights, in eval mode."""
    import torch

    torch.manual_seed(0)
    model = BUILDERS[name]()
    return model.eval()


def inputs(name: str) -> dict[str, Any]:
    """Inputs for one forward pass of the tiny model `name` (text only; T5 with decoder ids)."""
    import torch

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    if name == "t5":
        return {"input_ids": ids, "decoder_input_ids": torch.tensor([[0, 3, 7]])}
    return {"input_ids": ids}
