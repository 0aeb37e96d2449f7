"""devicemap: names, parses, validates, serializes and chooses compute devices for ML code.

A drop-in for Haystack's `haystack.utils.device` (`DeviceType`, `Device`, `DeviceMap`,
`ComponentDevice`) whose data and hot paths live in Rust.
"""

from collections.abc import MutableMapping

from devicemap._bin import tensor_sizes
from devicemap._core import (
    ComponentDevice,
    Coverage,
    CudaDevice,
    Device,
    DeviceMap,
    DeviceMapping,
    Explanation,
    KvCache,
    MapDiff,
    MapSummary,
    NearMiss,
    PlanReport,
    __version__,
    cuda_device_count,
    cuda_devices,
    cuda_status,
    example_model,
    kv_cache,
)
from devicemap._pick import pick_device
from devicemap._plan import default_max_memory, plan, plan_report, stages
from devicemap._types import DeviceType

MutableMapping.register(DeviceMapping)

__all__ = [
    "ComponentDevice",
    "Coverage",
    "CudaDevice",
    "Device",
    "DeviceMap",
    "DeviceType",
    "Explanation",
    "KvCache",
    "MapDiff",
    "MapSummary",
    "NearMiss",
    "PlanReport",
    "__version__",
    "cuda_device_count",
    "cuda_devices",
    "cuda_status",
    "default_max_memory",
    "example_model",
    "kv_cache",
    "pick_device",
    "plan",
    "plan_report",
    "stages",
    "tensor_sizes",
]
