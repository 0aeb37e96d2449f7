"""`plan`, `plan_report`, `stages`: where each part of a model goes. The work is in Rust
(`_core._plan`); this module only turns the source into sizes and fills in default budgets."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from devicemap import _bin, _core
from devicemap._core import DeviceMap, PlanReport, cuda_devices
from devicemap._text import check_str

# Not `typing.TYPE_CHECKING`: importing `typing` costs a few ms of a cold start, and mypy
# honours a module constant of this name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias, TypeGuard

    import torch

    # What `plan`, `plan_report` and `stages` take (their docstring says what each means); the
    # public signatures spell it out, so that `help()` shows it.
    Source: TypeAlias = str | os.PathLike[str] | Sequence[Any] | Mapping[str, int] | torch.nn.Module
    Budget: TypeAlias = int | float | str
    MaxMemory: TypeAlias = Mapping[int | str, Budget]

#: Fraction of each device's total memory kept free when budgets come from the machine
#: (`plan::DEFAULT_RESERVE` in the core, which says why). Explicit `max_memory` values are
#: used as given.
DEFAULT_RESERVE: float = _core._DEFAULT_RESERVE


def default_max_memory(reserve: float | int = DEFAULT_RESERVE) -> dict[int | str, int]:
    """Budgets of this machine: each visible GPU's free memory (through NVML) and the available
    system RAM, each less `reserve` (a fraction of the device's total memory, or bytes)."""
    budgets: dict[int | str, int] = {}
    for device in cuda_devices():
        free = device.memory_free or 0
        total = device.memory_total or free
        budgets[device.ordinal] = max(0, free - _core._headroom(total, reserve))
    available, ram = _core._system_memory()
    if available is not None:
        budgets["cpu"] = max(0, available - _core._headroom(ram or available, reserve))
    return budgets


def _no_split_classes(module: Any) -> list[str] | None:
    """The class names in `module._no_split_modules` (`None` when it has none)."""
    classes = getattr(module, "_no_split_modules", None)
    if not classes:
        return None
    return [name for name in set(classes) if isinstance(name, str)]


def _no_split_of(module: Any) -> list[str] | None:
    """The names `named_modules()` gives the submodules of a no-split class (a module reached by
    several names once, under the first), found in one walk in Rust; `None` without classes."""
    return _core._no_split_names(module, _no_split_classes(module))


def _sizes_of(
    source: Any,
    dtype: Any,
    progress: Callable[[int, int], object] | None,
    token: str | None = None,
    model_class: Any = None,
    key_mapping: dict[str, str] | None = None,
) -> tuple[Any, list[str] | None, list[list[str]], str | None]:
    """`(sizes, no_split found, tied groups found, note)` of a mapping, a torch module, a
    checkpoint, or a checkpoint's sizes read already (`_core._CheckpointSizes`, as the command
    line does). A checkpoint's sizes are in the names of the model `from_pretrained` builds
    where torch and transformers can build it (`_loaded`); else in its own names, and `note`
    says why."""
    if model_class is not None or key_mapping is not None:
        from devicemap._loaded import check_arguments

        check_arguments(model_class, key_mapping)
    pairs = isinstance(source, list) and bool(source) and isinstance(source[0], tuple)
    if type(source).__name__ == "Loaded" and type(source).__module__ == "devicemap._loaded":
        # A checkpoint's sizes in the loader's names, found already (the command line).
        return source.sizes, source.no_split, source.tied, source.note
    if isinstance(source, _core._CheckpointSizes):
        return source, None, [], None
    if isinstance(source, Mapping) or pairs:
        if dtype is not None:
            raise ValueError(
                "dtype= re-sizes tensors by their dtype, which a mapping of bytes does not carry; "
                "pass a checkpoint path or a module, or convert the sizes yourself"
            )
        return source, None, [], None
    if hasattr(source, "named_parameters") and hasattr(source, "named_buffers"):
        module_sizes, tied = _core._module_sizes(source, dtype)
        return module_sizes, _no_split_of(source), tied, None
    if isinstance(source, str | os.PathLike | list | tuple | _core._HubCheckpoint):
        from devicemap._loaded import loaded

        found_bin = _bin.pytorch_sizes(source, dtype, progress=progress)  # pytorch_model.bin (issue 14)
        # Safetensors headers are read on a thread of their own while the model is built.
        read = found_bin or (_core._checkpoint_sizes_started(source, dtype, progress, token), None)
        found = loaded(source, read[0], read[1], dtype, model_class, key_mapping, token)
        return found.sizes, found.no_split, found.tied, found.note
    raise TypeError(
        "source must be a mapping of tensor names to bytes, a checkpoint path or a torch.nn.Module, "
        f"got {type(source).__name__}"
    )


def _config_of(source: Source, config: Any, context: int | None, token: str | None = None) -> Any:
    """The model config for a plan with `context=`: `config=` as given, else the
    `config.json` beside a checkpoint path or in a Hub repository (`None` when there is none:
    the core then says that a context needs a config)."""
    if config is not None or context is None:
        return config
    if isinstance(source, _core._HubCheckpoint):
        return json.loads(source.config_json())
    first = source[0] if isinstance(source, list | tuple) and source else source
    if not isinstance(first, str | os.PathLike):
        return None
    if _is_hub(first):
        text = _core._hub_config(first, token)
        return None if text is None else json.loads(text)
    candidate = _config_beside(first)
    return None if candidate is None else str(candidate)


def _config_beside(path: str | os.PathLike[str]) -> Path | None:
    """The `config.json` in a checkpoint folder or beside a checkpoint file, if there is one."""
    path = Path(path)
    candidate = path / "config.json" if path.is_dir() else path.parent / "config.json"
    return candidate if candidate.is_file() else None


def _is_hub(source: object) -> TypeGuard[str]:
    """Whether `source` names a Hub repository; a local name with bytes that are not UTF-8
    (lone surrogates, as `os.fsdecode` gives them) never does, and the core names it."""
    if not isinstance(source, str):
        return False
    try:
        source.encode()
    except UnicodeEncodeError:
        return False
    return bool(_core._is_hub_source(source))


def _hub_opened(
    source: Source, token: str | None, progress: Callable[[int, int], object] | None = None
) -> Any:
    """A Hub repository `source` names, opened (its revision resolved, its headers fetched)
    once for both its config.json (for the loaded model's names, and for a context) and its
    sizes; else `source` as given."""
    if not _is_hub(source):
        return source
    told = None if progress is None else (lambda done, total, _bytes: progress(done, total))
    return _core._hub_checkpoint(source, token, told)


def plan_report(
    source: str | os.PathLike[str] | Sequence[Any] | Mapping[str, int] | torch.nn.Module,
    max_memory: MaxMemory | None = None,
    strategy: str = "balanced",
    no_split: Sequence[str] | None = None,
    tied: Sequence[Sequence[str]] | None = None,
    dtype: Any = None,
    reserve: float | int = DEFAULT_RESERVE,
    *,
    progress: Callable[[int, int], object] | None = None,
    context: int | None = None,
    batch: int | None = None,
    kv_dtype: Any = None,
    activation: int | str | None = None,
    config: Any = None,
    token: str | None = None,
    model_class: Any = None,
    key_mapping: dict[str, str] | None = None,
) -> PlanReport:
    """Like `plan`, but returns the whole report (budgets; weights, KV cache and headroom per
    device; what spilled and why) and does not raise when the model does not fit
    (`report.fits`). With `context=`, `report.max_context()` and `report.max_batch()` say how
    far the plan stretches under the same budgets. `model_class` and `key_mapping` as for
    `plan`."""
    # The core checks `reserve` (a fraction in [0, 1) or bytes) even where explicit budgets
    # leave it unused, so `reserve=1.5` is refused rather than ignored.
    _core._headroom(0, reserve)
    check_str("strategy", strategy)
    check_str("token", token, optional=True)
    source = _hub_opened(source, token, progress)
    model_config = _config_of(source, config, context, token)
    found = _sizes_of(source, dtype, progress, token, model_class, key_mapping)
    sizes, found_no_split, found_tied, note = found
    if max_memory is None:
        max_memory = default_max_memory(reserve)
    elif not isinstance(max_memory, dict):
        if not isinstance(max_memory, Mapping):
            raise TypeError(f"max_memory must be a dict, got {type(max_memory).__name__}")
        max_memory = dict(max_memory)
    # Passed as given: the core reads any iterable and refuses a bare str (which `list()` would
    # have turned into one pattern per character).
    groups = tied if tied is not None else found_tied
    patterns = no_split if no_split is not None else found_no_split
    return _core._plan(
        sizes,
        max_memory,
        strategy,
        patterns,
        groups,
        config=model_config,
        context=context,
        batch=batch,
        kv_dtype=kv_dtype,
        activation=activation,
        note=note,
    )


def plan(
    source: str | os.PathLike[str] | Sequence[Any] | Mapping[str, int] | torch.nn.Module,
    max_memory: MaxMemory | None = None,
    strategy: str = "balanced",
    no_split: Sequence[str] | None = None,
    tied: Sequence[Sequence[str]] | None = None,
    dtype: Any = None,
    reserve: float | int = DEFAULT_RESERVE,
    *,
    context: int | None = None,
    batch: int | None = None,
    kv_dtype: Any = None,
    activation: int | str | None = None,
    config: Any = None,
    token: str | None = None,
    model_class: Any = None,
    key_mapping: dict[str, str] | None = None,
) -> DeviceMap:
    """Where each part of a model goes, as a compact `DeviceMap` (`.to_hf()` is what
    `from_pretrained(device_map=...)` and `accelerate.dispatch_model` take).

    - `source`: `{tensor name: bytes}` in model order (or a list of `(name, bytes)`), a
      safetensors checkpoint (file, index, directory, list of files or Hub repository; only
      headers are read), or a `torch.nn.Module` (meta is fine: sizes from its parameters and
      buffers, `_no_split_modules` kept whole, shared parameters tied).
      A checkpoint is planned in the names of the model `from_pretrained` builds: where torch
      and transformers are installed, the class `config.json` names (`architectures[0]`, or
      `model_class`, a class or its name) is built on the meta device and gives the names
      (checkpoint keys renamed as its loader renames them, with `key_mapping` as
      `from_pretrained` takes it; fused experts summed), ties, no-split modules and module
      order; sizes and stored dtypes come from the headers. Otherwise the plan is in the
      checkpoint's own names, ties are read from `config.json`, and a note says so.
    - `max_memory`: HF's form, `{0: "70GiB", 1: 70 * 2**30, "cpu": "200GiB", "disk": "1TiB"}`.
      Only the devices named are used. Without it: this machine's GPUs (free memory) and RAM
      (available), each less `reserve` (a fraction of its total memory, or bytes) kept for
      what a plan does not count: the CUDA context, allocator fragmentation, and, unless
      planned with `context=` and `activation=`, the KV cache and activations.
    - `strategy`: `"balanced"` (the smallest possible largest share of a GPU's budget),
      `"sequential"` (fill GPU 0, then 1, ...) or `"balanced_low_0"` (GPU 0 as empty as the
      others allow).
    - `no_split`: module-name patterns kept whole (`"model.layers.*"`, `*` is one component);
      default: the outermost numbered blocks. `tied`: groups of tensor names kept together.
    - `dtype`: size floating-point tensors as loading with this `torch_dtype` would.
    - `context`: plan for inference at this many tokens per sequence (prompt and generated),
      for `batch` sequences (default 1): each decoder layer's KV cache (as `kv_cache` sizes
      transformers' `StaticCache`, in `kv_dtype`, default the config's dtype) is charged to the
      device the layer runs on: its own GPU, or for a layer offloaded to cpu/disk the GPU that
      runs offloaded blocks. `config`: the model's config (a `config.json` path, a dict or a
      transformers config); default: the `config.json` beside a checkpoint path.
    - `activation`: bytes (or a size such as `"2GiB"`) kept free on each device that runs
      layers, for activations; reported apart from the cache.
    - `token`: the Hugging Face token for a Hub repository source (`"org/name"`,
      `"hf://org/name@revision"`); default: `HF_TOKEN`, else the token file huggingface_hub
      writes.

    `ValueError` when the model does not fit, saying by how much.
    """
    report = plan_report(
        source,
        max_memory,
        strategy,
        no_split,
        tied,
        dtype,
        reserve,
        context=context,
        batch=batch,
        kv_dtype=kv_dtype,
        activation=activation,
        config=config,
        token=token,
        model_class=model_class,
        key_mapping=key_mapping,
    )
    report.check()
    return report.device_map


def stages(
    source: str | os.PathLike[str] | Sequence[Any] | Mapping[str, int] | torch.nn.Module,
    n: int,
    no_split: Sequence[str] | None = None,
    dtype: Any = None,
    *,
    context: int | None = None,
    batch: int | None = None,
    kv_dtype: Any = None,
    config: Any = None,
    token: str | None = None,
    model_class: Any = None,
    key_mapping: dict[str, str] | None = None,
) -> list[list[str]]:
    """Splits a model into `n` contiguous pipeline stages of about equal bytes, never splitting
    a block: for each stage, the module names it holds (stage `r` for rank `r`). The same
    source gives the same split in every process. With `context=` (and `batch`, `kv_dtype`,
    `config` as for `plan`), each stage's bytes include its layers' KV cache. `token`,
    `model_class` and `key_mapping` as for `plan`."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_str("token", token, optional=True)
    source = _hub_opened(source, token)
    model_config = _config_of(source, config, context, token)
    sizes, found_no_split, _, _ = _sizes_of(source, dtype, None, token, model_class, key_mapping)
    patterns = no_split if no_split is not None else found_no_split
    return _core._stages(
        sizes, n, patterns, config=model_config, context=context, batch=batch, kv_dtype=kv_dtype
    )
