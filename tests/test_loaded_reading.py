"""A checkpoint's headers read on a thread of their own while the loader's model is built
(`_core._checkpoint_sizes_started`): the same sizes, ties and errors as reading them first."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import devicemap
import pytest
from devicemap import _core, _loaded

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import _tiny_models  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "mixtral"
    _tiny_models.build("mixtral").save_pretrained(directory, max_shard_size="20KB")
    return directory


def _broken(directory: Path) -> Path:
    """`directory` with its last shard's header length past the safetensors limit."""
    shards = sorted(directory.glob("*.safetensors"))
    shards[-1].write_bytes(b"garbage!")
    return directory


def test_started_reading_gives_what_reading_first_gives(saved: Path) -> None:
    read, tied = _core._checkpoint_sizes(saved)
    started, started_tied = _core._checkpoint_sizes_started(saved).join()
    assert (started.names(), started_tied) == (read.names(), tied)
    assert _core._name_templates(started) == _core._name_templates(read.names())
    first = _loaded.loaded(saved, read, tied)
    second = _loaded.loaded(saved, _core._checkpoint_sizes_started(saved), None)
    assert second.note is None, second.note
    assert first._replace(sizes=None) == second._replace(sizes=None)
    total = sum(devicemap.tensor_sizes(saved).values())
    budgets = {0: total // 2, 1: total, "cpu": 1 << 40}
    plans = [devicemap.plan_report(found, budgets).to_hf() for found in (first, second)]
    assert plans[0] == plans[1]
    assert set(plans[0].values()) == {0, 1}, plans[0]
    assert devicemap.plan_report(saved, budgets).to_hf() == plans[0]


def test_reading_errors_are_raised_as_when_read_first(saved: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in saved.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    _broken(broken)
    with pytest.raises(ValueError, match="safetensors limit") as first:
        _core._checkpoint_sizes(broken)
    with pytest.raises(ValueError, match="safetensors limit") as threaded:
        devicemap.plan(broken, {"cpu": 1 << 40})
    assert str(threaded.value) == str(first.value)
    # Before an error of the build: a model class that is not one.
    with pytest.raises(ValueError, match="safetensors limit"):
        devicemap.plan(broken, {"cpu": 1 << 40}, model_class="NoSuchModel")


def test_progress_errors_and_a_second_join(saved: Path) -> None:
    calls: list[tuple[int, int]] = []
    _core._checkpoint_sizes_started(saved, None, lambda done, total: calls.append((done, total))).join()
    assert calls
    assert calls[-1][0] == calls[-1][1]

    def fails(done: int, total: int) -> None:
        raise KeyError("stop")

    reading = _core._checkpoint_sizes_started(saved, None, fails)
    with pytest.raises(KeyError, match="stop"):
        reading.join()
    with pytest.raises(RuntimeError, match="joined twice"):
        reading.join()
    del reading
    _core._checkpoint_sizes_started(saved)  # dropped unjoined: waited for, nothing raised


def test_a_header_that_is_not_safetensors(tmp_path: Path) -> None:
    header = json.dumps({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    sizes, tied = _core._checkpoint_sizes_started(tmp_path / "model.safetensors").join()
    assert (sizes.names(), tied) == (["a"], [])
