"""A newcomer's second pass over issue 14's command-line and API list: what was still wrong on
main after the first fixes (sizes that read as 1024.0 of a unit, "cuda:0 hold", notes cut
between a number and its unit, a file name that is not UTF-8, counts in non-ASCII digits,
`--context 0`)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import devicemap
import pytest
from devicemap._core import _human_bytes
from devicemap.cli import main

GIB = 2**30


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads COLUMNS: every report here is printed as at an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_size_that_rounds_to_1024_takes_the_next_unit() -> None:
    assert _human_bytes(GIB - 384) == "1.0 GiB"
    assert _human_bytes(1024) == "1.0 KiB"
    assert _human_bytes(GIB - 2**20) == "1023.0 MiB"


def test_a_tiny_model_on_a_1gib_budget_has_1_gib_to_spare(capsys: pytest.CaptureFixture[str]) -> None:
    sizes = {"model.embed.weight": 160, "lm_head.weight": 160}
    report = devicemap.plan_report(sizes, {0: "1GiB"})
    assert "1024.0" not in str(report)
    code, out, _ = plan(capsys, "--example", "llama-3-70b", "--max-memory", "0=200GiB")
    assert code == 0
    assert "1024.0" not in out


def test_one_gpu_that_holds_nothing_is_named_in_the_singular(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys, "--example", "llama-3-70b", "--max-memory", "0=1GiB,cpu=300GiB")
    assert code == 0
    assert "cuda:0 holds no weights" in out
    assert "cuda:0 hold no" not in out
    assert out.rstrip().splitlines()[-1].endswith("the GPU holds no weights (see above)")


def test_notes_at_80_columns_keep_sizes_whole_and_no_trailing_spaces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = plan(capsys, "--example", "deepseek-v3", "--devices", "8xH200", "--context", "32k")
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert not [line for line in lines if line != line.rstrip()]
    # A size never ends one line with its unit on the next.
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    assert not [line for line in lines if line.strip().split(" ")[0].rstrip(",)") in units]
    # Lines after the first of a cut note are indented, as `str(report)` indents them.
    cache = next(i for i, line in enumerate(lines) if line.startswith("KV cache for"))
    assert lines[cache + 1].startswith("  ")


def test_a_name_with_brackets_is_not_read_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from devicemap._plan_cli import _say
    from rich.console import Console

    _say(Console(highlight=False, width=80), "spilled: w[bold]x (1.0 GiB) -> cpu")
    assert capsys.readouterr().out == "spilled: w[bold]x (1.0 GiB) -> cpu\n"


@pytest.mark.skipif(sys.platform != "linux", reason="file names as bytes are a POSIX matter")
def test_a_file_name_that_is_not_utf8_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = os.fsdecode(b"bad\xff.safetensors")
    (tmp_path / name).write_bytes(b"\x05\x00\x00")
    with pytest.raises(ValueError, match=r"bad\\xff\.safetensors: the file name is not UTF-8"):
        devicemap.plan(str(tmp_path / name), {0: "1GiB"})
    code, _, err = plan(capsys, str(tmp_path / name), "--max-memory", "0=1GiB")
    assert code == 2
    assert err.startswith("error: ")
    assert "bad\\xff.safetensors" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-memory", "²=1GiB"], "Unknown max_memory key '²'"),
        (["--devices", "²xH100"], "--devices '²xH100': unknown card"),
        (["--devices", "8xH100", "--context", "²k"], "--context '²k': expected tokens"),
        (["--devices", "8xH100", "--context", "0"], "--context '0': a context is at least 1 token"),
    ],
)
def test_counts_are_ascii_digits_and_a_context_is_at_least_one_token(
    capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, out, err = plan(capsys, "--example", "llama-3-70b", *args)
    assert code == 2
    assert not out
    assert err.startswith("error: "), err
    assert says in err, err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("command", [["explain", "/dev/zero", "a"], ["check-map", "/dev/zero"]])
def test_an_endless_map_file_is_refused_not_read_until_memory_runs_out(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: /dev/zero: more than 256 MiB"), err


def test_an_activation_read_as_bits_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    config = {"model_type": "llama", "num_hidden_layers": 1}
    sizes = {"model.layers.0.w": 8}
    with pytest.warns(UserWarning, match=r"^activation 2gb read as bits, as accelerate reads"):
        report = devicemap.plan_report(sizes, {0: "10GiB"}, context=16, config=config, activation="2gb")
    assert report.context is not None
    assert report.context["activation"] == 2 * 10**9 // 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bytes: no warning
        devicemap.plan_report(sizes, {0: "10GiB"}, context=16, config=config, activation="2GB")
    args = ["--example", "llama-3-70b", "--max-memory", "0=200GiB", "--context", "1k", "--activation", "2gb"]
    code, _, err = plan(capsys, *args)
    assert code == 0
    assert "warning: activation 2gb read as bits" in err


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_folder_whose_shard_name_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.safetensors")
    save_file({"w": np.zeros(2, dtype=np.float32)}, os.fsdecode(name))
    with pytest.raises(ValueError, match=r"caf\\xe9\.safetensors: the file name is not UTF-8; rename it"):
        devicemap.tensor_sizes(str(tmp_path))
