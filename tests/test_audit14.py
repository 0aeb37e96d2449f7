"""Issue 14 checked item by item as a new user would (the checklist: /work/notes/audit-14.md):
what was still wrong on main, each with the test that failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from devicemap.cli import main


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads COLUMNS: every report here is printed as at an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")


def _plan_lines(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    code = main(["plan", *args])
    out, _ = capsys.readouterr()
    assert code == 0, out
    return out.splitlines()


def _write(path: Path, tensors: dict[str, int]) -> None:
    """A safetensors file of F32 vectors `{name: elements}`, data zero."""
    import json

    header, offset = {}, 0
    for name, elements in tensors.items():
        header[name] = {"dtype": "F32", "shape": [elements], "data_offsets": [offset, offset + 4 * elements]}
        offset += 4 * elements
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(offset))


def test_a_long_largest_block_name_is_cut_as_notes_are(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T5's tied embeddings make the largest block 'shared + encoder.embed_tokens + ...': the
    header line was cut by rich with a trailing space and the size alone on the next line."""
    tied = "shared + encoder.embed_tokens + decoder.embed_tokens + lm_head.w[x]"
    name = tied.replace(" + ", "_").replace(".", "_")
    _write(tmp_path / "model.safetensors", {f"{name}.weight": 4096, "block.0.w": 16, "block.1.w": 16})
    monkeypatch.chdir(tmp_path)  # a short path: a path is never cut
    lines = _plan_lines(capsys, "model.safetensors", "--max-memory", "cpu=1GiB")
    header = [line for line in lines[:4] if not line.startswith("device")]
    assert not [line for line in lines if line != line.rstrip()], lines
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    # Read as text, not rich markup: the brackets stay.
    assert "[x]" in " ".join(header), header
    largest = next(i for i, line in enumerate(lines) if line.startswith("largest block"))
    assert lines[largest + 1].startswith("  "), lines


def test_every_plan_option_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    """`devicemap plan --help`: --strategy had no text, and the checkpoint and --dtype texts did
    not name what they take (a pytorch_model.bin; bf16, fp8)."""
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--strategy {sequential,balanced,balanced_low_0} how" in out, out
    assert "pytorch_model.bin" in out
    assert "bf16" in out.split("--dtype DTYPE", 2)[2].split("--reserve")[0]
    assert "default 0.1" in out.split("--reserve RESERVE", 2)[2]


def test_context_without_a_config_names_the_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A checkpoint without config.json and --context: the error spoke the API's `context=` and
    `config=`, not the command's --context and --config."""
    _write(tmp_path / "model.safetensors", {"model.layers.0.w": 16})
    assert main(["plan", str(tmp_path), "--max-memory", "cpu=1GiB", "--context", "16"]) == 2
    err = capsys.readouterr().err
    assert "--config" in err, err
    assert "config=" not in err, err
    assert err.startswith(f"error: {tmp_path}: no config.json"), err
