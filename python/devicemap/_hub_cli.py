"""`devicemap plan` for a model on the Hugging Face Hub (`org/name`, `hf://org/name@revision`):
fetches its headers with a progress bar on a terminal, then says where the plan came from
(repository, commit, requests, bytes). The fetching is in Rust (`src/checkpoint/hub/`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from devicemap import _core
from devicemap._cli_input import CliError
from devicemap._core import _human_bytes

# The repository `read_sizes` read last, by the path it was named by: `config` reads its
# config.json at the same commit instead of resolving the branch again.
_read: dict[str, Any] = {}


def is_hub(path: str) -> bool:
    """Whether `path` names a Hub repository rather than a local checkpoint."""
    from devicemap._plan import _is_hub

    return _is_hub(path)


def _fetch(path: str) -> Any:
    if not sys.stderr.isatty():
        return _core._hub_checkpoint(path)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[got]}"),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"headers of {path}", total=None, got="")

        def advance(done: int, total: int, received: int) -> None:
            progress.update(task, completed=done, total=total, got=_human_bytes(received))

        return _core._hub_checkpoint(path, None, advance)


def read_sizes(path: str, dtype: str | None) -> tuple[Any, list[list[str]]]:
    """`(sizes, tied groups)` of the Hub repository `path`, for `plan_report`. Network failures
    become `error:` lines."""
    try:
        hub = _fetch(path)
    except RuntimeError as error:
        raise CliError(str(error)) from error
    _read.clear()
    _read[path] = hub
    sizes, tied = _core._checkpoint_sizes(hub, dtype, None)
    requests, received, files, cached = hub.stats
    from_cache = f", {cached} of {files} files from cache" if cached else ""
    print(
        f"read {hub.source} at commit {hub.commit}: {requests} requests, "
        f"{_human_bytes(received)} received{from_cache}",
        file=sys.stderr,
    )
    return sizes, tied


def opened(path: str) -> Any:
    """The repository `read_sizes` read last for `path` (its commit resolved), else `path`."""
    return _read.get(path, path)


def config(path: str) -> Any:
    """The config.json of the Hub repository `path`, for --context: of the commit `read_sizes`
    read it at when it read it last (no second resolving of the branch), else read now."""
    hub = _read.pop(path, None)
    if hub is not None:
        return json.loads(hub.config_json())
    text = _core._hub_config(path)
    return None if text is None else json.loads(text)
