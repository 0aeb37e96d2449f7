"""devicemap.integrations.transformers against the real transformers: a tiny Llama built and saved
here as sharded safetensors, loaded with and without the integration; transformers' own
`expand_device_map` on trap maps; patching and restoring; refusal of an unsupported version."""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import sys
import types
from typing import Any

import pytest
from _models import tiny_llama
from _subprocess import run_python
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
hf_accelerate = pytest.importorskip("transformers.integrations.accelerate")
modeling_utils = pytest.importorskip("transformers.modeling_utils")
core_model_loading = pytest.importorskip("transformers.core_model_loading")

from devicemap.integrations import UnsupportedVersionError, _compiled  # noqa: E402
from devicemap.integrations import transformers as integration  # noqa: E402

STOCK_GET_DEVICE = hf_accelerate.get_device
STOCK_EXPAND = hf_accelerate.expand_device_map
STOCK_GET_DEVICE_MAP = hf_accelerate._get_device_map
ORIGINALS = (STOCK_GET_DEVICE, STOCK_EXPAND, STOCK_GET_DEVICE_MAP)
LAYERS = 3


@pytest.fixture(autouse=True)
def offline_and_disabled(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    integration.disable()
    yield
    integration.disable()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Any:
    """A tiny Llama (3 layers, 30 tensors) saved as 12 safetensors shards."""
    model = tiny_llama(LAYERS)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path, max_shard_size="4KB")
    assert len(list(path.glob("*.safetensors"))) > 1
    return path


def per_module_map() -> dict[str, Any]:
    device_map: dict[str, Any] = {"model.embed_tokens": "cpu"}
    for layer in range(LAYERS):
        device_map[f"model.layers.{layer}"] = "disk" if layer == 1 else "cpu"
    device_map.update({"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"})
    return device_map


def load(path: Any, device_map: dict[str, Any], offload: Any) -> Any:
    return transformers.LlamaForCausalLM.from_pretrained(
        path, device_map=device_map, offload_folder=str(offload), local_files_only=True
    )


def placement(model: Any) -> dict[str, tuple[str, Any]]:
    """Every parameter and buffer: its device and, when it holds data, its values."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {
        name: (str(t.device), None if t.device.type == "meta" else t.detach().clone())
        for name, t in tensors.items()
    }


def assert_same_placement(a: dict[str, tuple[str, Any]], b: dict[str, tuple[str, Any]]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0], name
        if a[name][1] is not None:
            assert torch.equal(a[name][1], b[name][1]), name


def test_importing_devicemap_imports_no_loader():
    result = run_python(
        """
        import sys
        import devicemap
        import devicemap.integrations.transformers, devicemap.integrations.accelerate
        print(sorted(m for m in ("torch", "transformers", "accelerate") if m in sys.modules))
        """
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("with_accelerate", [False, True])
def test_from_pretrained_loads_the_same_with_and_without(checkpoint, tmp_path, monkeypatch, with_accelerate):
    # With a "disk" value transformers dispatches through accelerate, whose check_device_map
    # is devicemap's too when its integration is on: it reuses the load's compiled map.
    device_map = per_module_map()
    stock = load(checkpoint, dict(device_map), tmp_path / "stock")

    compiled: list[int] = []

    checks: list[int] = []

    class Counting(_compiled.CompiledKeys):
        def __init__(self, keys: list[Any]) -> None:
            compiled.append(len(keys))
            super().__init__(keys)

        def uncovered_groups(self, names: list[str]) -> list[str]:
            checks.append(len(names))
            return super().uncovered_groups(names)

    monkeypatch.setattr(_compiled, "CompiledKeys", Counting)
    with integration.enabled(), contextlib.ExitStack() as stack:
        if with_accelerate:
            from devicemap.integrations import accelerate as accelerate_integration

            stack.enter_context(accelerate_integration.enabled())
        ours = load(checkpoint, dict(device_map), tmp_path / "ours")
    # The integration ran, and compiled the load's one map once (not once per tensor); with
    # accelerate's integration on, dispatch_model checked all 30 tensors against that same map.
    assert compiled == [len(device_map)]
    assert checks == ([30] if with_accelerate else [])

    assert ours.hf_device_map == stock.hf_device_map == device_map
    assert type(ours.hf_device_map) is dict
    stock_placement, our_placement = placement(stock), placement(ours)
    assert_same_placement(stock_placement, our_placement)
    assert our_placement["model.layers.1.mlp.up_proj.weight"][0] == "meta"  # offloaded to disk
    assert our_placement["model.layers.2.mlp.up_proj.weight"][0] == "cpu"
    inputs = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        assert torch.equal(stock(inputs).logits, ours(inputs).logits)


def test_from_pretrained_with_an_uncovered_buffer_falls_back_and_reports_once(checkpoint, tmp_path, caplog):
    # No key for model.rotary_emb (whose buffers are not in the state dict, so accelerate's
    # check passes): transformers puts its buffers on "cpu"; so do we, and say so once.
    device_map = per_module_map()
    del device_map["model.rotary_emb"]
    stock = load(checkpoint, dict(device_map), tmp_path / "stock")
    with integration.enabled(), caplog.at_level(logging.WARNING, logger="devicemap.integrations"):
        ours = load(checkpoint, dict(device_map), tmp_path / "ours")
    assert_same_placement(placement(stock), placement(ours))
    assert str(ours.model.rotary_emb.inv_freq.device) == "cpu"
    messages = [r.getMessage() for r in caplog.records if r.name == "devicemap.integrations"]
    uncovered = ("'model.rotary_emb.inv_freq'", "'model.rotary_emb.original_inv_freq'")
    for name in uncovered:  # each once, though transformers looks it up more than once
        assert sum(name in message for message in messages) == 1, messages
    assert all(any(name in message for name in uncovered) for message in messages)


def test_expand_agrees_with_transformers_where_it_is_right(checkpoint):
    model = transformers.LlamaForCausalLM.from_pretrained(checkpoint, local_files_only=True)
    names = list(model.state_dict())
    maps: list[dict[str, Any]] = [
        per_module_map(),
        {"": 0},
        {"model": 0, "lm_head": "cpu"},
        {"model.layers.0.mlp": "disk", "model.layers.0": 1, "": torch.device("cpu")},
        {"model.layers.2.self_attn.q_proj.weight": 3, "model.layers.2": 2, "model": 1, "lm_head": 0},
        {"model.embed_tokens": "mps", "model.layers": 0, "model.norm": "cpu"},  # lm_head: fallback
    ]
    for device_map in maps:
        stock = STOCK_EXPAND(device_map, names)
        ours = integration.expand_device_map(device_map, names)
        assert ours == stock
        # The very value objects of the map, as transformers gives them.
        for name in names:
            assert ours[name] is stock[name] or (isinstance(stock[name], str) and ours[name] == stock[name])
        for name in names:
            for valid in (False, True):
                assert integration.get_device(device_map, name, valid) == STOCK_GET_DEVICE(
                    device_map, name, valid
                )
    assert integration.get_device(None, "x") == STOCK_GET_DEVICE(None, "x") == "cpu"
    assert integration.expand_device_map(None, ["a"]) == STOCK_EXPAND(None, ["a"]) == {"a": "cpu"}
    assert integration.get_device({"a": "disk"}, "a.w", valid_torch_device=True) == "cpu"
    assert integration.get_device({"a": "disk"}, "a.w") == "disk"


def covering_key(keys: list[str], name: str) -> str | None:
    """The plain longest-prefix-at-a-dot-boundary rule, as a loop."""
    covering = [key for key in keys if key == "" or key == name or name.startswith(key + ".")]
    return max(covering, key=len, default=None)


# Components that make numeric-suffix and text-prefix traps likely (`1` vs `10`, `a` vs `ab`).
components = st.sampled_from(["a", "ab", "b", "1", "10", "11"])
dotted = st.lists(components, min_size=1, max_size=4).map(".".join)


@given(
    keys=st.lists(st.one_of(st.just(""), dotted), max_size=8, unique=True),
    names=st.lists(dotted, min_size=1, max_size=8),
)
def test_ours_is_the_longest_dot_boundary_key_and_transformers_where_it_is_right(keys, names):
    device_map = {key: i for i, key in enumerate(keys)}
    ours = integration.expand_device_map(device_map, names)
    theirs = STOCK_EXPAND(device_map, names) if keys else {}  # an empty map: KeyError (see TRAPS)
    for name in names:
        key = covering_key(keys, name)
        assert ours[name] == ("cpu" if key is None else device_map[key])
        assert integration.get_device(device_map, name) == ours[name]
        # transformers differs only where a key is a prefix of the name's text but not at a
        # dot boundary (these keys hold no regex metacharacters).
        trapped = any(k and name.startswith(k) and k != name and name[len(k)] != "." for k in keys)
        if keys and not trapped:
            assert theirs[name] == ours[name]


# (map, name, transformers' answer or the exception it raises, ours)
TRAPS = [
    # No dot boundary: layer 1's key captures layer 10.
    ({"model.layers.1": 0, "model": 1}, "model.layers.10.mlp.gate_proj.weight", 0, 1),
    ({"lm_head": "cpu", "": "disk"}, "lm_head_extra.weight", "cpu", "disk"),
    ({"lm_head": "cpu"}, "lm_head_extra.weight", "cpu", "cpu"),  # right by luck: the fallback
    # Keys taken as regular expressions: "." matches any character, then the matched text is
    # looked up as a key.
    ({"model.layers": 0, "": 1}, "modelXlayers.0.w", KeyError, 1),
    # "[0]" is a character class that matches "0", not "[0]".
    ({"model.experts[0]": 0, "": 1}, "model.experts[0].w", 1, 0),
    # "(" opens a group: the pattern does not compile.
    ({"model.experts(0": 0, "": 1}, "model.experts(0.w", re.error, 0),
    # "+" repeats: the key's own text no longer matches it.
    ({"a+b": 0, "": 1}, "a+b.weight", 1, 0),
    # An empty map: the empty pattern matches, then "" is looked up.
    ({}, "lm_head.weight", KeyError, "cpu"),
]


@pytest.mark.parametrize(("device_map", "name", "theirs", "ours"), TRAPS)
def test_trap_maps(device_map, name, theirs, ours):
    if isinstance(theirs, type) and issubclass(theirs, Exception):
        with pytest.raises(theirs):
            STOCK_EXPAND(device_map, [name])
    else:
        assert STOCK_EXPAND(device_map, [name]) == {name: theirs}
        assert STOCK_GET_DEVICE(device_map, name) == theirs
    assert integration.expand_device_map(device_map, [name]) == {name: ours}
    assert integration.get_device(device_map, name) == ours
    with integration.enabled():
        assert hf_accelerate.expand_device_map(device_map, [name]) == {name: ours}


def test_uncovered_names_are_reported_once(caplog):
    device_map = {"model": 0}
    with caplog.at_level(logging.WARNING, logger="devicemap.integrations"):
        assert integration.expand_device_map(device_map, ["lm_head.weight", "model.x"]) == {
            "lm_head.weight": "cpu",
            "model.x": 0,
        }
        assert integration.get_device(device_map, "lm_head.weight") == "cpu"
        assert integration.get_device(device_map, "lm_head.bias") == "cpu"
    messages = [r.getMessage() for r in caplog.records if r.name == "devicemap.integrations"]
    assert len(messages) == 2
    assert "'lm_head.weight'" in messages[0]
    assert "'lm_head.bias'" in messages[1]


def test_a_tracked_map_sees_every_change():
    device_map = _compiled.track({"model": 0, "lm_head": 1})
    assert type(device_map) is _compiled.TrackedDeviceMap
    name = "model.layers.3.mlp.weight"
    assert integration.get_device(device_map, name) == 0
    compiled = device_map.compiled()
    assert integration.get_device(device_map, name) == 0
    assert device_map.compiled() is compiled  # kept while unchanged
    changes = [
        (lambda m: m.__setitem__("model.layers.3", 2), 2),
        (lambda m: m.update({"model.layers.3.mlp": 3}), 3),
        (lambda m: m.pop("model.layers.3.mlp"), 2),
        (lambda m: m.__delitem__("model.layers.3"), 0),
        (lambda m: m.setdefault("model.layers", 4), 4),
        (lambda m: m.__ior__({"model.layers": 5}), 5),
        (lambda m: m.popitem(), 0),  # removes "model.layers", the last inserted
        (lambda m: m.clear(), "cpu"),
        (lambda m: m.__init__({"": "disk"}), "disk"),
        # Around the methods: the length check still sees an insert.
        (lambda m: dict.__setitem__(m, "model.layers.3", 6), 6),
    ]
    for change, expected in changes:
        change(device_map)
        assert integration.get_device(device_map, name) == expected
        assert integration.expand_device_map(device_map, [name]) == {name: expected}
    # A value changed in place is read from the dict itself.
    dict.__setitem__(device_map, "model.layers.3", 7)
    assert integration.get_device(device_map, name) == 7
    # Pickles and copies as a plain dict.
    assert type(pickle.loads(pickle.dumps(device_map))) is dict
    assert pickle.loads(pickle.dumps(device_map)) == device_map


def test_a_plain_dict_is_compiled_once_and_sees_every_change():
    device_map: dict[str, Any] = {"model": 0, "lm_head": 1}
    name = "model.layers.3.mlp.weight"
    assert integration.get_device(device_map, name) == 0
    compiled = _compiled.compiled_for(device_map)
    assert _compiled.compiled_for(device_map) is compiled
    device_map["model.layers.3"] = 2
    assert integration.get_device(device_map, name) == 2
    device_map["model.layers.3"] = 3  # same keys: the value is read from the dict
    assert integration.get_device(device_map, name) == 3
    del device_map["model.layers.3"]
    device_map["model.layers.3.mlp"] = 4  # same length, other keys
    assert integration.get_device(device_map, name) == 4
    # A dict freed and another made at the same address is not mistaken for it: the cache
    # holds the dict, so its address is not reused while cached.
    assert _compiled.compiled_for(device_map) is not compiled


def patched_attributes(originals: tuple[Any, ...]) -> dict[tuple[str, str], Any]:
    """(module, attribute) -> value, for every transformers module attribute that is one of
    `originals` or one of the integration's functions."""
    ours = (integration.get_device, integration.expand_device_map)
    found = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("transformers") or not isinstance(module, types.ModuleType):
            continue
        for attr, value in list(vars(module).items()):
            ours_or_original = any(value is f for f in (*originals, *ours))
            if ours_or_original or getattr(value, "__wrapped__", None) is STOCK_GET_DEVICE_MAP:
                found[(module_name, attr)] = value
    return found


def test_enable_patches_every_module_and_disable_restores_the_originals():
    before = patched_attributes(ORIGINALS)
    assert ("transformers.modeling_utils", "get_device") in before
    assert ("transformers.modeling_utils", "expand_device_map") in before
    assert ("transformers.modeling_utils", "_get_device_map") in before
    assert ("transformers.core_model_loading", "get_device") in before
    assert all(any(value is f for f in ORIGINALS) for value in before.values())

    integration.enable()
    integration.enable()  # idempotent
    during = patched_attributes(ORIGINALS)
    assert during.keys() == before.keys()
    for key, value in during.items():
        assert not any(value is f for f in ORIGINALS), key
    assert modeling_utils.get_device is integration.get_device
    assert core_model_loading.get_device is integration.get_device
    assert modeling_utils.expand_device_map is integration.expand_device_map
    assert modeling_utils._get_device_map.__wrapped__ is STOCK_GET_DEVICE_MAP

    # A module imported while enabled takes the replacement, and is restored too.
    late = types.ModuleType("transformers._devicemap_late_import")
    exec("from transformers.integrations.accelerate import get_device as lookup", vars(late))
    sys.modules[late.__name__] = late
    try:
        assert late.lookup is integration.get_device
        integration.disable()
        integration.disable()  # idempotent
        assert late.lookup is STOCK_GET_DEVICE
    finally:
        del sys.modules[late.__name__]
    assert patched_attributes(ORIGINALS) == before  # the same function objects, everywhere


def test_enabled_context_manager_nests():
    with integration.enabled():
        assert integration.is_enabled()
        with integration.enabled():
            assert hf_accelerate.get_device is integration.get_device
        assert integration.is_enabled()
    assert not integration.is_enabled()
    assert hf_accelerate.get_device is STOCK_GET_DEVICE

    integration.enable()
    with integration.enabled():
        pass
    assert integration.is_enabled()  # left as found


def test_an_unsupported_version_is_refused(monkeypatch):
    version = transformers.__version__
    monkeypatch.delattr(hf_accelerate, "expand_device_map")
    expected = rf"transformers {re.escape(version)} .*expand_device_map"
    with pytest.raises(UnsupportedVersionError, match=expected):
        integration.enable()
    assert not integration.is_enabled()
    assert hf_accelerate.get_device is STOCK_GET_DEVICE  # nothing patched
    monkeypatch.undo()

    def get_device(device_map, param_name):  # a changed signature
        return STOCK_GET_DEVICE(device_map, param_name)

    monkeypatch.setattr(hf_accelerate, "get_device", get_device)
    with pytest.raises(UnsupportedVersionError) as error:
        integration.enable()
    assert version in str(error.value)
    assert "(device_map, param_name), expected (device_map, param_name, valid_torch_device)" in str(
        error.value
    )
    assert not integration.is_enabled()
    assert modeling_utils.get_device is STOCK_GET_DEVICE
