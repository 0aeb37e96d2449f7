"""The one module walk (`src/bindings/walk.rs`) behind `_core._module_walk` and
`_core._state_tensors`: the same names in the same order as torch's own generators, on modules
that share submodules and parameters, hold `None` entries and non-persistent buffers."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _planning_models import CONFIGS, real_size  # noqa: E402
from devicemap import _core  # noqa: E402

nn = torch.nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 3)
        self.register_buffer("transient", torch.zeros(3), persistent=False)


class Shared(nn.Module):
    """One block under two names, a parameter shared by two modules, `None` entries."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.register_buffer("kept", torch.zeros(2))
        self.register_parameter("absent", None)
        self.first = Block()
        self.blocks = nn.ModuleList([Block(), self.first, nn.Identity()])
        self.again = self.first
        self.missing = None
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight


def generators(module: Any, classes: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """What `_module_walk` reads, by torch's generators."""
    tensors = [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]
    blocks = [
        name
        for name, child in module.named_modules(remove_duplicate=False)
        if name and type(child).__name__ in classes
    ]
    return [(name, tensor.nbytes) for name, tensor in tensors], blocks


def test_module_walk_visits_shared_modules_under_each_name() -> None:
    model = Shared()
    sizes, tied, blocks = _core._module_walk(model, None, ["Block"])
    names, expected_blocks = generators(model, ["Block"])
    assert [name for name, _ in sizes] == [name for name, _ in names]
    assert blocks == expected_blocks == ["first", "blocks.0", "blocks.1", "again"]
    assert ["embed.weight", "head.weight"] in tied
    assert (sizes, tied) == _core._module_sizes(model)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_module_walk_of_published_models(name: str) -> None:
    model = real_size(name)
    classes = sorted(model._no_split_modules or ())
    sizes, _, blocks = _core._module_walk(model, torch.float16, classes)
    names, expected_blocks = generators(model, classes)
    assert [name for name, _ in sizes] == [name for name, _ in names]
    assert blocks == expected_blocks


def test_state_tensors_of_shared_modules() -> None:
    model = Shared()
    state, _ = _core._state_tensors(model)
    reference = model.state_dict(keep_vars=True)
    assert state is not None
    assert list(state) == list(reference)
    assert all(state[name] is reference[name] for name in reference)
    assert "first.transient" not in state
    assert "again.proj.weight" in state


def named_modules_reference(module: Any) -> list[str] | None:
    """`_plan._no_split_of` as it was, by `named_modules()` (which dedups shared modules)."""
    classes = getattr(module, "_no_split_modules", None)
    if not classes:
        return None
    wanted = set(classes)
    return [name for name, child in module.named_modules() if type(child).__name__ in wanted and name]


class Nested(Shared):
    """A shared no-split block with a no-split block inside it, and one reached only through a
    second name of a module that is listed first under another."""

    _no_split_modules = ("Block", "Inner", 7)  # a non-str entry matches nothing, as before

    def __init__(self) -> None:
        super().__init__()
        self.outer = nn.Sequential(Block(), nn.Linear(2, 2))
        self.outer[0].inner = Inner()
        self.alias = self.outer  # listed once, under "outer": nothing under "alias"


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(3)


def test_no_split_names_dedup_shared_modules_as_named_modules_does() -> None:
    from devicemap._plan import _no_split_of

    model = Nested()
    expected = named_modules_reference(model)
    assert expected == ["first", "blocks.0", "outer.0", "outer.0.inner"]
    assert _no_split_of(model) == expected
    # The same walk that reads the state dict finds them too.
    state, names = _core._state_tensors(model, ["Block", "Inner"])
    assert names == expected
    assert state is not None
    assert list(state) == list(model.state_dict(keep_vars=True))
    # `_module_walk` (the loader integration's view) keeps every name, as it did.
    assert "again" in _core._module_walk(model, None, ["Block"])[2]


def test_no_split_names_without_classes() -> None:
    from devicemap._plan import _no_split_of

    model = Shared()
    assert _no_split_of(model) is None  # no `_no_split_modules`
    assert _core._no_split_names(model, None) is None
    assert _core._no_split_names(model, []) == []
    assert _core._state_tensors(model, None)[1] is None
    model._no_split_modules = ["Missing"]
    assert _no_split_of(model) == [] == named_modules_reference(model)


def test_no_split_names_when_the_state_dict_is_left_to_torch() -> None:
    model = Nested()
    model.blocks[0].register_state_dict_pre_hook(lambda module, prefix, keep_vars: None)
    state, names = _core._state_tensors(model, ["Block", "Inner"])
    assert state is None
    assert names == named_modules_reference(model)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_split_names_of_published_models(name: str) -> None:
    from devicemap._plan import _no_split_classes, _no_split_of

    model = real_size(name)
    expected = named_modules_reference(model)
    assert _no_split_of(model) == expected
    assert _core._state_tensors(model, _no_split_classes(model))[1] == expected
