"""`devicemap check-map`: per-device summary, bad entries named by key, exit 2 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from devicemap import cli

HF_OK = {"name": 0, "other": "cpu", "third": 0, "lm_head": "disk"}
HAYSTACK_OK = {"type": "multiple", "device_map": {"layer1": "cpu", "layer2": "cuda:1", "layer3": "cuda:1"}}
HF_BAD = {"a": "gpu", "b": True, "ok": 0, "c": -1, "d": 1.5}
HAYSTACK_BAD = {"type": "multiple", "device_map": {"x": "cuda:1", "y": "tpu", "z": 5, "w": "cuda:01"}}


def write(tmp_path, data, name="map.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicemap", "check-map", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def device_lines(text: str) -> dict[str, int]:
    """The `device  count` lines of the summary."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].replace(",", "").isdigit():
            counts[parts[0]] = int(parts[1].replace(",", ""))
    return counts


def test_hf_form_summary(tmp_path, capsys):
    path = write(tmp_path, HF_OK)
    assert cli.main(["check-map", path]) == 0
    out, err = capsys.readouterr()
    assert "HF form" in out
    assert device_lines(out) == {"cuda:0": 2, "cpu": 1, "disk": 1}
    assert "Traceback" not in out + err


def test_haystack_form_summary(tmp_path, capsys):
    path = write(tmp_path, HAYSTACK_OK)
    assert cli.main(["check-map", path]) == 0
    out, _ = capsys.readouterr()
    assert "Haystack form" in out
    assert device_lines(out) == {"cpu": 1, "cuda:1": 2}


def test_hf_form_bad_entries_named_by_key(tmp_path, capsys):
    path = write(tmp_path, HF_BAD)
    assert cli.main(["check-map", path]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert device_lines(out) == {"cuda:0": 1}
    for key, phrase in [
        ("a", "Unknown device type string 'gpu'"),
        ("b", "unexpected device 'True'"),
        ("c", "Device id must be >= 0, got -1"),
        ("d", "unexpected device '1.5'"),
    ]:
        line = next(line for line in err.splitlines() if f"'{key}'" in line and phrase in line)
        assert line
    assert "'ok'" not in err


def test_haystack_form_bad_entries_named_by_key(tmp_path, capsys):
    path = write(tmp_path, HAYSTACK_BAD)
    assert cli.main(["check-map", path]) == 2
    out, err = capsys.readouterr()
    assert device_lines(out) == {"cuda:1": 1}
    assert any("'y'" in line and "tpu" in line for line in err.splitlines())
    assert any("'z'" in line and "5" in line for line in err.splitlines())
    assert any("'w'" in line and "01" in line for line in err.splitlines())
    assert "'x'" not in err


def test_json_output(tmp_path, capsys):
    path = write(tmp_path, HAYSTACK_BAD)
    assert cli.main(["check-map", path, "--json"]) == 2
    out, _ = capsys.readouterr()
    summary = json.loads(out)
    assert summary["entries"] == 4
    assert summary["valid"] == 1
    assert summary["devices"] == {"cuda:1": 1}
    assert {e["key"] for e in summary["errors"]} == {"y", "z", "w"}
    by_key = {e["key"]: e for e in summary["errors"]}
    assert by_key["z"]["error"] == "TypeError"
    assert by_key["y"]["error"] == "ValueError"
    assert "tpu" in by_key["y"]["message"]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '"cpu"',
        '{"type": "single", "device": "cpu"}',
        '{"type": "multiple", "device_map": 3}',
        '{"type": "multiple"}',
        b"\xff\xfe{".decode("latin-1"),
    ],
    ids=["not-json", "list", "string", "single", "device_map-int", "no-device_map", "bad-bytes"],
)
def test_malformed_files_exit_2_without_traceback(tmp_path, capsys, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content.encode("latin-1"))
    assert cli.main(["check-map", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert str(path) in err or "error" in err.lower()


def test_missing_file(tmp_path, capsys):
    assert cli.main(["check-map", str(tmp_path / "absent.json")]) == 2
    _, err = capsys.readouterr()
    assert "absent.json" in err


def test_subprocess_hf_form(tmp_path):
    result = run_cli(write(tmp_path, {"name": 0, "other": "cpu"}))
    assert result.returncode == 0, result.stderr
    assert device_lines(result.stdout) == {"cuda:0": 1, "cpu": 1}
    assert "Traceback" not in result.stderr


def test_subprocess_bad_hf_form(tmp_path):
    result = run_cli(write(tmp_path, {"name": 0, "other": "gpu:1"}))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'other'" in result.stderr
    assert "gpu" in result.stderr


def test_subprocess_bad_haystack_form(tmp_path):
    result = run_cli(write(tmp_path, HAYSTACK_BAD))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'y'" in result.stderr


def test_subprocess_malformed(tmp_path):
    result = run_cli(write(tmp_path, "{not json"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_subprocess_stdin():
    result = run_cli("-", stdin='{"type": "multiple", "device_map": {"a": "cpu", "b": "xla"}}')
    assert result.returncode == 2
    assert "'b'" in result.stderr
    assert "Traceback" not in result.stderr
