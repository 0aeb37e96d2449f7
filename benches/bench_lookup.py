"""Tensor-name lookup and coverage checks: devicemap against accelerate and transformers.

Run from the repository root after a release build (`maturin develop --release`):

    .venv/bin/python benches/bench_lookup.py            # full run, about 5 minutes (mostly the peers)
    .venv/bin/python benches/bench_lookup.py --quick    # smoke run for CI, seconds, no targets judged

Inputs (benches/_dsv3.py): the 90,427 tensor names of DeepSeek-V3's FP8 checkpoint and maps of
64 keys (per layer), 851 (per layer submodule) and 15,153 (per routed expert), GPU ids as ints.

Rows, all in one process on the same objects:
- `devices_for(names)`: one call for every name, against
  - accelerate's loop (`load_checkpoint_in_model` in accelerate/utils/modeling.py): per name, strip one
    component at a time until the text is a key, in Python. Timed over all names. Target >= 10x.
  - transformers' per-tensor lookup `get_device(map, name)` (transformers/integrations/accelerate.py),
    which calls `expand_device_map(map, [name])`: it sorts every key and builds one regex per
    tensor. Timed on an evenly spaced sample of names and scaled by names / sample (each call is
    independent). Target >= 100x.
  - transformers' `expand_device_map(map, names)` called once over all names (what
    `_load_pretrained_model` does). For the 851- and 15,153-key maps timed on a sample (5,000 and
    200 names); scaled as
    fixed + (sample time - fixed) x names / sample, with `fixed` the time of a call with no names.
- `check(names, unused="ignore")` against `accelerate.utils.check_device_map(model, map)`, given an
  object whose `state_dict()` returns a prebuilt dict of the names and whose `named_modules()` lists
  every module path (a real `state_dict()` would cost accelerate more). Targets >= 100x and < 50 ms.
  Its loop filters the list of names once per key (O(keys x names)); on the 15,153-key map it runs
  its first 500 keys and is scaled by how many names the whole loop filters (`--full-check` runs
  it in full); on the 851-key map the scaled estimate is printed next to the full run as a check.
- The first `devices_for` on a freshly built map, which builds the map's key index (devicemap only).

Each devicemap timing is the median (best) of several repeats, gc off; peers that take seconds run
fewer times (the count is printed). Nothing asserts on a timing; the exit status is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dsv3
import _timing


@dataclass
class Timing:
    median: float
    best: float
    runs: int
    note: str = ""


def measure(fn: Callable[[], Any], repeats: int) -> Timing:
    median, best = _timing.measure(fn, repeats)
    return Timing(median, best, repeats)


def measure_first_lookup(hf: dict[str, Any], names: list[str], repeats: int) -> Timing:
    """The first `devices_for` on a map just built (the map's key index is built on first use)."""
    from devicemap import DeviceMap

    times = []
    for _ in range(repeats):
        device_map = DeviceMap.from_hf(hf)
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        result = device_map.devices_for(names)
        elapsed = time.perf_counter() - start
        gc.enable()
        del result, device_map
        times.append(elapsed)
    return Timing(statistics.median(times), min(times), repeats)


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


# --- the peers, as they run inside accelerate and transformers ----------------------------------


def accelerate_lookup(device_map: dict[str, Any], names: list[str]) -> list[Any]:
    """accelerate's `load_checkpoint_in_model`: strip one component at a time until a key."""
    out = []
    for param_name in names:
        module_name = param_name
        while len(module_name) > 0 and module_name not in device_map:
            module_name = ".".join(module_name.split(".")[:-1])
        if module_name == "" and "" not in device_map:
            raise ValueError(f"{param_name} doesn't have any device set.")
        out.append(device_map[module_name])
    return out


class NamesOnly:
    """What `check_device_map` reads of a model: `named_modules()` and `state_dict()`."""

    def __init__(self, names: list[str]) -> None:
        self._state = dict.fromkeys(names)
        self._modules = [(name, None) for name in _dsv3.module_names(names)]

    def named_modules(self) -> Any:
        return iter(self._modules)

    def state_dict(self) -> dict[str, None]:
        return self._state


def accelerate_check_work(keys: list[str], names: list[str]) -> list[int]:
    """Per key of `check_device_map`'s loop, how many names it filters: the names no earlier key
    (in map order) covered. Its time is a fixed part plus a cost per name filtered."""
    position = {key: i for i, key in enumerate(keys)}
    first_key: Counter[int] = Counter()
    for name in names:
        parts = name.split(".")
        hits = [position.get(".".join(parts[:depth])) for depth in range(1, len(parts) + 1)]
        first_key[min((i for i in hits if i is not None), default=len(keys))] += 1
    work, removed = [], 0
    for i in range(len(keys)):
        work.append(len(names) - removed)
        removed += first_key[i]
    return work


def extrapolate_accelerate_check(hf: dict[str, Any], model: NamesOnly, names: list[str], k: int) -> Timing:
    """`check_device_map` on the first `k` keys and on no keys, scaled to all keys by
    `accelerate_check_work`: fixed + (t(k keys) - fixed) x work(all) / work(first k)."""
    import accelerate.utils

    keys = list(hf)
    work = accelerate_check_work(keys, names)

    def run(partial: dict[str, Any]) -> Callable[[], Any]:
        def call() -> None:
            with contextlib.suppress(ValueError):  # a partial map leaves names uncovered
                accelerate.utils.check_device_map(model, partial)

        return call

    fixed = measure(run({}), 3).median
    partial = measure(run({key: hf[key] for key in keys[:k]}), 3).median
    total = fixed + (partial - fixed) * sum(work) / sum(work[:k])
    return Timing(total, total, 1, f"first {k:,} keys, scaled by names filtered")


def sample(names: list[str], n: int) -> list[str]:
    step = max(1, len(names) // n)
    return names[::step][:n]


@dataclass
class Row:
    map_label: str
    op: str
    ours: Timing
    peer_label: str
    peer: Timing | None
    target: float | None
    under: float | None = None

    def ratio(self) -> float | None:
        return None if self.peer is None else self.peer.median / self.ours.median

    def verdict(self, judge: bool) -> str:
        if not judge or self.target is None or self.ratio() is None:
            return "-"
        ok = (self.ratio() or 0) >= self.target
        if self.under is not None:
            ok = ok and self.ours.median < self.under
        return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few layers, few repeats; a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="devicemap repeats per timing (default 9)")
    parser.add_argument(
        "--full-check",
        action="store_true",
        help="run accelerate's check_device_map on the 15,153-key map in full (about 10 minutes) "
        "instead of scaling it from its first 500 keys",
    )
    args = parser.parse_args()

    import accelerate
    import accelerate.utils
    import devicemap
    import transformers
    from devicemap import DeviceMap
    from transformers.integrations.accelerate import expand_device_map, get_device

    judge = not args.quick
    repeats = args.repeats or (2 if args.quick else 9)
    names = _dsv3.tensor_names()
    maps = [
        ("64 keys (per layer)", _dsv3.map_per_layer()),
        ("851 keys (per submodule)", _dsv3.map_per_submodule()),
        ("15,153 keys (per expert)", _dsv3.map_per_expert()),
    ]
    if args.quick:
        keep = ("model.embed_tokens", "model.norm", "lm_head", *(f"model.layers.{i}." for i in range(5)))
        names = [n for n in names if n.startswith(keep)]
        maps = [(label, {k: v for k, v in hf.items() if (k + ".").startswith(keep)}) for label, hf in maps]
    print(
        f"devicemap {devicemap.__version__}, accelerate {accelerate.__version__}, "
        f"transformers {transformers.__version__}, Python {sys.version.split()[0]}"
    )
    print(
        f"{len(names):,} DeepSeek-V3 FP8 tensor names; "
        f"devicemap: median (best) of {repeats} repeats, gc off\n"
    )

    rows: list[Row] = []
    notes: list[str] = []
    for label, hf in maps:
        dm = DeviceMap.from_hf(hf)
        first = measure_first_lookup(hf, names, repeats)
        ours = measure(lambda dm=dm: dm.devices_for(names), repeats)
        # Same answers first: every name on the same device as accelerate's loop gives.
        expected = [
            devicemap.Device.gpu(v) if isinstance(v, int) else devicemap.Device.from_str(v)
            for v in accelerate_lookup(hf, names)
        ]
        assert dm.devices_for(names) == expected, "devicemap and accelerate disagree"

        acc = measure(lambda hf=hf: accelerate_lookup(hf, names), 1 if len(hf) > 5000 else 3)
        rows.append(Row(label, "devices_for(names)", ours, "accelerate name-stripping loop", acc, 10))

        per_name_sample = sample(names, 100 if len(hf) > 5000 else 2000 if len(hf) > 500 else 5000)
        if args.quick:
            per_name_sample = per_name_sample[:50]
        t = measure(lambda hf=hf, s=per_name_sample: [get_device(hf, n) for n in s], 1)
        scale = len(names) / len(per_name_sample)
        tf = Timing(t.median * scale, t.best * scale, 1, f"{len(per_name_sample):,} names x {scale:.0f}")
        rows.append(Row(label, "devices_for(names)", ours, "transformers get_device per tensor", tf, 100))

        if len(hf) > 500 and not args.quick:
            bulk_sample = sample(names, 200 if len(hf) > 5000 else 5000)
            fixed = measure(lambda hf=hf: expand_device_map(hf, []), 3).median
            t = measure(lambda hf=hf, s=bulk_sample: expand_device_map(hf, s), 1)
            scaled = fixed + (t.median - fixed) * len(names) / len(bulk_sample)
            bulk = Timing(scaled, scaled, 1, f"{len(bulk_sample):,} names, scaled")
        else:
            bulk = measure(lambda hf=hf: expand_device_map(hf, names), 1 if len(hf) > 500 else 3)
        rows.append(
            Row(label, "devices_for(names)", ours, "transformers expand_device_map, one call", bulk, 100)
        )

        model = NamesOnly(names)
        check = measure(lambda dm=dm: dm.check(names, unused="ignore"), repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(hf) > 5000 and not (args.quick or args.full_check):
                acc_check = extrapolate_accelerate_check(hf, model, names, 500)
            else:
                acc_check = measure(lambda hf=hf, m=model: accelerate.utils.check_device_map(m, hf), 1)
                if 500 < len(hf) <= 5000 and not args.quick:
                    # The scaling above, checked against a full run.
                    estimate = extrapolate_accelerate_check(hf, model, names, 100)
                    notes.append(
                        f"accelerate check_device_map on {label}: measured {fmt(acc_check.median)}, "
                        f"scaled from its first 100 keys {fmt(estimate.median)}"
                    )
        rows.append(
            Row(label, "check(names)", check, "accelerate check_device_map", acc_check, 100, under=0.050)
        )
        rows.append(Row(label, "first devices_for (builds index)", first, "", None, None))

    header = ("map", "devicemap", "operation", "peer", "peer time", "ratio", "target", "")
    lines = [header]
    for r in rows:
        ratio = r.ratio()
        peer = "-" if r.peer is None else fmt(r.peer.median) + (f" ({r.peer.note})" if r.peer.note else "")
        target = (
            "-"
            if r.target is None
            else f">= {r.target:g}x" + (f", < {r.under * 1e3:g} ms" if r.under else "")
        )
        lines.append(
            (
                r.map_label,
                f"{fmt(r.ours.median)} ({fmt(r.ours.best)})",
                r.op,
                r.peer_label or "-",
                peer,
                "-" if ratio is None else f"{ratio:,.0f}x",
                target,
                r.verdict(judge),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    print("\nPeers ran once (3 times where fast); rows scaled from a sample say so.")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
