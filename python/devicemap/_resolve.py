"""Choosing the default device: the one function `ComponentDevice.resolve_device()` asks.

Precedence is Haystack's: CUDA, then XPU, then MPS, then CPU, with `HAYSTACK_XPU_ENABLED=false`
and `HAYSTACK_MPS_ENABLED=false` switching those two off.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import ModuleType

from devicemap._core import Device


@dataclass(frozen=True)
class Resolution:
    """The chosen default device and, in a sentence, why."""

    device: Device
    reason: str


def _enabled(variable: str) -> bool:
    # Haystack compares with exactly "false"; "False" or "0" leave the backend enabled.
    return os.environ.get(variable, "true") != "false"


def _ask_torch(torch: ModuleType) -> Resolution:
    """Haystack's own decision, asked of the process's torch."""
    has_mps = (
        hasattr(torch.backends, "mps")
        and torch.backends.mps.is_available()
        and _enabled("HAYSTACK_MPS_ENABLED")
    )
    has_cuda = torch.cuda.is_available()
    has_xpu = (
        hasattr(torch, "xpu")
        and hasattr(torch.xpu, "is_available")
        and torch.xpu.is_available()
        and _enabled("HAYSTACK_XPU_ENABLED")
    )
    if has_cuda:
        return Resolution(Device.gpu(), "torch reports CUDA available")
    if has_xpu:
        return Resolution(Device.xpu(), "torch reports an Intel XPU available")
    if has_mps:
        return Resolution(Device.mps(), "torch reports Apple MPS available")
    return Resolution(Device.cpu(), "torch reports no CUDA, XPU or MPS device")


def resolve() -> Resolution:
    """The default device for this process, with the reason."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return Resolution(Device.cpu(), "torch is not installed, so only the CPU can be used")
    return _ask_torch(torch)


def default_device() -> Device:
    return resolve().device
