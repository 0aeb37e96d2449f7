"""CUDA numbering from NVML: CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and MIG, end to end through
the fake NVML, and differentially against torch's own parser."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from _fake_nvml import Gpu, Mig, discover, gpus, run, scenario_env
from _subprocess import run_python

UNSET = None

# Several values of CUDA_VISIBLE_DEVICES in one process: NVML is initialized once, the variable
# is read on every call.
MANY = """
import json, os, sys, warnings
import devicemap
out = []
for value in json.loads(sys.stdin.readline()):
    if value is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        devices = devicemap.cuda_devices()
    out.append({"nvml": [d.nvml_index for d in devices], "uuid": [d.uuid for d in devices],
                "count": devicemap.cuda_device_count(),
                "certain": all(d.ordering_certain for d in devices)})
print(json.dumps(out))
"""


def enumerate_many(tmp_path: Path, devices: list[Gpu], values: list[str | None], **env: str) -> list[Any]:
    result = run_python(MANY, env=scenario_env(tmp_path, devices, **env), stdin=json.dumps(values) + "\n")
    rows: list[Any] = json.loads(result.stdout)
    for row in rows:
        assert row["count"] == len(row["nvml"])
    return rows


def nvml_orders(tmp_path: Path, devices: list[Gpu], values: list[str | None], **env: str) -> list[list[int]]:
    return [row["nvml"] for row in enumerate_many(tmp_path, devices, values, **env)]


def test_unset_means_all_and_empty_means_none(tmp_path: Path) -> None:
    assert nvml_orders(tmp_path, gpus(3), [UNSET, ""]) == [[0, 1, 2], []]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2,0", [2, 0]),
        ("1,2,0", [1, 2, 0]),
        (" 1 , 0 ", [1, 0]),
        ("1gpu2,2ampere", [1, 2]),
        ("+2,-0", [2, 0]),
        ("0,5,1", [0]),  # an index past the device count ends the list
        ("0,-1,1", [0]),  # a negative value ends it
        ("0,x,1", [0]),  # so does an entry that is not a number
        ("0,,1", [0]),
        ("1,2,1", []),  # a duplicate empties it
        ("1,01", []),
        ("x", []),
    ],
)
def test_integer_entries(tmp_path: Path, value: str, expected: list[int]) -> None:
    assert nvml_orders(tmp_path, gpus(3), [value]) == [expected]


def test_uuid_entries_full_prefix_ambiguous_duplicate(tmp_path: Path) -> None:
    devices = [
        Gpu(uuid="GPU-1a2b0000-aaaa", pci="00000000:10:00.0"),
        Gpu(uuid="GPU-1a3c0000-bbbb", pci="00000000:11:00.0"),
        Gpu(uuid="GPU-77000000-cccc", pci="00000000:12:00.0"),
    ]
    cases = {
        "GPU-77000000-cccc,GPU-1a2b0000-aaaa": [2, 0],
        "GPU-7,GPU-1a3": [2, 1],  # unique prefixes
        "GPU-7,GPU-1a,GPU-1a2": [2],  # an ambiguous prefix ends the list
        "GPU-7,GPU-ffff,GPU-1a2": [2],  # so does one that matches nothing
        "GPU-7,GPU-77": [],  # two entries naming one device empty it
        "GPU-7,GPU-7": [],
        "GPU-7,1": [2],  # only GPU- entries once the list starts with one
        "GPU-": [],  # matches every device: ambiguous
    }
    assert nvml_orders(tmp_path, devices, list(cases)) == list(cases.values())


def _mig_machine() -> list[Gpu]:
    devices = gpus(3)
    devices[1].mig = "1"
    devices[1].mig_max = 7
    devices[1].migs = {
        0: Mig(uuid="MIG-aaaa0000-0001"),
        3: Mig(uuid="MIG-aabb0000-0002"),
        6: Mig(uuid="MIG-cc00-3"),
    }
    devices[2].mig = "0"  # MIG-capable, mode off: the GPU itself
    devices[2].mig_max = 7
    return devices


def test_mig_devices_replace_their_parent(tmp_path: Path) -> None:
    report = discover(tmp_path, _mig_machine())
    assert [(d["nvml_index"], d["is_mig"], d["uuid"][:8]) for d in report["devices"]] == [
        (0, False, "GPU-0000"),
        (1, True, "MIG-aaaa"),
        (1, True, "MIG-aabb"),
        (1, True, "MIG-cc00"),
        (2, False, "GPU-2222"),
    ]
    mig = report["devices"][1]
    assert mig["pci_bus_id"] == report["devices"][1]["pci_bus_id"] == "00000000:11:00.0"
    assert mig["memory_total"] == 40 * 1024**3
    assert mig["name"].endswith("MIG 3g.40gb")
    assert [d["device"] for d in report["devices"]] == [f"cuda:{n}" for n in range(5)]


def test_mig_entries(tmp_path: Path) -> None:
    rows = enumerate_many(
        tmp_path,
        _mig_machine(),
        [
            "MIG-cc00-3,MIG-aaaa0000-0001",  # full UUIDs, listed order
            "MIG-aab,MIG-c",  # unique prefixes
            "MIG-aa,MIG-c",  # ambiguous prefix ends the list
            "MIG-c,MIG-cc",  # duplicate empties it
            "MIG-c,GPU-0",  # only MIG- entries once the list starts with one
            "1",  # a GPU in MIG mode, by index: its MIG devices
        ],
    )
    assert [[u[:8] for u in row["uuid"]] for row in rows] == [
        ["MIG-cc00", "MIG-aaaa"],
        ["MIG-aabb", "MIG-cc00"],
        [],
        [],
        ["MIG-cc00"],
        ["MIG-aaaa", "MIG-aabb", "MIG-cc00"],
    ]


def _shuffled_pci() -> list[Gpu]:
    # NVML index order deliberately differs from PCI bus order to show which one is used.
    devices = gpus(3)
    devices[0].pci, devices[1].pci, devices[2].pci = (
        "00000000:81:00.0",
        "00000000:17:00.0",
        "00000001:02:00.0",
    )
    return devices


def test_pci_bus_order(tmp_path: Path) -> None:
    values: list[str | None] = [UNSET, "0", "2,1"]
    same_model = nvml_orders(tmp_path, _shuffled_pci(), values)
    assert same_model == [[1, 0, 2], [1], [2, 0]]
    assert nvml_orders(tmp_path, _shuffled_pci(), values, CUDA_DEVICE_ORDER="PCI_BUS_ID") == same_model


def test_mixed_models_default_order_is_uncertain_and_warns_once(tmp_path: Path) -> None:
    devices = _shuffled_pci()
    devices[2].name = "NVIDIA H100 80GB HBM3"
    report = discover(tmp_path, devices)
    assert [d["nvml_index"] for d in report["devices"]] == [1, 0, 2]
    assert not any(d["ordering_certain"] for d in report["devices"])
    assert "fastest first" in report["status"]
    assert len(report["warnings"]) == 1
    assert "CUDA_DEVICE_ORDER" in report["warnings"][0]

    code = """
    import warnings, devicemap
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            devicemap.cuda_devices()
    print(len(caught))
    """
    assert run(code, scenario_env(tmp_path, devices)).stdout.strip() == "1"


def test_mixed_models_certain_with_pci_order_or_uuids(tmp_path: Path) -> None:
    devices = _shuffled_pci()
    devices[2].name = "NVIDIA H100 80GB HBM3"
    pci = discover(tmp_path, devices, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert all(d["ordering_certain"] for d in pci["devices"])
    assert pci["warnings"] == []
    by_uuid = discover(tmp_path, devices, CUDA_VISIBLE_DEVICES=f"{devices[2].uuid},{devices[0].uuid}")
    assert [d["nvml_index"] for d in by_uuid["devices"]] == [2, 0]
    assert all(d["ordering_certain"] for d in by_uuid["devices"])
    assert by_uuid["warnings"] == []


def test_uncertain_order_settled_by_torch_that_initialized_cuda(tmp_path: Path) -> None:
    devices = _shuffled_pci()
    devices[2].name = "NVIDIA H100 80GB HBM3"
    # A stand-in torch that has initialized CUDA and numbers the H100 first, as fastest-first would.
    order = [devices[2].uuid, devices[1].uuid, devices[0].uuid]
    code = f"""
    import json, sys, types, warnings
    warnings.simplefilter("error")
    uuids = {[u.removeprefix("GPU-") for u in order]!r}
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        device_count=lambda: len(uuids),
        get_device_properties=lambda i: types.SimpleNamespace(uuid=uuids[i]),
    )
    sys.modules["torch"] = types.SimpleNamespace(cuda=cuda)
    import devicemap
    devices = devicemap.cuda_devices()
    print(json.dumps({{"uuids": [d.uuid for d in devices], "certain": [d.ordering_certain for d in devices],
                      "ordinals": [d.ordinal for d in devices], "status": devicemap.cuda_status()}}))
    """
    report = json.loads(run(code, scenario_env(tmp_path, devices)).stdout)
    assert report["uuids"] == order
    assert report["ordinals"] == [0, 1, 2]
    assert all(report["certain"])
    assert "read from torch" in report["status"]


# --- differential: our parser against torch's ------------------------------------------------

DIFF_UUIDS = ["GPU-1a2b0000-aaaa", "GPU-1a3c0000-bbbb", "GPU-77000000-cccc", "GPU-7f000000-dddd"]
INT_POOL = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "9",
    "01",
    "+1",
    "-0",
    "-1",
    " 2 ",
    "\t3",
    "3\u3000",
    "\x1c1",
    "1gpu2",
    "2ampere",
    "x",
    "",
    "+",
    "-",
    "+x",
    "--1",
    "99999999999999999999",
]
UUID_POOL = [
    "GPU-",
    "GPU-1",
    "GPU-1a",
    "GPU-1a2",
    "GPU-1a3c",
    "GPU-7",
    "GPU-77",
    "GPU-7f0",
    "GPU-zz",
    *DIFF_UUIDS,
    " GPU-77",
    "0",
    "MIG-1",
]


def _corpus() -> list[str]:
    rng = random.Random(20240611)
    values = {""} | set(INT_POOL) | set(UUID_POOL)
    for _ in range(500):
        pool = rng.choice([INT_POOL, UUID_POOL, INT_POOL + UUID_POOL])
        values.add(",".join(rng.choice(pool) for _ in range(rng.randint(1, 5))))
    return sorted(values)


def _torch_expected(monkeypatch: pytest.MonkeyPatch, value: str) -> list[int] | None:
    """What torch's `_device_count_nvml` logic selects, as NVML indices; None where torch skips (MIG)."""
    torch_cuda = pytest.importorskip("torch.cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    parsed = torch_cuda._parse_visible_devices()
    if not parsed:
        return []
    if isinstance(parsed[0], str):
        if parsed[0].startswith("MIG-"):
            return None
        return list(torch_cuda._transform_uuid_to_ordinals(parsed, DIFF_UUIDS))
    selected = []
    for index in parsed:
        if index >= len(DIFF_UUIDS):
            break
        selected.append(index)
    return selected


def _torch_raises(monkeypatch: pytest.MonkeyPatch, entry: str) -> bool:
    try:
        _torch_expected(monkeypatch, entry)
    except ValueError:
        return True
    return False


def test_differential_against_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    devices = [Gpu(uuid=u, pci=f"00000000:{16 + i:02X}:00.0") for i, u in enumerate(DIFF_UUIDS)]
    corpus = _corpus()
    ours = nvml_orders(tmp_path, devices, list(corpus))
    compared = 0
    for value, got in zip(corpus, ours, strict=True):
        entries = value.split(",")
        # Torch raises ValueError on a bare sign (`+`, `-x`); we end the list there, as CUDA's
        # strtoul converts nothing. Compare with torch on the entries before it.
        if not value.startswith(("GPU-", "MIG-")):
            first_bad = next(
                (i for i, e in enumerate(entries) if _torch_raises(monkeypatch, e.strip())), None
            )
            if first_bad is not None:
                value = ",".join(entries[:first_bad])
        expected = _torch_expected(monkeypatch, value)
        if expected is None:
            continue
        assert got == expected, f"CUDA_VISIBLE_DEVICES={value!r}"
        compared += 1
    assert compared > 400
