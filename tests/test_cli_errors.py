"""No `devicemap` subcommand prints a traceback: bad input or environment is one `error:` line
and exit 2, anything unexpected an `error:` line and exit 1; `check-map --json` answers in JSON
even when the file cannot be used; a UTF-8 byte order mark is fine; bad entries are counted
without keeping every error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from devicemap import cli


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None):
    return subprocess.run(
        [sys.executable, "-m", "devicemap", *args],
        capture_output=True,
        input=stdin,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def no_traceback(result) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err + result.stdout.decode(), err
    return err


@pytest.mark.parametrize("command", ["resolve", "devices"])
@pytest.mark.parametrize("value", ["gpu", "disk", "cuda:-1"])
def test_bad_override_is_an_error_line(command, value):
    result = run_cli(command, env={"DEVICEMAP_DEVICE": value})
    err = no_traceback(result)
    assert result.returncode == 2
    assert err.startswith(f"error: DEVICEMAP_DEVICE={value!r} "), err
    assert len(err.strip().splitlines()) == 1


def test_deeply_nested_json(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    result = run_cli("check-map", str(path))
    err = no_traceback(result)
    assert result.returncode == 2
    assert "nested too deeply" in err


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "holds a JSON list"),
        (b"\xff\xfe{}", "is not UTF-8"),
        (b'{"type": "single", "device": "cpu"}', "single-device ComponentDevice"),
        (b'{"type": "multiple", "device_map": 3}', "'device_map' must be an object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_json_output_for_file_level_errors(tmp_path, content, phrase):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = run_cli("check-map", "--json", str(path))
    no_traceback(result)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["file"] == str(path)
    assert phrase in report["error"]
    assert f"error: {report['error']}" in result.stderr.decode()


def test_json_output_for_a_missing_file(tmp_path):
    result = run_cli("check-map", "--json", str(tmp_path / "absent.json"))
    no_traceback(result)
    assert result.returncode == 2
    assert "cannot read" in json.loads(result.stdout)["error"]


def test_byte_order_mark_is_accepted(tmp_path):
    body = json.dumps({"a": 0, "b": "cpu"}).encode()
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + body)
    for result in (
        run_cli("check-map", "--json", str(path)),
        run_cli("check-map", "--json", "-", stdin=path.read_bytes()),
    ):
        no_traceback(result)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["devices"] == {"cuda:0": 1, "cpu": 1}


def test_many_bad_entries_are_counted_and_the_first_kept(tmp_path):
    n = 50_000
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({f"layer.{i}": "gpu" if i % 2 else -1 for i in range(n)}))
    result = run_cli("check-map", "--json", str(path))
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert (report["entries"], report["valid"], report["invalid"]) == (n, 0, n)
    assert len(report["errors"]) == cli.KEPT_ERRORS
    assert [e["key"] for e in report["errors"][:3]] == ["layer.0", "layer.1", "layer.2"]
    assert report["errors"][0]["message"] == "Device id must be >= 0, got -1 (key 'layer.0')"
    plain = run_cli("check-map", str(path))
    err = no_traceback(plain)
    assert f"... and {n - cli.SHOWN_ERRORS} more invalid entries" in err
    assert f"{n} of {n} entries are invalid" in err


def test_value_that_changes_the_dict_while_read_is_a_runtime_error():
    from devicemap import _core

    data: dict[str, object] = {}

    class Sneaky:
        def __str__(self) -> str:
            data[f"new{len(data)}"] = 0
            return "sneaky"

    data.update(a=Sneaky(), b=Sneaky())
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        _core._check_map(data, hf=True)


@pytest.mark.parametrize(
    ("raised", "code", "phrase"),
    [
        (ZeroDivisionError("boom"), 1, "error: unexpected ZeroDivisionError: boom"),
        (KeyboardInterrupt(), 130, ""),
    ],
)
def test_unexpected_exceptions_become_an_error_line(monkeypatch, capsys, raised, code, phrase):
    def boom(args):
        raise raised

    monkeypatch.setattr(cli, "_resolve", boom)
    assert cli.main(["resolve"]) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.strip() == phrase


def test_closed_pipe_is_quiet(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({f"layer.{i}": "tpu" for i in range(20_000)}))
    with subprocess.Popen(
        [sys.executable, "-m", "devicemap", "check-map", "--json", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.read(100)
        process.stdout.close()
        err = process.stderr.read().decode()
        process.wait(timeout=120)
    assert "Traceback" not in err, err
    assert "BrokenPipe" not in err, err
