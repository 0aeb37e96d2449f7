"""Tiny transformers models built in the tests (nothing is downloaded)."""

from __future__ import annotations

from typing import Any


def tiny_llama(layers: int, *, seed: int = 0, **config: Any) -> Any:
    """A `LlamaForCausalLM` with `layers` decoder layers and small default sizes (any config
    field may be overridden), its weights drawn from a fixed seed so that two builds are equal."""
    import torch
    import transformers

    settings: dict[str, Any] = {
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 32,
        "tie_word_embeddings": False,
    }
    settings.update(config)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=layers, **settings))
