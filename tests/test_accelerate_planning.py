"""devicemap.integrations.accelerate with `planning=True`: devicemap's `infer_auto_device_map`
and `get_balanced_memory` against accelerate's on real-size meta models, installed where
accelerate's users bind them, and used by `load_checkpoint_and_dispatch` end to end."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
big_modeling = pytest.importorskip("accelerate.big_modeling")
acc_modeling = pytest.importorskip("accelerate.utils.modeling")

from _planning_models import (  # noqa: E402
    GIB,
    fullest_gpu,
    off_gpu,
    per_expert_dsv3,
    placed_bytes,
    real_size,
    tensor_bytes,
    tiny,
)
from devicemap.integrations import UnsupportedVersionError  # noqa: E402
from devicemap.integrations import accelerate as integration  # noqa: E402

STOCK_INFER = acc_modeling.infer_auto_device_map
STOCK_BALANCED = acc_modeling.get_balanced_memory
STOCK_CHECK = acc_modeling.check_device_map
BUDGETS = {
    "8x80": {**{gpu: 80 * GIB for gpu in range(8)}, "cpu": 500 * GIB},
    "4x24": {**{gpu: 24 * GIB for gpu in range(4)}, "cpu": 500 * GIB},
    "2x24,cpu20": {0: 24 * GIB, 1: 24 * GIB, "cpu": 20 * GIB},
}


@pytest.fixture(autouse=True)
def disabled():
    integration.disable()
    with warnings.catch_warnings():
        # accelerate warns about every GPU budget on a machine without GPUs.
        warnings.simplefilter("ignore")
        yield
    integration.disable()


@pytest.fixture(scope="module", params=["llama-3-70b", "mixtral-8x7b", "gemma-2-27b"])
def meta_model(request) -> Any:
    return real_size(request.param)


def ties(model: Any) -> list[list[str]]:
    return acc_modeling.find_tied_parameters(model)


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_infer_auto_device_map_against_accelerate(meta_model, budget):
    budgets = BUDGETS[budget]
    no_split = list(meta_model._no_split_modules)
    stock = STOCK_INFER(meta_model, dict(budgets), no_split)
    ours = integration.infer_auto_device_map(meta_model, dict(budgets), no_split)
    assert type(ours) is OrderedDict
    STOCK_CHECK(meta_model, ours)  # what dispatch_model checks: no uncovered tensor
    stock_bytes = placed_bytes(meta_model, dict(stock), ties(meta_model))
    our_bytes = placed_bytes(meta_model, dict(ours), ties(meta_model))
    for device, size in our_bytes.items():
        if device != "disk":
            assert size <= budgets[device], (device, size)
    assert off_gpu(our_bytes) <= off_gpu(stock_bytes)


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_balanced_pair_against_accelerate(meta_model, budget):
    budgets = BUDGETS[budget]
    no_split = list(meta_model._no_split_modules)
    stock_budgets = STOCK_BALANCED(meta_model, dict(budgets), no_split)
    stock = placed_bytes(meta_model, dict(STOCK_INFER(meta_model, stock_budgets, no_split)), ties(meta_model))
    our_budgets = integration.get_balanced_memory(meta_model, dict(budgets), no_split)
    assert our_budgets.keys() == budgets.keys()
    assert all(our_budgets[device] <= budgets[device] for device in budgets)
    ours = placed_bytes(
        meta_model,
        dict(integration.infer_auto_device_map(meta_model, our_budgets, no_split)),
        ties(meta_model),
    )
    assert off_gpu(ours) <= off_gpu(stock)
    if off_gpu(ours) == off_gpu(stock):
        assert fullest_gpu(ours) <= fullest_gpu(stock)
    # accelerate's own infer_auto_device_map on devicemap's budgets spills no more than on its own.
    theirs_on_ours = placed_bytes(
        meta_model, dict(STOCK_INFER(meta_model, our_budgets, no_split)), ties(meta_model)
    )
    assert off_gpu(theirs_on_ours) <= off_gpu(stock)


def test_enable_installs_the_planners_where_accelerate_binds_them_and_disable_restores():
    import accelerate.utils

    holders = (acc_modeling, big_modeling, accelerate.utils)
    integration.enable()
    assert big_modeling.infer_auto_device_map is STOCK_INFER  # lookups only
    integration.enable(planning=True)
    for module in holders:
        assert module.infer_auto_device_map is integration.infer_auto_device_map, module
        assert module.get_balanced_memory is integration.get_balanced_memory, module
        assert module.check_device_map is integration.check_device_map, module
    integration.disable()
    for module in holders:
        assert module.infer_auto_device_map is STOCK_INFER, module
        assert module.get_balanced_memory is STOCK_BALANCED, module
        assert module.check_device_map is STOCK_CHECK, module


def test_an_unsupported_version_is_refused_for_planning(monkeypatch):
    def infer_auto_device_map(model, max_memory=None):  # a changed signature
        raise AssertionError

    monkeypatch.setattr(acc_modeling, "infer_auto_device_map", infer_auto_device_map)
    with pytest.raises(
        UnsupportedVersionError, match=r"accelerate\.utils\.modeling\.infer_auto_device_map takes"
    ):
        integration.enable(planning=True)
    assert not integration.is_enabled()
    assert acc_modeling.check_device_map is STOCK_CHECK
    integration.enable()  # lookups only do not need it
    assert acc_modeling.check_device_map is integration.check_device_map


@pytest.mark.parametrize("to_disk", [False, True])
def test_load_checkpoint_and_dispatch_gives_the_plain_output(tmp_path, to_disk):
    model = tiny("llama-tied").eval()
    model.save_pretrained(tmp_path / "model")
    inputs = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        expected = model(inputs).logits
    total = sum(tensor_bytes(model).values())
    budgets = {"cpu": int(total * 0.6) if to_disk else 10 * total}
    with accelerate.init_empty_weights():
        empty = transformers.LlamaForCausalLM(model.config)
    empty.tie_weights()
    calls: list[Any] = []
    original = integration._planning.plan

    def spy(*args: Any) -> Any:
        calls.append(args[2])
        return original(*args)

    with pytest.MonkeyPatch.context() as patch, integration.enabled(planning=True):
        patch.setattr(integration._planning, "plan", spy)
        loaded = accelerate.load_checkpoint_and_dispatch(
            empty,
            str(tmp_path / "model"),
            device_map="auto",
            max_memory=budgets,
            no_split_module_classes=["LlamaDecoderLayer"],
            offload_folder=str(tmp_path / "offload"),
        )
    assert calls  # devicemap planned the map
    assert ("disk" in set(getattr(loaded, "hf_device_map", {}).values())) == to_disk
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs).logits, expected)


def test_the_per_expert_moe_spill():
    # The issue's case on accelerate 1.15's pair: a DeepSeek-V3-shaped model with one module per
    # expert (here 8 experts a layer, 70 GiB) fits on 16 x 5 GiB, but get_balanced_memory's
    # buffer is sized from the first (dense) layer, so the caps under-pack the GPUs and
    # infer_auto_device_map pushes the head to the CPU. At full size (256 experts, 16 x 96 GiB)
    # that is 216 GiB (benches/bench_integration_planning.py).
    model = per_expert_dsv3(61, 8)
    budgets = {**dict.fromkeys(range(16), 5 * GIB), "cpu": 500 * GIB}
    no_split = ["DecoderLayer"]
    stock = STOCK_INFER(model, STOCK_BALANCED(model, dict(budgets), no_split), no_split)
    ours = integration.infer_auto_device_map(
        model, integration.get_balanced_memory(model, dict(budgets), no_split), no_split
    )
    assert off_gpu(placed_bytes(model, dict(stock))) > GIB
    assert off_gpu(placed_bytes(model, dict(ours))) == 0


NO_SPLIT = {
    "llama-tied": "LlamaDecoderLayer",
    "mixtral": "MixtralDecoderLayer",
    "gpt2": "GPT2Block",
    "t5": "T5Block",
}


@pytest.mark.parametrize("arch", list(NO_SPLIT))
def test_clean_result_false_lists_what_accelerate_lists(arch):
    from devicemap.integrations import _compiled

    model = tiny(arch)
    total = sum(tensor_bytes(model).values())
    no_split = [NO_SPLIT[arch]]
    # One device; a GPU for half the model and the CPU (both planners place alike there); and
    # two GPUs, the CPU and the disk (the placements differ: the map must still be the plan's).
    for budgets in ({0: 10 * total, "cpu": 10 * total}, {0: total // 2, "cpu": 10 * total}):
        stock = STOCK_INFER(model, dict(budgets), no_split_module_classes=no_split, clean_result=False)
        ours = integration.infer_auto_device_map(
            model, dict(budgets), no_split_module_classes=no_split, clean_result=False
        )
        assert isinstance(ours, OrderedDict)
        assert dict(ours) == dict(stock)
        assert "" not in ours
    budgets = {0: total // 3, 1: total // 3, "cpu": total // 5}
    compact = integration.infer_auto_device_map(model, dict(budgets), no_split_module_classes=no_split)
    ours = integration.infer_auto_device_map(
        model, dict(budgets), no_split_module_classes=no_split, clean_result=False
    )
    assert len(ours) > len(compact)
    STOCK_CHECK(model, dict(ours))  # covers every tensor
    names = list(tensor_bytes(model))
    assert _compiled.expand(dict(ours), names) == _compiled.expand(dict(compact), names)


@pytest.mark.parametrize(
    "dtype", [None, torch.float32, torch.bfloat16, torch.float16, torch.int8, "int8", "float8_e4m3fn"]
)
def test_dtype_sizes_tensors_as_accelerates_compute_module_sizes(dtype):
    """accelerate's `dtype` never grows a floating-point tensor (its size is the smaller of the
    two), takes integer dtypes (`torch.int8` sizes an 8-bit load) and leaves integer tensors as
    stored; devicemap's pair counts the same bytes per tensor."""
    model = tiny("llama-tied").to(torch.bfloat16)
    model.register_buffer("steps", torch.zeros(7, dtype=torch.int64))
    model.register_buffer("scale", torch.zeros(5, dtype=torch.float32))
    special = {"model.norm.weight": torch.float32}
    stock = acc_modeling.compute_module_sizes(model, dtype=dtype, special_dtypes=special)
    sizes, _, _ = integration._sizes(model, dtype, special, None)
    counted = {name: size for name, size in sizes.items() if size}
    assert counted == {name: stock[name] for name in counted}
    # Every tensor is counted but a tied one's second name (its bytes are its source's).
    assert set(sizes) - set(counted) == {"lm_head.weight"}
    weight = model.get_parameter("model.layers.0.mlp.up_proj.weight")
    per_element = {torch.int8: 1, "int8": 1, "float8_e4m3fn": 1}.get(dtype, 2)  # bf16 never grows
    assert counted["model.layers.0.mlp.up_proj.weight"] == weight.numel() * per_element
    assert counted["steps"] == 7 * 8  # integers as stored
