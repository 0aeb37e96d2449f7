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
transformers' fallback (`"cpu"`) and is logged once on the `devicemap.integrations` logger
(a load's uncovered names in one message).

With `enable(planning=True)`, `_get_device_map` plans the string maps with devicemap (see
`plan_report_for`), on the budgets transformers' own helpers compute.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from devicemap import _core
from devicemap._core import PlanReport
from devicemap.integrations import _compiled, _planning
from devicemap.integrations._patch import Patch, Switch, expect_functions, import_target

__all__ = [
    "disable",
    "enable",
    "enabled",
    "expand_device_map",
    "get_device",
    "is_enabled",
    "loading_reserve",
    "plan_report_for",
]

logger = logging.getLogger("devicemap.integrations")
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


def _report_uncovered(model: Any, device_map: Any) -> None:
    """Logs, in one message, every tensor of `model` that no key of `device_map` covers (the
    lookups that follow find them reported already, so none is logged again)."""
    if not isinstance(device_map, dict) or "" in device_map or not device_map:
        return
    if not hasattr(model, "named_parameters"):
        return
    names = _planning.tensor_names(model)
    compiled = _compiled.compiled_for(device_map)
    keys = compiled.keys_for(names)
    if None in keys:
        compiled.report(name for name, key in zip(names, keys, strict=True) if key is None)


def _finalizing(original: Any) -> Any:
    @functools.wraps(original)
    def _get_device_map(model: Any, device_map: Any, max_memory: Any, hf_quantizer: Any) -> Any:
        final = _compiled.track(original(model, device_map, max_memory, hf_quantizer))
        if isinstance(device_map, dict):  # a planned map covers every tensor already
            _report_uncovered(model, final)
        return final

    return _get_device_map


def _budgets(hf: Any, device_map: str, max_memory: Any, hf_quantizer: Any) -> dict[Any, Any]:
    """The budgets the stock path plans a string map on, from its own helpers: `get_max_memory`
    (free memory, less 10% of the CPU when `max_memory` is not given), the 90% of a lone GPU
    that `get_balanced_memory` keeps when `max_memory` is not given, and the quantizer's
    `adjust_max_memory`. (The per-GPU caps `get_balanced_memory` adds are its way to balance;
    devicemap balances by itself.)"""
    budgets = hf.get_max_memory(max_memory)
    if device_map != "sequential" and max_memory is None:
        gpus = [device for device, budget in budgets.items() if device not in ("cpu", "disk") and budget > 0]
        if len(gpus) == 1:
            first = next(device for device in budgets if isinstance(device, int))
            budgets[first] *= 0.9
    if hf_quantizer is not None:
        budgets = hf_quantizer.adjust_max_memory(budgets)
    return dict(budgets)


def _quantized_sizes(model: Any, hf_quantizer: Any) -> dict[str, int] | None:
    """The quantizer's view of each tensor's bytes, as transformers' `compute_module_sizes`
    asks it (its own per-tensor function, called once per tensor)."""
    if hf_quantizer is None:
        return None
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    size = hf_quantizer.param_element_size
    return {name: tensor.numel() * size(model, name, tensor) for name, tensor in tensors}


def loading_reserve(model: Any, sizes: dict[str, int] | None = None, hf_quantizer: Any = None) -> int:
    """Bytes a load needs free on a GPU for its largest conversion (the loader's
    `WeightConverter`s, e.g. per-expert checkpoint tensors merged into one fused expert
    parameter): the conversion's inputs plus its output. transformers 5.24 materializes a
    converter's inputs on the device of the parameter they become (`get_device` of the target
    name) and converts there, so the inputs (which total the targets' bytes: a merge or a
    concatenation moves bytes, it makes none) and the output are on that GPU at once. Converters
    marked `force_cpu` convert on the CPU and need nothing here. `sizes` is `{tensor: bytes}` as
    planned (the model's own when not given). 0 for a model without conversions, and for a
    module that is not a `PreTrainedModel` (the loader converts only those; finding a plain
    module's mapping walks all its submodules: 0.5 s on a per-expert DeepSeek-V3)."""
    # A PreTrainedModel exists only once transformers.modeling_utils is imported (a costly
    # import that a plain module need not pay).
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    if modeling_utils is None or not isinstance(model, modeling_utils.PreTrainedModel):
        return 0
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter
    except ImportError:  # a transformers without conversions
        return 0
    if sizes is None:
        sizes = _planning.model_view(model, None, overrides=_quantized_sizes(model, hf_quantizer))[0]
    converters = [
        converter
        for converter in get_model_conversion_mapping(model, hf_quantizer=hf_quantizer)
        if isinstance(converter, WeightConverter) and not converter.force_cpu
    ]
    if not converters:
        return 0
    # The targets each converter makes, summed per module (a one-to-many converter makes all of
    # them from one input), in Rust where its `regex` reads the patterns exactly as `re` does
    # (every converter of transformers 5.24); else by `re` (`_largest_by_re`).
    largest = _core._largest_conversion(sizes, [converter.target_patterns for converter in converters])
    if largest is None:
        largest = _largest_by_re(sizes, converters)
    return 2 * largest


def _largest_by_re(sizes: dict[str, int], converters: list[Any]) -> int:
    """`loading_reserve`'s sums by Python's `re`, for target patterns the core leaves to it
    (`plan::conversion::portable`): one search over all names at once per converter."""
    names = "\n".join(sizes)
    largest = 0
    for converter in converters:
        targets = "|".join(f"(?:{pattern})" for pattern in converter.target_patterns)
        per_module: dict[str, int] = {}
        for found in re.finditer(rf"^(.*?)(?:{targets})[^\n]*$", names, re.MULTILINE):
            module = found.group(1)
            per_module[module] = per_module.get(module, 0) + sizes[found.group(0)]
        largest = max(largest, *per_module.values(), 0)
    return largest


def _keep_reserve(budgets: dict[Any, Any], reserve: int) -> dict[Any, Any]:
    """`budgets` less the loading reserve on every GPU (any GPU may receive a converted
    parameter: the plan decides which, after the budgets)."""
    if not reserve:
        return budgets
    kept = {
        device: max(int(budget) - reserve, 0)
        if device not in ("cpu", "disk", "mps") and budget > 0
        else budget
        for device, budget in budgets.items()
    }
    if kept != budgets:
        logger.info("kept %d bytes free on each GPU for the loader's largest conversion", reserve)
    return kept


def plan_report_for(
    model: Any, device_map: str, max_memory: Any = None, hf_quantizer: Any = None
) -> PlanReport:
    """devicemap's plan of a string map for a model transformers built, on the budgets the stock
    path computes (`transformers.integrations.accelerate`'s helpers), with transformers' view of
    sizes (the quantizer's), ties (`all_tied_weights_keys`) and `_no_split_modules`."""
    return _plan_for(model, device_map, max_memory, hf_quantizer)[0]


def _plan_for(
    model: Any, device_map: str, max_memory: Any, hf_quantizer: Any
) -> tuple[PlanReport, list[str]]:
    """The plan, and the `_no_placement_params` left out of it (for the loader to place)."""
    import transformers.integrations.accelerate as hf

    tied = getattr(model, "all_tied_weights_keys", None) or {}
    sizes, groups, no_split = _planning.model_view(
        model,
        getattr(model, "_no_split_modules", None),
        overrides=_quantized_sizes(model, hf_quantizer),
        tied=[[source, key] for key, source in tied.items()],
    )
    budgets = _keep_reserve(
        _budgets(hf, device_map, max_memory, hf_quantizer), loading_reserve(model, sizes, hf_quantizer)
    )
    left_out = _left_to_loader(model, sizes, no_split, budgets)
    for name in left_out:
        del sizes[name]
    return _planning.plan(sizes, budgets, device_map, no_split, groups), left_out


def _left_to_loader(
    model: Any, sizes: dict[str, int], no_split: list[str] | None, budgets: dict[Any, Any]
) -> list[str]:
    """The `_no_placement_params` transformers leaves out of a map: those of a no-split block
    that fits on no GPU (names relative to the block, as transformers reads them)."""
    params = getattr(model, "_no_placement_params", None)
    gpus = [budget for device, budget in budgets.items() if device not in ("cpu", "disk", "mps")]
    if not params or not no_split or not gpus:
        return []
    largest_gpu = max(gpus)
    left_out = []
    for block in no_split:
        inside = [f"{block}.{param}" for param in params if f"{block}.{param}" in sizes]
        if inside and sum(dict(_core._module_walk(model.get_submodule(block))[0]).values()) > largest_gpu:
            left_out.extend(inside)
    return left_out


def _uncover(model: Any, device_map: dict[str, Any], name: str) -> None:
    """Replaces the key of `device_map` that covers `name` by keys for everything else under it
    (the siblings along the path down to `name`), so that no key covers `name`."""
    key = _compiled.CompiledKeys(list(device_map)).key_for(name)
    if key is None:
        return
    device = device_map.pop(key)
    module = model.get_submodule(key)
    prefix = f"{key}." if key else ""
    for part in name[len(prefix) :].split("."):
        members = (module._parameters, module._buffers, module._modules)
        for sibling, value in itertools.chain.from_iterable(member.items() for member in members):
            if sibling != part and value is not None:
                device_map.setdefault(f"{prefix}{sibling}", device)
        if part not in module._modules:
            return
        module = module._modules[part]
        prefix = f"{prefix}{part}."


def _planning_map(original: Any) -> Any:
    @functools.wraps(original)
    def _get_device_map(model: Any, device_map: Any, max_memory: Any, hf_quantizer: Any) -> Any:
        if not isinstance(device_map, str) or device_map not in _planning.STRATEGIES:
            return original(model, device_map, max_memory, hf_quantizer)
        report, left_out = _plan_for(model, device_map, max_memory, hf_quantizer)
        report.check()
        planned = report.device_map.to_hf()
        for name in left_out:  # as transformers leaves them: for the loader to place
            _uncover(model, planned, name)
        if hf_quantizer is not None:
            hf_quantizer.validate_environment(device_map=planned)
        return planned

    return _get_device_map


def _build(planning: bool = False) -> Patch:
    module, version = import_target("transformers", "transformers.integrations.accelerate")
    originals = expect_functions(module, "transformers", version, TESTED_VERSIONS, EXPECTED)
    get_device_map = originals["_get_device_map"]
    return Patch(
        ("transformers",),
        {
            "get_device": (originals["get_device"], get_device),
            "expand_device_map": (originals["expand_device_map"], expand_device_map),
            "_get_device_map": (
                get_device_map,
                _finalizing(_planning_map(get_device_map) if planning else get_device_map),
            ),
        },
    )


_switch = Switch(_build, after_disable=_compiled.clear_cache)


def enable(planning: bool = False) -> None:
    """Routes transformers' device-map lookups through devicemap; with `planning=True`, string
    maps (`"auto"`, `"balanced"`, `"balanced_low_0"`, `"sequential"`) are planned by devicemap
    too. Safe to call again (it then patches modules imported since; with another `planning`,
    it switches); `UnsupportedVersionError` if transformers lacks the functions this replaces,
    or has them with other parameters."""
    _switch.enable(planning=planning)


def disable() -> None:
    """Puts transformers' own functions back (the very function objects) in every module."""
    _switch.disable()


def is_enabled() -> bool:
    return _switch.is_enabled()


def enabled(planning: bool = False) -> contextlib.AbstractContextManager[None]:
    """Enabled inside the block (planning string maps if `planning`); left as it was found
    afterwards (nested blocks are fine)."""
    return _switch.enabled(planning=planning)
