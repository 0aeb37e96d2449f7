"""`_get_device_map` and accelerate's `get_balanced_memory` + `infer_auto_device_map`, stock
against devicemap's planning integration, in one run on the same meta models and budgets.

Models (bf16, on the meta device, no weights): a DeepSeek-V3-shaped model with one module per
expert (61 layers, 58 of them MoE with 256 experts and a shared expert; about 45k tensors,
1.25 TiB) on 16 x 96 GiB, and real transformers models that fuse their experts (Llama-3-70B,
Mixtral-8x7B, Qwen3-30B-A3B, Gemma-2-27B; tests/_planning_models.py) on 8 x 80 GiB. Each call is
timed from the model (reading its sizes included), gc off, median (best) of the repeats; the
table also shows the bytes each map leaves off the GPUs and its fullest GPU.

End to end: `from_pretrained(dir, device_map="auto")` of a tiny tied Llama with hundreds of layers
(saved here), integration off and on: the whole load, the time `_get_device_map` takes inside
it, and whether the logits are the same.

Placements (docs/integrations.md's "Measured" table): the real models on tighter budgets (n GPUs
sharing a multiple of the model's bytes, 1,000 GiB of CPU), GiB off the GPUs / on the fullest GPU,
stock -> devicemap, for each strategy and accelerate's pair; for a model with a loading reserve,
a second row gives the stock path the budgets less the reserve (the budgets devicemap plans on).

    python benches/bench_integration_planning.py               # about 3 minutes
    python benches/bench_integration_planning.py --quick       # small inputs, seconds
    python benches/bench_integration_planning.py --placements  # the placements table only
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import transformers
from _planning_models import GIB, per_expert_dsv3, real_size, tiny
from _timing import measure
from accelerate.utils import modeling as acc_modeling
from devicemap.integrations import accelerate as dm_accelerate
from devicemap.integrations import transformers as dm_transformers
from transformers.integrations import accelerate as hf_accelerate

STRATEGIES = ("auto", "balanced_low_0", "sequential")
STOCK_GET_DEVICE_MAP = hf_accelerate._get_device_map


def placed(model: Any, device_map: dict[str, Any]) -> tuple[float, float]:
    """GiB off the GPUs, and on the fullest GPU."""
    sizes, _ = hf_accelerate.compute_module_sizes(model, only_modules=False)
    per_device: dict[Any, int] = {}
    for key, device in device_map.items():
        per_device[device] = per_device.get(device, 0) + sizes[key]
    off = sum(size for device, size in per_device.items() if device in ("cpu", "disk"))
    gpus = [size for device, size in per_device.items() if device not in ("cpu", "disk")]
    return off / GIB, max(gpus, default=0) / GIB


def row(label: str, model: Any, stock: Callable[[], Any], ours: Callable[[], Any], repeats: int) -> None:
    stock_median, stock_best = measure(stock, repeats)
    our_median, our_best = measure(ours, repeats)
    stock_off, stock_full = placed(model, dict(stock()))
    our_off, our_full = placed(model, dict(ours()))
    print(
        f"| {label} | {1e3 * stock_median:.0f} ({1e3 * stock_best:.0f}) | {1e3 * our_median:.0f} "
        f"({1e3 * our_best:.0f}) | {stock_median / our_median:.1f}x | {stock_off:.1f} / {our_off:.1f} "
        f"| {stock_full:.1f} / {our_full:.1f} |",
        flush=True,
    )


def bench(name: str, model: Any, budgets: dict[Any, int], repeats: int) -> None:
    no_split = list(model._no_split_modules)
    for strategy in STRATEGIES:

        def stock(strategy: str = strategy) -> Any:
            return STOCK_GET_DEVICE_MAP(model, strategy, dict(budgets), None)

        def ours(strategy: str = strategy) -> Any:
            return hf_accelerate._get_device_map(model, strategy, dict(budgets), None)

        row(f"{name} | `_get_device_map` `{strategy}`", model, stock, ours, repeats)

    def stock_pair() -> Any:
        balanced = acc_modeling.get_balanced_memory(model, dict(budgets), no_split)
        return acc_modeling.infer_auto_device_map(model, balanced, no_split)

    def our_pair() -> Any:
        balanced = dm_accelerate.get_balanced_memory(model, dict(budgets), no_split)
        return dm_accelerate.infer_auto_device_map(model, balanced, no_split)

    row(
        f"{name} | accelerate `get_balanced_memory` + `infer_auto_device_map`",
        model,
        stock_pair,
        our_pair,
        repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, few repeats")
    parser.add_argument("--placements", action="store_true", help="only the placements table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # accelerate warns about every GPU budget without GPUs
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    repeats = 1 if args.quick else 3
    # On for the whole run: the stock function is called through the reference kept above.
    dm_transformers.enable(planning=True)
    print(f"transformers {transformers.__version__}, accelerate {_version()}")
    if args.placements:
        placements()
        return
    print("| model | call | stock ms | devicemap ms | ratio | off-GPU GiB | fullest GPU GiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    model = per_expert_dsv3(8, 16) if args.quick else per_expert_dsv3()
    bench(
        "DeepSeek-V3 per expert, 16 x 96 GiB",
        model,
        {**dict.fromkeys(range(16), 96 * GIB), "cpu": 2048 * GIB},
        repeats,
    )
    end_to_end(50 if args.quick else 400, repeats)
    if args.quick:
        return
    for name in ("llama-3-70b", "mixtral-8x7b", "qwen3-30b-a3b", "gemma-2-27b"):
        bench(
            f"{name}, 8 x 80 GiB",
            real_size(name),
            {**dict.fromkeys(range(8), 80 * GIB), "cpu": 500 * GIB},
            repeats,
        )
    placements()


# Per model: (GPUs, the share of the model's bytes they hold together).
PLACEMENTS = {
    "llama-3-70b": [(2, 1.2), (8, 1.05)],
    "mixtral-8x7b": [(4, 1.05), (8, 1.5)],
    "qwen3-30b-a3b": [(16, 1.2)],
    "gemma-2-27b": [(8, 1.5), (16, 1.05)],
}


def placements() -> None:
    """The placements table: stock -> devicemap on the same budgets (and, where the model has a
    loading reserve, the stock path on the budgets less the reserve)."""
    print("\nPlacements: GiB off the GPUs / on the fullest GPU, stock -> devicemap; 1,000 GiB of CPU")
    print('| model | GPUs | `tf` `"auto"` | `tf` `"balanced_low_0"` | `tf` `"sequential"` | `acc` pair |')
    print("| --- | --- | --- | --- | --- | --- |")
    for name, shapes in PLACEMENTS.items():
        model = real_size(name)
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        reserve = dm_transformers.loading_reserve(model)
        for gpus, share in shapes:
            each = int(total * share / gpus)
            budgets = {**dict.fromkeys(range(gpus), each), "cpu": 1000 * GIB}
            gpu_label = f"{gpus} x {each / GIB:.1f}"
            print(f"| {name} ({total / GIB:.1f} GiB) | {gpu_label} | {placement_cells(model, budgets, 0)} |")
            if reserve:
                label = f"{name}, stock on the budgets less the {reserve / GIB:.1f} GiB reserve"
                print(f"| {label} | {gpu_label} | {placement_cells(model, budgets, reserve)} |", flush=True)


def placement_cells(model: Any, budgets: dict[Any, int], reserve: int) -> str:
    """One cell per call: the stock map (on the budgets less `reserve` GiB per GPU) -> ours."""
    kept = {device: size - reserve * (device != "cpu") for device, size in budgets.items()}
    no_split = list(model._no_split_modules)
    cells = []
    for strategy in STRATEGIES:
        stock = placed(model, dict(STOCK_GET_DEVICE_MAP(model, strategy, dict(kept), None)))
        ours = placed(model, dict(hf_accelerate._get_device_map(model, strategy, dict(budgets), None)))
        cells.append(cell(stock, ours))
    if reserve:  # accelerate's pair keeps no reserve: its cell is the row above's
        return " | ".join([*cells, "-"])
    pairs = []
    for planner in (acc_modeling, dm_accelerate):
        balanced = planner.get_balanced_memory(model, dict(budgets), no_split)
        pairs.append(placed(model, dict(planner.infer_auto_device_map(model, balanced, no_split))))
    return " | ".join([*cells, cell(*pairs)])


def cell(stock: tuple[float, float], ours: tuple[float, float]) -> str:
    """`off / fullest -> off / fullest`, the stock side's off-GPU GiB bold where it is more."""
    stock_off = f"**{stock[0]:.1f}**" if stock[0] > ours[0] + 0.05 else f"{stock[0]:.1f}"
    return f"{stock_off} / {stock[1]:.1f} -> {ours[0]:.1f} / {ours[1]:.1f}"


def end_to_end(layers: int, repeats: int) -> None:
    """`from_pretrained(device_map="auto")` of a tiny Llama (tied embeddings) of `layers` layers,
    stock and planned."""
    import torch

    inputs = torch.arange(8).reshape(1, 8)
    print(f'\nEnd to end: a tiny Llama of {layers} layers, `from_pretrained(device_map="auto")` on the CPU')
    print("| integration | load ms | `_get_device_map` ms | same logits |")
    print("| --- | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as path:
        tiny("llama-tied", layers).save_pretrained(path)
        outputs = {}
        for label, planning in (("off", False), ("on (`planning=True`)", True)):
            spent: list[float] = []
            map_fn = MapTimer(spent)
            if planning:
                dm_transformers.enable(planning=True)
            else:
                dm_transformers.disable()
            original, modeling_utils = map_fn.install()

            def load() -> Any:
                return transformers.LlamaForCausalLM.from_pretrained(path, device_map="auto")

            try:
                median, best = measure(load, repeats)
                with torch.no_grad():
                    outputs[planning] = load()(inputs).logits
            finally:
                modeling_utils._get_device_map = original
            same = "-" if not planning else str(torch.equal(outputs[False], outputs[True]))
            print(
                f"| {label} | {1e3 * median:.0f} ({1e3 * best:.0f}) | {1e3 * min(spent):.1f} | {same} |",
                flush=True,
            )
    dm_transformers.enable(planning=True)


class MapTimer:
    """Times each call of the `_get_device_map` that `from_pretrained` calls (into `spent`)."""

    def __init__(self, spent: list[float]) -> None:
        self.spent = spent

    def install(self) -> tuple[Any, Any]:
        from transformers import modeling_utils

        original = modeling_utils._get_device_map

        def _get_device_map(*args: Any) -> Any:
            start = time.perf_counter()
            result = original(*args)
            self.spent.append(time.perf_counter() - start)
            return result

        modeling_utils._get_device_map = _get_device_map
        return original, modeling_utils


def _version() -> str:
    import accelerate

    return str(accelerate.__version__)


if __name__ == "__main__":
    main()
