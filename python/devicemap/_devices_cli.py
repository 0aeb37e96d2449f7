"""`devicemap devices`: the CUDA devices this process sees, the CPU, and the default device."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from devicemap._core import CudaDevice, cuda_discover

GIB = 1024**3
BAR_WIDTH = 12


def _cpu() -> dict[str, Any]:
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    try:
        memory: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        memory = None
    return {"cores": os.cpu_count(), "usable_cores": usable, "memory_total": memory}


def _short_uuid(uuid: str) -> str:
    prefix, _, rest = uuid.partition("-")
    return f"{prefix}-{rest[:8]}" if rest else uuid[:12]


def _bar(used: int | None, total: int | None) -> str:
    if used is None or not total:
        return "[" + "?" * BAR_WIDTH + "]"
    filled = min(BAR_WIDTH, round(BAR_WIDTH * used / total))
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


def _memory(device: CudaDevice) -> str:
    if device.memory_total is None or device.memory_used is None:
        return "unknown"
    return f"{device.memory_used / GIB:.1f} / {device.memory_total / GIB:.1f} GiB"


def _row(device: CudaDevice) -> list[str]:
    capability = device.compute_capability
    return [
        f"cuda:{device.ordinal}",
        device.name or "?",
        f"{_bar(device.memory_used, device.memory_total)} {_memory(device)}",
        f"{capability[0]}.{capability[1]}" if capability else "?",
        _short_uuid(device.uuid),
        device.pci_bus_id or "?",
        "yes" if device.is_mig else "-",
    ]


HEADERS = ["device", "name", "memory used / total", "capability", "uuid", "pci bus id", "mig"]


def _as_json(device: CudaDevice) -> dict[str, Any]:
    capability = device.compute_capability
    return {
        "device": str(device.device),
        "ordinal": device.ordinal,
        "nvml_index": device.nvml_index,
        "uuid": device.uuid,
        "name": device.name,
        "memory_total": device.memory_total,
        "memory_free": device.memory_free,
        "memory_used": device.memory_used,
        "pci_bus_id": device.pci_bus_id,
        "compute_capability": list(capability) if capability else None,
        "is_mig": device.is_mig,
        "ordering_certain": device.ordering_certain,
    }


def _plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [HEADERS, *rows]
    )


def _print_table(rows: list[list[str]]) -> None:
    try:
        if not sys.stdout.isatty():
            raise ImportError("plain text for pipes and files")
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(_plain_table(rows))
        return
    table = Table(*HEADERS)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def run(as_json: bool) -> int:
    from devicemap._resolve import NO_DEVICE, resolve

    # One discovery for the table, the status and the default device, so all three agree. The
    # status says what the ordering warning would, in place, so no warning is asked for.
    discovery = cuda_discover()
    devices = discovery.devices
    status = discovery.status
    resolution = resolve(discovery)
    cpu = _cpu()
    if as_json:
        report = {
            "cuda": {"status": status, "devices": [_as_json(device) for device in devices]},
            "cpu": cpu,
            "default": {"device": str(resolution.device), "reason": resolution.reason},
        }
        print(json.dumps(report, indent=2))
        return 0

    if devices:
        _print_table([_row(device) for device in devices])
        print(status)
    else:
        print(f"No CUDA GPU: {status}")
    cores = (
        cpu["cores"]
        if cpu["usable_cores"] in (None, cpu["cores"])
        else f"{cpu['usable_cores']} of {cpu['cores']}"
    )
    memory = "unknown RAM" if cpu["memory_total"] is None else f"{cpu['memory_total'] / GIB:.1f} GiB RAM"
    print(f"CPU: {cores} cores, {memory}")
    # Without a GPU the reason is the NVML status printed just above.
    reason = f"{NO_DEVICE}: see above" if resolution.reason == f"{NO_DEVICE}: {status}" else resolution.reason
    print(f"Default device: {resolution.device}  ({reason})")
    return 0
