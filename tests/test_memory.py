"""Memory: building and dropping large maps in a loop does not grow the process, and a failed
conversion leaves its input's reference counts as they were (nothing leaked, nothing freed)."""

from __future__ import annotations

import sys

import pytest
from _subprocess import run_python
from devicemap import ComponentDevice, Device, DeviceMap


def test_build_and_drop_large_maps_in_a_loop_keeps_memory_bounded() -> None:
    # In a fresh process, so that other tests' allocations do not blur the numbers.
    result = run_python(
        """
        import gc
        from devicemap import ComponentDevice, Device, DeviceMap

        def rss() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        hf = {f"model.layers.{i // 64}.experts.{i % 64}.w": i % 8 for i in range(30_000)}
        def churn() -> None:
            dm = DeviceMap.from_hf(hf)
            dm.to_dict(); dm.fingerprint(); dm.copy()
            component = ComponentDevice.from_multiple(dm)
            component.to_hf()
            for i in range(0, 30_000, 3):
                del dm[f"model.layers.{i // 64}.experts.{i % 64}.w"]
            dm.update(DeviceMap.from_dict(component.to_dict()["device_map"]))

        for _ in range(3):
            churn()
        gc.collect()
        warm = rss()
        for _ in range(12):
            churn()
        gc.collect()
        print(warm, rss())
        """
    )
    warm, after = map(int, result.stdout.split())
    # One round makes maps of ~2 MB and their Python dicts of ~6 MB; twelve more rounds must
    # not keep them (a leak of one dict per round would add over 70 MB).
    assert after - warm < 6 * 2**20, f"grew {(after - warm) / 2**20:.1f} MiB over 12 rounds"


def test_failed_conversions_leave_reference_counts_unchanged() -> None:
    key, good, bad = "model.layers.0", "cuda:0", "cuda:x"
    # Ids past the small-int cache: a shared small int is referenced from all over the interpreter.
    hf_bad = {key: 4097, "model.layers.1": "gpu", "z": 4098}
    strings_bad = {key: good, "model.layers.1": bad}
    devices_bad = {key: Device.cpu(), "x": "cpu"}
    objects = [key, good, bad, hf_bad, strings_bad, devices_bad, *hf_bad.values()]
    before = [sys.getrefcount(o) for o in objects]
    dm = DeviceMap({"a": Device.cpu()})
    for _ in range(200):
        with pytest.raises(ValueError, match=r"model\.layers\.1"):
            DeviceMap.from_hf(hf_bad)
        with pytest.raises(ValueError, match=r"model\.layers\.1"):
            DeviceMap.from_dict(strings_bad)
        with pytest.raises(ValueError, match=r"model\.layers\.1"):
            ComponentDevice.from_dict({"type": "multiple", "device_map": strings_bad})
        with pytest.raises(TypeError):
            DeviceMap(devices_bad)
        with pytest.raises(TypeError):
            dm.update(devices_bad)
        with pytest.raises(TypeError):
            dm.mapping = devices_bad
    assert [sys.getrefcount(o) for o in objects] == before
    # And a failed update changed nothing.
    assert dict(dm.mapping) == {"a": Device.cpu()}
