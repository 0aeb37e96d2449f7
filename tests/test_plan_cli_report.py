"""Issue 14's command-line items: cards from the catalogue, verdicts that name the plan's
devices and agree with its map, budgets refused or warned about, the report at 80 columns,
and plans over several hosts in each host's own GPU names."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import devicemap
import pytest
from devicemap._core import _human_bytes
from devicemap._plan_cli import CATALOGUE, parse_devices
from devicemap.cli import main

GIB = 2**30


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads COLUMNS: every table here is printed as at an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")


def test_card_names_may_hold_an_x() -> None:
    assert parse_devices("8xMI300X")[:3] == (1, 8, "MI300X 192GB")
    assert parse_devices("2xMI325X")[:3] == (1, 2, "MI325X 256GB")
    assert parse_devices("8xRTX4090")[:3] == (1, 8, "RTX 4090 24GB")
    assert parse_devices("8x4090")[:3] == (1, 8, "RTX 4090 24GB")
    assert parse_devices("2x8xMI300X")[:3] == (2, 8, "MI300X 192GB")
    assert parse_devices("MI300X")[:2] == (1, 1)


def test_list_devices_prints_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--list-devices")
    assert code == 0
    for key, (name, memory, vendor) in CATALOGUE.items():
        line = next(line for line in out.splitlines() if line.split()[0] == key)
        assert name in line
        assert vendor in line
        assert _human_bytes(memory) in line
    assert max(len(line) for line in out.splitlines()) <= 80


def test_unknown_card_points_to_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--example", "llama-3-70b", "--devices", "8xH300")
    assert code == 2
    assert "unknown card 'h300'" in err
    assert "mi300x" in err
    assert "--list-devices" in err


def test_a_gpu_keyed_cuda_is_not_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--example", "llama-3-70b", "--max-memory", "cuda:0=200GiB")
    assert code == 0, err
    verdict = " ".join(out.split())
    assert "fits on cuda:0 with" in verdict
    assert "the CPU" not in verdict


def test_gpu_budgets_below_the_largest_block_say_nothing_fits_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--example", "llama-3-70b", "--max-memory", "0=1GiB,1=1GiB,cpu=1TiB", "--json"]
    code, out, _ = run(capsys, *args)
    data = json.loads(out)
    assert code == 0
    assert data["device_map"] == {"": "cpu"}
    assert data["verdict"].startswith("nothing fits on 2 GPUs: ")
    # No device keeps more than its budget; the note says why the GPUs hold nothing.
    assert all(d["reserved"] <= d["budget"] for d in data["devices"])
    assert any(
        note.startswith("cuda:0, cuda:1 hold no weights: ") and "(at most 1.0 GiB)" in note
        for note in data["notes"]
    ), data["notes"]


def test_spare_room_is_a_range_and_gpus_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    budgets = {0: 100 * GIB, 1: 120 * GIB}
    report = devicemap.plan_report(devicemap.example_model("llama-3-70b"), budgets)
    low, high = sorted(d["spare"] for d in report.devices)
    code, out, _ = run(capsys, "--example", "llama-3-70b", "--max-memory", "0=100GiB,1=120GiB", "--json")
    assert code == 0
    expected = f"{_human_bytes(low).removesuffix(' GiB')}-{_human_bytes(high)} to spare per GPU"
    assert json.loads(out)["verdict"] == f"fits on 2 GPUs with {expected}"


def test_a_tiny_model_reads_in_small_units(capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes in units that fit the number, and a share that is not zero reads as not zero."""
    from devicemap._plan_cli import _share

    report = devicemap.plan_report({"a.w": 1000, "b.w": 24}, {0: 80 * GIB})
    assert report.devices[0]["bytes"] == 1024
    assert _share(report.devices[0]["share"], 0) == " <0.1%"
    assert _share(0.0, 0) == "  0.0%"
    assert (_human_bytes(1024), _human_bytes(1000)) == ("1.0 KiB", "1000 B")
    assert "1.0 KiB" in str(report)


@pytest.mark.parametrize(
    "args",
    [
        ["--devices", "2x8xH100"],
        ["--max-memory", "0=1GiB,1=1GiB,cpu=1TiB"],
        ["--devices", "8xRTX4090", "--max-memory", "cpu=1TiB", "--context", "4k"],
    ],
)
def test_the_report_fits_80_columns(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """The header and every table row fit in 80 columns, and no cell is cut short."""
    code, out, _ = run(capsys, "--example", "deepseek-v3", *args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("example deepseek-v3: 626.9 GiB in 90,427 tensors")
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out


def test_lowercase_b_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--example", "llama-3-70b", "--max-memory", "0=80gb,1=80gb,cpu=1TiB")
    assert code == 0
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warned == [
        "warning: max_memory 0=80gb, 1=80gb read as bits, as accelerate reads a lowercase 'b' "
        "(80gb is 10 GB of bytes); write GB or GiB for bytes"
    ]
    with pytest.warns(UserWarning, match=r"max_memory 0=80gb read as bits") as caught:
        report = devicemap.plan_report({"a.w": 1}, {0: "80gb"})
    assert len(caught) == 1
    assert report.devices[0]["budget"] == 10_000_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        devicemap.plan_report({"a.w": 1}, {0: "80GB", 1: "80GiB", "cpu": "1b"})


def test_bad_budgets_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--example", "llama-3-70b", "--max-memory", "0=80GiB,0=10GiB")
    assert (code, err) == (2, "error: --max-memory names '0' twice: '0=80GiB' and '0=10GiB'\n")
    code, _, err = run(capsys, "--example", "llama-3-70b", "--max-memory", "")
    assert (code, err) == (2, "error: --max-memory '' is empty; expected e.g. 0=70GiB,1=70GiB,cpu=200GiB\n")
    with pytest.raises(ValueError, match=r"^max_memory names cuda:0 twice: 0 and 'cuda:0'$"):
        devicemap.plan({"a.w": 1}, {0: 10, "cuda:0": 10})
    with pytest.raises(ValueError, match=r"reserve as a fraction must be in \[0, 1\), got 1.5"):
        devicemap.plan({"a.w": 1}, {0: 10}, reserve=1.5)


def test_ties_and_no_split_must_name_the_model() -> None:
    sizes = {"embed.weight": 4, "layers.0.w": 4, "head.weight": 4}
    with pytest.raises(ValueError, match=r"^tied group 'embd.weight', 'head.wieght' names no tensor"):
        devicemap.plan(sizes, {0: 100}, tied=[["embd.weight", "head.wieght"]])
    with pytest.raises(ValueError, match=r"^no_split pattern 'layer.\*' matches no module or tensor"):
        devicemap.plan(sizes, {0: 100}, no_split=["layers.*", "layer.*"])
    # A tied name the sizes lack is fine when another in its group is there.
    plan = devicemap.plan(sizes, {0: 100}, tied=[["embed.weight", "lm_head.weight"]])
    assert plan.device_for("lm_head.weight") == plan.device_for("embed.weight")


def test_each_host_gets_a_map_in_its_own_gpu_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = devicemap.example_model("deepseek-v3")
    budgets = dict.fromkeys(range(16), 70 * GIB)
    report = devicemap.plan_report(sizes, budgets)
    hosts = report.hosts(8)
    assert [h["host"] for h in hosts] == [0, 1]
    assert hosts[1]["devices"] == [f"cuda:{i}" for i in range(8, 16)]
    whole = report.to_hf()
    rebuilt = {}
    for host in hosts:
        assert set(host["device_map"].values()) <= set(range(8))
        rebuilt.update({name: gpu + 8 * host["host"] for name, gpu in host["device_map"].items()})
    assert rebuilt == whole
    assert sum(h["bytes"] for h in hosts) == report.total_bytes
    assert "model.layers.60" in hosts[1]["device_map"]
    assert "model.embed_tokens" in hosts[0]["device_map"]
    with pytest.raises(ValueError, match="gpus_per_host must be >= 1, got 0"):
        report.hosts(0)

    target = tmp_path / "hosts.json"
    code, out, _ = run(capsys, "--example", "deepseek-v3", "--devices", "2x8xH100", "-o", str(target))
    assert code == 0
    written = json.loads(target.read_text())
    assert list(written) == ["0", "1"]
    assert all(0 <= gpu < 8 for host in written.values() for gpu in host.values())
    text = " ".join(out.split())
    assert "host 1 (" in text
    assert "not a from_pretrained map of the whole model" in text
    assert "(host 1's are the plan's cuda:8..cuda:15)" in text
    code, out, _ = run(capsys, "--example", "deepseek-v3", "--devices", "2x8xH100", "--json")
    assert [h["host"] for h in json.loads(out)["hosts"]] == [0, 1]


def test_help_mentions_planning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "plan where each part of a model goes" in out
    assert "devicemap plan --list-devices" in out
