"""`devicemap check-map --names`, `devicemap explain`, `devicemap diff`: output, exit codes, and
an `error:` line instead of a traceback for every bad input."""

from __future__ import annotations

import json

import pytest
from devicemap import cli

from tests._subprocess import run_python

MAP = {"model": 0, "model.layers.1": 1, "lm_hea": "cpu"}
GOOD = {"model": 0, "lm_head": "cpu"}
NAMES = ["model.layers.1.w", "model.layers.10.w", "lm_head.weight"]


def write(tmp_path, data, name):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    return {
        "map": write(tmp_path, MAP, "map.json"),
        "good": write(tmp_path, GOOD, "good.json"),
        "names": write(tmp_path, "\n".join(NAMES) + "\n\n", "names.txt"),
        "names_json": write(tmp_path, NAMES, "names.json"),
        "haystack": write(
            tmp_path, {"type": "multiple", "device_map": {"model": "cuda:0", "lm_head": "cpu"}}, "hs.json"
        ),
    }


def test_check_map_names_all_covered(files, capsys):
    assert cli.main(["check-map", files["good"], "--names", files["names"]]) == 0
    out, err = capsys.readouterr()
    assert "every one of 3 tensor names is covered by the device map" in out
    assert err == ""
    assert cli.main(["check-map", files["haystack"], "--names", files["names_json"]]) == 0


def test_check_map_names_uncovered_and_unused(files, capsys):
    assert cli.main(["check-map", files["map"], "--names", files["names"]]) == 2
    _, err = capsys.readouterr()
    assert "error: 1 of 3 tensor names is not covered by the device map:\n  lm_head.weight\n" in err
    assert "error: 1 key of the device map covers no tensor name (a typo?): 'lm_hea'" in err


@pytest.mark.parametrize(
    ("mode", "code", "prefix"), [("error", 2, "error"), ("warn", 0, "warning"), ("ignore", 0, None)]
)
def test_unused_modes(tmp_path, files, capsys, mode, code, prefix):
    path = write(tmp_path, {**GOOD, "model.layer.3": 1}, "typo.json")
    assert cli.main(["check-map", path, "--names", files["names"], "--unused", mode]) == code
    _, err = capsys.readouterr()
    if prefix is None:
        assert err == ""
    else:
        assert err.startswith(
            f"{prefix}: 1 key of the device map covers no tensor name (a typo?): 'model.layer.3'"
        )


def test_check_map_names_json(files, capsys):
    assert cli.main(["check-map", files["map"], "--names", files["names_json"], "--json"]) == 2
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert data["valid"] == 3
    assert data["coverage"] == {
        "names": 3,
        "uncovered": ["lm_head.weight"],
        "uncovered_groups": [["lm_head.weight", 1]],
        "unused_keys": ["lm_hea"],
    }


def test_check_map_names_invalid_map_keeps_its_report(tmp_path, files, capsys):
    path = write(tmp_path, {"a": "gpu"}, "bad.json")
    assert cli.main(["check-map", path, "--names", files["names"]]) == 2
    _, err = capsys.readouterr()
    assert "invalid entry 'a'" in err


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ('["a", 3]', "item 1 is a JSON int, not a string"),
        ("[oops", "is not a valid JSON list"),
        ("model.w\nmodel..x\n", "Tensor name 'model..x' has an empty component"),
    ],
)
def test_bad_names_files(tmp_path, files, capsys, names, message):
    path = write(tmp_path, names, "names.txt")
    assert cli.main(["check-map", files["good"], "--names", path]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("error: ")
    assert message in err


def test_missing_names_file(files, capsys):
    assert cli.main(["check-map", files["good"], "--names", "/nonexistent/names.txt"]) == 2
    assert "error: cannot read /nonexistent/names.txt" in capsys.readouterr().err


def test_explain(files, capsys):
    assert cli.main(["explain", files["map"], "model.layers.10.w"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("model.layers.10.w -> cuda:0 (key 'model')")
    assert "'model.layers.1' (cuda:1): a text prefix of the name, but not at a '.' boundary" in out
    assert cli.main(["explain", files["map"], "model.layers.10.w", "lm_head.weight", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert [d["key"] for d in data] == ["model", None]
    assert data[1]["near_misses"][0]["reason"] == "no-dot-boundary"
    assert cli.main(["explain", files["map"], "model."]) == 2
    assert "error: Tensor name 'model.' ends with '.'" in capsys.readouterr().err


def test_diff(files, capsys):
    assert cli.main(["diff", files["map"], files["good"]]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        "1 added, 2 removed, 0 moved",
        "+ 'lm_head': cpu",
        "- 'model.layers.1': cuda:1",
        "- 'lm_hea': cpu",
    ]
    assert cli.main(["diff", files["good"], files["haystack"]]) == 0
    assert capsys.readouterr().out.strip() == "no differences"
    assert cli.main(["diff", files["map"], files["good"], "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "added": {"lm_head": "cpu"},
        "removed": {"model.layers.1": "cuda:1", "lm_hea": "cpu"},
        "moved": {},
        "equivalent": False,
        "compared": "keys",
        "placed_differently": {
            "model.layers.1": ["cuda:1", "cuda:0"],
            "lm_hea": ["cpu", None],
            "lm_head": [None, "cpu"],
        },
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "holds a JSON list"),
        ('{"a": "gpu"}', "Unknown device type string 'gpu'"),
        ('{"type": "single", "device": "cpu"}', "single-device ComponentDevice"),
    ],
)
def test_bad_maps_are_error_lines(tmp_path, files, capsys, content, message):
    path = write(tmp_path, content, "bad.json")
    assert cli.main(["diff", path, files["good"]]) == 2
    assert cli.main(["explain", path, "a.b"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2
    assert message in err


def test_stdin_and_no_traceback(files):
    run = "import sys; from devicemap import cli; raise SystemExit(cli.main(sys.argv[1:]))"
    ok = run_python(run, "check-map", "-", "--names", files["names"], stdin=json.dumps(GOOD))
    assert "every one of 3 tensor names is covered" in ok.stdout
    names_on_stdin = run_python(run, "check-map", files["good"], "--names", "-", stdin="\n".join(NAMES))
    assert "every one of 3" in names_on_stdin.stdout
    both = run_python(run, "check-map", "-", "--names", "-", stdin="{}", check=False)
    assert both.returncode == 2
    assert both.stderr.startswith("error: the map and --names cannot both be read from standard input")
    for args in (["diff", "-", files["good"]], ["explain", "-", "x"]):
        bad = run_python(run, *args, stdin="\x00not json", check=False)
        assert bad.returncode == 2
        assert "Traceback" not in bad.stderr
        assert bad.stderr.startswith("error: ")
