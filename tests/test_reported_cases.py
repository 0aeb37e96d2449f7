"""The reported cases of issue 15 that still fail on the installed stock path, each on the copy
that fails (transformers' own `_get_device_map`, or accelerate's pair), and planned by devicemap
with `enable(planning=True)`. Meta models, one config object each; no weights."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
acc_modeling = pytest.importorskip("accelerate.utils.modeling")
hf_accelerate = pytest.importorskip("transformers.integrations.accelerate")
qwen4_exp = pytest.importorskip("transformers.models.qwen4_exp.modeling_qwen4_exp")

from _planning_models import GIB, fullest_gpu, off_gpu, tensor_bytes  # noqa: E402
from devicemap.integrations import accelerate as dm_accelerate  # noqa: E402
from devicemap.integrations import transformers as dm_transformers  # noqa: E402

MIB = 2**20


# accelerate warns about every GPU budget on a machine without GPUs.
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def disabled_after():
    yield
    dm_transformers.disable()
    dm_accelerate.disable()


def loaded_bytes(model: Any, device_map: dict[str, Any]) -> dict[Any, int]:
    """Bytes per device where transformers' loader puts each tensor under `device_map` (its own
    `expand_device_map`: a tensor no key covers, such as a no-placement param, goes to "cpu")."""
    sizes = tensor_bytes(model)
    per_device: dict[Any, int] = {}
    for name, device in hf_accelerate.expand_device_map(device_map, list(sizes)).items():
        per_device[device] = per_device.get(device, 0) + sizes[name]
    return per_device


def qwen4_exp_with_the_reported_table() -> Any:
    """Qwen4-Exp at the config class's defaults (40 layers, 512 experts), PLE on layer 0 with the
    n-gram table the report names (~95 GiB in bf16: 400M rows of 128)."""
    from transformers.models.qwen4_exp.configuration_qwen4_exp import Qwen4ExpTextConfig

    config = Qwen4ExpTextConfig(
        ple_layer_ids=[1],
        ngram_vocab_size_base=25_000_000,
        eos_token_id=248044,
        indexer_n_heads=16,
        indexer_kv_heads=1,
        indexer_head_dim=256,
        indexer_budget=2048,
        indexer_compress_ratio=4,
    )
    with torch.device("meta"):
        return qwen4_exp.Qwen4ExpForCausalLM(config).to(torch.bfloat16)


@pytest.mark.parametrize("strategy", ["auto", "balanced_low_0"])
def test_transformers_48756_no_placement_table_inflates_the_balanced_budgets(strategy):
    model = qwen4_exp_with_the_reported_table()
    table = "model.layers.0.ple.ple_embedding.ngram_embedding.weight"
    sizes = tensor_bytes(model)
    assert 95 * GIB < sizes[table] < 96 * GIB  # its block fits no 80 GiB GPU
    budgets = {**dict.fromkeys(range(8), 80 * GIB), "cpu": 1000 * GIB}
    no_split = model._no_split_modules
    low_zero = strategy == "balanced_low_0"
    balanced = hf_accelerate.get_balanced_memory(model, dict(budgets), no_split, None, low_zero)
    stock = loaded_bytes(model, hf_accelerate._get_device_map(model, strategy, dict(budgets), None))
    with dm_transformers.enabled(planning=True):
        ours = loaded_bytes(model, hf_accelerate._get_device_map(model, strategy, dict(budgets), None))
    # The report: the table counts in the total and (its block no-split) in the buffer, so every
    # balanced budget is the physical limit, and the fill packs one GPU to it (78.3 of 80 GiB,
    # 1.7 GiB left for the loader's conversions) while 5 of 8 GPUs stay empty.
    assert all(balanced[gpu] == 80 * GIB for gpu in range(1 if low_zero else 0, 8))
    assert fullest_gpu(stock) > 0.95 * 80 * GIB
    assert sum(1 for gpu in range(8) if stock.get(gpu, 0) > 0) == 2
    # Planned: the table left to the loader exactly as stock leaves it (the CPU), the rest
    # (126 GiB) balanced over the GPUs the strategy uses: none fuller than 1/7 of it + a layer.
    assert off_gpu(ours) == off_gpu(stock) == sizes[table]
    placed = sum(sizes.values()) - sizes[table]
    assert fullest_gpu(ours) < placed / 7 + 4 * GIB < 0.3 * fullest_gpu(stock)
    assert sum(1 for gpu in range(8) if ours.get(gpu, 0) > 0) == (7 if low_zero else 8)


def quantized_large_vocabulary() -> tuple[Any, dict[str, Any]]:
    """Qwen3-0.6B's shape, untied: a 152k vocabulary whose embedding and head (297 MiB each in
    bf16) stay unquantized while the layers' matrices are int8 (15 MiB a layer), as accelerate
    is told it with `special_dtypes`."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    special = {
        name: torch.int8
        for name, param in model.named_parameters()
        if name.startswith("model.layers.") and param.dim() == 2
    }
    return model, special


def accelerate_pair(model: Any, budgets: dict[Any, int], **sizing: Any) -> dict[Any, int]:
    """accelerate's `get_balanced_memory` then `infer_auto_device_map`, by the names accelerate's
    users call (devicemap's while `enable(planning=True)`), with `sizing` (`dtype`,
    `special_dtypes`); bytes per device as accelerate counts."""
    kwargs = {"no_split_module_classes": ["Qwen3DecoderLayer"], **sizing}
    balanced = acc_modeling.get_balanced_memory(model, dict(budgets), low_zero=False, **kwargs)
    device_map = acc_modeling.infer_auto_device_map(model, max_memory=balanced, **kwargs)
    sizes = acc_modeling.compute_module_sizes(model, **sizing)
    per_device: dict[Any, int] = {}
    for key, device in device_map.items():
        per_device[device] = per_device.get(device, 0) + sizes[key]
    assert sum(per_device.values()) == sizes[""]
    return per_device


@pytest.mark.parametrize("form", ["special_dtypes", "dtype"])
@pytest.mark.parametrize("budget_mib", [600, 14 * 1024])
def test_accelerate_3244_large_unquantized_embedding_skips_the_first_gpu(budget_mib, form):
    model, special = quantized_large_vocabulary()
    if form == "special_dtypes":
        sizing = {"special_dtypes": special}
    else:  # how 8-bit loads call it: int8 for all, the unquantized ones named in bf16
        kept = ["model.embed_tokens.weight", "lm_head.weight"]
        sizing = {"dtype": torch.int8, "special_dtypes": dict.fromkeys(kept, torch.bfloat16)}
    budgets = {0: budget_mib * MIB, 1: budget_mib * MIB, "cpu": 100 * GIB}
    stock = accelerate_pair(model, budgets, **sizing)
    with dm_accelerate.enabled(planning=True):
        ours = accelerate_pair(model, budgets, **sizing)
    # The report: GPU 0's balanced cap (526 MiB) less the room kept for the largest layer (the
    # 297 MiB embedding) cannot take the embedding, so GPU 0 gets nothing; on 2 x 600 MiB the
    # rest spills 402 MiB to the CPU, on 2 x 14 GiB the map is {"": 1}.
    assert stock.get(0, 0) == 0
    assert (off_gpu(stock) > 400 * MIB) == (budget_mib == 600)
    # Planned: both GPUs used (507 MiB each), nothing off the GPUs.
    assert off_gpu(ours) == 0
    assert ours.get(0, 0) > 400 * MIB
    assert abs(ours[0] - ours[1]) < 5 * MIB
    assert fullest_gpu(ours) < fullest_gpu(stock)
