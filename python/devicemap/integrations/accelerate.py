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
import itertools
import warnings
from collections import OrderedDict
from typing import Any

from devicemap.integrations import _compiled, _planning
from devicemap.integrations._patch import Patch, Switch, expect_functions, import_target

__all__ = [
    "check_device_map",
    "disable",
    "enable",
    "enabled",
    "get_balanced_memory",
    "infer_auto_device_map",
    "is_enabled",
]

TARGET = "accelerate.utils.modeling"
TESTED_VERSIONS = "1.15.0"
EXPECTED: dict[str, tuple[str, ...]] = {"check_device_map": ("model", "device_map")}
_SIZES = ("model", "max_memory", "no_split_module_classes", "dtype", "special_dtypes")
# Replaced too with `enable(planning=True)`.
PLANNING: dict[str, tuple[str, ...]] = {
    "infer_auto_device_map": (
        *_SIZES,
        "verbose",
        "clean_result",
        "offload_buffers",
        "fallback_allocation",
    ),
    "get_balanced_memory": (*_SIZES, "low_zero"),
}
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


def _sizes(model: Any, dtype: Any, special_dtypes: Any, no_split_module_classes: Any) -> Any:
    """accelerate's view of a model: bytes as its `compute_module_sizes` counts them (`dtype`,
    `special_dtypes`), tensors shared under several names tied, and the no-split blocks."""
    from accelerate.utils import modeling  # type: ignore[import-untyped]

    overrides = None
    if special_dtypes:
        tensors = dict(model.named_parameters())
        tensors.update(model.named_buffers())
        overrides = {
            name: tensors[name].numel() * modeling.dtype_byte_size(modeling._get_proper_dtype(wanted))
            for name, wanted in special_dtypes.items()
            if name in tensors
        }
    # Ties as accelerate's `find_tied_parameters` finds them (one tensor under several names),
    # from the same walk, rather than by its second walk in Python.
    return _planning.model_view(model, no_split_module_classes, dtype, overrides)


def _max_memory(max_memory: Any) -> dict[Any, Any]:
    from accelerate.utils import modeling

    return dict(modeling.get_max_memory(None if max_memory is None else dict(max_memory)))


def infer_auto_device_map(
    model: Any,
    max_memory: Any = None,
    no_split_module_classes: Any = None,
    dtype: Any = None,
    special_dtypes: Any = None,
    verbose: bool = False,
    clean_result: bool = True,
    offload_buffers: bool = False,
    fallback_allocation: bool = False,
) -> OrderedDict[str, int | str]:
    """accelerate's `infer_auto_device_map`, planned by devicemap: the GPUs in order, each up to
    its budget (`"sequential"`), then the CPU, then the disk, never splitting a block of
    `no_split_module_classes` or a tie. The map is compact; with `clean_result=False` it lists
    what accelerate's would (see `_uncompacted`). `offload_buffers` and `fallback_allocation`
    change nothing (buffers are counted with their module, and a device is never skipped while
    a part still fits it)."""
    del offload_buffers, fallback_allocation
    sizes, tied, no_split = _sizes(model, dtype, special_dtypes, no_split_module_classes)
    report = _planning.plan(sizes, _max_memory(max_memory), "sequential", no_split, tied)
    report.check()
    if verbose:
        print(report)
    compact = OrderedDict(report.to_hf())
    return compact if clean_result else _uncompacted(model, compact, set(no_split or ()), tied)


def _uncompacted(
    model: Any, device_map: dict[str, Any], blocks: set[str], tied: list[list[str]]
) -> OrderedDict[str, Any]:
    """`device_map` in the form accelerate gives with `clean_result=False`, from accelerate's
    walk: the model's members (parameters, submodules, buffers) in order, each listed whole
    where it stays on the device the walk is at (the last listed entry's), or where it cannot
    be split (a no-split block in `blocks`, a module without submodules); otherwise (split by
    the map, or moved to the next device) split into its own members. A member without tensors
    goes where the walk is, as accelerate puts it; a member tied to one listed before goes with
    it (accelerate lists it there), so the walk does not move to its device."""
    compiled = _compiled.CompiledKeys(list(device_map))
    listed: OrderedDict[str, Any] = OrderedDict()
    at: list[Any] = []  # the device the walk is at
    group_of = {name: index for index, group in enumerate(tied) for name in group}
    seen: set[int] = set()

    def follows_a_tie(full: str) -> bool:
        groups = {index for name, index in group_of.items() if name == full or name.startswith(f"{full}.")}
        followed = bool(groups & seen)
        seen.update(groups)
        return followed

    def visit(module: Any, prefix: str) -> None:
        members = (module._parameters, module._modules, module._buffers)
        for name, value in itertools.chain.from_iterable(member.items() for member in members):
            if value is None:
                continue
            full = prefix + name
            key = compiled.key_for(full)
            is_module = name in module._modules
            whole = key is not None and (
                not at or device_map[key] == at[-1] or not is_module or full in blocks or not value._modules
            )
            if whole:
                listed[full] = device_map[key]  # type: ignore[index]
                if not follows_a_tie(full):
                    at.append(listed[full])
            elif is_module and (value._modules or value._parameters or value._buffers):
                visit(value, f"{full}.")
            elif is_module and at:  # no tensors under it
                listed[full] = at[-1]

    visit(model, "")
    return listed


def get_balanced_memory(
    model: Any,
    max_memory: Any = None,
    no_split_module_classes: Any = None,
    dtype: Any = None,
    special_dtypes: Any = None,
    low_zero: bool = False,
) -> dict[Any, Any]:
    """accelerate's `get_balanced_memory`, from devicemap's balanced plan: each GPU but the last
    is capped at what the plan puts on it (with the room the plan keeps there to run offloaded
    blocks), so that devicemap's `infer_auto_device_map` follows that plan, and accelerate's
    spills no more than on its own budgets. Without `max_memory`, a lone GPU keeps 10% free, as
    accelerate's does."""
    budgets = _max_memory(max_memory)
    gpus = sorted(d for d, budget in budgets.items() if isinstance(d, int) and budget > 0)
    if not gpus:
        return budgets
    if len(gpus) == 1:
        if max_memory is None:
            budgets[gpus[0]] = int(budgets[gpus[0]] * 0.9)
        return budgets
    sizes, tied, no_split = _sizes(model, dtype, special_dtypes, no_split_module_classes)
    strategy = "balanced_low_0" if low_zero else "balanced"
    report = _planning.plan(sizes, budgets, strategy, no_split, tied)
    # What the plan puts on each GPU, and the room it keeps there to run offloaded blocks.
    used = {row["device"]: row["bytes"] + row["reserved"] for row in report.devices}
    for gpu in gpus[:-1]:
        budgets[gpu] = min(budgets[gpu], used.get(f"cuda:{gpu}", 0))
    return budgets


def _build(planning: bool = False) -> Patch:
    module, version = import_target("accelerate", "accelerate.utils.modeling")
    expected = dict(EXPECTED, **PLANNING) if planning else EXPECTED
    originals = expect_functions(module, "accelerate", version, TESTED_VERSIONS, expected)
    # `dispatch_model` calls the name bound in accelerate.big_modeling: import it so it is
    # patched now rather than bound to the original later.
    import accelerate.big_modeling  # type: ignore[import-untyped]  # noqa: F401

    replacements: dict[str, tuple[Any, Any]] = {
        "check_device_map": (originals["check_device_map"], check_device_map)
    }
    if planning:
        replacements["infer_auto_device_map"] = (originals["infer_auto_device_map"], infer_auto_device_map)
        replacements["get_balanced_memory"] = (originals["get_balanced_memory"], get_balanced_memory)
    return Patch(("accelerate", "transformers"), replacements)


_switch = Switch(_build)


def enable(planning: bool = False) -> None:
    """Routes accelerate's `check_device_map` through devicemap in every accelerate and
    transformers module that holds it; with `planning=True`, its `infer_auto_device_map` and
    `get_balanced_memory` too (what `load_checkpoint_and_dispatch` and other loaders call).
    Safe to call again; `UnsupportedVersionError` if accelerate lacks the functions or has
    them with other parameters."""
    _switch.enable(planning=planning)


def disable() -> None:
    """Puts accelerate's own functions back (the very function objects) everywhere."""
    _switch.disable()


def is_enabled() -> bool:
    return _switch.is_enabled()


def enabled(planning: bool = False) -> contextlib.AbstractContextManager[None]:
    """Enabled inside the block (planning too if `planning`); left as it was found afterwards
    (nested blocks are fine)."""
    return _switch.enabled(planning=planning)
