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

    python benches/bench_integration_planning.py            # about 3 minutes
    python benches/bench_integration_planning.py --quick    # small inputs, seconds
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
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # accelerate warns about every GPU budget without GPUs
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    repeats = 1 if args.quick else 3
    # On for the whole run: the stock function is called through the reference kept above.
    dm_transformers.enable(planning=True)
    print(f"transformers {transformers.__version__}, accelerate {_version()}")
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
    for name in ("llama3-70b", "mixtral-8x7b", "qwen3-30b-a3b", "gemma2-27b"):
        bench(
            f"{name}, 8 x 80 GiB",
            real_size(name),
            {**dict.fromkeys(range(8), 80 * GIB), "cpu": 500 * GIB},
            repeats,
        )


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
