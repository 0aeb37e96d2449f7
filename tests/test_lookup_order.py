"""Batch lookups take a shortcut for names in the map's own order (the previous name's key
settles the next name); the answers must be those of one `device_for` per name, in any order."""

from __future__ import annotations

import random

from devicemap import Device, DeviceMap


def test_batches_in_map_order_and_shuffled_agree_with_single_lookups() -> None:
    layers = {f"model.layers.{i}": Device.gpu(i % 4) for i in range(12)}
    # Deeper keys inside some layers, which a name's previous key must not hide.
    layers["model.layers.3.mlp"] = Device.cpu()
    layers["model.layers.7.mlp.experts.1"] = Device.disk()
    per_tensor = {
        f"model.layers.{i}.{part}.weight": Device.gpu((i + j) % 4)
        for i in range(12)
        for j, part in enumerate(["attn.q", "attn.k", "mlp.experts.0", "mlp.experts.1", "mlp.up"])
    }
    names = list(per_tensor)
    for dm in (DeviceMap(layers), DeviceMap({"": Device.cpu(), **per_tensor})):
        for batch in (names, random.Random(1).sample(names, len(names)), names[::-1]):
            expected = [dm.device_for(name) for name in batch]
            assert dm.devices_for(batch) == expected
            groups = dm.group_by_device(batch)
            assert {n: d for d, ns in groups.items() for n in ns} == dict(zip(batch, expected, strict=True))
    deep = DeviceMap(layers)
    assert deep.devices_for(["model.layers.3.attn.w", "model.layers.3.mlp.w"]) == [
        Device.gpu(3),
        Device.cpu(),
    ]
    assert deep.devices_for(["model.layers.7.mlp.experts.0.w", "model.layers.7.mlp.experts.1.w"]) == [
        Device.gpu(3),
        Device.disk(),
    ]
