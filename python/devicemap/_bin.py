"""PyTorch (`torch.save`) checkpoints: `pytorch_model.bin`, or its shards beside
`pytorch_model.bin.index.json`. Where torch is installed, each file is loaded on the meta device
(`torch.load(map_location="meta", weights_only=True)` reads the archive's pickle and creates
storages without reading any tensor data), and the core sizes the state dicts as it sizes
safetensors headers (same checks, model order and ties). Without torch, the core's safetensors
reader refuses them, naming the format."""

from __future__ import annotations

from devicemap import _core
from devicemap._text import check_str

# Not `typing.TYPE_CHECKING`: see `_plan.py`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _states(files: list[str], progress: Callable[[int, int], object] | None) -> list[Any] | None:
    """The state dicts of `files` on the meta device, calling `progress(done, total)` after
    each; `None` without torch."""
    try:
        import torch
    except ImportError:
        return None
    states = []
    for file in files:
        states.append(_load(torch, file))
        if progress is not None:
            progress(len(states), len(files))
    return states


def _load(torch: Any, file: str) -> Any:
    """`torch.load` of one file on the meta device. What torch raises for a file it cannot read
    (a RuntimeError from its zip reader for a damaged archive, an UnpicklingError for a pickle
    `weights_only` refuses, an EOFError for a cut one) becomes a ValueError naming the file."""
    import pickle
    import zipfile

    try:
        return torch.load(file, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{file}: holds objects other than tensors, which torch.load(weights_only=True) refuses "
            "to unpickle (devicemap never runs code from a checkpoint)"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if len(first) > 200:
            first = first[:197] + "..."
        raise ValueError(f"{file}: torch.load cannot read this PyTorch checkpoint: {first}") from error


def pytorch_sizes(
    source: Any,
    dtype: Any,
    as_dict: bool = False,
    progress: Callable[[int, int], object] | None = None,
) -> Any:
    """`_core._pytorch_sizes` of `source` when it is a PyTorch checkpoint and torch is
    installed, else `None` (the safetensors reader takes it, and refuses a PyTorch one)."""
    if isinstance(source, _core._CheckpointSizes | list | tuple):
        return None
    if not isinstance(source, str | bytes) and not hasattr(source, "__fspath__"):
        return None
    files = _core._pytorch_files(source)
    if files is None:
        return None
    states = _states(files, progress)
    if states is None:
        return None
    return _core._pytorch_sizes(source, states, dtype, as_dict)


def tensor_sizes(
    path: Any,
    dtype: Any = None,
    *,
    progress: Callable[[int, int], object] | None = None,
    token: str | None = None,
) -> dict[str, int]:
    """Per-tensor bytes of a checkpoint, in model order, without reading tensor data:
    safetensors headers (a file, an index, a folder, a list of files, or a Hub repository), or
    a PyTorch checkpoint (`pytorch_model.bin`, sharded or not) read on the meta device where
    torch is installed. `dtype` re-sizes floating-point tensors as loading with that
    `torch_dtype` would."""
    check_str("token", token, optional=True)
    sizes = pytorch_sizes(path, dtype, as_dict=True, progress=progress)
    if sizes is not None:
        return sizes  # type: ignore[no-any-return]
    return _core.tensor_sizes(path, dtype, progress=progress, token=token)
