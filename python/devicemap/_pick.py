"""`pick_device`: which GPU a launched job (one process per GPU, or one process) should use."""

from __future__ import annotations

import os

from devicemap._core import CudaDevice, Device, cuda_discover
from devicemap._text import shown

# Not `typing.TYPE_CHECKING`: importing `typing` costs about 5 ms of a cold start, and mypy
# honours a module constant of this name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Policy = Literal["first", "local_rank", "most_free_memory"]
POLICIES: tuple[str, ...] = ("first", "local_rank", "most_free_memory")


def _local_rank() -> int:
    # torchrun and accelerate both set LOCAL_RANK; a process started alone is rank 0.
    text = os.environ.get("LOCAL_RANK")
    if text is None or text.strip() == "":
        return 0
    try:
        rank = int(text)
    except ValueError:
        raise ValueError(f"LOCAL_RANK must be a non-negative integer, got {shown(text)}") from None
    if rank < 0:
        raise ValueError(f"LOCAL_RANK must be a non-negative integer, got {shown(text)}")
    return rank


def _free(device: CudaDevice) -> int:
    # Memory NVML could not read counts as none free, so such a device never wins on memory.
    return device.memory_free if device.memory_free is not None else 0


def _describe(device: CudaDevice) -> str:
    free = "unknown" if device.memory_free is None else f"{device.memory_free:,} bytes"
    return f"cuda:{device.ordinal} ({device.name}, {free} free)"


def pick_device(policy: Policy = "first", *, min_free_memory: int = 0) -> Device:
    """The device this process should use, as a `Device`.

    - `"first"`: the lowest-numbered CUDA device with at least `min_free_memory` bytes free.
    - `"local_rank"`: device `LOCAL_RANK % number of visible devices` (torchrun, accelerate;
      `LOCAL_RANK` unset means 0). If that device has less than `min_free_memory` free,
      `ValueError`: ranks are never moved silently onto another rank's GPU.
    - `"most_free_memory"`: the device with the most free memory now (lowest ordinal on ties).

    `DEVICEMAP_DEVICE`, when set, wins over every policy. Without a CUDA device (no GPU, no
    NVML, or `CUDA_VISIBLE_DEVICES` hiding them all) the result is the process's default device
    (`ComponentDevice.resolve_device()`: XPU, MPS or CPU) and `min_free_memory` is not checked.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown policy {shown(policy)}; expected one of {', '.join(map(repr, POLICIES))}")
    if isinstance(min_free_memory, bool) or not isinstance(min_free_memory, int):
        raise TypeError(f"min_free_memory must be an int (bytes), got {type(min_free_memory).__name__}")
    if min_free_memory < 0:
        raise ValueError(f"min_free_memory must be >= 0 bytes, got {min_free_memory}")

    from devicemap._resolve import from_environment, resolve

    override = from_environment()
    if override is not None:
        return override.device
    # One discovery serves both the choice and, without a CUDA device, the fallback.
    discovery = cuda_discover(warn=True)
    devices = discovery.devices
    if not devices:
        return resolve(discovery).device

    if policy == "local_rank":
        rank = _local_rank()
        chosen = devices[rank % len(devices)]
        if _free(chosen) < min_free_memory:
            raise ValueError(
                f"LOCAL_RANK={rank} selects {_describe(chosen)}, "
                f"which has less than min_free_memory={min_free_memory:,} bytes free"
            )
        return chosen.device

    candidates = [device for device in devices if _free(device) >= min_free_memory]
    if not candidates:
        seen = ", ".join(_describe(device) for device in devices)
        raise ValueError(f"No CUDA device has min_free_memory={min_free_memory:,} bytes free: {seen}")
    if policy == "most_free_memory":
        # max() keeps the first of equals, which is the lowest ordinal.
        return max(candidates, key=_free).device
    return candidates[0].device
