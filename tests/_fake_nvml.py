"""The fake NVML (tests/fake_nvml/fake_nvml.c): built once per test session, configured per
scenario, and run in a fresh interpreter because devicemap initializes NVML once per process."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _subprocess import run_python

SOURCE = Path(__file__).parent / "fake_nvml" / "fake_nvml.c"
GIB = 1024**3
# Variables that change what a scenario sees; each scenario sets its own.
SCENARIO_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "DEVICEMAP_DEVICE",
    "DEVICEMAP_NVML_LIBRARY",
    "DEVICEMAP_FAKE_NVML_CONFIG",
    "LOCAL_RANK",
    "HAYSTACK_MPS_ENABLED",
    "HAYSTACK_XPU_ENABLED",
)


@functools.cache
def _build_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="devicemap-fake-nvml-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def library(variant: str = "") -> Path:
    """The fake NVML compiled as a shared library; `variant` is a -D flag such as FAKE_NO_MEMORY_V2."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the fake NVML")
    out = _build_dir() / f"libfake-nvml{'-' + variant if variant else ''}.so"
    flags = [f"-D{variant}"] if variant else []
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-Wall", *flags, "-o", str(out), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return out


@dataclass
class Mig:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    total: int = 40 * GIB
    used: int = 0


@dataclass
class Gpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    pci: str = ""
    total: int = 80 * GIB
    reserved: int = 0
    used: int = 0
    used_step: int = 0
    cc: str = "8.0"
    handle: str = "ok"
    memory: str = "ok"
    mig: str = "unsupported"
    mig_max: int = 0
    migs: dict[int, Mig] = field(default_factory=dict)


def gpus(count: int, name: str = "NVIDIA A100-SXM4-80GB") -> list[Gpu]:
    """`count` identical GPUs in PCI order, UUIDs GPU-00000000-..., GPU-11111111-..."""
    return [
        Gpu(uuid=f"GPU-{str(i) * 8}-0000-0000-0000-{i:012d}", name=name, pci=f"00000000:{16 + i:02X}:00.0")
        for i in range(count)
    ]


def config_text(devices: list[Gpu], *, init: str = "ok", log: Path | None = None) -> str:
    lines = [f"init={init}", f"count={len(devices)}"]
    if log is not None:
        lines.append(f"log={log}")
    for n, gpu in enumerate(devices):
        for key in (
            "name",
            "uuid",
            "pci",
            "total",
            "reserved",
            "used",
            "used_step",
            "cc",
            "handle",
            "memory",
            "mig",
            "mig_max",
        ):
            lines.append(f"gpu.{n}.{key}={getattr(gpu, key)}")
        for m, mig in gpu.migs.items():
            for key in ("uuid", "name", "total", "used"):
                lines.append(f"gpu.{n}.mig.{m}.{key}={getattr(mig, key)}")
    return "\n".join(lines) + "\n"


def scenario_env(
    tmp_path: Path,
    devices: list[Gpu] | None,
    *,
    init: str = "ok",
    variant: str = "",
    log: Path | None = None,
    **env: str,
) -> dict[str, str]:
    """An environment for a subprocess: the fake NVML with `devices`, or (None) no NVML at all."""
    result = {key: value for key, value in os.environ.items() if key not in SCENARIO_VARIABLES}
    if devices is None:
        result["DEVICEMAP_NVML_LIBRARY"] = str(tmp_path / "no-such-libnvidia-ml.so.1")
    else:
        config = tmp_path / "fake-nvml.conf"
        config.write_text(config_text(devices, init=init, log=log), encoding="utf-8")
        result["DEVICEMAP_NVML_LIBRARY"] = str(library(variant))
        result["DEVICEMAP_FAKE_NVML_CONFIG"] = str(config)
    result.update(env)
    return result


def run(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with a scenario's environment (NVML starts once per process)."""
    return run_python(code, *args, env=env)


DISCOVER = """
import json, warnings
warnings.simplefilter("error")
import devicemap
out = {"count": devicemap.cuda_device_count(), "status": devicemap.cuda_status()}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    devices = devicemap.cuda_devices()
out["warnings"] = [str(w.message) for w in caught]
out["devices"] = [
    {name: getattr(d, name) for name in (
        "ordinal", "nvml_index", "uuid", "name", "memory_total", "memory_free", "memory_used",
        "pci_bus_id", "compute_capability", "is_mig", "ordering_certain")}
    | {"device": str(d.device)}
    for d in devices
]
print(json.dumps(out))
"""


def discover(tmp_path: Path, devices: list[Gpu] | None, **kwargs: Any) -> dict[str, Any]:
    """What `cuda_devices()`, `cuda_device_count()` and `cuda_status()` report in a fresh process."""
    return json.loads(run(DISCOVER, scenario_env(tmp_path, devices, **kwargs)).stdout)


def uuids_of(report: dict[str, Any]) -> list[str]:
    return [device["uuid"] for device in report["devices"]]
