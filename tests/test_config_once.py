"""A checkpoint plan reads `config.json` once: the header reader reads it (for the ties) and
hands the text on, and the meta model is built from that text, not from a second read."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import devicemap  # noqa: E402
from _planning_models import tiny  # noqa: E402
from devicemap import _core, _loaded  # noqa: E402

#: Python's opens of a file named config.json while `WATCHING` holds a list (audit hooks cannot
#: be removed, so the hook stays and records only while a test asks it to).
WATCHING: list[list[str]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and WATCHING and str(args[0]).endswith("config.json"):
        WATCHING[-1].append(str(args[0]))


sys.addaudithook(_hook)


@contextlib.contextmanager
def watching() -> Iterator[list[str]]:
    """The config.json files Python opens inside the block."""
    opened: list[str] = []
    WATCHING.append(opened)
    try:
        yield opened
    finally:
        WATCHING.pop()


FALLBACK = "checkpoint's own tensor names"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    tiny("llama-tied").save_pretrained(directory)
    return directory


def test_python_does_not_read_config_json_again(saved: Path) -> None:
    with watching() as opened:
        report = devicemap.plan_report(saved, {"cpu": 2**30})
    assert opened == []
    assert not [note for note in report.notes if FALLBACK in note]


def test_the_model_is_built_from_the_text_the_reader_read(saved: Path, tmp_path: Path) -> None:
    for file in saved.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    reading = _core._checkpoint_sizes_started(tmp_path)
    read, text = reading.config_read()
    assert read
    assert text == (saved / "config.json").read_text()
    # Replaced after the reader read it: the plan goes by what the reader read.
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["NoSuchModel"]}))
    found = _loaded.loaded(tmp_path, reading, None)
    assert found.note is None
    assert found.tied == [["model.embed_tokens.weight", "lm_head.weight"]]


def test_config_read_without_config_json(saved: Path, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    reading = _core._checkpoint_sizes_started(tmp_path)
    assert reading.config_read() == (True, None)
    found = _loaded.loaded(tmp_path, reading, None)
    assert found.note is not None
    assert "no config.json" in found.note
    sizes, _ = _core._checkpoint_sizes(tmp_path)
    assert sizes.config_read() == (True, None)


def test_checkpoint_sizes_hand_the_text_on(saved: Path) -> None:
    sizes, _ = _core._checkpoint_sizes(saved)
    assert sizes.config_read() == (True, (saved / "config.json").read_text())
    with watching() as opened:
        found = _loaded.loaded(saved, sizes, None)
    assert opened == []
    assert found.note is None


def test_sizes_of_no_reader_leave_config_json_to_python(saved: Path) -> None:
    """Sizes the reader did not make (here `_loaded_sizes`'s) hand nothing on: Python reads
    config.json itself, as before."""
    reading = _core._checkpoint_sizes_started(saved)
    sizes, _ = reading.join()
    model = tiny("llama-tied")
    state = model.state_dict()
    other, _ = _core._loaded_sizes(sizes, sizes.names(), state, [])
    assert other.config_read() == (False, None)
    with watching() as opened:
        found = _loaded.loaded(saved, other, None)
    assert opened == [str(saved / "config.json")]
    assert found.note is None


def test_a_pytorch_checkpoint_hands_the_text_on(saved: Path, tmp_path: Path) -> None:
    torch.save(tiny("llama-tied").state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_bytes((saved / "config.json").read_bytes())
    with watching() as opened:
        report = devicemap.plan_report(tmp_path, {"cpu": 2**30})
    assert opened == []
    assert not [note for note in report.notes if FALLBACK in note]
