"""accelerate's `check_device_map` through devicemap (opt-in).

    from devicemap.integrations import accelerate as dm_accelerate

    dm_accelerate.enable()
    dispatch_model(model, device_map)     # the map is checked by devicemap

accelerate's check filters the list of all tensor names once per map key (O(keys x names));
devicemap's looks each name up once in the map's compiled keys (O(names)). The verdict is
accelerate's: the same `UserWarning` for keys that name no submodule, and a `ValueError`
starting with accelerate's sentence when a tensor is not covered, followed by devicemap's
compact list of the uncovered names (runs such as `model.layers.{3..60}.mlp.weight` grouped).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from devicemap.integrations import _compiled
from devicemap.integrations._patch import Patch, Switch, expect_functions, import_target

__all__ = ["check_device_map", "disable", "enable", "enabled", "is_enabled"]

TARGET = "accelerate.utils.modeling"
TESTED_VERSIONS = "1.15.0"
EXPECTED: dict[str, tuple[str, ...]] = {"check_device_map": ("model", "device_map")}
UNCOVERED = "The device_map provided does not give any device for the following parameters: "


def check_device_map(model: Any, device_map: dict) -> None:  # type: ignore[type-arg]
    """accelerate's `check_device_map`: warns about keys that name no submodule, raises
    `ValueError` when a tensor of the model's state dict is not covered by the map."""
    modules = dict(model.named_modules())
    # Set operations run in C; the ordered list (accelerate's message) is made only if needed.
    invalid = device_map.keys() - modules.keys() - {""}
    if invalid:
        invalid_keys = [key for key in device_map if key in invalid]
        warnings.warn(
            f"The following device_map keys do not match any submodules in the model: {invalid_keys}",
            UserWarning,
            stacklevel=2,
        )
    if "" in device_map:
        return
    names = list(model.state_dict().keys())
    uncovered = _compiled.compiled_for(device_map).uncovered_groups(names)
    if uncovered:
        raise ValueError(UNCOVERED + ", ".join(uncovered))


def _build() -> Patch:
    module, version = import_target("accelerate", "accelerate.utils.modeling")
    originals = expect_functions(module, "accelerate", version, TESTED_VERSIONS, EXPECTED)
    # `dispatch_model` calls the name bound in accelerate.big_modeling: import it so it is
    # patched now rather than bound to the original later.
    import accelerate.big_modeling  # type: ignore[import-untyped]  # noqa: F401

    return Patch(
        ("accelerate", "transformers"),
        {"check_device_map": (originals["check_device_map"], check_device_map)},
    )


_switch = Switch(_build)


def enable() -> None:
    """Routes accelerate's `check_device_map` through devicemap in every accelerate and
    transformers module that holds it. Safe to call again; `UnsupportedVersionError` if
    accelerate lacks the function or has it with other parameters."""
    _switch.enable()


def disable() -> None:
    """Puts accelerate's own `check_device_map` back (the very function object) everywhere."""
    _switch.disable()


def is_enabled() -> bool:
    return _switch.is_enabled()


def enabled() -> contextlib.AbstractContextManager[None]:
    """Enabled inside the block; left as it was found afterwards (nested blocks are fine)."""
    return _switch.enabled()
