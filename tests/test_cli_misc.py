"""Command-line items of issue 14: `-o -`, duplicate keys in map files, `check-map --names`
output that agrees with its exit code, and `DEVICEMAP_DEVICE` naming a GPU this process does
not see."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
from devicemap import ComponentDevice, Device
from devicemap._resolve import UnseenDeviceWarning
from devicemap.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_output_dash_is_standard_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "plan", "--example", "llama-3-70b", "--devices", "2xH100", "-o", "-")
    assert code == 0, err
    assert not (tmp_path / "-").exists()
    # Standard output is the map alone (the table went to standard error).
    data = json.loads(out)
    assert set(data.values()) == {0, 1}
    assert "fits on 2 x H100" in err
    code, _out, written = run(
        capsys, "plan", "--example", "llama-3-70b", "--devices", "2xH100", "-o", "map.json"
    )
    assert code == 0, written
    assert json.loads((tmp_path / "map.json").read_text()) == data


def test_duplicate_keys_in_a_map_file_are_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "map.json"
    path.write_text('{"model.embed": 0, "lm_head": 1, "model.embed": "cpu"}')
    for args in (["check-map", str(path)], ["explain", str(path), "lm_head"], ["diff", str(path), str(path)]):
        code, out, err = run(capsys, *args)
        assert code == 2, (args, out, err)
        assert f'{path}: the key "model.embed" appears twice in one object' in err
    path.write_text('{"model.embed": 0, "lm_head": 1}')
    assert run(capsys, "check-map", str(path))[0] == 0


def check_with_names(
    folder: Path, capsys: pytest.CaptureFixture[str], content: str, names: str
) -> tuple[int, str, str]:
    """`check-map` of a map holding `content` with `--names` of a file holding `names`."""
    (folder / "map.json").write_text(content)
    (folder / "names.txt").write_text(names)
    return run(capsys, "check-map", str(folder / "map.json"), "--names", str(folder / "names.txt"))


def test_check_map_names_prints_no_success_line_when_it_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check_with_names(tmp_path, capsys, '{"model": 0}', "model.x\nlm_head.weight\n")
    assert code == 2
    assert "all entries are valid" not in out
    assert "the entries are valid, but the map fails the --names check" in out
    assert "1 of 2 tensor names is not covered" in err
    code, out, err = check_with_names(tmp_path, capsys, '{"model": 0}', "model.x\n")
    assert (code, err) == (0, "")
    assert "all entries are valid" in out
    # A bad map keeps its own exit code and summary.
    code, out, err = check_with_names(tmp_path, capsys, '{"model": "gpu"}', "model.x\n")
    assert code == 2
    assert "map.json: 1 entries" in out
    assert "Unknown device type string 'gpu'" in err


def test_an_unseen_cuda_override_warns_and_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("DEVICEMAP_DEVICE", "cuda:3")
    with pytest.warns(
        UnseenDeviceWarning, match=r"DEVICEMAP_DEVICE='cuda:3' names CUDA device 3, but this"
    ) as seen:
        device = ComponentDevice.resolve_device().to_torch_str()
    assert device == "cuda:3"
    # The warning points at the caller, not into devicemap.
    assert seen[0].filename == __file__
    monkeypatch.setenv("DEVICEMAP_DEVICE", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ComponentDevice.resolve_device().to_torch_str() == "cpu"


def test_the_command_line_says_it_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("DEVICEMAP_DEVICE", "cuda:1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, "resolve")
    assert code == 0
    assert out.startswith("cuda:1")
    assert err.count("warning: DEVICEMAP_DEVICE='cuda:1' names CUDA device 1") == 1, err


def test_device_override_of_a_seen_device_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    from devicemap._resolve import from_environment

    monkeypatch.setenv("DEVICEMAP_DEVICE", "cuda:0")
    monkeypatch.setattr("devicemap._resolve.cuda_device_count", lambda: 1)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolution = from_environment()
    assert resolution is not None
    assert resolution.device == Device.gpu(0)


def test_diff_of_maps_that_place_every_name_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole, full, names = tmp_path / "whole.json", tmp_path / "full.json", tmp_path / "names.txt"
    whole.write_text('{"": 0}')
    full.write_text('{"model.embed_tokens": 0, "model.layers": 0, "model.norm": 0, "lm_head": 0}')
    names.write_text(
        "model.embed_tokens.weight\nmodel.layers.0.w\nmodel.layers.1.w\nmodel.norm.weight\nlm_head.weight\n"
    )
    # Without names: `""` covers names the full map does not, and the text says just that.
    code, out, _ = run(capsys, "diff", str(whole), str(full))
    assert code == 1
    assert out.startswith("4 added, 1 removed, 0 moved\n")
    assert out.rstrip().endswith(
        "every name both maps cover goes to the same device; only the old map covers names under ''"
    )
    # On the model's names they are equivalent: exit 0.
    code, out, _ = run(capsys, "diff", str(whole), str(full), "--names", str(names))
    assert code == 0
    assert out.rstrip().endswith("equivalent: both maps place 5 names given the same way")
    code, out, _ = run(capsys, "diff", str(whole), str(full), "--names", str(names), "--json")
    data = json.loads(out)
    assert (code, data["equivalent"], data["compared"], data["placed_differently"]) == (0, True, "names", {})
    # A name placed elsewhere is listed, with exit 1.
    full.write_text('{"model.embed_tokens": 0, "model.layers": 0, "model.norm": "cpu", "lm_head": 0}')
    code, out, _ = run(capsys, "diff", str(whole), str(full), "--names", str(names))
    assert code == 1
    assert out.rstrip().endswith("placed differently: 1 of 5 names\n  'model.norm.weight': cuda:0 -> cpu")


def test_diff_api_compares_placement(tmp_path: Path) -> None:
    from devicemap import DeviceMap

    split = DeviceMap.from_hf({"model": 0, "lm_head": 0})
    finer = DeviceMap.from_hf({"model": 0, "model.norm": 0, "lm_head": 0})
    diff = split.diff(finer)
    assert bool(diff)  # a key was added
    assert diff.equivalent
    assert diff.placed_differently == ()
    moved = split.diff({"model": Device.gpu(0), "lm_head": Device.cpu()}, names=["lm_head.weight", "model.x"])
    assert not moved.equivalent
    assert moved.placed_differently == (("lm_head.weight", Device.gpu(0), Device.cpu()),)


def test_check_map_names_json_keeps_the_error_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = tmp_path / "names.txt"
    names.write_text("a\n")
    missing = str(tmp_path / "missing.json")
    code, out, err = run(capsys, "check-map", missing, "--names", str(names), "--json")
    assert code == 2
    assert json.loads(out) == {"file": missing, "error": f"cannot read {missing}: No such file or directory"}
    assert err.startswith("error: cannot read")
