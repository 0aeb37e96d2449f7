"""devicemap.integrations.transformers with `planning=True`: string maps planned by devicemap.
Tiny models of several architectures (built from real config classes, saved here) loaded with
every strategy, all on the CPU and offloaded to disk, against a plain load; real-size models
on the meta device, `_get_device_map` stock and planned on the same budgets."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
hf_accelerate = pytest.importorskip("transformers.integrations.accelerate")

from _planning_models import (  # noqa: E402
    GIB,
    covering_key,
    fullest_gpu,
    off_gpu,
    placed_bytes,
    real_size,
    tensor_bytes,
    tiny,
)
from devicemap.integrations import transformers as integration  # noqa: E402

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
ARCHITECTURES = ("llama-tied", "mixtral", "gpt2", "t5")
STOCK_GET_DEVICE_MAP = hf_accelerate._get_device_map


@pytest.fixture(autouse=True)
def offline_quiet_and_disabled(monkeypatch):
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    integration.disable()
    # accelerate warns about every GPU budget on a machine without GPUs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("transformers").setLevel(logging.ERROR)
        yield
    integration.disable()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Any]:
    """Each tiny architecture saved once: its directory, class, bytes, and plain-load output."""
    found = {}
    for arch in ARCHITECTURES:
        model = tiny(arch).eval()
        path = tmp_path_factory.mktemp(arch)
        model.save_pretrained(path)
        total = sum(tensor_bytes(model).values())
        found[arch] = (path, type(model), total, forward(model))
    return found


def forward(model: Any) -> Any:
    inputs = torch.arange(8).reshape(1, 8) % 64
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=inputs, decoder_input_ids=inputs[:, :4]).logits
        return model(inputs).logits


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("to_disk", [False, True])
def test_from_pretrained_gives_the_plain_output_with_and_without(
    saved, tmp_path, monkeypatch, arch, strategy, to_disk
):
    path, cls, total, expected = saved[arch]
    # All on the CPU, or a CPU budget of 60% of the model so that part goes to disk.
    max_memory = {"cpu": int(total * 0.6) if to_disk else 10 * total}

    def load(offload: str) -> Any:
        return cls.from_pretrained(
            path, device_map=strategy, max_memory=dict(max_memory), offload_folder=str(tmp_path / offload)
        ).eval()

    stock = load("stock")
    planned: list[str] = []
    original = integration._plan_for

    def spy(model: Any, device_map: str, *args: Any) -> Any:
        planned.append(device_map)
        return original(model, device_map, *args)

    monkeypatch.setattr(integration, "_plan_for", spy)
    with integration.enabled(planning=True):
        ours = load("ours")
    assert planned == [strategy]
    # transformers sets hf_device_map only for a map of more than one device.
    values = set(getattr(ours, "hf_device_map", {"": "cpu"}).values())
    assert values == ({"cpu", "disk"} if to_disk else {"cpu"})
    assert ("disk" in getattr(stock, "hf_device_map", {}).values()) == to_disk
    torch.testing.assert_close(forward(stock), expected)
    torch.testing.assert_close(forward(ours), expected)


def test_enable_without_planning_leaves_string_maps_to_transformers():
    model = tiny("llama-tied")
    with integration.enabled():
        assert hf_accelerate._get_device_map.__wrapped__ is STOCK_GET_DEVICE_MAP
        integration.enable(planning=True)
        assert hf_accelerate._get_device_map.__wrapped__ is not STOCK_GET_DEVICE_MAP
        planned = hf_accelerate._get_device_map(model, "sequential", {"cpu": 10**9}, None)
    # The block restored the state it found: enabled without planning, then disabled.
    assert hf_accelerate._get_device_map is STOCK_GET_DEVICE_MAP
    assert dict(planned) == {"": "cpu"}


def test_a_dict_map_is_left_as_given():
    model = tiny("llama-tied")
    device_map = {"model": "cpu", "lm_head": "cpu"}
    with integration.enabled(planning=True):
        assert dict(hf_accelerate._get_device_map(model, device_map, None, None)) == device_map


REAL_SIZES = ("llama-3-70b", "mixtral-8x7b", "qwen3-30b-a3b", "gemma-2-27b")
BUDGETS = {
    "8x80": {**{gpu: 80 * GIB for gpu in range(8)}, "cpu": 500 * GIB},
    "4x24": {**{gpu: 24 * GIB for gpu in range(4)}, "cpu": 500 * GIB},
    "2+80": {0: 2 * GIB, 1: 80 * GIB, "cpu": 500 * GIB},
    "2x24,cpu20": {0: 24 * GIB, 1: 24 * GIB, "cpu": 20 * GIB},
}


@pytest.fixture(scope="module", params=REAL_SIZES)
def meta_model(request) -> Any:
    return real_size(request.param)


def largest_offloaded(model: Any, device_map: dict[str, Any]) -> int:
    """Bytes of the largest map entry off the GPUs (what the main device copies in to run)."""
    sizes, _ = hf_accelerate.compute_module_sizes(model, only_modules=False)
    return max((sizes[key] for key, device in device_map.items() if device in ("cpu", "disk")), default=0)


def keeps_room(
    model: Any, device_map: dict[str, Any], per_device: dict[Any, int], budgets: dict[Any, int]
) -> bool:
    """Issue 14's rule: the main device keeps room to run its largest offloaded block. The main
    device as `dispatch_model` (accelerate 1.15) takes it: the first of the map's set of GPUs,
    the lowest id, wherever its entries sit in the map."""
    gpus = {device for device in device_map.values() if device not in ("cpu", "disk")}
    if not gpus or not off_gpu(per_device):
        return True
    main = next(iter(gpus))
    return budgets[main] - per_device.get(main, 0) >= largest_offloaded(model, device_map)


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("strategy", ["auto", "balanced_low_0", "sequential"])
def test_real_size_maps_against_the_stock_path(meta_model, budget, strategy):
    # The loading reserve is the one exception: the stock path is compared on the budgets
    # less the reserve (the budgets devicemap plans on).
    reserve = integration.loading_reserve(meta_model)
    budgets = {device: size - reserve * (device != "cpu") for device, size in BUDGETS[budget].items()}
    stock = dict(STOCK_GET_DEVICE_MAP(meta_model, strategy, dict(budgets), None))
    with integration.enabled(planning=True):
        ours = dict(hf_accelerate._get_device_map(meta_model, strategy, dict(BUDGETS[budget]), None))
    stock_bytes = placed_bytes(meta_model, stock)
    our_bytes = placed_bytes(meta_model, ours)  # covers all, no split block, ties together
    for device, size in our_bytes.items():
        if device != "disk":
            assert size <= budgets[device], (device, size)
    assert ("disk" in our_bytes) == ("disk" in stock_bytes) or off_gpu(our_bytes) <= off_gpu(stock_bytes)
    assert keeps_room(meta_model, ours, our_bytes, budgets)
    if keeps_room(meta_model, stock, stock_bytes, budgets):
        assert off_gpu(our_bytes) <= off_gpu(stock_bytes)
    if strategy != "sequential" and off_gpu(our_bytes) == off_gpu(stock_bytes):
        assert fullest_gpu(our_bytes) <= fullest_gpu(stock_bytes)


@pytest.mark.parametrize("strategy", ["auto", "balanced_low_0"])
def test_mixtral_on_four_26gib_gpus_fits_where_the_stock_path_spills(strategy):
    # transformers#47211's shape on transformers 5.24's own copy of get_balanced_memory: the
    # balanced caps leave the GPUs under-packed and the last layers go to the CPU. The stock
    # path is given the budgets less the loading reserve (3.5 GiB: a fused expert parameter
    # and its per-expert inputs), as devicemap plans on them.
    model = real_size("mixtral-8x7b")
    reserve = integration.loading_reserve(model)
    assert reserve == 2 * 8 * 2 * 14336 * 4096 * 2
    budgets = {**{gpu: 26 * GIB for gpu in range(4)}, "cpu": 500 * GIB}
    kept = {device: size - reserve if device != "cpu" else size for device, size in budgets.items()}
    stock = placed_bytes(model, dict(STOCK_GET_DEVICE_MAP(model, strategy, dict(kept), None)))
    assert off_gpu(stock) > 2 * GIB
    with integration.enabled(planning=True):
        ours = placed_bytes(model, dict(hf_accelerate._get_device_map(model, strategy, dict(budgets), None)))
    assert off_gpu(ours) == 0


class ResizingQuantizer:
    """A quantizer double that only resizes: 1 byte per element for the decoder layers' linear
    weights (as an 8-bit quantizer counts them), 10% of each GPU kept back, and the final map
    recorded where transformers asks the quantizer to validate it."""

    def __init__(self) -> None:
        self.validated: list[dict[str, Any]] = []

    def param_element_size(self, model: Any, name: str, param: Any) -> int:
        quantized = ".layers." in name and name.endswith("proj.weight")
        return 1 if quantized else param.element_size()

    def update_weight_conversions(self, conversions: list[Any], model: Any) -> list[Any]:
        return conversions

    def adjust_max_memory(self, max_memory: dict[Any, Any]) -> dict[Any, Any]:
        return {
            device: budget * 0.9 if isinstance(device, int) else budget
            for device, budget in max_memory.items()
        }

    def validate_environment(self, device_map: dict[str, Any]) -> None:
        self.validated.append(dict(device_map))


@pytest.mark.parametrize("strategy", ["auto", "sequential"])
def test_the_quantizers_view_of_sizes_and_budgets(strategy):
    model = real_size("llama-3-70b")  # 131 GiB in bf16; its layers' projections about half in 8 bits
    budgets = {0: 40 * GIB, 1: 40 * GIB, "cpu": 500 * GIB}
    stock_quantizer, quantizer = ResizingQuantizer(), ResizingQuantizer()
    stock = dict(STOCK_GET_DEVICE_MAP(model, strategy, dict(budgets), stock_quantizer))
    with integration.enabled(planning=True):
        ours = dict(hf_accelerate._get_device_map(model, strategy, dict(budgets), quantizer))
    assert quantizer.validated == [ours]
    assert stock_quantizer.validated == [stock]
    sizes, _ = hf_accelerate.compute_module_sizes(model, quantizer, only_modules=False)
    per_gpu = {gpu: sum(sizes[key] for key, device in ours.items() if device == gpu) for gpu in (0, 1)}
    # Budgets held as the quantizer adjusted them; the 8-bit view fits ~70 of 80 layers where the
    # bf16 view would fit under half of them.
    assert all(size <= 0.9 * budgets[gpu] for gpu, size in per_gpu.items())
    off = sum(sizes[key] for key, device in ours.items() if device in ("cpu", "disk"))
    stock_off = sum(sizes[key] for key, device in stock.items() if device in ("cpu", "disk"))
    assert off <= stock_off
    assert sum(per_gpu.values()) > 60 * GIB


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_one_walk_reads_what_named_parameters_and_named_buffers_give(arch):
    from devicemap import _core
    from devicemap._plan import _no_split_of

    model = tiny(arch)
    classes = sorted(model._no_split_modules or ())
    assert _core._module_walk(model, None, classes) == (
        *_core._module_sizes(model),
        _no_split_of(model) or [],
    )
    assert _core._module_walk(model, torch.float16)[:2] == _core._module_sizes(model, torch.float16)


def test_no_placement_params_of_a_block_that_fits_no_gpu_are_left_to_the_loader():
    # As transformers treats `_no_placement_params`: with their block unless the block fits on
    # no GPU; then the rest of the block is placed and the parameters are left out of the map.
    # Llama-3-70B's layout, 4 layers of Mistral-7B's width.
    shape = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "head_dim": 128}
    model = real_size("llama-3-70b", vocab_size=32000, num_hidden_layers=4, **shape)
    mib = 2**20
    assert sum(tensor_bytes(model.model.layers[0]).values()) == 416 * mib + 16 * 1024  # 336 MiB of MLP
    projections = ["mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
    model._no_placement_params = projections
    left_out = {f"model.layers.{i}.{p}" for i in range(4) for p in projections}
    names = set(tensor_bytes(model))
    small = {**dict.fromkeys(range(4), 400 * mib), "cpu": 10**10}
    roomy = {**dict.fromkeys(range(4), 800 * mib), "cpu": 10**10}
    stock = dict(STOCK_GET_DEVICE_MAP(model, "auto", dict(small), None))
    with integration.enabled(planning=True):
        ours = dict(hf_accelerate._get_device_map(model, "auto", dict(small), None))
        placed_bytes(model, dict(hf_accelerate._get_device_map(model, "auto", dict(roomy), None)))
    assert {name for name in names if covering_key(stock, name) is None} == left_out
    assert {name for name in names if covering_key(ours, name) is None} == left_out
    # The rest of each layer is on one GPU (transformers' own map splits a layer over two).
    for i in range(4):
        rest = {
            ours[covering_key(ours, name)]
            for name in names - left_out
            if name.startswith(f"model.layers.{i}.")
        }
        assert len(rest) == 1, rest
        assert rest <= {0, 1, 2, 3}, rest


def test_a_load_reports_its_uncovered_names_in_one_message(saved, caplog):
    # Issue 14: "covers N tensor name(s) with no key" came once per name that transformers
    # looked up one at a time (two messages for a Llama's two rotary buffers).
    path, cls, _, expected = saved["llama-tied"]
    device_map = {"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    with integration.enabled(), caplog.at_level(logging.WARNING, logger="devicemap.integrations"):
        model = cls.from_pretrained(path, device_map=device_map).eval()
    messages = [r.getMessage() for r in caplog.records if r.name == "devicemap.integrations"]
    assert len(messages) == 1, messages
    assert "covers 2 tensor name(s) with no key" in messages[0]
    assert "'model.rotary_emb.inv_freq'" in messages[0]
    assert "'model.rotary_emb.original_inv_freq'" in messages[0]
    torch.testing.assert_close(forward(model), expected)


def test_the_loading_reserve_of_a_fused_expert_model(saved):
    """Mixtral's checkpoint keeps one tensor per expert; the loader merges them into the fused
    `gate_up_proj` on the parameter's device. The reserve (the largest such merge's inputs
    plus its output) comes off every GPU's budget, and the load gives the plain output."""
    from safetensors import safe_open

    path, cls, _, expected = saved["mixtral"]
    with safe_open(str(path / "model.safetensors"), "pt") as checkpoint:
        keys = set(checkpoint.keys())
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in keys  # the load converts
    model = tiny("mixtral")
    fused = max(bytes_ for name, bytes_ in tensor_bytes(model).items() if name.endswith("gate_up_proj"))
    reserve = integration.loading_reserve(model)
    assert reserve == 2 * fused
    report = integration.plan_report_for(model, "auto", {0: 10**6, 1: 10**6, "cpu": 10**9})
    budgets = {row["device"]: row["budget"] for row in report.devices}
    assert budgets["cuda:0"] == budgets["cuda:1"] == 10**6 - reserve
    assert budgets["cpu"] == 10**9
    assert integration.loading_reserve(tiny("gpt2")) == 0  # no conversions, no reserve
    assert integration.loading_reserve(torch.nn.Sequential(model)) == 0  # not a loader's model
    with integration.enabled(planning=True):
        ours = cls.from_pretrained(path, device_map="auto", max_memory={"cpu": 10**9}).eval()
    torch.testing.assert_close(forward(ours), expected)
