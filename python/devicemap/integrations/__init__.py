"""Opt-in integrations that route a loader's device-map lookups through devicemap.

- `devicemap.integrations.transformers`: transformers' per-tensor `get_device` and its
  `expand_device_map` over all parameter names.
- `devicemap.integrations.accelerate`: accelerate's `check_device_map` (called by
  `dispatch_model`).

With `enable(planning=True)`, both also plan: transformers' `_get_device_map` for the string
maps (`"auto"`, `"balanced"`, `"balanced_low_0"`, `"sequential"`), and accelerate's
`infer_auto_device_map` and `get_balanced_memory`, with devicemap's planner.

Each has `enable()`, `disable()`, `is_enabled()` and a context manager `enabled()`. Importing
this package imports neither loader nor torch; a loader is imported by its `enable()`.
See docs/integrations.md.
"""

from __future__ import annotations

__all__ = ["UnsupportedVersionError"]


class UnsupportedVersionError(RuntimeError):
    """The installed loader lacks a function the integration replaces, or has it with another
    signature; nothing was patched."""
