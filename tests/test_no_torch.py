"""Without torch the package imports and every API but `to_torch` works (run in a subprocess)."""

from __future__ import annotations

import pytest
from _subprocess import run_python

# Two ways to hide torch: a finder that refuses it, and the `sys.modules[name] = None` block.
HIDE_WITH_FINDER = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""
HIDE_WITH_NONE = """
import sys
sys.modules["torch"] = None
"""

EXERCISE = """
import copy, pickle, sys
import devicemap
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType

try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("torch is not hidden")

assert [m.value for m in DeviceType] == ["cpu", "cuda", "disk", "mps", "xpu", "meta"]
assert DeviceType.from_str("cuda") is DeviceType.GPU
assert str(Device.from_str("cuda:1")) == "cuda:1"
assert Device.gpu(2) == Device("cuda", 2)

dm = DeviceMap.from_hf({"a": 0, "b": "cpu", "c": "disk", "d": "cuda:1"})
assert dm.to_dict() == {"a": "cuda:0", "b": "cpu", "c": "disk", "d": "cuda:1"}
assert DeviceMap.from_dict(dm.to_dict()) == dm
dm["e"] = Device.mps(); del dm["e"]
assert len(dm.fingerprint()) == 32
assert dm.device_counts()[Device.gpu(0)] == 1
assert list(dm.mapping) == ["a", "b", "c", "d"]
assert pickle.loads(pickle.dumps(dm)) == dm and copy.deepcopy(dm) == dm
try:
    DeviceMap.from_hf({"x": 1.5})
except TypeError as error:
    assert "unexpected device '1.5' for 'x'" in str(error)
else:
    raise AssertionError("no TypeError")

cd = ComponentDevice.from_multiple(dm)
assert cd.to_hf() == {"a": 0, "b": "cpu", "c": "disk", "d": 1}
assert cd.update_hf_kwargs({}, overwrite=True) == {"device_map": cd.to_hf()}
assert cd.has_multiple_devices
assert cd.first_device == ComponentDevice.from_str("cuda:0")
assert ComponentDevice.from_dict(cd.to_dict()) == cd
assert pickle.loads(pickle.dumps(cd)) == cd

single = ComponentDevice.from_str("cuda:1")
assert single.to_torch_str() == "cuda:1"
assert single.to_spacy() == 1
assert single.to_hf() == "cuda:1"
try:
    single.to_torch()
except ImportError as error:
    assert "pip install" in str(error), error
else:
    raise AssertionError("to_torch worked without torch")

resolved = ComponentDevice.resolve_device()
assert isinstance(resolved, ComponentDevice) and not resolved.has_multiple_devices
assert ComponentDevice.resolve_device(single) is single

from devicemap import cli
assert cli.main(["check-map", sys.argv[1]]) == 0

assert sys.modules.get("torch") is None
print("ok")
"""


@pytest.mark.parametrize(
    "hide", [HIDE_WITH_FINDER, HIDE_WITH_NONE], ids=["meta_path-finder", "sys.modules-None"]
)
def test_everything_but_to_torch_works_without_torch(hide, tmp_path):
    map_file = tmp_path / "map.json"
    map_file.write_text('{"a": 0, "b": "cpu"}', encoding="utf-8")
    result = run_python(hide + EXERCISE, str(map_file))
    assert result.stdout.strip().endswith("ok")
    assert "Traceback" not in result.stderr
