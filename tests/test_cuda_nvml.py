"""NVML discovery through the real nvml-wrapper path, against the fake NVML: device fields,
what every call says under CUDA_VISIBLE_DEVICES, failures turned into status sentences, and NVML
initialized once per process."""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from pathlib import Path

import devicemap
import pytest
from _fake_nvml import GIB, Gpu, Mig, discover, gpus, run, scenario_env
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


# --- every call, on a machine the fake describes ----------------------------------------------

# The driver version the fake reports unless its configuration names one.
FAKE_DRIVER = "550.54.15"


def _machine() -> list[Gpu]:
    """An A100, an A100 in MIG mode with two MIG devices of different sizes, and an H100, each
    with its own memory use."""
    devices = gpus(3)
    devices[0].used = 1 * GIB
    devices[1].mig = "1"
    devices[1].mig_max = 7
    devices[1].migs = {
        0: Mig(uuid="MIG-aaaa0000-0000-0000-0000-000000000001", used=GIB),
        3: Mig(
            uuid="MIG-bbbb0000-0000-0000-0000-000000000002",
            name="NVIDIA A100-SXM4-80GB MIG 1g.10gb",
            total=10 * GIB,
            used=2 * GIB,
        ),
    }
    devices[2].name = "NVIDIA H100 80GB HBM3"
    devices[2].cc = "9.0"
    devices[2].used = 5 * GIB
    # As an H200 reports it: NVML's total counts what the driver sets aside, CUDA's does not.
    devices[2].reserved = 615 * 2**20
    return devices


def _seen(ordinal: int, nvml_index: int, gpu: Gpu, mig: Mig | None = None) -> dict[str, object]:
    """What `cuda_devices()` must say of `gpu` (or of its MIG device `mig`) as `cuda:ordinal`."""
    shown: Gpu | Mig = gpu if mig is None else mig
    reserved = gpu.reserved if mig is None else 0
    major, minor = gpu.cc.split(".")
    return {
        "ordinal": ordinal,
        "nvml_index": nvml_index,
        "uuid": shown.uuid,
        "name": shown.name,
        "memory_total": shown.total - reserved,
        "memory_free": shown.total - reserved - shown.used,
        "memory_used": shown.used,
        "pci_bus_id": gpu.pci,
        "compute_capability": [int(major), int(minor)],
        "is_mig": mig is not None,
        "ordering_certain": True,  # CUDA_DEVICE_ORDER=PCI_BUS_ID
        "device": f"cuda:{ordinal}",
    }


def test_every_call_says_what_the_fake_holds(tmp_path: Path) -> None:
    g0, g1, g2 = devices = _machine()
    mig_a, mig_b = g1.migs[0], g1.migs[3]
    # CUDA_VISIBLE_DEVICES -> (NVML index, GPU, MIG device) of cuda:0, cuda:1, ...
    cases: dict[str | None, list[tuple[int, Gpu, Mig | None]]] = {
        None: [(0, g0, None), (1, g1, mig_a), (1, g1, mig_b), (2, g2, None)],
        "2,0": [(2, g2, None), (0, g0, None)],
        f"{g2.uuid},{g0.uuid}": [(2, g2, None), (0, g0, None)],
        "GPU-2,GPU-0": [(2, g2, None), (0, g0, None)],
        "MIG-bbbb,MIG-aaaa": [(1, g1, mig_b), (1, g1, mig_a)],
        "1": [(1, g1, mig_a), (1, g1, mig_b)],
        "0": [(0, g0, None)],
        "": [],
    }
    for value, seen in cases.items():
        visible = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
        report = discover(tmp_path, devices, CUDA_DEVICE_ORDER="PCI_BUS_ID", **visible)
        expected = [_seen(ordinal, *entry) for ordinal, entry in enumerate(seen)]
        assert report["devices"] == expected, value
        assert report["count"] == len(expected), value
        said = (
            "CUDA_VISIBLE_DEVICES is unset" if value is None else f"CUDA_VISIBLE_DEVICES={json.dumps(value)}"
        )
        devices_are = "1 device is" if len(expected) == 1 else f"{len(expected)} devices are"
        assert report["status"] == (
            f"NVML (driver {FAKE_DRIVER}) reports 3 GPUs; {devices_are} visible to CUDA ({said})."
        ), value
        assert report["warnings"] == [], value


def test_in_process_calls_agree() -> None:
    # Whatever this machine has (no GPU, a real one), the calls answer and agree.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPUs of mixed models warn about their order
        devices = devicemap.cuda_devices()
    assert devicemap.cuda_device_count() == len(devices)
    assert [d.ordinal for d in devices] == list(range(len(devices)))
    assert [d.device for d in devices] == [Device.gpu(n) for n in range(len(devices))]
    status = devicemap.cuda_status()
    assert status.endswith("."), status
    if devices:
        assert f"{len(devices)} device" in status, status
