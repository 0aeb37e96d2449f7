"""DeepSeek-V3 FP8 tensor names and device maps of three granularities, for the lookup benchmarks.

Names follow the released checkpoint (main model, without the multi-token-prediction layer):
61 layers, the first 3 dense, the other 58 MoE with 256 routed experts and one shared expert;
every FP8 projection has a `weight_scale_inv` next to its `weight`.
"""

from __future__ import annotations

LAYERS = 61
DENSE_LAYERS = 3
EXPERTS = 256
GPUS = 8

ATTENTION_PROJECTIONS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
ATTENTION_NORMS = ("q_a_layernorm", "kv_a_layernorm")
LAYER_NORMS = ("input_layernorm", "post_attention_layernorm")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
FP8 = ("weight", "weight_scale_inv")


def _fp8(prefix: str) -> list[str]:
    return [f"{prefix}.{leaf}" for leaf in FP8]


def layer_names(layer: int) -> list[str]:
    p = f"model.layers.{layer}"
    names: list[str] = []
    for proj in ATTENTION_PROJECTIONS:
        names += _fp8(f"{p}.self_attn.{proj}")
    names += [f"{p}.self_attn.{norm}.weight" for norm in ATTENTION_NORMS]
    names += [f"{p}.{norm}.weight" for norm in LAYER_NORMS]
    if layer < DENSE_LAYERS:
        for proj in MLP_PROJECTIONS:
            names += _fp8(f"{p}.mlp.{proj}")
        return names
    names += [f"{p}.mlp.gate.weight", f"{p}.mlp.gate.e_score_correction_bias"]
    for proj in MLP_PROJECTIONS:
        names += _fp8(f"{p}.mlp.shared_experts.{proj}")
    for expert in range(EXPERTS):
        for proj in MLP_PROJECTIONS:
            names += _fp8(f"{p}.mlp.experts.{expert}.{proj}")
    return names


def tensor_names() -> list[str]:
    """The 90,427 tensor names in checkpoint order."""
    names = ["model.embed_tokens.weight"]
    for layer in range(LAYERS):
        names += layer_names(layer)
    return [*names, "model.norm.weight", "lm_head.weight"]


def _gpu(layer: int) -> int:
    return layer * GPUS // LAYERS


def _edges(hf: dict[str, int | str]) -> dict[str, int | str]:
    return {"model.embed_tokens": 0, **hf, "model.norm": GPUS - 1, "lm_head": GPUS - 1}


def map_per_layer() -> dict[str, int | str]:
    """64 keys: one per decoder layer, plus embeddings, final norm and head."""
    return _edges({f"model.layers.{layer}": _gpu(layer) for layer in range(LAYERS)})


def map_per_submodule() -> dict[str, int | str]:
    """851 keys: each attention projection and norm, each layer norm, and the MLP's parts
    (dense projections; or router, shared-expert projections and the experts as one block)."""
    hf: dict[str, int | str] = {}
    for layer in range(LAYERS):
        p, gpu = f"model.layers.{layer}", _gpu(layer)
        for name in (*ATTENTION_PROJECTIONS, *ATTENTION_NORMS):
            hf[f"{p}.self_attn.{name}"] = gpu
        for norm in LAYER_NORMS:
            hf[f"{p}.{norm}"] = gpu
        if layer < DENSE_LAYERS:
            for proj in MLP_PROJECTIONS:
                hf[f"{p}.mlp.{proj}"] = gpu
        else:
            hf[f"{p}.mlp.gate"] = gpu
            for proj in MLP_PROJECTIONS:
                hf[f"{p}.mlp.shared_experts.{proj}"] = gpu
            hf[f"{p}.mlp.experts"] = gpu
    return _edges(hf)


def map_per_expert() -> dict[str, int | str]:
    """15,153 keys: each routed expert its own key, attention and norms per layer, the router
    and shared expert per MoE layer, the MLP per dense layer."""
    hf: dict[str, int | str] = {}
    for layer in range(LAYERS):
        p, gpu = f"model.layers.{layer}", _gpu(layer)
        hf[f"{p}.self_attn"] = gpu
        for norm in LAYER_NORMS:
            hf[f"{p}.{norm}"] = gpu
        if layer < DENSE_LAYERS:
            hf[f"{p}.mlp"] = gpu
            continue
        hf[f"{p}.mlp.gate"] = gpu
        hf[f"{p}.mlp.shared_experts"] = gpu
        for expert in range(EXPERTS):
            hf[f"{p}.mlp.experts.{expert}"] = (gpu + expert) % GPUS
    return _edges(hf)


def module_names(names: list[str]) -> list[str]:
    """Every module path above the tensor names (what `named_modules()` would list), root first."""
    seen: dict[str, None] = {"": None}
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            seen.setdefault(".".join(parts[:depth]), None)
    return list(seen)


if __name__ == "__main__":
    names = tensor_names()
    print(
        len(names), "names;", *(len(m()) for m in (map_per_layer, map_per_submodule, map_per_expert)), "keys"
    )
