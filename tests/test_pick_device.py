"""`pick_device`: first, local_rank and most_free_memory, with a free-memory floor."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from _fake_nvml import GIB, Gpu, gpus, run, scenario_env
from _subprocess import run_python
from devicemap import Device, pick_device

# Each case sets its environment in one process (NVML is initialized once; pick_device reads
# LOCAL_RANK and DEVICEMAP_DEVICE on every call) and reports the device or the error.
PICK = """
import json, os, sys, warnings
warnings.simplefilter("error")
from devicemap import pick_device
out = []
for env, args, kwargs in json.loads(sys.stdin.readline()):
    for key in ("LOCAL_RANK", "DEVICEMAP_DEVICE"):
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        out.append(str(pick_device(*args, **kwargs)))
    except (ValueError, TypeError) as error:
        out.append(f"{type(error).__name__}: {error}")
print(json.dumps(out))
"""


def pick_many(tmp_path: Path, devices: list[Gpu] | None, cases: list[Any]) -> list[str]:
    result = run_python(PICK, env=scenario_env(tmp_path, devices), stdin=json.dumps(cases) + "\n")
    answers: list[str] = json.loads(result.stdout)
    return answers


def _machine() -> list[Gpu]:
    devices = gpus(3)
    devices[0].used = 70 * GIB  # 10 GiB free
    devices[1].used = 20 * GIB  # 60 GiB free
    devices[2].used = 50 * GIB  # 30 GiB free
    return devices


def test_policies(tmp_path: Path) -> None:
    cases = [
        ({}, [], {}),
        ({}, ["first"], {"min_free_memory": 20 * GIB}),
        ({}, ["most_free_memory"], {}),
        ({}, ["most_free_memory"], {"min_free_memory": 59 * GIB}),
        ({"LOCAL_RANK": "2"}, ["local_rank"], {}),
        ({"LOCAL_RANK": "4"}, ["local_rank"], {}),  # modulo the visible devices
        ({}, ["local_rank"], {}),  # unset: rank 0
        ({"LOCAL_RANK": "1"}, ["local_rank"], {"min_free_memory": 50 * GIB}),
        ({"CUDA_VISIBLE_DEVICES": "2,0"}, ["most_free_memory"], {}),
        ({"DEVICEMAP_DEVICE": "cuda:1"}, ["most_free_memory"], {}),  # the policy alone: cuda:0
    ]
    assert pick_many(tmp_path, _machine(), cases) == [
        "cuda:0",
        "cuda:1",
        "cuda:1",
        "cuda:1",
        "cuda:2",
        "cuda:1",
        "cuda:0",
        "cuda:1",
        "cuda:0",  # cuda:0 is NVML's GPU 2 here, with 30 GiB free against 10
        "cuda:1",
    ]


def test_errors(tmp_path: Path) -> None:
    cases = [
        ({}, ["first"], {"min_free_memory": 61 * GIB}),
        ({"LOCAL_RANK": "0"}, ["local_rank"], {"min_free_memory": 11 * GIB}),
        ({"LOCAL_RANK": "one"}, ["local_rank"], {}),
        ({"LOCAL_RANK": "-1"}, ["local_rank"], {}),
        ({}, ["fastest"], {}),
        ({}, ["first"], {"min_free_memory": -1}),
        ({}, ["first"], {"min_free_memory": 1.5}),
    ]
    answers = pick_many(tmp_path, _machine(), cases)
    assert answers[0].startswith("ValueError: No CUDA device has min_free_memory=65,498,251,264 bytes free")
    assert "cuda:1 (NVIDIA A100-SXM4-80GB, 64,424,509,440 bytes free)" in answers[0]
    assert answers[1].startswith("ValueError: LOCAL_RANK=0 selects cuda:0")
    assert answers[2] == "ValueError: LOCAL_RANK must be a non-negative integer, got 'one'"
    assert answers[3] == "ValueError: LOCAL_RANK must be a non-negative integer, got '-1'"
    assert answers[4].startswith("ValueError: Unknown policy 'fastest'; expected one of 'first'")
    assert answers[5] == "ValueError: min_free_memory must be >= 0 bytes, got -1"
    assert answers[6] == "TypeError: min_free_memory must be an int (bytes), got float"


def test_without_gpus_the_default_device(tmp_path: Path) -> None:
    cases = [
        ({}, [policy], {"min_free_memory": GIB}) for policy in ("first", "local_rank", "most_free_memory")
    ]
    code = "from devicemap._resolve import _intel_render_node; print(_intel_render_node())"
    if run(code, scenario_env(tmp_path, None)).stdout.strip() == "True":
        pytest.skip("this machine has an Intel GPU, so the default may be XPU")
    assert pick_many(tmp_path, None, cases) == ["cpu", "cpu", "cpu"]
    assert pick_many(tmp_path, [], cases) == ["cpu", "cpu", "cpu"]


def test_in_process_returns_a_device() -> None:
    # Whatever this machine has; a machine of mixed GPU models warns about the order.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert isinstance(pick_device(), Device)
