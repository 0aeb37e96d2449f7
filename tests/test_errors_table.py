"""Runs every row of the bad-input tables in docs/errors.md: the call must raise the named
exception (or exit with the named status) with a message containing the given text."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import devicemap
import pytest
from _mappings import Huge
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType, _core, cli, pick_device

TABLE_FILE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
HEADER = ["Call", "Raises", "Message contains"]


@dataclass
class Row:
    line: int
    section: str
    call: str
    raises: str
    message: str


def cells(line: str) -> list[str]:
    """The cells of a table line; `\\|` is a literal bar inside a cell."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


def code(cell: str) -> str:
    match = re.fullmatch(r"`(.*)`", cell)
    assert match, f"expected a `code` cell, got {cell!r}"
    return match.group(1)


def read_rows() -> list[Row]:
    rows: list[Row] = []
    section = ""
    in_table = False
    for number, line in enumerate(TABLE_FILE.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        if not line.startswith("|"):
            in_table = False
            continue
        row = cells(line)
        if row == HEADER:
            in_table = True
            continue
        if set("".join(row)) <= set("-: "):
            continue
        assert in_table, f"docs/errors.md:{number}: a table row outside a table with columns {HEADER}"
        assert len(row) == 3, f"docs/errors.md:{number}: expected 3 cells, got {row}"
        rows.append(Row(number, section, code(row[0]), row[1], code(row[2])))
    return rows


ROWS = read_rows()


def test_the_table_covers_every_area():
    sections = {row.section for row in ROWS}
    assert len(ROWS) >= 80
    for area in (
        "Device strings",
        "Building maps",
        "Changing maps",
        "ComponentDevice",
        "Choosing",
        "Command line",
    ):
        assert any(area in section for section in sections), (area, sections)


# --- helpers the rows may use -------------------------------------------------------------


class Exit(Exception):
    """A command that exited non-zero; the message is what it wrote to standard error."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(stderr)
        self.code = code


@contextlib.contextmanager
def env(**variables: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Pairs(dict):  # type: ignore[type-arg]
    def __init__(self, items: object) -> None:
        super().__init__()
        self._items = items

    def items(self):  # type: ignore[no-untyped-def, override]
        return self._items


def changing_dict() -> dict[str, object]:
    data: dict[str, object] = {}

    class Sneaky:
        def __str__(self) -> str:
            data[f"added{len(data)}"] = 0
            return "sneaky"

    data.update(a=Sneaky(), b=Sneaky())
    return data


def make_namespace(tmp_path: Path) -> dict[str, object]:
    counter = iter(range(10**6))

    def file_bytes(data: bytes) -> str:
        path = tmp_path / f"input{next(counter)}.json"
        path.write_bytes(data)
        return str(path)

    def file(text: str) -> str:
        return file_bytes(text.encode("utf-8"))

    def tensor(
        dtype: str = "F32", shape: Sequence[int] = (1,), offsets: Sequence[int] = (0, 4)
    ) -> dict[str, object]:
        """One tensor's header entry."""
        return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}

    def st(header: object, data: int | None = None) -> bytes:
        """A safetensors file's bytes: 8-byte length, the header (JSON of `header`, or bytes as
        given), and `data` bytes (by default up to the last tensor's end)."""
        text = header if isinstance(header, bytes) else json.dumps(header).encode()
        if data is None:
            ends = (
                [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                if isinstance(header, dict)
                else []
            )
            data = max(ends, default=0)
        return struct.pack("<Q", len(text)) + text + b"\0" * data

    def index(weight_map: dict[str, str]) -> str:
        """An index's text."""
        return json.dumps({"metadata": {}, "weight_map": weight_map})

    def folder(files: dict[str, str | bytes]) -> str:
        """A temporary folder holding these files (`{name: text or bytes}`)."""
        path = tmp_path / f"folder{next(counter)}"
        path.mkdir()
        for name, content in files.items():
            (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def run_cli(*args: str, **environment: str) -> None:
        err = io.StringIO()
        with env(**environment), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = cli.main(list(args))
            except SystemExit as stop:  # argparse's own errors
                status = stop.code if isinstance(stop.code, int) else 1
        if status:
            raise Exit(status, err.getvalue())

    return {
        "Device": Device,
        "DeviceType": DeviceType,
        "DeviceMap": DeviceMap,
        "ComponentDevice": ComponentDevice,
        "pick_device": pick_device,
        "OrderedDict": OrderedDict,
        "_core": _core,
        "devicemap": devicemap,
        "env": env,
        "Huge": Huge,
        "Pairs": Pairs,
        "changing_dict": changing_dict,
        "file": file,
        "file_bytes": file_bytes,
        "cli": run_cli,
        "tensor": tensor,
        "st": st,
        "index": index,
        "folder": folder,
    }


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("DEVICEMAP_DEVICE", raising=False)


@pytest.mark.parametrize("row", ROWS, ids=[f"line{row.line}" for row in ROWS])
def test_row(row: Row, tmp_path: Path) -> None:
    namespace = make_namespace(tmp_path)
    with pytest.raises(BaseException) as info:  # noqa: PT011 - the row names the type, checked below
        exec(row.call, namespace)
    error = info.value
    if row.raises.startswith("exit "):
        assert isinstance(error, Exit), (row, error)
        assert error.code == int(row.raises.split()[1]), (row, error.code, str(error))
        assert "Traceback" not in str(error)
    else:
        exception_type = getattr(builtins, row.raises, None)
        assert isinstance(exception_type, type), f"docs/errors.md:{row.line}: unknown exception {row.raises}"
        assert type(error) is exception_type, (row, type(error), error)
    assert row.message in str(error), (row, str(error))
    # Messages stay short whatever the input's size.
    assert len(str(error)) < 400, (row, len(str(error)))
