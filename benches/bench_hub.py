"""Planning a model on the Hub: devicemap's Hub reader against huggingface_hub's
`get_safetensors_metadata`, on the same stand-in Hub, in one run.

    .venv/bin/python benches/bench_hub.py            # 163 DeepSeek-V3-shaped shards, 50 ms a request
    .venv/bin/python benches/bench_hub.py --quick    # smoke run, no targets judged

Each figure is the median of `--repeat` runs (default 3; a shared machine's load makes single
runs vary by a third), huggingface_hub's and devicemap's runs interleaved. "CPU s" is the CPU
time of this process during the run (the client's threads and the stand-in's), which the
machine's load does not inflate as it does the wall time.

The stand-in (tests/_hub_standin.py) serves sparse shards (real headers, data as holes) on
127.0.0.1 and sleeps `--latency` before each answer; with `redirect` every shard request is sent
on to a CDN on another origin, as the Hub does (two round trips). Each client reads a fresh
cache folder when cold; devicemap's warm run reads its cache of the cold run (one request:
resolving the branch, while the checkpoint as read is read from it). Bytes: body bytes the
stand-in sent, against the index plus the headers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import devicemap
from _hub_standin import COMMIT_A, Repo, StandIn, write_checkpoint

TARGET_COLD = 1.0  # seconds, no redirect
TARGET_REDIRECT_RATIO = 1.5  # x faster than huggingface_hub's default
TARGET_WARM = 0.1  # seconds
TARGET_BYTES = 1.1  # x the index plus the headers


def tensors(limit: int | None) -> list[tuple[str, str, list[int]]]:
    """DeepSeek-V3's tensors, two-dimensional where the hidden size divides them."""
    out = []
    for name, dtype, elements in devicemap._core._example_tensors("deepseek-v3")[:limit]:
        shape = [7168, elements // 7168] if elements % 7168 == 0 and elements > 7168 else [elements]
        out.append((name, dtype, shape))
    return out


def header_bytes(files: dict[str, Path]) -> int:
    total = 0
    for name, path in files.items():
        if name.endswith(".safetensors"):
            with open(path, "rb") as handle:
                total += 8 + int.from_bytes(handle.read(8), "little")
        elif name.endswith(".index.json"):
            total += path.stat().st_size
    return total


def cold(work: Path, hf_hub_cache: str) -> None:
    shutil.rmtree(hf_hub_cache, ignore_errors=True)
    shutil.rmtree(work / "hf-home" / "devicemap", ignore_errors=True)


def timed(hub: StandIn, run: Any) -> tuple[float, int, int, float]:
    """Seconds, requests, bytes sent, and CPU seconds of this process (the client's threads and
    the stand-in's): on a loaded machine the wall time counts waiting for a core too."""
    hub.clear()
    start, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, len(hub.requests()), hub.sent, time.process_time() - cpu


def median(runs: list[tuple[float, int, int, float]]) -> tuple[float, int, int, float]:
    """The median time, with the requests, bytes and CPU time of the run it came from."""
    return sorted(runs)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to each request")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the median reported")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devicemap-bench-hub-"))
    # Before huggingface_hub is imported: it reads these once.
    os.environ["HF_HOME"] = str(work / "hf-home")
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from huggingface_hub import HfApi, constants

    shards = 8 if args.quick else 163
    latency = 0.005 if args.quick else args.latency
    try:
        files = write_checkpoint(
            work / "model", tensors(2000 if args.quick else None), shards, {"model_type": "deepseek_v3"}
        )
        needed = header_bytes(files)
        with StandIn({"org/dsv3": Repo({COMMIT_A: files}, {"main": COMMIT_A})}, latency=latency) as hub:
            os.environ["HF_ENDPOINT"] = hub.url
            rows = []
            for redirect in (False, True):
                hub.redirect = redirect
                api = HfApi(endpoint=hub.url)
                # Each client cold: nothing downloaded, no headers cached (devicemap would read
                # the index huggingface_hub downloaded).
                runs: list[list[tuple[float, int, int, float]]] = [[], [], []]
                for _ in range(args.repeat):
                    cold(work, constants.HF_HUB_CACHE)
                    runs[0].append(timed(hub, lambda api=api: api.get_safetensors_metadata("org/dsv3")))
                    cold(work, constants.HF_HUB_CACHE)
                    runs[1].append(timed(hub, lambda: devicemap.tensor_sizes("org/dsv3")))
                    runs[2].append(timed(hub, lambda: devicemap.tensor_sizes("org/dsv3")))
                theirs, ours, warm = (median(r) for r in runs)
                rows.append((redirect, theirs, ours, warm))
        print(
            f"{shards} shards, {latency * 1000:.0f} ms a request, index + headers {needed / 1e6:.2f} MB,"
            f" median of {args.repeat} runs"
        )
        print(f"{'':26}{'seconds':>9}{'CPU s':>7}{'requests':>10}{'MB sent':>9}{'x index+headers':>17}")
        results: dict[str, Any] = {}
        for redirect, theirs, ours, warm in rows:
            hop = "redirected" if redirect else "direct"
            for who, (seconds, requests, sent, cpu) in (
                ("huggingface_hub", theirs),
                ("devicemap cold", ours),
                ("devicemap warm", warm),
            ):
                print(
                    f"{who + ' ' + hop:26}{seconds:9.3f}{cpu:7.3f}{requests:10d}{sent / 1e6:9.2f}"
                    f"{sent / needed:17.2f}"
                )
            ratio = theirs[0] / ours[0]
            print(f"  devicemap cold is {ratio:.2f}x faster than huggingface_hub ({hop})")
            results[hop] = {
                "ratio": ratio,
                "cold": ours[0],
                "warm": warm[0],
                "warm_cpu": warm[3],
                "bytes": ours[2] / needed,
            }
        if args.quick:
            return
        checks = [
            ("cold, direct < 1.0 s", results["direct"]["cold"] < TARGET_COLD),
            ("redirected >= 1.5x huggingface_hub", results["redirected"]["ratio"] >= TARGET_REDIRECT_RATIO),
            ("warm < 100 ms", max(r["warm"] for r in results.values()) < TARGET_WARM),
            ("bytes <= 1.1x index + headers", results["direct"]["bytes"] <= TARGET_BYTES),
        ]
        for what, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {what}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
