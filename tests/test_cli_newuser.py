"""A new user's first hour with `devicemap plan`: messages that say what is wrong and what helps."""

from __future__ import annotations

import json
from pathlib import Path

import devicemap
import pytest
from devicemap.cli import main

# Llama-3-70B at 128k tokens: 40 GiB of KV cache, more than the 22 GiB of GPU and CPU budgets
# can hold, beside a terabyte of disk that could take every weight.
SHORT_RUNNER = ["--example", "llama-3-70b", "--context", "128k", "--max-memory", "0=20GiB,cpu=2GiB,disk=1TiB"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_config_json_given_as_the_checkpoint_is_named_as_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, indent=2))
    code, out, err = run(capsys, str(config))
    assert code == 2
    assert out == ""
    assert f"error: {config}: is a JSON file, not safetensors" in err
    assert "header length" not in err
    with pytest.raises(ValueError, match="is a JSON file, not safetensors"):
        devicemap.tensor_sizes(str(config))


def test_a_kv_cache_short_of_room_does_not_ask_for_more_disk(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SHORT_RUNNER)
    assert code == 1
    text = " ".join(out.split())
    assert "or more to the budgets" not in text
    assert "a cpu/disk budget with --max-memory" not in text
    assert "the disk has room for their weights, but their KV cache (40.0 GiB) must be held" in text
    assert "more disk does not help: add up to 169.5 GiB to the GPUs or the cpu (cpu runs the" in text
    assert text.endswith(
        "(more memory on the GPUs or the cpu, which hold the KV cache; more disk does not help)"
    )
    # What the note says holds: ten times the disk still does not fit; the amount it names,
    # given to the device it names, does.
    code, _, _ = run(capsys, *SHORT_RUNNER[:-1], "0=20GiB,cpu=2GiB,disk=10TiB")
    assert code == 1
    code, out, _ = run(capsys, *SHORT_RUNNER[:-1], "0=20GiB,cpu=171.5GiB,disk=1TiB")
    assert code == 0, out


def test_a_kv_cache_left_over_without_a_disk_budget_asks_for_gpu_room(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # cuda:0 runs the offloaded blocks, so it holds their cache: more cpu does not help.
    short = [*SHORT_RUNNER[:-1], "0=20GiB,cpu=2GiB"]
    code, out, _ = run(capsys, *short)
    assert code == 1
    text = " ".join(out.split())
    assert "or more to the budgets" not in text
    assert (
        "add 152.7 GiB or more to the GPUs; a cpu or disk budget takes only their weights (116.7 GiB), "
        "not their KV cache (36.0 GiB), which cuda:0 holds for the offloaded layers it runs"
    ) in text
    assert text.endswith(
        "(more or larger GPUs, which hold the KV cache; a cpu or disk budget takes only weights)"
    )
    # What it says holds: the amount on the cpu does not fit; on the GPU it does.
    code, _, _ = run(capsys, *short[:-1], "0=20GiB,cpu=155GiB")
    assert code == 1
    code, out, _ = run(capsys, *short[:-1], "0=173GiB,cpu=2GiB")
    assert code == 0, out


def test_the_remedy_never_asks_for_a_budget_already_given(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--max-memory", "0=20GiB,cpu=2GiB,disk=100GiB")
    assert code == 1
    text = " ".join(out.split())
    assert text.endswith("more is needed (more or larger GPUs, or larger cpu/disk budgets)")
    assert "add 13.1 GiB or more to the budgets" in text
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--devices", "1xH100")
    assert code == 1
    remedy = "(more or larger GPUs, or a cpu/disk budget with --max-memory cpu=...,disk=...)"
    assert " ".join(out.split()).endswith(remedy)


def test_a_cpu_budget_too_small_to_run_the_disk_blocks_is_not_a_plain_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--max-memory", "cpu=1GiB,disk=1TiB")
    text = " ".join(out.split())
    assert "cpu needs 2.0 GiB free to run the largest offloaded block 'lm_head'" in text
    verdict = "fits on disk, but the cpu, which runs it, needs 2.0 GiB free, more than its 1.0 GiB budget"
    assert text.endswith(f"{verdict} (see above)")
    assert code == 0
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--max-memory", "cpu=4GiB,disk=1TiB")
    assert (code, out.split("\n")[-2]) == (0, "fits on cpu, disk")


def test_no_context_fits_is_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--example", "llama-3-70b", "--devices", "1xH100", "--context", "max")
    assert code == 1
    assert err.startswith("No context fits at batch 1: even 1 token per sequence leaves blocks over")
    assert err.lower().count("no context fits") == 1


def write_config(path: Path, model_type: str, layers: int) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": model_type, "num_hidden_layers": layers}))
    return path / "config.json"


def test_another_models_config_is_warned_about(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The example has 80 layers: a config of 6 sizes the cache of 'model.layers.0..5' only.
    small = write_config(tmp_path / "small", "llama", 6)
    code, out, err = run(
        capsys, "--example", "llama-3-70b", "--devices", "8xH100", "--context", "2k", "--config", str(small)
    )
    assert code == 0
    assert "6 layers of 'model.layers'" in " ".join(out.split())
    assert err == (
        f"warning: --config {small} is a llama config of 6 layers, but the llama-3-70b example's config is "
        "a llama config of 80 layers: the KV cache is sized from --config\n"
    )
    same = write_config(tmp_path / "same", "llama", 80)
    code, _, err = run(
        capsys, "--example", "llama-3-70b", "--devices", "8xH100", "--context", "2k", "--config", str(same)
    )
    assert (code, err) == (0, "")


def test_config_without_context_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", "llama", 80)
    code, out, err = run(capsys, "--example", "llama-3-70b", "--devices", "8xH100", "--config", str(config))
    assert (code, out) == (2, "")
    assert err == "error: --config needs --context (tokens per sequence, e.g. --context 32k)\n"
