"""`DeviceMap.check` and `coverage` against `accelerate.utils.check_device_map` on tiny models
built from transformers configs in the test (on the meta device: only names matter)."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
from devicemap import Coverage, DeviceMap
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate_utils = pytest.importorskip("accelerate.utils")


def _build(config: Any) -> Any:
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def llama() -> Any:
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=12,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return _build(config)


@pytest.fixture(scope="module")
def gpt2() -> Any:
    config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=11, n_head=2, n_positions=32)
    return _build(config)


def accelerate_accepts(model: Any, hf_map: dict[str, Any]) -> bool:
    with warnings.catch_warnings():
        # It warns about keys naming no module; the verdict compared here is its ValueError.
        warnings.simplefilter("ignore")
        try:
            accelerate_utils.check_device_map(model, hf_map)
        except ValueError:
            return False
    return True


def ours_accepts(model: Any, hf_map: dict[str, Any]) -> bool:
    try:
        DeviceMap.from_hf(hf_map).check(list(model.state_dict()), unused="ignore")
    except ValueError:
        return False
    return True


def per_layer_map(model: Any, prefix: str, layers: int) -> dict[str, Any]:
    top = [name for name, _ in model.named_children()]
    body = dict(model.named_children())[top[0]]
    hf: dict[str, Any] = {}
    for name, _ in body.named_children():
        if name in ("layers", "h"):
            hf.update({f"{prefix}.{name}.{i}": i % 2 for i in range(layers)})
        else:
            hf[f"{prefix}.{name}"] = "cpu"
    for name in top[1:]:
        hf[name] = "cpu"
    return hf


def cases(model: Any, prefix: str, layers: int) -> dict[str, dict[str, Any]]:
    full = per_layer_map(model, prefix, layers)
    stack = "layers" if prefix == "model" else "h"
    gap = {k: v for k, v in full.items() if k != f"{prefix}.{stack}.7"}
    no_head = {k: v for k, v in full.items() if k != "lm_head"}
    numeric_trap = {k: v for k, v in full.items() if not k.startswith(f"{prefix}.{stack}.1")}
    numeric_trap[f"{prefix}.{stack}.1"] = 0  # does not cover layers 10 and 11
    return {
        "full": full,
        "full with typo keys": {**full, f"{prefix}.layer.3": 0, "lm_hea": "cpu"},
        "gap": gap,
        "gap with empty key": {**gap, "": "cpu"},
        "no head": no_head,
        "head prefix without dot": {**no_head, "lm_hea": "cpu"},
        "numeric trap": numeric_trap,
        "empty key only": {"": 0},
        "whole body": {prefix: 0, "lm_head": "cpu"},
        "regex text": {f"{prefix}.{stack}.[0-9]+": 0, prefix: 1},
        "empty": {},
    }


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_same_verdict_as_accelerate(which, request):
    model = request.getfixturevalue(which)
    prefix, layers = ("model", 12) if which == "llama" else ("transformer", 11)
    verdicts = {
        name: (accelerate_accepts(model, hf), ours_accepts(model, hf))
        for name, hf in cases(model, prefix, layers).items()
    }
    assert all(theirs == ours for theirs, ours in verdicts.values()), verdicts
    # The cases are not all on one side.
    assert {ours for _, ours in verdicts.values()} == {True, False}


@given(data=st.data())
def test_same_verdict_on_random_module_subsets(llama, data):
    modules = [name for name, _ in llama.named_modules() if name]
    chosen = data.draw(st.lists(st.sampled_from(modules), unique=True, max_size=40))
    extra = data.draw(
        st.lists(st.sampled_from(["lm_hea", "model.layers.1", "model.layer", "", "x.y"]), max_size=2)
    )
    hf = {key: i % 3 for i, key in enumerate(chosen + extra)}
    assert accelerate_accepts(llama, hf) == ours_accepts(llama, hf)


def test_error_lists_uncovered_names_compactly(llama):
    names = list(llama.state_dict())
    hf = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 0, "model.layers.2": 1}
    with pytest.raises(ValueError, match="are not covered by the device map") as raised:
        DeviceMap.from_hf(hf).check(names, unused="ignore")
    message = str(raised.value)
    assert "  model.layers.{3..11}.mlp.gate_proj.weight  (9 names)" in message
    assert "  lm_head.weight" in message
    uncovered = [n for n in names if not re.match(r"model\.(embed_tokens|layers\.[012])\.", n)]
    assert (
        message.splitlines()[0]
        == f"{len(uncovered)} of {len(names)} tensor names are not covered by the device map:"
    )
    assert message.splitlines()[-1] == f"{len(uncovered)} tensor names not covered"


def test_unused_keys_error_warn_or_ignore(llama):
    names = list(llama.state_dict())
    hf = {"": "cpu", "model.layer.3": 0, "lm_hea": 1, "model.layers.1": 0}
    dm = DeviceMap.from_hf(hf)
    with pytest.raises(
        ValueError,
        match=r"2 keys of the device map cover no tensor name \(a typo\?\): 'model\.layer\.3', 'lm_hea'",
    ):
        dm.check(names)
    with pytest.warns(UserWarning, match="cover no tensor name") as caught:
        dm.check(names, unused="warn")
    # The line about the keys alone, raised from the caller's line.
    assert [str(w.message) for w in caught] == [
        "2 keys of the device map cover no tensor name (a typo?): 'model.layer.3', 'lm_hea'"
    ]
    assert caught[0].filename == __file__
    # A key may hold a NUL, which a warning's C string cannot: it is written as \0.
    with pytest.warns(UserWarning, match=r"'a\\0b'"):
        DeviceMap.from_hf({"": 0, "a\0b": 1}).check(["c"], unused="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.check(names, unused="ignore")
        DeviceMap.from_hf({"": 0}).check(names, unused="warn")
    with pytest.raises(ValueError, match="unused must be"):
        dm.check(names, unused="loud")


def test_coverage_as_data(llama):
    names = list(llama.state_dict())
    hf = {"model": 0, "model.layer.3": 1}
    coverage = DeviceMap.from_hf(hf).coverage(names)
    assert isinstance(coverage, Coverage)
    assert coverage.names == len(names)
    assert coverage.uncovered == ("lm_head.weight",)
    assert coverage.uncovered_groups == (("lm_head.weight", 1),)
    assert coverage.unused_keys == ("model.layer.3",)
    assert not coverage.complete
    assert str(coverage).startswith("1 of ")
    full = DeviceMap.from_hf({"": 0}).coverage(names)
    assert full.complete
    assert full.unused_keys == ()
    assert full.uncovered_groups == ()


def test_check_takes_state_dict_keys_and_generators(llama):
    dm = DeviceMap.from_hf({"": 0})
    dm.check(llama.state_dict().keys())
    dm.check(name for name, _ in llama.named_parameters())
