"""transformers' device-map lookups through devicemap (opt-in).

    from devicemap.integrations import transformers as dm_transformers

    with dm_transformers.enabled():
        model = AutoModelForCausalLM.from_pretrained(path, device_map=per_module_map)

While enabled, `transformers.integrations.accelerate.get_device` (asked once or twice per
tensor during a load) and `expand_device_map` (a map over all parameter names) are devicemap's,
in every transformers module that imported them by name, and `_get_device_map` (where
`from_pretrained` finalizes a load's map) hands out a `TrackedDeviceMap` that carries its
compiled lookup. A map's keys are compiled once, not per tensor: see `_compiled` for how the
cache stays correct when a dict changes.

Results are transformers' wherever transformers is right (a key covering a name at a dot
boundary, `""` covering everything, `"disk"` given as `"cpu"` where transformers asks for a
valid torch device); where its regular expression is wrong (no dot boundary, keys taken as
patterns) the longest key ending at a dot boundary wins. A name nothing covers keeps
transformers' fallback (`"cpu"`) and is logged once on the `devicemap.integrations` logger.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from typing import Any

from devicemap.integrations import _compiled
from devicemap.integrations._patch import Patch, Switch, expect_functions, import_target

__all__ = ["disable", "enable", "enabled", "expand_device_map", "get_device", "is_enabled"]

TARGET = "transformers.integrations.accelerate"
TESTED_VERSIONS = "5.24.0"
# The functions replaced, with the parameters the replacements take and pass on.
EXPECTED: dict[str, tuple[str, ...]] = {
    "get_device": ("device_map", "param_name", "valid_torch_device"),
    "expand_device_map": ("device_map", "param_names"),
    "_get_device_map": ("model", "device_map", "max_memory", "hf_quantizer"),
}


def expand_device_map(device_map: dict | None, param_names: Iterable[str]) -> dict[str, Any]:  # type: ignore[type-arg]
    """transformers' `expand_device_map`: the device of each name, through devicemap's lookup."""
    if device_map is None:
        return dict.fromkeys(param_names, "cpu")
    return _compiled.expand(device_map, param_names)


def get_device(device_map: dict | None, param_name: str, valid_torch_device: bool = False) -> Any:  # type: ignore[type-arg]
    """transformers' `get_device`: the device of one name; `"cpu"` for `"disk"` when
    `valid_torch_device`."""
    device = "cpu" if device_map is None else _compiled.lookup(device_map, param_name)
    if valid_torch_device and device == "disk":
        return "cpu"
    return device


def _finalizing(original: Any) -> Any:
    @functools.wraps(original)
    def _get_device_map(model: Any, device_map: Any, max_memory: Any, hf_quantizer: Any) -> Any:
        return _compiled.track(original(model, device_map, max_memory, hf_quantizer))

    return _get_device_map


def _build() -> Patch:
    module, version = import_target("transformers", "transformers.integrations.accelerate")
    originals = expect_functions(module, "transformers", version, TESTED_VERSIONS, EXPECTED)
    return Patch(
        ("transformers",),
        {
            "get_device": (originals["get_device"], get_device),
            "expand_device_map": (originals["expand_device_map"], expand_device_map),
            "_get_device_map": (originals["_get_device_map"], _finalizing(originals["_get_device_map"])),
        },
    )


_switch = Switch(_build, after_disable=_compiled.clear_cache)


def enable() -> None:
    """Routes transformers' device-map lookups through devicemap. Safe to call again (it then
    patches modules imported since); `UnsupportedVersionError` if transformers lacks the
    functions this replaces, or has them with other parameters."""
    _switch.enable()


def disable() -> None:
    """Puts transformers' own functions back (the very function objects) in every module."""
    _switch.disable()


def is_enabled() -> bool:
    return _switch.is_enabled()


def enabled() -> contextlib.AbstractContextManager[None]:
    """Enabled inside the block; left as it was found afterwards (nested blocks are fine)."""
    return _switch.enabled()
