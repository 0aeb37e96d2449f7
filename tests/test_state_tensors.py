"""`_core._state_tensors`: a module's `state_dict(keep_vars=True)` read in one walk, the same
names in the same order to the same objects, or None where a module makes its state dict its
own way (the plan from a checkpoint then asks `state_dict` itself)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _planning_models import CONFIGS, real_size  # noqa: E402
from devicemap import _core  # noqa: E402

nn = torch.nn


def same_as_state_dict(module: Any) -> None:
    ours, _ = _core._state_tensors(module)
    reference = module.state_dict(keep_vars=True)
    assert ours is not None
    assert list(ours) == list(reference)
    assert all(ours[name] is reference[name] for name in reference)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_published_models(name):
    same_as_state_dict(real_size(name))


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 3)
        self.register_buffer("kept", torch.zeros(2))
        self.register_buffer("transient", torch.zeros(2), persistent=False)
        self.register_buffer("empty", None)
        self.register_parameter("absent", None)
        self.shared = self.first  # one module under two names: listed under both
        self.blocks = nn.ModuleList([nn.LayerNorm(3), nn.Identity()])
        self.blocks.append(nn.Linear(3, 3))


def test_persistence_none_entries_and_shared_modules():
    holder = Holder()
    same_as_state_dict(holder)
    names = list(_core._state_tensors(holder)[0] or ())
    assert not {"transient", "empty", "absent"} & set(names)
    assert {"shared.weight", "first.weight"} <= set(names)


class OwnSave(nn.Linear):
    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        destination[prefix + "packed"] = self.weight


class ExtraState(nn.Linear):
    def get_extra_state(self) -> Any:
        return {"version": 2}


@pytest.mark.parametrize("inner", [OwnSave(2, 2), ExtraState(2, 2)], ids=["save", "extra"])
def test_a_module_with_its_own_state_dict_is_left_to_state_dict(inner):
    outer = nn.Sequential(nn.Linear(2, 2), inner)
    assert _core._state_tensors(outer) == (None, None)


def test_a_state_dict_hook_is_left_to_state_dict():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1]._register_state_dict_hook(lambda module, state, prefix, local: state)
    assert _core._state_tensors(model) == (None, None)
    model = nn.Sequential(nn.Linear(2, 2))
    model.register_state_dict_pre_hook(lambda module, prefix, keep_vars: None)
    assert _core._state_tensors(model) == (None, None)


def test_not_a_module_is_a_type_error():
    with pytest.raises((TypeError, AttributeError)):
        _core._state_tensors(object())


def test_transient_buffers_where_their_module_keeps_its_buffers() -> None:
    """`transient=True`: the non-persistent buffers too, in state_dict's order (a module's own
    parameters, its buffers, then its children)."""
    holder = Holder()
    state, _ = _core._state_tensors(holder, transient=True)
    assert state is not None
    assert list(state) == [
        "kept", "transient", "first.weight", "first.bias", "shared.weight", "shared.bias",
        "blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias",
    ]  # fmt: skip
    assert state["transient"] is holder.transient
