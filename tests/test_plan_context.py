"""Plans for inference: each decoder layer's KV cache charged where the layer runs, checked
against transformers' real cache after `generate`; the longest context and largest batch that
fit, found exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import devicemap
import pytest
from _models import tiny_llama
from devicemap import _core

GIB = 2**30


def save_tiny(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    model = tiny_llama(
        4, vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024,
    ).eval()  # fmt: skip
    directory = tmp_path / "tiny"
    model.save_pretrained(directory)
    return directory


def hook_device(model: Any, name: str) -> str:
    """The execution device of the accelerate hook that runs module `name` (its own hook, or
    the nearest enclosing module's)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        module = model.get_submodule(".".join(parts[:end]))
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return str(device) if not isinstance(device, int) else f"cuda:{device}"
    raise AssertionError(f"no accelerate hook runs {name}")


def test_each_layer_s_cache_lands_where_the_plan_charged_it(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    directory = save_tiny(tmp_path)
    total = sum(devicemap.tensor_sizes(directory).values())
    per_token = devicemap.kv_cache(directory, 1).total
    # The CPU holds half the weights and some cache; the rest of the weights go to disk, and
    # the layers offloaded there run on the CPU, so their cache is charged to it too.
    budgets = {"cpu": total // 2 + 48 * per_token, "disk": 10 * total}
    tokens = devicemap.plan_report(directory, budgets, "sequential", context=1).max_context()
    assert tokens is not None
    assert 16 < tokens < 1024
    report = devicemap.plan_report(directory, budgets, "sequential", context=tokens)
    assert report.fits
    # Room for exactly this cache: one more token does not fit.
    assert not devicemap.plan_report(directory, budgets, "sequential", context=tokens + 1).fits
    context = report.context
    assert context is not None
    assert context["tokens"] == tokens
    assert context["layer_list"] == "model.layers"
    assert context["per_layer"] == devicemap.kv_cache(directory, tokens).per_layer
    assert context["layer_devices"] == ["cpu"] * 4
    hf = report.to_hf()
    assert "disk" in hf.values(), hf
    cpu = next(d for d in report.devices if d["device"] == "cpu")
    assert cpu["cache"] == report.cache_bytes == sum(context["per_layer"])
    assert cpu["bytes"] + cpu["cache"] + cpu["reserved"] <= cpu["budget"]

    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, device_map=hf, offload_folder=tmp_path / "offload"
    ).eval()
    prompt = torch.tensor([[1, 5, 9, 20, 3]])
    new = tokens - prompt.shape[1] + 1  # a p-token prompt and n new tokens write p + n - 1
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
            return_dict_in_generate=True, pad_token_id=0,
        )  # fmt: skip
    cache = out.past_key_values
    for i, layer in enumerate(cache.layers):
        held = layer.keys.nbytes + layer.values.nbytes
        assert held == context["per_layer"][i], i
        assert str(layer.keys.device) == context["layer_devices"][i]
        assert hook_device(model, f"model.layers.{i}") == context["layer_devices"][i]


def test_cli_reads_the_checkpoint_s_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from devicemap.cli import main

    directory = save_tiny(tmp_path)
    capsys.readouterr()  # save_pretrained's progress
    total = sum(devicemap.tensor_sizes(directory).values())
    budgets = {"cpu": total // 2 + 48 * devicemap.kv_cache(directory, 1).total, "disk": 10 * total}
    tokens = devicemap.plan_report(directory, budgets, "sequential", context=1).max_context()
    flags = ["--max-memory", f"cpu={budgets['cpu']},disk={budgets['disk']}", "--strategy", "sequential"]
    assert main(["plan", str(directory), *flags, "--context", "max", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == f"longest context that fits: {tokens:,} tokens x batch 1\n"
    assert json.loads(out)["verdict"] == f"fits on cpu, disk at {tokens:,} tokens x batch 1"
    assert main(["plan", str(directory), *flags, "--context", str(tokens + 1)]) == 1
    out, _ = capsys.readouterr()
    assert f"does not fit on the CPU at {tokens + 1:,} tokens x batch 1: " in " ".join(out.split())


def test_offloaded_layers_are_charged_to_the_gpu_that_runs_them() -> None:
    config = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "torch_dtype": "float32"}  # fmt: skip
    sizes = {"model.embed_tokens.weight": 2**20}
    for i in range(4):
        sizes[f"model.layers.{i}.self_attn.weight"] = 2**20
        sizes[f"model.layers.{i}.mlp.weight"] = 3 * 2**20
    sizes["lm_head.weight"] = 2**20
    report = devicemap.plan_report(
        sizes, {0: 11 * 2**20, "cpu": 100 * 2**20}, "sequential", context=1024, batch=2, config=config
    )
    assert report.fits
    assert report.spilled
    context = report.context
    assert context is not None
    assert context["layer_devices"] == ["cuda:0"] * 4
    gpu, cpu = report.devices
    assert gpu["cache"] == 4 * 2 * 1024 * 64 * 4
    assert cpu["cache"] == 0
    assert gpu["bytes"] + gpu["cache"] + gpu["reserved"] <= gpu["budget"]
    assert "holds the KV cache of the offloaded layers" in " ".join(report.notes)
    data = report.to_dict()
    assert data["cache_bytes"] == report.cache_bytes
    assert data["context"]["batch"] == 2
    assert "for 1,024 tokens x batch 2: KV cache 2.0 MiB (F32)" in str(report)
    shown = (
        "<PlanReport sequential 18.0 MiB + 2.0 MiB KV cache at 1024 tokens x batch 2 on 2 devices, fits=True>"
    )
    assert repr(report) == shown
    short = devicemap.plan_report(sizes, {0: 8 * 2**20}, context=1024, batch=2, config=config)
    with pytest.raises(ValueError, match=r"of KV cache for 1,024 tokens x batch 2\) does not fit"):
        short.check()


def test_activation_is_kept_apart_from_the_cache() -> None:
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    sizes = {"model.layers.0.w": 100, "model.layers.1.w": 100}
    report = devicemap.plan_report(sizes, {0: 10**9}, context=8, activation="1MiB", config=config)
    gpu = report.devices[0]
    assert gpu["activation"] == 2**20
    assert gpu["cache"] == report.cache_bytes > 0
    assert gpu["spare"] == 10**9 - 200 - gpu["cache"] - 2**20


def test_max_context_fits_and_one_more_token_does_not() -> None:
    sizes = devicemap.example_model("deepseek-v3")
    config = json.loads(_core._example_config("deepseek-v3"))
    budgets = dict.fromkeys(range(8), 128 * GIB)
    report = devicemap.plan_report(sizes, budgets, context=32768, config=config)
    longest = report.max_context()
    assert longest is not None
    assert longest > 32768
    assert devicemap.plan_report(sizes, budgets, context=longest, config=config).fits
    assert not devicemap.plan_report(sizes, budgets, context=longest + 1, config=config).fits
    # At a larger batch, less context; the largest batch at a context, likewise exact.
    assert report.max_context(batch=4) < longest
    widest = report.max_batch()
    assert widest is not None
    assert devicemap.plan_report(sizes, budgets, context=32768, batch=widest, config=config).fits
    assert not devicemap.plan_report(sizes, budgets, context=32768, batch=widest + 1, config=config).fits
    assert report.max_batch(context=longest) == 1


def test_module_source_with_its_config_and_stages(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    with torch.device("meta"):
        model = tiny_llama(4, hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
    report = devicemap.plan_report(model, {0: 10**9}, context=64, kv_dtype=torch.float32, config=model.config)
    # 2 KV heads of 8 (32 / 4 heads) for keys and values, 64 tokens, fp32.
    assert report.context is not None
    assert report.context["per_layer"] == [2 * 2 * 8 * 64 * 4] * 4
    directory = save_tiny(tmp_path)
    plain = devicemap.stages(directory, 2)
    with_cache = devicemap.stages(directory, 2, context=64)
    assert sum(map(len, plain)) > 0
    assert len(with_cache) == 2
    # A mapping has no config.json beside it.
    with pytest.raises(ValueError, match="context= needs the model's config"):
        devicemap.plan({"model.layers.0.w": 1}, {0: 100}, context=8)
