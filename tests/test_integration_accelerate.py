"""devicemap.integrations.accelerate against the real accelerate: `check_device_map` and
`dispatch_model` on a tiny Llama built here, with and without the integration."""

from __future__ import annotations

import re
import sys
import types
import warnings
from typing import Any

import pytest
from _models import tiny_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
big_modeling = pytest.importorskip("accelerate.big_modeling")
acc_modeling = pytest.importorskip("accelerate.utils.modeling")

from devicemap.integrations import UnsupportedVersionError  # noqa: E402
from devicemap.integrations import accelerate as integration  # noqa: E402

STOCK_CHECK = acc_modeling.check_device_map
LAYERS = 11  # so that layer 1 is a text prefix of layer 10


@pytest.fixture(autouse=True)
def disabled():
    integration.disable()
    yield
    integration.disable()


def tiny_model() -> Any:
    return tiny_llama(LAYERS)


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model()


def full_map() -> dict[str, Any]:
    device_map: dict[str, Any] = {"model.embed_tokens": "cpu"}
    device_map.update({f"model.layers.{layer}": "cpu" for layer in range(LAYERS)})
    device_map.update({"model.norm": "cpu", "lm_head": "cpu"})
    return device_map


def outcome(check: Any, model: Any, device_map: dict[str, Any]) -> tuple[Any, list[str]]:
    """(the exception raised or None, the warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check(model, device_map)
        except Exception as error:
            raised: Any = error
        else:
            raised = None
    return raised, [f"{w.category.__name__}: {w.message}" for w in caught]


def without(device_map: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in device_map.items() if k not in keys}


MAPS = {
    "full": full_map(),
    "everything": {"": 0},
    "model and head": {"model": "cpu", "lm_head": 1},
    "gap: a layer": without(full_map(), "model.layers.1"),
    "gap: the head": without(full_map(), "lm_head"),
    "gaps: two layers": without(full_map(), "model.layers.0", "model.layers.2"),
    "trap: layer 1 is no prefix of layer 10": {
        **without(full_map(), "model.layers.10"),
        "model.layers.1": 0,
    },
    "extra key": {**full_map(), "model.layers.7": "cpu"},
    "parameter-name keys": {**without(full_map(), "lm_head"), "lm_head.weight": "cpu"},
    "extra key and a gap": {**without(full_map(), "model.norm"), "model.nrom": "cpu"},
}


@pytest.mark.parametrize("name", list(MAPS))
def test_check_device_map_gives_accelerates_verdict(model, name):
    device_map = MAPS[name]
    stock_error, stock_warnings = outcome(STOCK_CHECK, model, device_map)
    our_error, our_warnings = outcome(integration.check_device_map, model, device_map)
    assert our_warnings == stock_warnings
    assert type(our_error) is type(stock_error)
    if stock_error is not None:
        stock_text, our_text = str(stock_error), str(our_error)
        assert stock_text.startswith(integration.UNCOVERED)
        assert our_text.startswith(integration.UNCOVERED)
        # The same tensors: accelerate lists each, devicemap groups runs of layers.
        stock_names = stock_text.removeprefix(integration.UNCOVERED).split(", ")
        our_groups = our_text.removeprefix(integration.UNCOVERED).split(", ")
        assert sorted(name for group in our_groups for name in expand(group)) == sorted(stock_names)


def expand(group: str) -> list[str]:
    """`model.layers.{1..3,7}.w` -> the four names."""
    run = re.search(r"\{([\d.,]+)\}", group)
    if run is None:
        return [group]
    numbers: list[int] = []
    for item in run.group(1).split(","):
        first, _, last = item.partition("..")
        numbers.extend(range(int(first), int(last or first) + 1))
    return [
        name for number in numbers for name in expand(group[: run.start()] + str(number) + group[run.end() :])
    ]


@pytest.mark.parametrize("gap", ["model.layers.1", "lm_head"])
def test_dispatch_model_with_a_gap_raises_the_same_with_and_without(gap):
    device_map = without(full_map(), gap)
    with pytest.raises(ValueError, match=re.escape(integration.UNCOVERED)) as stock:
        accelerate.dispatch_model(tiny_model(), device_map=device_map)
    with integration.enabled(), pytest.raises(ValueError, match=re.escape(integration.UNCOVERED)) as ours:
        accelerate.dispatch_model(tiny_model(), device_map=device_map)
    assert f"{gap}." in str(stock.value)
    assert f"{gap}." in str(ours.value)


def test_dispatch_model_with_a_full_map_works_the_same(model):
    inputs = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        expected = model(inputs).logits
    with integration.enabled():
        dispatched = accelerate.dispatch_model(tiny_model(), device_map=full_map())
    assert dispatched.hf_device_map == full_map()
    with torch.no_grad():
        assert torch.equal(dispatched(inputs).logits, expected)


def holders(*functions: Any) -> dict[tuple[str, str], Any]:
    found = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith(("accelerate", "transformers")):
            continue
        if not isinstance(module, types.ModuleType):
            continue
        for attr, value in list(vars(module).items()):
            if any(value is f for f in functions):
                found[(module_name, attr)] = value
    return found


def test_enable_patches_every_module_and_disable_restores_the_original():
    before = holders(STOCK_CHECK)
    assert {("accelerate.big_modeling", "check_device_map"), ("accelerate.utils", "check_device_map")} <= set(
        before
    )
    integration.enable()
    integration.enable()  # idempotent
    assert big_modeling.check_device_map is integration.check_device_map
    assert holders(STOCK_CHECK) == {}
    assert set(holders(integration.check_device_map)) == set(before)
    integration.disable()
    integration.disable()  # idempotent
    assert holders(STOCK_CHECK) == before
    assert holders(integration.check_device_map) == {}

    with integration.enabled():
        with integration.enabled():
            pass
        assert integration.is_enabled()
    assert big_modeling.check_device_map is STOCK_CHECK


def test_an_unsupported_version_is_refused(monkeypatch):
    def check_device_map(model, device_map, strict=True):
        return STOCK_CHECK(model, device_map)

    monkeypatch.setattr(acc_modeling, "check_device_map", check_device_map)
    with pytest.raises(UnsupportedVersionError, match=re.escape(f"accelerate {accelerate.__version__} ")):
        integration.enable()
    monkeypatch.delattr(acc_modeling, "check_device_map")
    missing = re.escape("has no function accelerate.utils.modeling.check_device_map")
    with pytest.raises(UnsupportedVersionError, match=missing):
        integration.enable()
    assert not integration.is_enabled()
    assert big_modeling.check_device_map is STOCK_CHECK
