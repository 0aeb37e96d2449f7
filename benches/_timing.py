"""Timing one call the way every benchmark here does."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median and best seconds of `repeats` calls of `fn`; the garbage collector runs before
    each call and is off during it, and the result is freed outside the timing."""
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        gc.enable()
        del result
    return statistics.median(times), min(times)
