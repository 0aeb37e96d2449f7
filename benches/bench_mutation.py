"""Mutation costs side by side with Haystack's `DeviceMap` (a dataclass over a dict): deleting
from maps of growing size, `popitem` until empty, and single-key reads and writes (the
operations that take devicemap's per-map lock).

Run from the repository root after a release build (`maturin develop --release`):

    .venv/bin/python benches/bench_mutation.py            # about half a minute
    .venv/bin/python benches/bench_mutation.py --quick    # smoke run

Deletion used to shift every later entry (O(n) per delete: 3.8 ms at 1M entries); with
tombstones it is amortised O(1), so the per-delete time must stay flat as the map grows.
Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from devicemap import Device, DeviceMap


def names(n: int) -> list[str]:
    return [f"model.layers.{i // 768}.mlp.experts.{i % 768 // 3}.w{i % 3}.weight" for i in range(n)]


def best_of(repeats: int, setup: Callable[[], Any], run: Callable[[Any], None]) -> float:
    times = []
    for _ in range(repeats):
        state = setup()
        gc.disable()
        start = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - start)
        gc.enable()
        del state
    return statistics.median(times)


def fmt(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds / 1e-9:.0f} ns"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args()
    try:
        from haystack.utils.device import Device as HDevice
        from haystack.utils.device import DeviceMap as HDeviceMap
    except ImportError:
        raise SystemExit("haystack-ai is needed for the side-by-side run: pip install haystack-ai") from None

    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    repeats = 1 if args.quick else 5
    deletes = 2_000
    rows: list[tuple[str, str, float, float]] = []

    for n in sizes:
        keys = names(n)
        # Deleted from the middle out, the worst place for a shifting delete.
        victims = keys[n // 2 - deletes // 2 : n // 2 + deletes // 2]
        ours_src = DeviceMap({k: Device.gpu(i % 8) for i, k in enumerate(keys)})
        theirs_src = {k: HDevice.gpu(i % 8) for i, k in enumerate(keys)}

        def ours_delete(dm: DeviceMap, victims: list[str] = victims) -> None:
            for k in victims:
                del dm[k]

        def theirs_delete(dm: Any, victims: list[str] = victims) -> None:
            for k in victims:
                del dm.mapping[k]

        def fresh(src: DeviceMap = ours_src, probe: str = keys[0]) -> DeviceMap:
            dm = DeviceMap.from_dict(src.to_dict())
            # The first lookup builds the key index (once per map); keep it out of the clock.
            assert probe in dm
            return dm

        ours = best_of(repeats, fresh, ours_delete)
        theirs = best_of(repeats, lambda src=theirs_src: HDeviceMap(dict(src)), theirs_delete)
        rows.append(("del dm[k], per delete", f"{n:,}", theirs / deletes, ours / deletes))

    n = sizes[-1]
    keys = names(n)
    src = {k: Device.gpu(i % 8) for i, k in enumerate(keys)}
    hsrc = {k: HDevice.gpu(i % 8) for i, k in enumerate(keys)}

    def pop_all_ours(dm: DeviceMap) -> None:
        view = dm.mapping
        for _ in range(n):
            view.popitem()

    def pop_all_theirs(dm: Any) -> None:
        for _ in range(n):
            dm.mapping.popitem()

    def fresh_full() -> DeviceMap:
        dm = DeviceMap(src)
        assert keys[0] in dm
        return dm

    ours = best_of(max(1, repeats // 2), fresh_full, pop_all_ours)
    theirs = best_of(max(1, repeats // 2), lambda: HDeviceMap(dict(hsrc)), pop_all_theirs)
    rows.append(("popitem until empty, per item", f"{n:,}", theirs / n, ours / n))

    ops = 200_000 if not args.quick else 20_000
    probe = [keys[(i * 7919) % n] for i in range(ops)]
    dm, hdm = DeviceMap(src), HDeviceMap(dict(hsrc))
    gpu = Device.gpu(1)
    hgpu = HDevice.gpu(1)

    def loop_get(m: Any) -> None:
        for k in probe:
            m[k]

    def loop_set(m: Any, value: Any) -> None:
        for k in probe:
            m[k] = value

    def loop_contains(m: Any) -> None:
        for k in probe:
            k in m  # noqa: B015

    for label, ours_fn, theirs_fn in (
        ("dm[k]", lambda _: loop_get(dm), lambda _: loop_get(hdm.mapping)),
        ("dm[k] = d", lambda _: loop_set(dm, gpu), lambda _: loop_set(hdm.mapping, hgpu)),
        ("k in dm", lambda _: loop_contains(dm), lambda _: loop_contains(hdm.mapping)),
    ):
        ours = best_of(repeats, lambda: None, ours_fn)
        theirs = best_of(repeats, lambda: None, theirs_fn)
        rows.append((f"{label}, per call", f"{n:,}", theirs / ops, ours / ops))

    print(f"{'operation':<32} {'map':>10} {'haystack-ai':>12} {'devicemap':>12} {'ratio':>7}")
    for label, size, theirs, ours in rows:
        print(f"{label:<32} {size:>10} {fmt(theirs):>12} {fmt(ours):>12} {theirs / ours:>6.2f}x")


if __name__ == "__main__":
    main()
