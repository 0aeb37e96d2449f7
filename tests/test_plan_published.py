"""Plans of meta models at published sizes, against the stock path on the same model and budgets.

Each architecture's published config is in `tests/_planning_models.py`'s `CONFIGS` (nothing is
downloaded) and its model built on the meta device from the real config class.
`devicemap.plan_report(model, budgets, strategy)` is compared with transformers'
`_get_device_map` (which calls its own `get_balanced_memory` and `infer_auto_device_map`) and
with accelerate's `infer_auto_device_map`, for budgets from roomy to very tight: every parameter
and buffer covered (`accelerate.utils.check_device_map`), tied weights on one device, no
no-split module split, budgets held, and off-GPU bytes under the tight-budget rule
(docs/planning.md): no more than the stock map's, except where the stock map leaves its main
device without the room to run its largest offloaded block, and then no more than that map with
blocks moved off its main device until it has the room (one block where it ends just short); our
main device always keeps that room. For `balanced`, our fullest GPU is no fuller than stock
`sequential`'s, and no fuller than stock `balanced`'s where we keep no more on the GPUs than it
does.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

import devicemap
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
stock_accelerate = pytest.importorskip("transformers.integrations.accelerate")

from _planning_models import CONFIGS, GIB, real_size  # noqa: E402

OFF = ("cpu", "disk")


MODELS = list(CONFIGS)


class Meta:
    """A meta model and what the checks read from it once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = real_size(name)
        sizes, tied = devicemap._core._module_sizes(self.model)
        self.sizes: dict[str, int] = dict(sizes)
        self.tied: list[list[str]] = [list(group) for group in tied]
        self.total = sum(self.sizes.values())
        classes = set(self.model._no_split_modules or [])
        modules = dict(self.model.named_modules())
        self.no_split = [
            name
            for name, module in modules.items()
            if type(module).__name__ in classes
            and not any(type(modules[o]).__name__ in classes for o in _parents(name))
        ]
        outermost = set(self.no_split)
        self.block_of = {
            name: next((p for p in _parents(name) if p in outermost), name.rpartition(".")[0])
            for name in self.sizes
        }
        # Modules holding buffers and no parameters (rotary embeddings): placed with the last
        # parameters here, in module order by the stock path (docs/planning.md).
        self.buffer_only = sum(
            b.numel() * b.element_size()
            for module in modules.values()
            if not any(True for _ in module.parameters(recurse=False))
            and not any(True for _ in module.parameters())
            for b in module.buffers(recurse=False)
        )


def _parents(name: str) -> list[str]:
    """The modules above `name`, outermost first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


_built: dict[str, Meta] = {}


@pytest.fixture(scope="module", params=MODELS)
def meta(request: pytest.FixtureRequest) -> Meta:
    if request.param not in _built:
        _built[request.param] = Meta(request.param)
    return _built[request.param]


def key_of(hf: dict[str, Any], name: str) -> str:
    """The one key of a compact map that covers `name` (and no other key covers it)."""
    parts = name.split(".")
    covering = [k for k in [".".join(parts[:i]) for i in range(len(parts), 0, -1)] + [""] if k in hf]
    assert len(covering) == 1, f"{name} is covered by {covering}"
    return covering[0]


def loads(hf: dict[str, Any], sizes: dict[str, int]) -> dict[Any, int]:
    used: dict[Any, int] = defaultdict(int)
    for name, size in sizes.items():
        used[hf[key_of(hf, name)]] += size
    return used


def blocks(hf: dict[str, Any], meta: Meta) -> dict[str, tuple[Any, int]]:
    """Device and bytes per block: the outermost no-split module, else the tensor's module."""
    out: dict[str, tuple[Any, int]] = {}
    for name, size in meta.sizes.items():
        block = meta.block_of[name]
        device, bytes_ = out.get(block, (hf[key_of(hf, name)], 0))
        out[block] = (device, bytes_ + size)
    return out


def main_device(hf: dict[str, Any]) -> int | None:
    """`dispatch_model`'s main device: the first of the set of GPUs in the map (the lowest)."""
    gpus = {d for d in hf.values() if d not in OFF}
    return min(gpus) if gpus else None


def short(hf: dict[str, Any], meta: Meta, budgets: dict[Any, int]) -> tuple[int, list] | None:
    """When the main device lacks the room to run the largest offloaded block: by how much,
    and the blocks on it (name, bytes); else None."""
    main = main_device(hf)
    if main is None:
        return None
    per_block = blocks(hf, meta)
    largest = max((b for d, b in per_block.values() if d in OFF), default=0)
    left = budgets[main] - loads(hf, meta.sizes)[main]
    if left >= largest:
        return None
    return largest - left, [(n, b) for n, (d, b) in per_block.items() if d == main]


def restored(hf: dict[str, Any], meta: Meta, budgets: dict[Any, int]) -> dict[str, Any]:
    """`hf` (as a map per tensor) with blocks moved off its main device to the CPU, one at a
    time (the smallest that gives the room, else the largest), until the main device has the
    room to run the largest offloaded block: one block where the stock map ends just short."""
    flat = {name: hf[key_of(hf, name)] for name in meta.sizes}
    while (lack := short(flat, meta, budgets)) is not None:
        missing, on_main = lack
        enough = [(b, n) for n, b in on_main if b >= missing]
        _, block = min(enough) if enough else max((b, n) for n, b in on_main)
        for name in meta.sizes:
            if meta.block_of[name] == block:
                flat[name] = "cpu"
    return flat


def check_valid(hf: dict[str, Any], meta: Meta) -> None:
    """Covers every tensor (as accelerate checks it), ties and no-split blocks whole."""
    accelerate.utils.check_device_map(meta.model, hf)
    for group in meta.tied:
        assert len({hf[key_of(hf, n)] for n in group}) == 1, group
    for block in meta.no_split:
        inside = {hf[key_of(hf, n)] for n in meta.sizes if n.startswith(block + ".")}
        assert len(inside) <= 1, (block, inside)


def off_gpu(hf: dict[str, Any], meta: Meta) -> int:
    return sum(b for d, b in loads(hf, meta.sizes).items() if d in OFF)


def stock_map(meta: Meta, strategy: str, budgets: dict[Any, int]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(stock_accelerate._get_device_map(meta.model, strategy, dict(budgets), None))


def check_rule(ours: dict[str, Any], stock: dict[str, Any], meta: Meta, budgets: dict) -> None:
    """The tight-budget rule, both halves."""
    assert short(ours, meta, budgets) is None, "our main device lacks the room for offloaded blocks"
    # `dispatch_model`'s own reading of the main device (accelerate 1.15: the first of the
    # map's set of GPUs) is the lowest GPU, the one `short` checked; GPU 0 may hold a block out
    # of order (a small later block beside the room), so the first GPU in the map's order may
    # differ.
    gpus = set(ours.values()) - set(OFF)
    assert (next(iter(gpus)) if gpus else None) == main_device(ours)
    allowed = off_gpu(restored(stock, meta, budgets), meta) + meta.buffer_only
    assert off_gpu(ours, meta) <= allowed, (off_gpu(ours, meta) / GIB, allowed / GIB)


def budget_sets(meta: Meta) -> list[dict[Any, int]]:
    """From roomy to very tight: 2 GPUs holding about 3/4, 1/3 and 1/10 of the model, 4 GPUs
    at 1/40 each, and 4 GPUs of 1.9 times the largest block (where a large first block and the
    room to run an offloaded block no longer fit one GPU together); the CPU takes the rest, a
    disk stands behind it."""
    largest = max(b for _, b in blocks({"": 0}, meta).values())
    out = []
    for gpus, each in [
        (2, meta.total * 3 // 8),
        (2, meta.total // 6),
        (2, meta.total // 20),
        (4, meta.total // 40),
        (4, largest * 19 // 10),
    ]:
        budgets: dict[Any, int] = {i: each for i in range(gpus)}
        budgets["cpu"] = meta.total // 2
        budgets["disk"] = 4 * meta.total
        out.append(budgets)
    return out


def test_the_built_model_has_the_published_parameters(meta: Meta) -> None:
    """The table's fields build the published model: its parameter count (shared tensors once)
    is the published weights' count, so no size-setting field (head_dim, a tower's head, the
    tie flag) is missing or wrong."""
    assert sum(p.numel() for p in meta.model.parameters()) == CONFIGS[meta.name].parameters


def check_against_stock(report: Any, meta: Meta, strategy: str, budgets: dict[Any, int]) -> None:
    """One plan of `meta`'s model (from the module or from its checkpoint) against the stock
    path on the same budgets: valid, within budgets, the tight-budget rule, and for `balanced`
    the fullest GPU."""
    assert report.fits
    ours = report.to_hf()
    check_valid(ours, meta)
    for d in report.devices:
        assert d["bytes"] + d["reserved"] <= d["budget"], d
    for device, used in loads(ours, meta.sizes).items():
        assert used <= budgets[device], (device, used)
    stock = stock_map(meta, strategy, budgets)
    check_rule(ours, stock, meta, budgets)
    if strategy == "balanced":
        fullest = max((b for d, b in loads(ours, meta.sizes).items() if d not in OFF), default=0)
        sequential = stock_map(meta, "sequential", budgets)
        gpu_loads = [b for d, b in loads(sequential, meta.sizes).items() if d not in OFF]
        assert fullest <= max(gpu_loads, default=0) or off_gpu(ours, meta) < off_gpu(sequential, meta)
        stock_gpu = [b for d, b in loads(stock, meta.sizes).items() if d not in OFF]
        if off_gpu(ours, meta) >= off_gpu(stock, meta):
            assert fullest <= max(stock_gpu, default=0)


@pytest.mark.parametrize("strategy", ["sequential", "balanced", "balanced_low_0"])
def test_published_sizes_against_the_stock_path(meta: Meta, strategy: str) -> None:
    for budgets in budget_sets(meta):
        check_against_stock(devicemap.plan_report(meta.model, budgets, strategy), meta, strategy, budgets)


def test_against_accelerates_own_infer_auto_device_map(meta: Meta) -> None:
    """accelerate's `infer_auto_device_map` (not transformers' copy) on the same budgets."""
    for budgets in budget_sets(meta)[1:3]:
        ours = devicemap.plan_report(meta.model, budgets, "sequential").to_hf()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = accelerate.infer_auto_device_map(
                meta.model,
                max_memory=dict(budgets),
                no_split_module_classes=meta.model._no_split_modules,
            )
        check_rule(ours, dict(theirs), meta, budgets)


def test_a_first_block_too_large_for_a_gpu_with_the_room_goes_to_the_cpu() -> None:
    """Llama-3-70B on 4 x 3.7 GiB: the embedding (1.96 GiB) plus the room to run the largest
    offloaded block (lm_head, 1.96 GiB) is more than any GPU holds. The stock path skips GPU 0
    and puts the embedding on GPU 1 at its full budget, which then runs offloaded blocks with
    1.8 GiB too little room; devicemap placed nothing on the GPUs. Now the embedding is
    offloaded and the layers after it fill the GPUs from GPU 0, which keeps the room."""
    meta = _built.setdefault("llama-3-70b", Meta("llama-3-70b"))
    budgets: dict[Any, int] = {i: int(3.7 * GIB) for i in range(4)}
    budgets["cpu"] = 200 * GIB
    for strategy in ["sequential", "balanced", "balanced_low_0"]:
        report = devicemap.plan_report(meta.model, budgets, strategy)
        ours = report.to_hf()
        check_valid(ours, meta)
        stock = stock_map(meta, strategy, budgets)
        assert short(stock, meta, budgets) is not None  # the stock map lacks the room
        check_rule(ours, stock, meta, budgets)
        assert ours["model.embed_tokens"] == "cpu"
        assert main_device(ours) == 0
        # More on the GPUs than the stock path, which keeps no room.
        assert off_gpu(ours, meta) < off_gpu(stock, meta)
        runner = next(d for d in report.devices if d["device"] == "cuda:0")
        assert runner["reserved"] >= meta.sizes["model.embed_tokens.weight"]


def test_gpu_0_keeps_the_room_holding_blocks_out_of_order() -> None:
    """Gemma-2-27B on 4 x 3.17 GiB: its 2.2 GiB embedding (tied to `lm_head`) or a 1.05 GiB layer
    beside the room to run the offloaded embedding fits no GPU, so devicemap placed nothing on the
    GPUs, while the stock map keeps 8.5 GiB on them, its main device 0.08 GiB short of the room.
    Now GPU 0 is the main device holding only what fits beside the room, out of order, and the
    GPUs after it hold blocks in order: the rule holds, and more stays on the GPUs than stock."""
    meta = _built.setdefault("gemma-2-27b", Meta("gemma-2-27b"))
    budgets: dict[Any, int] = {i: int(3.17 * GIB) for i in range(4)}
    budgets["cpu"] = 200 * GIB
    for strategy in ["sequential", "balanced", "balanced_low_0"]:
        report = devicemap.plan_report(meta.model, budgets, strategy)
        assert report.fits
        ours = report.to_hf()
        check_valid(ours, meta)
        stock = stock_map(meta, strategy, budgets)
        assert short(stock, meta, budgets) is not None  # the stock map lacks the room
        check_rule(ours, stock, meta, budgets)
        assert main_device(ours) == 0
        assert ours["model.norm"] == 0
        in_order = [d for d in ours.values() if d not in OFF]
        assert in_order[0] != 0  # GPU 0's blocks come later in the map
        assert off_gpu(ours, meta) < off_gpu(stock, meta)
        runner = next(d for d in report.devices if d["device"] == "cuda:0")
        assert runner["reserved"] > 0
        assert runner["bytes"] + runner["reserved"] <= budgets[0]
