"""`from_pretrained` with a per-module device map: stock transformers, with
devicemap.integrations.transformers enabled, and the same model with `{"": "cpu"}`, in one run.

Run from the repository root after a release build (`maturin develop --release`):

    .venv/bin/python benches/bench_from_pretrained.py            # 2.7k and 5.4k tensors, minutes
    .venv/bin/python benches/bench_from_pretrained.py --quick    # smoke run for CI, no targets judged
    .venv/bin/python benches/bench_from_pretrained.py --profile  # adds a cProfile of the enabled load

Models are tiny Llama-shaped ones (hidden size 8) with hundreds of layers, built from a config
here and saved as sharded safetensors in a temporary folder; nothing is downloaded. A layer has
9 tensors, so L layers make 9 L + 3 tensors. The per-module map has one key per decoder layer
plus the embedding, final norm, rotary embedding and head, every value "cpu": the map's cost
alone, since every tensor lands where `{"": "cpu"}` puts it.

Each load is timed with `time.perf_counter` around `from_pretrained` in this process, after one
unmeasured warm-up load of the same checkpoint (file cache, lazy imports). The stock load is slow
(about 79 s at 5.4k tensors), so it runs once; the others run `--repeat` times and the median
counts. Nothing here asserts on timings: the table says which targets pass, and the exit status is 0.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from devicemap.integrations import transformers as integration
from transformers.utils import logging as hf_logging

TARGET_SPEEDUP = 5.0  # enabled vs stock, at least
TARGET_OVERHEAD = 1.5  # enabled vs {"": "cpu"}, at most


def build_checkpoint(layers: int, folder: Path) -> int:
    """Saves a tiny Llama with `layers` decoder layers as sharded safetensors; returns its tensor count."""
    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder, max_shard_size="64KB")
    return len(model.state_dict())


LEAVES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
    "input_layernorm",
    "post_attention_layernorm",
)


def per_module_map(layers: int, granularity: str) -> dict[str, str]:
    """One key per decoder layer ("layer", what `device_map="auto"` gives a Llama) or per leaf
    module ("leaf", one key per tensor here), plus the modules outside the layers."""
    device_map = {"model.embed_tokens": "cpu"}
    for i in range(layers):
        if granularity == "layer":
            device_map[f"model.layers.{i}"] = "cpu"
        else:
            device_map.update({f"model.layers.{i}.{leaf}": "cpu" for leaf in LEAVES})
    device_map.update({"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"})
    return device_map


def load(folder: Path, device_map: dict[str, str]) -> object:
    model_class = transformers.LlamaForCausalLM
    return model_class.from_pretrained(folder, device_map=dict(device_map), local_files_only=True)


def timed_load(folder: Path, device_map: dict[str, str]) -> float:
    gc.collect()
    start = time.perf_counter()
    model = load(folder, device_map)
    elapsed = time.perf_counter() - start
    del model
    return elapsed


def median_of(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def profile_enabled(folder: Path, device_map: dict[str, str], top: int = 25) -> str:
    profiler = cProfile.Profile()
    with integration.enabled():
        profiler.enable()
        load(folder, device_map)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(top)
    # The device-map share: the integration's functions, wherever they sit in the call tree.
    stats.print_stats(r"devicemap/integrations/(transformers|_compiled)\.py")
    return out.getvalue()


def per_call(run: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def lookup_costs(layers: int) -> None:
    """Per-call cost of the lookups transformers makes, without a load: the integration with the
    map it tracks (what `from_pretrained` uses), with a plain dict (the id-keyed cache, whose
    validity check is O(keys)), and stock transformers."""
    from devicemap.integrations import _compiled
    from transformers.integrations import accelerate as hf_accelerate

    names = [f"model.layers.{i}.{leaf}.weight" for i in range(layers) for leaf in LEAVES]
    name = names[len(names) // 2]
    print(f"\nper-call lookup cost, {len(names):,} names (median of 3 batches)")
    print(
        "| map | get_device, tracked map | get_device, plain dict | stock get_device | "
        "expand_device_map, tracked | stock expand_device_map |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for granularity in ("layer", "leaf"):
        plain = per_module_map(layers, granularity)
        tracked = _compiled.track(plain)
        integration.get_device(tracked, name)
        integration.get_device(plain, name)

        def get_device(device_map: dict[str, str], stock: bool = False) -> Callable[[], object]:
            function = hf_accelerate.get_device if stock else integration.get_device
            return lambda: function(device_map, name, True)

        ours_tracked = median_of(3, lambda t=tracked: per_call(get_device(t), 5000))
        ours_plain = median_of(3, lambda p=plain: per_call(get_device(p), 200))
        stock = median_of(3, lambda p=plain: per_call(get_device(p, stock=True), 5))
        expand = median_of(3, lambda t=tracked: per_call(lambda: integration.expand_device_map(t, names), 1))
        # Stock expand is O(names x keys) in the regex: timed for the per-layer map only.
        stock_expand = (
            fmt(per_call(lambda p=plain: hf_accelerate.expand_device_map(p, names), 1))
            if granularity == "layer"
            else "-"
        )
        print(
            f"| per {granularity}, {len(plain):,} keys | {fmt(ours_tracked)} | {fmt(ours_plain)} "
            f"| {fmt(stock)} | {fmt(expand)} | {stock_expand} |"
        )


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[300, 600], help="decoder layers per model")
    parser.add_argument(
        "--maps", nargs="+", choices=["layer", "leaf"], default=["layer", "leaf"], help="map granularities"
    )
    parser.add_argument("--repeat", type=int, default=3, help="loads of the fast variants (median)")
    parser.add_argument("--quick", action="store_true", help="one small model, one repeat, no targets")
    parser.add_argument("--no-stock", action="store_true", help="skip the slow stock loads")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each enabled load")
    parser.add_argument("--lookups", action="store_true", help="only the per-call lookup costs, no loads")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.repeat, args.maps = [20], 1, ["layer"]

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(
        f"transformers {transformers.__version__}, torch {torch.__version__}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    if args.lookups:
        for layers in args.layers:
            lookup_costs(layers)
        return 0
    rows = []
    for layers in args.layers:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            tensors = build_checkpoint(layers, folder)
            shards = len(list(folder.glob("*.safetensors")))
            timed_load(folder, {"": "cpu"})  # warm-up
            everything = median_of(args.repeat, lambda folder=folder: timed_load(folder, {"": "cpu"}))
            for granularity in args.maps:
                device_map = per_module_map(layers, granularity)
                with integration.enabled():
                    enabled = median_of(args.repeat, lambda f=folder, m=device_map: timed_load(f, m))
                stock = None if args.no_stock else timed_load(folder, device_map)
                rows.append((tensors, granularity, len(device_map), stock, enabled, everything))
                print(
                    f"{tensors} tensors, {shards} shards, per-{granularity} map of {len(device_map)} keys: "
                    f"stock {'-' if stock is None else fmt(stock)}, enabled {fmt(enabled)}, "
                    f'{{"": "cpu"}} {fmt(everything)}',
                    flush=True,
                )
                if args.profile:
                    print(profile_enabled(folder, device_map))

    print()
    all_cpu = '`{"": "cpu"}`'
    print(
        f"| tensors | map | stock transformers | devicemap enabled | {all_cpu} "
        f"| stock / enabled | enabled / {all_cpu} |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for tensors, granularity, keys, stock, enabled, everything in rows:
        speedup = "-" if stock is None else f"{stock / enabled:.1f}x"
        overhead = f"{enabled / everything:.2f}x"
        if not args.quick:
            if stock is not None:
                speedup += " (pass)" if stock / enabled >= TARGET_SPEEDUP else " (FAIL)"
            overhead += " (pass)" if enabled / everything <= TARGET_OVERHEAD else " (FAIL)"
        stock_text = "-" if stock is None else fmt(stock)
        times = f"{stock_text} | {fmt(enabled)} | {fmt(everything)}"
        print(f"| {tensors:,} | per {granularity}, {keys:,} keys | {times} | {speedup} | {overhead} |")
    print(
        f"\ntargets: enabled >= {TARGET_SPEEDUP:g}x faster than stock, and within {TARGET_OVERHEAD:g}x of "
        '{"": "cpu"}' + (" (not judged with --quick)" if args.quick else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
