"""`devicemap plan`: the table, the verdict, the JSON, the map files, and `error:` lines."""

from __future__ import annotations

import json
from pathlib import Path

import devicemap
import pytest
from _fake_nvml import gpus, scenario_env
from _subprocess import run_python
from devicemap._core import _human_bytes
from devicemap._plan_cli import parse_devices, parse_max_memory
from devicemap.cli import main

GIB = 2**30
CLI = "import sys; from devicemap.cli import main; sys.exit(main(sys.argv[1:]))"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_example_on_catalogue_cards(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--example", "deepseek-v3", "--devices", "8xH200")
    assert code == 0, err
    assert "fits on 8 x H200 141GB with" in out
    assert "GiB to spare per GPU" in out
    assert "cuda:7" in out
    code, out, _ = run(capsys, "--example", "deepseek-v3", "--devices", "8xH100")
    assert code == 1
    assert "does not fit on 8 x H100 80GB:" in out
    assert "more is needed" in out


def test_hosts_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--example", "deepseek-v3", "--devices", "2x8xH100", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["fits"] is True
    assert data["budgets_for"] == "2 hosts x 8 x H100 80GB"
    assert len(data["devices"]) == 16
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--devices", "2x4xL40S")
    assert code == 0
    assert "host" in out


def test_max_memory_spill_and_output_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    hf_file = tmp_path / "map.json"
    code, out, err = run(
        capsys,
        "--example",
        "llama-3-70b",
        "--max-memory",
        "0=40GiB,cpu=60GiB,disk=1TiB",
        "--strategy",
        "sequential",
        "-o",
        str(hf_file),
    )
    assert code == 0, err
    assert "only with offloading" in out
    assert "spilled:" in out
    written = json.loads(hf_file.read_text())
    expected = devicemap.plan(
        devicemap.example_model("llama-3-70b"), {0: "40GiB", "cpu": "60GiB", "disk": "1TiB"}, "sequential"
    )
    assert written == expected.to_hf()
    haystack_file = tmp_path / "haystack.json"
    code, _, _ = run(
        capsys,
        "--example",
        "llama-3-70b",
        "--devices",
        "2xH100",
        "--format",
        "haystack",
        "-o",
        str(haystack_file),
    )
    assert code == 0
    data = json.loads(haystack_file.read_text())
    assert data["type"] == "multiple"
    assert set(data["device_map"].values()) == {"cuda:0", "cuda:1"}


def test_checkpoint_and_dtype(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    st.save_file(
        {f"layers.{i}.w": torch.zeros(256, 256) for i in range(4)}, str(tmp_path / "model.safetensors")
    )
    code, out, err = run(capsys, str(tmp_path), "--max-memory", "0=600KiB,1=600KiB", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["total_bytes"] == 4 * 256 * 256 * 4
    assert data["device_map"] == {"layers.0": 0, "layers.1": 0, "layers.2": 1, "layers.3": 1}
    code, out, err = run(capsys, str(tmp_path), "--max-memory", "0=600KiB", "--dtype", "bfloat16", "--json")
    assert code == 0, err
    assert json.loads(out)["total_bytes"] == 4 * 256 * 256 * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "8xTPU"], "unknown card 'tpu'"),
        (["--devices", "0xH100"], "counts must be >= 1"),
        (["--max-memory", "0:70GiB"], "expected KEY=SIZE"),
        (["--max-memory", "0=-5GiB"], "max_memory[0] = '-5GiB'"),
        (["--max-memory", "gpu=5GiB"], "Unknown max_memory key 'gpu'"),
        (["--dtype", "float7"], "Unknown dtype 'float7'"),
        (["--reserve", "1.5"], "--reserve must be a fraction"),
        (["/no/such/checkpoint"], "no such file or directory"),
        (["x", "--example", "llama-3-70b"], "not both"),
    ],
)
def test_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err + out


def test_parsers() -> None:
    assert parse_devices("8xH100") == (1, 8, "H100 80GB", 81559 * 2**20)
    assert parse_devices("2x8xa100-40gb")[:3] == (2, 8, "A100 40GB")
    assert parse_devices("H200")[:2] == (1, 1)
    assert parse_max_memory("0=70GiB, 1=70GiB,cpu=200GiB") == {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}


def test_default_plans_the_example_for_this_machine(tmp_path: Path) -> None:
    """Without budgets, the machine's: eight fake 141 GiB GPUs, each less the 10% reserve, hold
    the example whatever this machine's RAM, so the verdict and the spare room are known."""
    machine = gpus(8, name="NVIDIA H200")
    for gpu in machine:
        gpu.total = 141 * GIB
    env = scenario_env(tmp_path, machine)
    budget = 141 * GIB - int(141 * GIB * 0.1)
    expected = devicemap.plan_report(devicemap.example_model("deepseek-v3"), dict.fromkeys(range(8), budget))
    spare = sorted(d["budget"] - d["bytes"] for d in expected.devices)
    low = _human_bytes(spare[0]).removesuffix(" GiB")
    verdict = f"fits on 8 x NVIDIA H200 with {low}-{_human_bytes(spare[-1])} to spare per GPU"

    table = run_python(CLI, "plan", env=env, check=False)
    assert table.returncode == 0, table.stderr
    assert "example deepseek-v3: 626.9 GiB in 90,427 tensors" in table.stdout
    assert verdict in " ".join(table.stdout.split())

    result = run_python(CLI, "plan", "--json", env=env, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == verdict
    assert data["budgets_for"] == "8 x NVIDIA H200"
    gpu_budgets = [d["budget"] for d in data["devices"] if d["device"].startswith("cuda")]
    assert gpu_budgets == [budget] * 8
    assert data["device_map"] == expected.to_hf()


def test_does_not_fit_exits_1_and_writes_no_map(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "map.json"
    code, out, err = run(capsys, "--example", "llama-3-70b", "--max-memory", "0=10GiB", "-o", str(target))
    assert code == 1
    assert err.startswith(f"error: not writing {target}: does not fit on cuda:0:")
    assert not target.exists()
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--max-memory", "0=10GiB", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["fits"] is False
    assert data["missing_bytes"] > 0
    assert data["verdict"].startswith("does not fit on cuda:0:")


def test_context_verdicts_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """The verdict names the context planned for; the spare room is what the API reports."""
    config = json.loads(devicemap._core._example_config("deepseek-v3"))
    sizes = devicemap.example_model("deepseek-v3")
    budget = 143771 * 2**20 - int(143771 * 2**20 * 0.1)
    budgets = dict.fromkeys(range(8), budget)
    expected = devicemap.plan_report(sizes, budgets, context=32768, batch=4, config=config)
    spare = sorted(d["spare"] for d in expected.devices)
    code, out, err = run(
        capsys, "--example", "deepseek-v3", "--devices", "8xH200", "--context", "32k", "--batch", "4"
    )
    assert code == 0, err
    low, high = _human_bytes(spare[0]), _human_bytes(spare[-1])
    spread = low if low == high else f"{low.removesuffix(' GiB')}-{high}"
    verdict = f"fits on 8 x H200 141GB at 32,768 tokens x batch 4 with {spread} to spare per GPU"
    assert verdict in " ".join(out.split())
    code, out, _ = run(
        capsys,
        "--example",
        "deepseek-v3",
        "--devices",
        "8xH200",
        "--context",
        "32k",
        "--batch",
        "4",
        "--json",
    )
    data = json.loads(out)
    assert code == 0
    assert data["verdict"] == verdict
    assert data["cache_bytes"] == expected.cache_bytes
    assert data["context"]["per_layer"] == expected.context["per_layer"]  # type: ignore[index]
    # fp8 halves the cache.
    code, out, _ = run(
        capsys, "--example", "deepseek-v3", "--devices", "8xH200", "--context", "32k", "--batch", "4",
        "--kv-dtype", "fp8", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["cache_bytes"] * 2 == expected.cache_bytes
    code, out, _ = run(capsys, "--example", "deepseek-v3", "--devices", "8xH100", "--context", "32k")
    assert code == 1
    assert "does not fit on 8 x H100 80GB at 32,768 tokens x batch 1: " in " ".join(out.split())


def test_context_max_plans_the_longest_that_fits(capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads(devicemap._core._example_config("llama-3-70b"))
    sizes = devicemap.example_model("llama-3-70b")
    budget = 81559 * 2**20 - int(81559 * 2**20 * 0.1)
    probe = devicemap.plan_report(sizes, {0: budget, 1: budget}, context=1, batch=8, config=config)
    longest = probe.max_context()
    assert longest is not None
    code, out, err = run(
        capsys,
        "--example",
        "llama-3-70b",
        "--devices",
        "2xH100",
        "--context",
        "max",
        "--batch",
        "8",
        "--json",
    )
    assert code == 0
    assert err == f"longest context that fits: {longest:,} tokens x batch 8\n"
    data = json.loads(out)
    assert data["max_context"] == longest
    assert data["verdict"].startswith(f"fits on 2 x H100 80GB at {longest:,} tokens x batch 8 with ")
