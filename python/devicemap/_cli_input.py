"""What the command line reads: files or standard input, JSON, device maps, tensor names. One
reader for every subcommand, so each accepts the same forms and says the same things."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devicemap import DeviceMap


# The last line of `check-map`'s text summary when every entry is valid.
VALID_LINE = "all entries are valid"


class CliError(Exception):
    """A problem with the input or the environment: one `error:` line, exit 2."""


# Standard input can be read once; a subcommand that reads `-` twice (check-map validates the
# map, then looks names up in it) gets the same bytes again.
_stdin: bytes | None = None


# A device map or a list of tensor names is far smaller; a larger input (`/dev/zero`, a
# checkpoint given by mistake) is refused rather than read until memory runs out.
READ_LIMIT = 256 * 2**20


def read_bytes(path: str) -> bytes:
    global _stdin
    try:
        if path != "-":
            with open(path, "rb") as file:
                data = file.read(READ_LIMIT + 1)
        elif _stdin is None:
            data = _stdin = sys.stdin.buffer.read(READ_LIMIT + 1)
        else:
            data = _stdin
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > READ_LIMIT:
        named = "standard input" if path == "-" else path
        raise CliError(
            f"{named}: more than {READ_LIMIT >> 20} MiB, far more than a device map or a list of "
            "tensor names; is it the right file?"
        )
    return data


def write_output(path: str, text: str) -> None:
    """Writes `text` to the file `path`, or to standard output for `-` (as `-` reads standard
    input)."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(path).write_text(text, encoding="utf-8")


def read_text(path: str) -> str:
    """UTF-8 text, with or without a byte order mark."""
    try:
        return read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CliError(f"{path} is not UTF-8 text: {error}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are distinct: a key given twice is refused, naming it (JSON's
    own rule, last one wins, would drop an entry without a word)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise CliError(f"the key {json.dumps(twice)} appears twice in one object")
    return data


def load_json(path: str) -> Any:
    """JSON of a file (a map, names), objects with distinct keys."""
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except CliError as error:
        raise CliError(f"{path}: {error}") from None
    except json.JSONDecodeError as error:
        raise CliError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise CliError(f"{path} is nested too deeply to be a device map") from None


def map_entries(path: str, data: Any) -> tuple[str, dict[str, Any], bool]:
    """`(form, entries, hf)` of a JSON device map: HF form (`{name: 0, ...}`) or Haystack's
    serialized `ComponentDevice` (`{"type": "multiple", "device_map": {...}}`)."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise CliError(f"{path} holds a JSON {kind}, expected an object of names to devices")
    if data.get("type") in ("single", "multiple"):
        if data["type"] == "single":
            raise CliError(f"{path} is a single-device ComponentDevice, not a device map")
        if not isinstance(data.get("device_map"), dict):
            raise CliError(f"{path}: 'device_map' must be an object")
        return "Haystack form", data["device_map"], False
    return "HF form", data, True


def load_map(path: str) -> DeviceMap:
    """A whole device map; the first bad entry is an error naming it."""
    from devicemap import DeviceMap

    _form, entries, hf = map_entries(path, load_json(path))
    try:
        return DeviceMap.from_hf(entries) if hf else DeviceMap.from_dict(entries)
    except (ValueError, TypeError, KeyError) as error:
        raise CliError(f"{path}: {error}") from None


def load_names(path: str) -> list[str]:
    """Tensor names: a JSON list of strings, or text with one name a line (blank lines skipped)."""
    text = read_text(path)
    if not text.lstrip().startswith("["):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{path} is not a valid JSON list: {error}") from None
    for position, item in enumerate(data):
        if not isinstance(item, str):
            raise CliError(f"{path}: item {position} is a JSON {type(item).__name__}, not a string: {item!r}")
    return list(data)
