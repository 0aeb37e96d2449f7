"""Planning and header reading, side by side with accelerate and safetensors in one run.

Run from the repository root after a release build (`maturin develop --release`):

    .venv/bin/python benches/bench_plan.py            # about 2 minutes
    .venv/bin/python benches/bench_plan.py --quick    # smoke run, no targets judged

1. `plan` against accelerate's `infer_auto_device_map` (sequential) and `get_balanced_memory`
   + `infer_auto_device_map` (balanced) on a DeepSeek-V3-shaped model with one module per
   expert (45,395 tensors, BF16, 1.22 TiB). accelerate gets a meta `nn.Module` built once with
   exactly these names and sizes, the decoder layers as its no-split class; devicemap gets the
   `{name: bytes}` of the same tensors (`example_model("deepseek-v3-bf16")`), and a second row
   times devicemap reading the meta module itself. Only planning is timed. Budgets: 8 x 80 GiB,
   8 x 40 GiB, 16 x 96 GiB, each plus 2 TiB of CPU. Quality: bytes off the GPUs, and the top
   GPU's share of its budget.
2. `plan` at 100k tensors (a synthetic MoE of 130 layers x 256 experts x 3).
3. Plans for inference on the DeepSeek-V3 FP8 example (90,427 tensors, its config.json): `plan`
   with `context=32768` against `plan` without (target: no slower than 2x), and
   `PlanReport.max_context()` / `max_batch()` (target: under 100 ms), on 8 x H200 budgets. The
   best of several alternated runs of each (the machines this runs on are often shared).
4. `tensor_sizes` on a 163-shard checkpoint of the DeepSeek-V3 FP8 example (90,427 tensors)
   written as sparse files with real headers, against a loop over `safe_open` reading every
   tensor's shape and dtype.

5. Real transformers-5 architectures (`--only real`; Qwen3-30B-A3B, Mixtral-8x7B, Llama-3-70B;
   their MoEs fuse experts into one parameter per layer, so accelerate walks few modules): meta
   models built from the config classes; `plan_report(meta_module)` against transformers'
   `_get_device_map` ("sequential", "auto") and accelerate's `infer_auto_device_map` on the same
   module, and `plan_report(checkpoint)` on sparse shards written from the meta model's shapes
   (experts stored one tensor each, as the published checkpoints store them) against building the
   meta model plus `_get_device_map`, which is what `from_pretrained` does. Budgets: 2 GPUs of
   30% of the model each, and the CPU. The best of alternated rounds.

Each timing is the median (best) of several repeats of one call with gc off. Nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import devicemap
from _timing import measure

GIB = 2**30


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def meta_model(sizes: dict[str, int]) -> Any:
    """A meta `nn.Module` whose parameters have exactly these names and sizes (BF16)."""
    import torch
    from torch import nn

    class DecoderLayer(nn.Module):
        pass

    root = nn.Module()
    modules: dict[str, nn.Module] = {"": root}
    for name, size in sizes.items():
        path, _, leaf = name.rpartition(".")
        parent = ""
        for part in path.split(".") if path else []:
            child = f"{parent}.{part}" if parent else part
            if child not in modules:
                layer = parent == "model.layers"
                module = DecoderLayer() if layer else nn.Module()
                modules[parent].add_module(part, module)
                modules[child] = module
            parent = child
        param = nn.Parameter(torch.empty(size // 2, dtype=torch.bfloat16, device="meta"), requires_grad=False)
        modules[parent].register_parameter(leaf, param)
    root._no_split_modules = ["DecoderLayer"]  # type: ignore[assignment]
    return root


def loads(hf: dict[str, Any], sizes: dict[str, int]) -> dict[Any, int]:
    """Bytes per device of an HF map (longest dot-prefix key wins)."""
    keys = sorted(hf, key=len, reverse=True)
    out: dict[Any, int] = {}
    for name, size in sizes.items():
        for key in keys:
            if key == "" or name == key or name.startswith(key + "."):
                out[hf[key]] = out.get(hf[key], 0) + size
                break
    return out


def quality(load: dict[Any, int], budgets: dict[Any, int]) -> tuple[int, float]:
    off_gpu = sum(v for k, v in load.items() if not isinstance(k, int))
    top = max((v / budgets[k] for k, v in load.items() if isinstance(k, int)), default=0.0)
    return off_gpu, top


def bench_plan(quick: bool, rows: list[list[str]]) -> None:
    import accelerate

    sizes = devicemap.example_model("deepseek-v3-bf16")
    if quick:
        sizes = {
            k: v for k, v in sizes.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < 6
        }
    print(f"building the meta model ({len(sizes):,} tensors) ...", file=sys.stderr)
    model = meta_model(sizes)
    repeats = 1 if quick else 3
    configs = {
        "8 x 80 GiB": {**{i: 80 * GIB for i in range(8)}, "cpu": 2048 * GIB},
        "8 x 40 GiB": {**{i: 40 * GIB for i in range(8)}, "cpu": 2048 * GIB},
        "16 x 96 GiB": {**{i: 96 * GIB for i in range(16)}, "cpu": 2048 * GIB},
    }
    no_split = ["DecoderLayer"]
    for label, budgets in configs.items():
        seq_theirs: dict[str, Any] = {}

        def theirs_sequential(budgets: dict[Any, int] = budgets) -> Any:
            return accelerate.infer_auto_device_map(
                model, max_memory=dict(budgets), no_split_module_classes=no_split
            )

        def theirs_balanced(budgets: dict[Any, int] = budgets) -> Any:
            balanced = accelerate.utils.get_balanced_memory(
                model, max_memory=dict(budgets), no_split_module_classes=no_split
            )
            return accelerate.infer_auto_device_map(
                model, max_memory=balanced, no_split_module_classes=no_split
            )

        for strategy, theirs in (("sequential", theirs_sequential), ("balanced", theirs_balanced)):
            their_time, _ = measure(theirs, repeats)
            their_map = theirs()
            ours_time, _ = measure(
                lambda s=strategy, b=budgets: devicemap.plan_report(sizes, b, s), repeats + 2
            )
            module_time, _ = measure(
                lambda s=strategy, b=budgets: devicemap.plan_report(model, b, s), repeats
            )
            report = devicemap.plan_report(sizes, budgets, strategy)
            ours_off, ours_top = quality(loads(report.to_hf(), sizes), budgets)
            their_off, their_top = quality(loads(their_map, sizes), budgets)
            if strategy == "sequential":
                seq_theirs["top"] = their_top
            ratio = their_time / ours_time
            rows.append([
                f"plan {strategy}", label, f"{len(sizes):,}", fmt_time(their_time), fmt_time(ours_time),
                f"{ratio:.0f}x", fmt_time(module_time),
                f"{their_off / GIB:,.1f} / {ours_off / GIB:,.1f}",
                f"{their_top:.1%} / {ours_top:.1%}"
                + (f" (acc. seq. {seq_theirs['top']:.1%})" if strategy == "balanced" else ""),
            ])  # fmt: skip
            print(" | ".join(rows[-1]), file=sys.stderr)


def bench_100k(quick: bool, rows: list[list[str]]) -> None:
    layers = 13 if quick else 130
    sizes = {"model.embed_tokens.weight": 2 * GIB}
    for layer in range(layers):
        for expert in range(256):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                sizes[f"model.layers.{layer}.mlp.experts.{expert}.{proj}.weight"] = 28 * 2**20
    sizes["model.norm.weight"] = 14336
    sizes["lm_head.weight"] = 2 * GIB
    budgets = {**{i: 80 * GIB for i in range(8)}, "cpu": 4096 * GIB}
    for strategy in ("sequential", "balanced"):
        median, _ = measure(lambda s=strategy: devicemap.plan_report(sizes, budgets, s), 5)
        rows.append(
            [f"plan {strategy}", "8 x 80 GiB + cpu", f"{len(sizes):,}", "", fmt_time(median), "", "", "", ""]
        )
        print(" | ".join(rows[-1]), file=sys.stderr)


def write_sparse_checkpoint(directory: Path, shards: int, limit: int | None = None) -> int:
    """The DeepSeek-V3 FP8 example (its first `limit` tensors) as `shards` safetensors files:
    real headers, sparse data. Shards follow the model, as transformers writes them; inside
    one, tensors are ordered as the safetensors library orders them (wider dtypes first, then
    by name: `layers.10` before `layers.9`), so names do not come in model order."""
    tensors = devicemap._core._example_tensors("deepseek-v3")[:limit]
    bits = {"F8_E4M3": 8, "F32": 32, "BF16": 16}
    per = -(-len(tensors) // shards)
    chunks = []
    for index in range(shards):
        chunk = sorted(tensors[index * per : (index + 1) * per], key=lambda t: (-bits[t[1]], t[0]))
        chunks.append(
            [(name, dtype, [elements], elements * bits[dtype] // 8) for name, dtype, elements in chunk]
        )
    write_shards(directory, chunks)
    return len(tensors)


def bench_headers(quick: bool, rows: list[list[str]]) -> None:
    from safetensors import safe_open

    shards = 16 if quick else 163
    directory = Path(tempfile.mkdtemp(prefix="devicemap-bench-"))
    try:
        # The quick run keeps shards small: safe_open maps a whole shard at once.
        count = write_sparse_checkpoint(directory, shards, 3000 if quick else None)
        files = sorted(directory.glob("*.safetensors"))

        def safe_open_loop() -> dict[str, tuple[list[int], str]]:
            out = {}
            for file in files:
                with safe_open(str(file), framework="pt") as handle:
                    for name in handle.keys():  # noqa: SIM118
                        piece = handle.get_slice(name)
                        out[name] = (piece.get_shape(), piece.get_dtype())
            return out

        assert len(safe_open_loop()) == len(devicemap.tensor_sizes(directory)) == count
        sources = {"directory (reads the index)": directory, "list of the shard files": files}
        calls: dict[str, Callable[[], object]] = {"safe_open": safe_open_loop}
        for label, source in sources.items():
            calls[label] = lambda source=source: devicemap.tensor_sizes(source)
        # Interleaved rounds, so that a busy spell of this shared machine hits every column, in
        # an order that rotates each round: the call after the safe_open loop finds its memory
        # handed back to the system and is some 10 ms slower, so no column is always that one.
        times: dict[str, list[float]] = {label: [] for label in calls}
        labels = list(calls)
        for round_ in range(3 if quick else 9):
            for label in labels[round_ % 3 :] + labels[: round_ % 3]:
                times[label].append(measure(calls[label], 1)[0])
        theirs = statistics.median(times["safe_open"])
        for label in sources:
            ours = statistics.median(times[label])
            rows.append([
                "tensor_sizes", f"{shards} shards, {label}", f"{count:,}", fmt_time(theirs), fmt_time(ours),
                f"{theirs / ours:.1f}x", "", "", "",
            ])  # fmt: skip
            print(" | ".join(rows[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bench_context(quick: bool, rows: list[list[str]]) -> None:
    from devicemap import _core

    sizes = devicemap.example_model("deepseek-v3")
    config = json.loads(_core._example_config("deepseek-v3"))
    budgets = dict.fromkeys(range(8), 126 * GIB)
    repeats = 3 if quick else 11
    report = devicemap.plan_report(sizes, budgets, context=32768, config=config)
    # Alternated, so that both see the same load on a shared machine; the best of each compared.
    best_weights, best_cache = [], []
    for _ in range(repeats):
        best_weights.append(measure(lambda: devicemap.plan_report(sizes, budgets), 1)[1])
        best_cache.append(
            measure(lambda: devicemap.plan_report(sizes, budgets, context=32768, config=config), 1)[1]
        )
    weights, with_cache = min(best_weights), min(best_cache)
    _, longest = measure(report.max_context, repeats)
    _, widest = measure(report.max_batch, repeats)
    for operation, seconds, ratio in [
        ("plan, weights only", weights, ""),
        ("plan, context=32768", with_cache, f"{with_cache / weights:.2f}x of weights only"),
        (f"max_context() = {report.max_context():,}", longest, ""),
        (f"max_batch() = {report.max_batch():,}", widest, ""),
    ]:
        rows.append([operation, "8 x 126 GiB", f"{len(sizes):,}", "", fmt_time(seconds), ratio, "", "", ""])
        print(" | ".join(rows[-1]), file=sys.stderr)


# The architectures as transformers 5 builds them (fused experts: one parameter per layer for
# all experts), configs as published. `(class name, config class, fields)`.
REAL = {
    "Qwen3-30B-A3B": ("Qwen3MoeConfig", dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
        num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
        num_experts=128, num_experts_per_tok=8, tie_word_embeddings=False,
    )),
    "Mixtral-8x7B": ("MixtralConfig", dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
        tie_word_embeddings=False,
    )),
    "Llama-3-70B": ("LlamaConfig", dict(
        vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False,
    )),
}  # fmt: skip


def build_real(name: str) -> tuple[Any, Any]:
    """The config and a meta model of `name` (bfloat16), built as `from_pretrained` builds it."""
    import torch
    import transformers

    config_class, fields = REAL[name]
    config = getattr(transformers, config_class)(**fields, dtype="bfloat16")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return config, model


def checkpoint_tensors(model: Any, mixtral: bool) -> list[tuple[str, list[int]]]:
    """The tensors a published checkpoint of `model` holds, with shapes: fused experts stored
    per expert, as the published checkpoints store them (transformers fuses them on loading;
    Mixtral's under `block_sparse_moe.experts.E.w1/w2/w3`)."""
    out: list[tuple[str, list[int]]] = []
    for name, tensor in model.state_dict().items():
        shape = list(tensor.shape)
        prefix, _, leaf = name.rpartition(".")
        if prefix.endswith("mlp.experts") and leaf in ("gate_up_proj", "down_proj"):
            layer = prefix[: -len(".mlp.experts")]
            moe = f"{layer}.block_sparse_moe.experts" if mixtral else prefix
            names = {"gate": "w1", "up": "w3", "down": "w2"} if mixtral else {}
            for expert in range(shape[0]):
                if leaf == "gate_up_proj":
                    half = [shape[1] // 2, shape[2]]
                    out.append((f"{moe}.{expert}.{names.get('gate', 'gate_proj')}.weight", half))
                    out.append((f"{moe}.{expert}.{names.get('up', 'up_proj')}.weight", half))
                else:
                    out.append((f"{moe}.{expert}.{names.get('down', 'down_proj')}.weight", shape[1:]))
        elif mixtral and name.endswith("mlp.gate.weight"):
            out.append((name.replace("mlp.gate", "block_sparse_moe.gate"), shape))
        else:
            out.append((name, shape))
    return out


def write_real_checkpoint(directory: Path, config: Any, tensors: list[tuple[str, list[int]]]) -> None:
    """Sparse BF16 shards of about 4 GiB with real headers, an index and `config.json`."""
    config.to_json_file(str(directory / "config.json"))
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = 2 * math.prod(shape)
        if size + nbytes > 4 * GIB and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    write_shards(
        directory, [[(n, "BF16", shape, 2 * math.prod(shape)) for n, shape in sorted(c)] for c in shards]
    )


def write_shards(directory: Path, shards: list[list[tuple[str, str, list[int], int]]]) -> None:
    """Safetensors shards of `(name, dtype, shape, bytes)` with real headers and sparse data, in
    the order given, and their index."""
    weight_map = {}
    for index, chunk in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, dtype, shape, size in chunk:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[name] = file
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(directory / file, "wb") as handle:
            handle.write(struct.pack("<Q", len(text)) + text)
            handle.truncate(8 + len(text) + offset)
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def best_of_rounds(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The best time of each call over `rounds` alternated rounds (a shared machine's busy
    spells then hit every call)."""
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            times[label].append(measure(call, 1)[1])
    return {label: min(seconds) for label, seconds in times.items()}


def real_module_rows(name: str, model: Any, budgets: dict[Any, int], repeats: int) -> list[list[str]]:
    """devicemap from the meta module against transformers' `_get_device_map` and accelerate's
    `infer_auto_device_map` on it."""
    import accelerate
    from transformers.integrations.accelerate import _get_device_map

    sizes = dict(devicemap._core._module_sizes(model)[0])
    label, count = f"{name}, 2 GPUs x 30%", f"{len(sizes):,}"
    no_split = model._no_split_modules
    rows = []
    for strategy, stock in (("sequential", "sequential"), ("balanced", "auto")):
        calls: dict[str, Callable[[], object]] = {
            "stock": lambda stock=stock: _get_device_map(model, stock, dict(budgets), None),
            "ours": lambda strategy=strategy: devicemap.plan_report(model, budgets, strategy),
        }
        if strategy == "sequential":
            calls["accelerate"] = lambda: accelerate.infer_auto_device_map(
                model, max_memory=dict(budgets), no_split_module_classes=no_split
            )
        best = best_of_rounds(calls, repeats)
        theirs, ours = best["stock"], best["ours"]
        stock_map = _get_device_map(model, stock, dict(budgets), None)
        their_off, their_top = quality(loads(stock_map, sizes), budgets)
        report = devicemap.plan_report(model, budgets, strategy)
        our_off, our_top = quality(loads(report.to_hf(), sizes), budgets)
        rows.append([
            f"plan {strategy}, meta module vs transformers `_get_device_map`", label, count,
            fmt_time(theirs), "", "", fmt_time(ours) + f" ({theirs / ours:.1f}x)",
            f"{their_off / GIB:,.1f} / {our_off / GIB:,.1f}", f"{their_top:.1%} / {our_top:.1%}",
        ])  # fmt: skip
        if "accelerate" in best:
            theirs = best["accelerate"]
            rows.append([
                "plan sequential, meta module vs accelerate `infer_auto_device_map`", label, count,
                fmt_time(theirs), "", "", fmt_time(ours) + f" ({theirs / ours:.1f}x)", "", "",
            ])  # fmt: skip
    return rows


def build_from(directory: Path) -> Any:
    """The meta model accelerate's users build from a checkpoint directory: its `config.json`
    read, the model built from it on the meta device (bfloat16)."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def real_checkpoint_row(
    name: str, config: Any, model: Any, budgets: dict[Any, int], rounds: int
) -> list[str]:
    """devicemap from a checkpoint against reading its config, building the meta model and
    `_get_device_map` (and, printed, against a config made in memory, which reads no file)."""
    from transformers.integrations.accelerate import _get_device_map

    directory = Path(tempfile.mkdtemp(prefix="devicemap-bench-"))
    try:
        tensors = checkpoint_tensors(model, mixtral=name.startswith("Mixtral"))
        # The class `from_pretrained` builds, as save_pretrained records it: devicemap builds
        # it on the meta device and renames the keys as the loader does.
        config.architectures = [type(model).__name__]
        write_real_checkpoint(directory, config, tensors)
        devicemap.tensor_sizes(directory)  # once untimed: the fresh files' first read is slower
        report = devicemap.plan_report(directory, budgets, "sequential")
        fallback = [note for note in report.notes if "checkpoint's own tensor names" in note]
        assert not fallback, f"{name}: not planned in the loader's names: {fallback}"
        best = best_of_rounds(
            {
                "build": lambda: build_from(directory),
                "in memory": lambda: build_real(name),
                "stock": lambda: _get_device_map(model, "sequential", dict(budgets), None),
                "ours": lambda: devicemap.plan_report(directory, budgets, "sequential"),
            },
            rounds,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    theirs = best["build"] + best["stock"]
    in_memory = best["in memory"] + best["stock"]
    print(
        f"{name}: with the config made in memory instead: {fmt_time(in_memory)}, "
        f"{in_memory / best['ours']:.2f}x; from the directory {theirs / best['ours']:.2f}x",
        file=sys.stderr,
    )
    return [
        "plan sequential, checkpoint vs config read + meta model built + `_get_device_map`",
        f"{name}, 2 GPUs x 30%", f"{len(tensors):,}",
        f"{fmt_time(theirs)} ({fmt_time(best['build'])} + {fmt_time(best['stock'])})",
        fmt_time(best["ours"]), f"{theirs / best['ours']:.2f}x", "", "", "",
    ]  # fmt: skip


def bench_real(quick: bool, rows: list[list[str]], only: str | None = None) -> None:
    """Real transformers-5 architectures: devicemap against transformers' `_get_device_map` and
    accelerate's `infer_auto_device_map` on the same meta module, and devicemap on a checkpoint
    against building the meta model plus `_get_device_map` (what `from_pretrained` does)."""
    import logging
    import warnings

    logging.getLogger("accelerate").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    repeats = 1 if quick else 5
    names = [only] if only else ["Qwen3-30B-A3B"] if quick else list(REAL)
    for name in names:
        config, model = build_real(name)
        total = sum(size for _, size in devicemap._core._module_sizes(model)[0])
        budgets = {0: total * 3 // 10, 1: total * 3 // 10, "cpu": total}
        new = real_module_rows(name, model, budgets, repeats)
        new.append(real_checkpoint_row(name, config, model, budgets, 4 * repeats + 1))
        for row in new:
            rows.append(row)
            print(" | ".join(row), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["plan", "100k", "headers", "context", "real"])
    parser.add_argument("--model", choices=list(REAL), help="with --only real: this model only")
    args = parser.parse_args()
    rows: list[list[str]] = []
    if args.only in (None, "headers"):
        bench_headers(args.quick, rows)
    if args.only in (None, "100k"):
        bench_100k(args.quick, rows)
    if args.only in (None, "context"):
        bench_context(args.quick, rows)
    if args.only in (None, "plan"):
        bench_plan(args.quick, rows)
    if args.only in (None, "real"):
        bench_real(args.quick, rows, args.model)
    header = [
        "operation", "budgets / input", "tensors", "accelerate / safe_open", "devicemap", "ratio",
        "devicemap from nn.Module", "GiB off GPU (acc. / ours)", "top GPU share (acc. / ours)",
    ]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
