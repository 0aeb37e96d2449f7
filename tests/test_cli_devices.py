"""`devicemap devices`: the table, `--json`, and the line for no GPU or no NVML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _fake_nvml import GIB, Gpu, Mig, gpus, run, scenario_env
from devicemap import CudaDevice, _devices_cli

CLI = "import sys; from devicemap.cli import main; sys.exit(main(sys.argv[1:]))"


def _machine() -> list[Gpu]:
    devices = gpus(2)
    devices[0].used = 20 * GIB
    devices[1].mig = "1"
    devices[1].mig_max = 7
    devices[1].migs = {0: Mig(uuid="MIG-abcdef01-2345-6789-abcd-ef0123456789", used=10 * GIB)}
    return devices


def test_table(tmp_path: Path) -> None:
    out = run(CLI, scenario_env(tmp_path, _machine()), "devices").stdout
    lines = out.splitlines()
    assert lines[0].split() == [
        "device",
        "name",
        "memory",
        "used",
        "/",
        "total",
        "capability",
        "uuid",
        "pci",
        "bus",
        "id",
        "mig",
    ]
    assert lines[1].split() == [
        "cuda:0",
        "NVIDIA",
        "A100-SXM4-80GB",
        "[###.........]",
        "20.0",
        "/",
        "80.0",
        "GiB",
        "8.0",
        "GPU-00000000",
        "00000000:10:00.0",
        "-",
    ]
    assert lines[2].split()[0] == "cuda:1"
    assert "MIG-abcdef01" in lines[2]
    assert lines[2].endswith("yes")
    assert "[###.........] 10.0 / 40.0 GiB" in lines[2]
    assert lines[3].startswith("NVML (driver 550.54.15) reports 2 GPUs; 2 devices are visible")
    assert lines[4].startswith("CPU: ")
    assert "GiB RAM" in lines[4]
    assert lines[5] == "Default device: cuda:0  (NVML finds 2 CUDA devices visible to this process)"


def test_json(tmp_path: Path) -> None:
    out = run(CLI, scenario_env(tmp_path, _machine()), "devices", "--json").stdout
    report = json.loads(out)
    assert [d["device"] for d in report["cuda"]["devices"]] == ["cuda:0", "cuda:1"]
    first = report["cuda"]["devices"][0]
    assert first["memory_used"] == 20 * GIB
    assert first["compute_capability"] == [8, 0]
    assert first["uuid"] == "GPU-00000000-0000-0000-0000-000000000000"
    assert first["is_mig"] is False
    assert report["cuda"]["devices"][1]["is_mig"] is True
    assert report["cpu"]["cores"] >= 1
    assert report["default"] == {
        "device": "cuda:0",
        "reason": "NVML finds 2 CUDA devices visible to this process",
    }
    assert report["cuda"]["status"].startswith("NVML (driver")


@pytest.mark.parametrize("devices", [None, []], ids=["no-nvml", "no-gpu"])
def test_no_gpu(tmp_path: Path, devices: list[Gpu] | None) -> None:
    out = run(CLI, scenario_env(tmp_path, devices), "devices").stdout
    first = out.splitlines()[0]
    assert first.startswith("No CUDA GPU: NVML")
    assert ("could not be loaded" in first) if devices is None else ("reports 0 GPUs" in first)
    report = json.loads(run(CLI, scenario_env(tmp_path, devices), "devices", "--json").stdout)
    assert report["cuda"]["devices"] == []


def test_uncertain_order_is_said_not_warned(tmp_path: Path) -> None:
    devices = gpus(2)
    devices[1].name = "NVIDIA H100 80GB HBM3"
    result = run(CLI, scenario_env(tmp_path, devices), "devices")
    assert "fastest first" in result.stdout
    assert "Warning" not in result.stderr


def test_rows_and_plain_table() -> None:
    device = CudaDevice(3, 1, "GPU-0123456789", "NVIDIA L4", None, None, None, "", None, False)
    row = _devices_cli._row(device)
    assert row == ["cuda:3", "NVIDIA L4", "[????????????] unknown", "?", "GPU-01234567", "?", "-"]
    table = _devices_cli._plain_table([row])
    assert table.splitlines()[1].startswith("cuda:3  NVIDIA L4")


def test_rich_table_when_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rich")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    device = CudaDevice(
        0, 0, "GPU-0123456789", "NVIDIA L4", 24 * GIB, 20 * GIB, 4 * GIB, "0:1:0.0", (8, 9), False
    )
    _devices_cli._print_table([_devices_cli._row(device)])
    out = capsys.readouterr().out
    assert "NVIDIA L4" in out
    assert "4.0 / 24.0 GiB" in out
    assert "8.9" in out


# The fake NVML adds `used_step` to a device's used memory after every read, so the memory a
# later call sees counts the reads made before it: one discovery reads each device once.
ONE_DISCOVERY = """
import contextlib, io, json, sys, devicemap
from devicemap import _devices_cli, pick_device
with contextlib.redirect_stdout(io.StringIO()):
    if sys.argv[1] == "devices":
        _devices_cli.run(as_json=True)
    else:
        pick_device()
print(json.dumps(devicemap.cuda_devices()[0].memory_used))
"""


@pytest.mark.parametrize("caller", ["devices", "pick_device"])
def test_one_discovery_per_call(tmp_path: Path, caller: str) -> None:
    devices = gpus(1)
    devices[0].used = GIB
    devices[0].used_step = 1024**2
    out = run(ONE_DISCOVERY, scenario_env(tmp_path, devices), caller).stdout
    assert json.loads(out) == GIB + 1024**2


def test_discovery_object_agrees_with_the_functions(tmp_path: Path) -> None:
    code = """
    import json, devicemap
    d = devicemap._core.cuda_discover()
    print(json.dumps({"n": len(d.devices), "status": d.status, "certain": d.ordering_certain,
                      "nvml": d.nvml_usable, "fresh_list": d.devices is not d.devices,
                      "same": d.status == devicemap.cuda_status(), "repr": repr(d)}))
    """
    for devices, nvml in ((gpus(2), True), (None, False)):
        report = json.loads(run(code, scenario_env(tmp_path, devices)).stdout)
        assert report["n"] == (2 if nvml else 0)
        assert report["nvml"] is nvml
        assert report["certain"] is True
        assert report["fresh_list"] is True
        assert report["same"] is True
        assert report["repr"].startswith(f"CudaDiscovery(devices={report['n']}, status=")
