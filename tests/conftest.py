"""Shared fixtures and helpers: Haystack's reference module, hypothesis strategies.

Running code in a fresh interpreter is `run_python` in `tests/_subprocess.py`."""

from __future__ import annotations

import os

import pytest
from devicemap import Device, DeviceMap, DeviceType
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "devicemap",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Fewer examples, for repeated runs such as scripts/check_wheel.sh --quick on every Python.
settings.register_profile("quick", parent=settings.get_profile("devicemap"), max_examples=25)
settings.load_profile(os.environ.get("DEVICEMAP_HYPOTHESIS_PROFILE", "devicemap"))

# Haystack's five types; META is ours only.
HAYSTACK_TYPES = ("cpu", "cuda", "disk", "mps", "xpu")
MAX_ID = 2**64 - 1


@pytest.fixture(scope="session")
def hs():
    """Haystack's `haystack.utils.device`, the reference implementation."""
    return pytest.importorskip("haystack.utils.device")


# --- hypothesis strategies -------------------------------------------------------------

device_types = st.sampled_from(list(DeviceType))
device_ids = st.one_of(st.none(), st.integers(0, 8), st.integers(0, MAX_ID))
devices = st.builds(Device, device_types, device_ids)
# Keys as HF writes them, plus arbitrary text (no surrogates: a Python str that is not UTF-8
# cannot be a key of a map whose keys live in Rust).
map_keys = st.one_of(
    st.from_regex(r"[a-z_]{1,8}(\.[0-9]{1,2}){0,3}", fullmatch=True),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
device_dicts = st.dictionaries(map_keys, devices, max_size=12)
device_maps = device_dicts.map(DeviceMap)


def hf_safe(device: Device) -> bool:
    """Whether HF's form can hold this device (a GPU needs its id there)."""
    return not (device.type is DeviceType.GPU and device.id is None)
