"""The meta model a checkpoint plan builds: torch.nn.init skipped on meta tensors only, in the
building thread only, and the same model as a plain meta build."""

from __future__ import annotations

import threading
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from devicemap._loaded import _skipping_init  # noqa: E402


class Recorder(torch.overrides.TorchFunctionMode):  # type: ignore[misc]
    """Records the torch functions that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def test_init_is_skipped_on_meta_tensors_only() -> None:
    meta = torch.empty(4, 4, device="meta")
    real = torch.zeros(4, 4)
    recorder = Recorder()
    with recorder, _skipping_init(torch):  # the recorder sees what the skipping mode passes on
        torch.nn.init.kaiming_uniform_(meta)
        torch.nn.init.normal_(tensor=meta)
        torch.nn.init.constant_(real, 5.0)
    assert torch.nn.init.kaiming_uniform_ not in recorder.seen
    assert torch.nn.init.normal_ not in recorder.seen
    assert torch.nn.init.constant_ in recorder.seen
    assert bool((real == 5.0).all())


def test_the_mode_is_the_building_threads_own() -> None:
    inside = threading.Event()
    done = threading.Event()
    other: dict[str, Any] = {}

    def elsewhere() -> None:
        inside.wait(10)
        other["stack"] = torch._C._len_torch_function_stack()
        layer = torch.nn.Linear(64, 64)  # a real model built meanwhile is initialised
        other["initialised"] = bool(layer.weight.abs().sum() > 0)
        done.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with _skipping_init(torch):
        assert torch._C._len_torch_function_stack() == 1
        inside.set()
        done.wait(10)
    thread.join(10)
    assert other == {"stack": 0, "initialised": True}


def test_the_built_model_is_the_plain_meta_model() -> None:
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    with torch.device("meta"):
        plain = transformers.LlamaForCausalLM(config)
    with torch.device("meta"), _skipping_init(torch):
        skipped = transformers.LlamaForCausalLM(config)

    def described(model: Any) -> list[tuple[str, Any, Any, Any]]:
        state = model.state_dict(keep_vars=True)
        return [(name, t.shape, t.dtype, t.device) for name, t in state.items()]

    assert described(skipped) == described(plain)
    assert skipped.all_tied_weights_keys == plain.all_tied_weights_keys
    assert skipped.lm_head.weight is skipped.model.embed_tokens.weight


def test_modules_holding_only_buffers_are_in_a_split_map(tmp_path: Any) -> None:
    """A checkpoint stores no non-persistent buffer, but the loader places their modules (a
    rotary embedding holds only `inv_freq`): a map split below `model` names them, as the stock
    path's does, so the loader never leaves one where the map says nothing."""
    import accelerate.utils
    import devicemap
    from _planning_models import tiny

    model = tiny("llama-tied", layers=4)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    total = sum(devicemap.tensor_sizes(tmp_path).values())
    report = devicemap.plan_report(tmp_path, {"cpu": total // 2, "disk": 2**30})
    planned = report.device_map
    assert "disk" in {str(d) for d in planned.device_counts()}  # split below `model`
    assert "" not in planned
    assert "model" not in planned
    buffers_only = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.buffers(recurse=False)) and not any(True for _ in module.parameters())
    ]
    assert buffers_only == ["model.rotary_emb"]
    for name in buffers_only:
        for buffer, _ in model.get_submodule(name).named_buffers():
            planned.device_for(f"{name}.{buffer}")  # covered: no KeyError
    accelerate.utils.check_device_map(model, report.to_hf())
