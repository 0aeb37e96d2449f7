"""NVML discovery through the real nvml-wrapper path, against the fake NVML: device fields,
failures turned into status sentences, and NVML initialized once per process."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import devicemap
import pytest
from _fake_nvml import GIB, discover, gpus, run, scenario_env
from devicemap import CudaDevice, Device


def test_fields(tmp_path: Path) -> None:
    devices = gpus(2)
    devices[0].used = 3 * GIB
    devices[1].cc = "9.0"
    devices[1].name = "NVIDIA H100 80GB HBM3"
    report = discover(tmp_path, devices, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    first, second = report["devices"]
    assert report["count"] == 2
    assert first == {
        "ordinal": 0,
        "nvml_index": 0,
        "uuid": devices[0].uuid,
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total": 80 * GIB,
        "memory_free": 77 * GIB,
        "memory_used": 3 * GIB,
        "pci_bus_id": "00000000:10:00.0",
        "compute_capability": [8, 0],
        "is_mig": False,
        "ordering_certain": True,
        "device": "cuda:0",
    }
    assert second["compute_capability"] == [9, 0]
    assert second["name"] == "NVIDIA H100 80GB HBM3"
    assert "reports 2 GPUs; 2 devices are visible" in report["status"]


def test_initialized_once_and_memory_read_fresh(tmp_path: Path) -> None:
    devices = gpus(1)
    devices[0].used = GIB
    devices[0].used_step = 1024**2  # the fake adds this after every memory read
    log = tmp_path / "calls.log"
    code = """
    import json, devicemap
    used = [devicemap.cuda_devices()[0].memory_used for _ in range(3)]
    devicemap.cuda_device_count(); devicemap.cuda_status()
    print(json.dumps(used))
    """
    used = json.loads(run(code, scenario_env(tmp_path, devices, log=log)).stdout)
    assert used == [GIB, GIB + 1024**2, GIB + 2 * 1024**2]
    calls = log.read_text().split()
    # Loaded and initialized once; never shut down (it lives for the process).
    assert calls.count("init") == 1
    assert "shutdown" not in calls
    assert calls.count("memory") == 4  # three calls and the status; the count reads none


@pytest.mark.parametrize(
    ("init", "phrase"),
    [
        ("driver_not_loaded", "the NVIDIA driver is not loaded"),
        ("no_permission", "NoPermission"),
        ("unknown", ""),
    ],
)
def test_init_failure_is_a_status_sentence(tmp_path: Path, init: str, phrase: str) -> None:
    report = discover(tmp_path, gpus(2), init=init)
    assert report["devices"] == []
    assert report["count"] == 0
    assert report["status"].startswith("NVML is not usable from ")
    assert phrase in report["status"]
    assert "no CUDA GPU is known" in report["status"]


def test_no_library(tmp_path: Path) -> None:
    report = discover(tmp_path, None)
    assert report["devices"] == []
    assert report["count"] == 0
    assert "could not be loaded" in report["status"]
    assert "no-such-libnvidia-ml.so.1" in report["status"]


def test_missing_init_symbol(tmp_path: Path) -> None:
    report = discover(tmp_path, gpus(1), variant="FAKE_NO_INIT_V2")
    assert report["devices"] == []
    assert "nvmlInit_v2" in report["status"]


def test_missing_memory_symbol_keeps_the_device(tmp_path: Path) -> None:
    report = discover(tmp_path, gpus(2), variant="FAKE_NO_MEMORY_V2")
    assert [d["device"] for d in report["devices"]] == ["cuda:0", "cuda:1"]
    assert {d["memory_total"] for d in report["devices"]} == {None}
    assert "The memory of cuda:1 cannot be read" in report["status"]
    assert "nvmlDeviceGetMemoryInfo_v2" in report["status"]


def test_memory_not_supported_on_one_device(tmp_path: Path) -> None:
    devices = gpus(2)
    devices[1].memory = "not_supported"
    report = discover(tmp_path, devices)
    assert report["devices"][0]["memory_total"] == 80 * GIB
    assert report["devices"][1]["memory_free"] is None


def test_handle_without_permission_is_skipped_and_said(tmp_path: Path) -> None:
    devices = gpus(3)
    devices[1].handle = "no_permission"
    report = discover(tmp_path, devices)
    assert [d["nvml_index"] for d in report["devices"]] == [0, 2]
    assert [d["device"] for d in report["devices"]] == ["cuda:0", "cuda:1"]
    assert "reports 3 GPUs; 2 devices are visible" in report["status"]
    assert "GPU 1 was skipped" in report["status"]
    assert "NoPermission" in report["status"]


def test_no_gpus(tmp_path: Path) -> None:
    report = discover(tmp_path, [])
    assert report["devices"] == []
    assert "reports 0 GPUs" in report["status"]


def test_library_variable_names_the_library(tmp_path: Path) -> None:
    # The fake is loaded only because DEVICEMAP_NVML_LIBRARY names it.
    env = scenario_env(tmp_path, gpus(1))
    code = "import devicemap; print(devicemap.cuda_device_count())"
    assert run(code, env).stdout.strip() == "1"
    env["DEVICEMAP_NVML_LIBRARY"] = str(tmp_path / "elsewhere.so")
    assert run(code, env).stdout.strip() == "0"


# --- CudaDevice as a value -----------------------------------------------------------------


def _sample(**changes: object) -> CudaDevice:
    fields: dict[str, object] = {
        "ordinal": 1,
        "nvml_index": 3,
        "uuid": "GPU-1234",
        "name": "NVIDIA L4",
        "memory_total": 24 * GIB,
        "memory_free": 20 * GIB,
        "memory_used": 4 * GIB,
        "pci_bus_id": "00000000:3B:00.0",
        "compute_capability": (8, 9),
        "is_mig": False,
    }
    fields.update(changes)
    return CudaDevice(**fields)  # type: ignore[arg-type]


def test_cuda_device_value() -> None:
    device = _sample()
    assert device == _sample()
    assert hash(device) == hash(_sample())
    assert device != _sample(memory_free=19 * GIB)
    assert device != "GPU-1234"
    assert device.device == Device.gpu(1)
    assert device.ordering_certain is True
    assert pickle.loads(pickle.dumps(device)) == device
    assert copy.deepcopy(device) == device
    with pytest.raises(AttributeError):
        device.ordinal = 2  # type: ignore[misc]
    assert eval(repr(device), {"CudaDevice": CudaDevice}) == device
    assert repr(device).startswith("CudaDevice(ordinal=1, nvml_index=3, uuid='GPU-1234', name='NVIDIA L4'")
    unknown = _sample(memory_total=None, memory_free=None, memory_used=None, compute_capability=None)
    assert pickle.loads(pickle.dumps(unknown)) == unknown
    assert "memory_total=None" in repr(unknown)
    assert type(device).__module__ == "devicemap"


def test_in_process_calls_never_raise() -> None:
    # Whatever this machine has (no GPU, a real one), discovery answers.
    count = devicemap.cuda_device_count()
    assert isinstance(count, int)
    assert count >= 0
    assert isinstance(devicemap.cuda_status(), str)
    assert devicemap.cuda_status()
