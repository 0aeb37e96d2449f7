"""Checkpoint files (issue 14): PyTorch `.bin` checkpoints sized from the archive's metadata,
and file errors that say what the path is."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import devicemap
import pytest
from devicemap import _core
from devicemap.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny_llama(tie: bool = False) -> Any:
    from _models import tiny_llama as build

    return build(2, tie_word_embeddings=tie)


def save_both(model: Any, tmp_path: Path, shards: int = 1) -> tuple[Path, Path]:
    """`model` saved as safetensors (`save_pretrained`) and as PyTorch files the way
    transformers 4 wrote them (`pytorch_model.bin`, or shards with `pytorch_model.bin.index.json`),
    each with its `config.json`."""
    st, pt = tmp_path / "st", tmp_path / "pt"
    model.save_pretrained(st)
    pt.mkdir()
    model.config.to_json_file(pt / "config.json")
    state = model.state_dict()
    if shards == 1:
        torch.save(state, pt / "pytorch_model.bin")
        return st, pt
    names = list(state)
    weight_map = {}
    for shard in range(shards):
        file = f"pytorch_model-{shard + 1:05d}-of-{shards:05d}.bin"
        part = names[shard::shards]
        torch.save({name: state[name] for name in part}, pt / file)
        weight_map.update(dict.fromkeys(part, file))
    (pt / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return st, pt


@pytest.mark.parametrize("shards", [1, 3])
def test_bin_sizes_are_the_safetensors_sizes(tmp_path: Path, shards: int) -> None:
    st, pt = save_both(tiny_llama(), tmp_path, shards)
    expected = devicemap.tensor_sizes(st)
    sizes = devicemap.tensor_sizes(pt)
    assert sizes == expected
    assert len(expected) == 2 * 9 + 3
    # The same model order of blocks (within a block, each file's own order).
    blocks = [".".join(name.split(".")[:3]) for name in sizes]
    assert blocks == [".".join(name.split(".")[:3]) for name in expected]
    calls: list[tuple[int, int]] = []
    assert devicemap.tensor_sizes(pt, progress=lambda done, total: calls.append((done, total))) == sizes
    assert calls == [(done, shards) for done in range(1, shards + 1)]
    half = devicemap.tensor_sizes(pt, dtype="bfloat16")
    assert half == devicemap.tensor_sizes(st, dtype="bfloat16")
    assert sum(half.values()) * 2 == sum(expected.values())


def test_a_bin_file_and_its_folder_give_the_same_sizes(tmp_path: Path) -> None:
    _st, pt = save_both(tiny_llama(), tmp_path)
    assert devicemap.tensor_sizes(pt / "pytorch_model.bin") == devicemap.tensor_sizes(pt)


def test_plan_stages_and_the_plan_command_read_bin_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st, pt = save_both(tiny_llama(tie=True), tmp_path, shards=2)
    budgets = {0: sum(devicemap.tensor_sizes(st).values()) * 4 // 5, "cpu": "1GiB"}
    from_bin = devicemap.plan(pt, budgets)
    assert from_bin.to_hf() == devicemap.plan(st, budgets).to_hf()
    assert len(set(from_bin.to_hf().values())) == 2
    assert devicemap.stages(pt, 2) == devicemap.stages(st, 2)
    # The tie comes from config.json beside the .bin files: the head and embeddings stay together.
    assert devicemap.plan(pt, budgets).device_for("lm_head.weight") == from_bin.device_for(
        "model.embed_tokens.weight"
    )
    code = main(["plan", str(pt), "--max-memory", f"0={budgets[0]},cpu=1GiB", "-o", "-"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == from_bin.to_hf()


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
def test_sizing_a_bin_checkpoint_reads_no_tensor_data(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    torch.save({"w": torch.zeros(8 << 20), "b": torch.zeros(3)}, folder / "pytorch_model.bin")

    def bytes_read() -> int:
        line = next(
            line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar")
        )
        return int(line.split()[1])

    before = bytes_read()
    sizes = devicemap.tensor_sizes(folder)
    read = bytes_read() - before
    assert sizes == {"b": 12, "w": 32 << 20}
    assert read < 1 << 20, f"read {read} bytes of a 32 MiB checkpoint"


def test_without_torch_a_bin_checkpoint_is_refused_naming_the_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _st, pt = save_both(tiny_llama(), tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(
        ValueError, match=r"holds a PyTorch checkpoint \('pytorch_model.bin'\), not safetensors"
    ):
        devicemap.tensor_sizes(pt)
    archive = r"pytorch_model.bin: is a PyTorch checkpoint \(torch.save's zip archive\), not safetensors"
    with pytest.raises(ValueError, match=archive):
        devicemap.plan(pt / "pytorch_model.bin", {"cpu": "1GiB"})
    with pytest.raises(ValueError, match=archive):
        devicemap.tensor_sizes(pt / "pytorch_model.bin")


def test_a_legacy_pickle_is_refused_naming_the_format(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    for path in (tmp_path, tmp_path / "pytorch_model.bin"):
        with pytest.raises(ValueError, match=r"is a pickle \(torch.save's legacy format"):
            devicemap.tensor_sizes(path)


def test_bin_shards_are_checked_as_safetensors_shards_are(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "a.bin")
    torch.save({"w": torch.zeros(2)}, tmp_path / "b.bin")
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "a.bin", "v": "b.bin"}}))
    with pytest.raises(ValueError, match=r"b.bin: tensor 'w': duplicate tensor name \(also in '.*a.bin'\)"):
        devicemap.tensor_sizes(tmp_path)
    index.write_text(json.dumps({"weight_map": {"w": "../a.bin"}}))
    with pytest.raises(ValueError, match=r"the index names shard '../a.bin', a path outside"):
        devicemap.tensor_sizes(tmp_path)
    index.write_text(json.dumps({"weight_map": {"w": "c.bin"}}))
    with pytest.raises(ValueError, match=r"the index names shard 'c.bin', which is missing"):
        devicemap.tensor_sizes(index)


def test_a_folder_with_both_formats_is_read_as_safetensors(tmp_path: Path) -> None:
    st, _pt = save_both(tiny_llama(), tmp_path)
    (st / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
    assert _core._pytorch_files(str(st)) is None
    assert devicemap.tensor_sizes(st)


# --- file errors that say what the path is --------------------------------------------------


def test_paths_that_are_not_files_say_what_they_are(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"^/dev/zero: is a character device, not a checkpoint file or folder"
    ):
        devicemap.tensor_sizes("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo: is a FIFO \(named pipe\), not a checkpoint file"):
        devicemap.tensor_sizes(fifo)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match=r"loop: cannot read: Too many levels of symbolic links"):
        devicemap.plan(loop, {"cpu": "1GiB"})
    with pytest.raises(ValueError, match=r"missing: no such file or directory"):
        devicemap.tensor_sizes(tmp_path / "missing")


def test_a_shard_that_is_a_folder_is_not_called_missing(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").mkdir()
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors"}}))
    refusal = r"shard 'a.safetensors', which cannot be read \(.*: Is a directory"
    with pytest.raises(ValueError, match=refusal) as refused:
        devicemap.tensor_sizes(tmp_path)
    assert "missing" not in str(refused.value)


def test_a_file_name_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.safetensors"
    Path(os.fsdecode(raw)).write_bytes(b"\0" * 16)
    for source in (os.fsdecode(raw), [os.fsdecode(raw)], Path(os.fsdecode(raw))):
        with pytest.raises(ValueError, match=r"caf\\xe9.safetensors: the file name is not UTF-8; rename it"):
            devicemap.tensor_sizes(source)
    with pytest.raises(ValueError, match=r"nowhere\\xff: no such file or directory"):
        devicemap.tensor_sizes(os.fsdecode(os.fsencode(tmp_path) + b"/nowhere\xff"))


@pytest.mark.parametrize("entry", ["../x.safetensors", "/etc/passwd", "a/../../x.safetensors"])
def test_index_entries_outside_the_checkpoint_are_refused(tmp_path: Path, entry: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": entry}}))
    with pytest.raises(ValueError, match="a path outside the checkpoint's folder"):
        devicemap.tensor_sizes(tmp_path)


def test_a_plan_from_bin_files_loads_with_from_pretrained(tmp_path: Path) -> None:
    model = tiny_llama(tie=True)
    _st, pt = save_both(model, tmp_path, shards=2)
    total = sum(devicemap.tensor_sizes(pt).values())
    device_map = devicemap.plan(pt, {"cpu": total * 2 // 3, "disk": "1GiB"}).to_hf()
    assert set(device_map.values()) == {"cpu", "disk"}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        pt, device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits)
