"""A loader's string device map ("auto", "balanced", "balanced_low_0", "sequential") planned by
devicemap from the model the loader built (on the meta device), with the loader's own view of
sizes, ties, no-split classes and budgets. Used by both integrations; the loaders' own helpers
compute the budgets, so that stock and planned maps are made on the same budgets.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any

from devicemap import _core
from devicemap._core import PlanReport

#: The loaders' strategy names, as devicemap's planner names them.
STRATEGIES = {
    "auto": "balanced",
    "balanced": "balanced",
    "balanced_low_0": "balanced_low_0",
    "sequential": "sequential",
}
#: Both loaders always offer the disk, without a limit (`infer_auto_device_map` appends it).
DISK = 10**15
_name = operator.itemgetter(0)


def model_view(
    model: Any,
    no_split_classes: Iterable[str] | str | None,
    dtype: Any = None,
    overrides: Mapping[str, int] | None = None,
    tied: Iterable[Iterable[str]] = (),
) -> tuple[dict[str, int], list[list[str]], list[str] | None]:
    """What planning needs of a module, from one walk of it in Rust: `{tensor name: bytes}` in
    module order (parameters, then buffers, as the loaders count them), the tied groups (shared
    by tensor identity, and `tied`: the loader's own view), and the names of the submodules
    whose class is in `no_split_classes` (a loader's `no_split_module_classes`: a list, a set,
    or one class name). `overrides` replaces the bytes of some tensors (a quantizer's view,
    accelerate's `special_dtypes`). The planner counts a tied group's bytes once, as the
    loaders do (they skip the tied key and count its source)."""
    if isinstance(no_split_classes, str):
        no_split_classes = [no_split_classes]
    classes = sorted(set(no_split_classes)) if no_split_classes else None
    pairs, found, blocks = _core._module_walk(model, dtype, classes)
    sizes = dict(pairs)
    if overrides:
        sizes.update(overrides)
    groups = [*found, *(group for group in map(list, tied) if len(group) > 1)]
    # The planner counts a group's storage on its first member; a module's shared tensor is
    # listed once (its other names count 0), so the member holding the bytes goes first.
    ties = [sorted(group, key=lambda name: -sizes.get(name, 0)) for group in groups]
    return sizes, ties, blocks or None


def with_disk(budgets: Mapping[Any, Any]) -> dict[Any, int]:
    """The loader's budgets as ints, with the disk the loaders always offer (no limit)."""
    planned = {device: int(budget) for device, budget in budgets.items() if device != "disk"}
    planned["disk"] = DISK
    return planned


def plan(
    sizes: dict[str, int],
    budgets: Mapping[Any, Any],
    strategy: str,
    no_split: list[str] | None,
    tied: list[list[str]],
) -> PlanReport:
    """devicemap's plan of `sizes` on the loader's `budgets` (the disk added, unlimited)."""
    return _core._plan(sizes, with_disk(budgets), STRATEGIES.get(strategy, strategy), no_split, tied)


def tensor_names(model: Any) -> list[str]:
    """Every parameter and buffer name of `model`, tied ones included."""
    params = model.named_parameters(remove_duplicate=False)
    buffers = model.named_buffers(remove_duplicate=False)
    return list(map(_name, params)) + list(map(_name, buffers))
