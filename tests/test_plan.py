"""`plan`: every tensor placed once, budgets held, blocks whole, ties together; agreement with
accelerate's `infer_auto_device_map` where the documented difference allows; a plan loaded by
transformers with cpu and disk offload gives the same outputs; bad input refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import devicemap
import pytest
from _models import tiny_llama
from devicemap import DeviceMap

GIB = 2**30


def device_of(hf: dict[str, Any], name: str) -> Any:
    """The device of `name` under a compact HF map: exactly one key may cover it."""
    covering = [key for key in hf if key == "" or name == key or name.startswith(key + ".")]
    assert len(covering) == 1, f"{name} is covered by {covering}"
    return hf[covering[0]]


def per_device(hf: dict[str, Any], sizes: dict[str, int]) -> dict[Any, int]:
    used: dict[Any, int] = defaultdict(int)
    for name, size in sizes.items():
        used[device_of(hf, name)] += size
    return used


def block_of(name: str) -> str:
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return name


BUDGETS = [
    {i: "20GiB" for i in range(8)},
    {**{i: "8GiB" for i in range(4)}, "cpu": "40GiB", "disk": "1TiB"},
    {0: "30GiB", 1: "90GiB", 2: "10GiB", "cpu": "200GiB"},
    {i: 18 * GIB for i in range(8)},
]


@pytest.mark.parametrize("strategy", ["sequential", "balanced", "balanced_low_0"])
@pytest.mark.parametrize("budgets", BUDGETS)
def test_invariants_on_llama_70b(strategy: str, budgets: dict[Any, Any]) -> None:
    sizes = devicemap.example_model("llama-3-70b")
    report = devicemap.plan_report(sizes, budgets, strategy)
    hf = report.to_hf()
    used = per_device(hf, sizes)  # also: every tensor covered by exactly one key
    assert sum(used.values()) == sum(sizes.values())
    by_device = {d["device"]: d for d in report.devices}
    for device, entry in by_device.items():
        key = int(device.split(":")[1]) if device.startswith("cuda:") else device
        assert used.get(key, 0) == entry["bytes"]
        assert entry["bytes"] + entry["reserved"] <= entry["budget"]
    blocks: dict[str, set[Any]] = defaultdict(set)
    for name in sizes:
        blocks[block_of(name)].add(device_of(hf, name))
    assert all(len(devices) == 1 for devices in blocks.values())
    if report.fits:
        assert devicemap.plan(sizes, budgets, strategy) == report.device_map


@pytest.mark.parametrize("budgets", BUDGETS)
def test_balanced_never_worse_than_sequential(budgets: dict[Any, Any]) -> None:
    sizes = devicemap.example_model("deepseek-v3")
    sequential = devicemap.plan_report(sizes, budgets, "sequential")
    balanced = devicemap.plan_report(sizes, budgets, "balanced")

    def off_gpu(report: devicemap.PlanReport) -> int:
        return sum(d["bytes"] for d in report.devices if not d["device"].startswith("cuda"))

    def top_share(report: devicemap.PlanReport) -> float:
        return max(d["share"] for d in report.devices if d["device"].startswith("cuda"))

    assert off_gpu(balanced) <= off_gpu(sequential)
    assert balanced.missing_bytes <= sequential.missing_bytes
    assert top_share(balanced) <= top_share(sequential) + 1e-9


def test_balanced_evens_out_a_dense_model() -> None:
    # accelerate leaves the last of 8 x 80 GiB GPUs with 9.9 GiB of Llama-3-70B and the others
    # with 16.3-17.5; the balanced plan keeps every GPU within one layer of the mean.
    report = devicemap.plan_report(devicemap.example_model("llama-3-70b"), {i: "80GiB" for i in range(8)})
    loads = [d["bytes"] for d in report.devices]
    layer = 1.7 * GIB
    assert max(loads) - min(loads) <= layer


def test_no_split_patterns_and_ties() -> None:
    sizes = {
        "embed.weight": 4 * GIB,
        **{f"blocks.{i}.{part}.weight": GIB for i in range(6) for part in ("attn", "mlp")},
        "head.weight": 4 * GIB,
    }
    # Ties: the head shares the embedding's storage, counted once and placed with it.
    report = devicemap.plan_report(
        sizes, {0: "6GiB", 1: "6GiB", 2: "6GiB"}, "sequential", tied=[["embed.weight", "head.weight"]]
    )
    hf = report.to_hf()
    assert device_of(hf, "head.weight") == device_of(hf, "embed.weight")
    assert report.total_bytes == sum(sizes.values()) - 4 * GIB
    # A pattern that keeps only the mlp whole lets attn and mlp of one block part.
    split = devicemap.plan_report(
        sizes, {i: "4GiB" for i in range(8)}, "sequential", no_split=["blocks.*.mlp"]
    )
    assert split.fits
    assert split.blocks == 2 + 12
    whole = devicemap.plan_report(sizes, {i: "4GiB" for i in range(8)}, "sequential", no_split=["blocks.*"])
    assert whole.blocks == 2 + 6
    hf = whole.to_hf()
    for i in range(6):
        assert device_of(hf, f"blocks.{i}.attn.weight") == device_of(hf, f"blocks.{i}.mlp.weight")


def test_spill_reserve_and_report() -> None:
    sizes = devicemap.example_model("llama-3-70b")
    report = devicemap.plan_report(sizes, {0: "40GiB", "cpu": "60GiB", "disk": "1TiB"}, "sequential")
    assert report.fits
    gpu, cpu, disk = report.devices
    assert gpu["reserved"] >= max(size for _, size, _ in report.spilled)
    assert cpu["bytes"] > 0
    assert disk["bytes"] > 0
    assert {device for _, _, device in report.spilled} == {"cpu", "disk"}
    assert any("keeps" in note for note in report.notes)
    text = str(report)
    assert "cuda:0" in text
    assert "disk" in text
    data = report.to_dict()
    json.dumps(data)
    assert data["device_map"] == report.to_hf()


@pytest.mark.parametrize("strategy", ["sequential", "balanced", "balanced_low_0"])
def test_reserve_sits_on_the_gpu_that_runs_offloaded_blocks(strategy: str) -> None:
    """GPU 0's budget less the reserve cannot hold a layer, so GPU 0 stays empty: the first GPU
    of the map (GPU 1) runs the offloaded layers, and it must keep the room for them."""
    mib = 2**20
    sizes = {f"model.layers.{i}.weight": 4 * mib for i in range(10)}
    budgets = {0: 6 * mib, 1: 10 * mib, 2: 10 * mib, "cpu": 100 * mib}
    report = devicemap.plan_report(sizes, budgets, strategy)
    assert report.fits
    gpu0, gpu1, gpu2, cpu = report.devices
    assert gpu0["bytes"] == 0
    assert gpu0["reserved"] == 0
    assert gpu1["reserved"] == 4 * mib
    assert gpu1["bytes"] == 4 * mib
    assert gpu2["bytes"] == 8 * mib
    assert gpu2["reserved"] == 0
    assert cpu["bytes"] == 7 * 4 * mib
    hf = report.to_hf()
    assert next(d for d in hf.values() if isinstance(d, int)) == 1  # what dispatch_model runs them on
    assert any(note.startswith("cuda:1 keeps 4.0 MiB free") for note in report.notes)


def test_summary_is_the_lookup_of_the_plan() -> None:
    sizes = devicemap.example_model("llama-3-70b")
    report = devicemap.plan_report(sizes, {0: "40GiB", 1: "40GiB", "cpu": "60GiB", "disk": "1TiB"})
    summary = report.summary
    looked_up = report.device_map.summary(sizes)
    assert summary.bytes == looked_up.bytes
    assert summary.tensors == looked_up.tensors
    assert summary.entries == looked_up.entries
    for entry in report.devices:
        key = devicemap.Device.from_str(entry["device"])
        assert summary.bytes is not None
        assert summary.tensors is not None
        assert summary.bytes.get(key, 0) == entry["bytes"]
        assert summary.tensors.get(key, 0) == entry["tensors"]
        assert summary.entries.get(key, 0) == entry["entries"]
    assert "map entries" in str(report)
    # Tied storage counts once in the plan's summary, as in its budgets.
    tied = devicemap.plan_report(
        {"embed.weight": 8, "layers.0.w": 4, "head.weight": 8},
        {0: 100},
        tied=[["embed.weight", "head.weight"]],
    )
    assert tied.summary.bytes == {devicemap.Device.gpu(0): 12}
    assert tied.summary.tensors == {devicemap.Device.gpu(0): 3}
    # Not fitting: what no device takes is mapped to meta, and nothing is left uncovered.
    short = devicemap.plan_report(sizes, {0: "10GiB"})
    assert short.summary.bytes is not None
    assert short.summary.bytes[devicemap.Device.from_str("meta")] == short.missing_bytes > 0
    assert short.summary.uncovered_tensors == 0


def test_bad_input() -> None:
    sizes = {"a.weight": 10, "b.weight": 20}
    with pytest.raises(ValueError, match=r"Unknown max_memory key 'tpu'"):
        devicemap.plan(sizes, {"tpu": 10})
    with pytest.raises(ValueError, match=r"max_memory\['cpu'\] = '-5GiB'"):
        devicemap.plan(sizes, {"cpu": "-5GiB"})
    with pytest.raises(ValueError, match=r"max_memory\[0\] = nan"):
        devicemap.plan(sizes, {0: float("nan")})
    with pytest.raises(ValueError, match=r"max_memory\[0\] = '20XB'"):
        devicemap.plan(sizes, {0: "20XB"})
    with pytest.raises(ValueError, match=r"max_memory\[0\] = -1"):
        devicemap.plan(sizes, {0: -1})
    with pytest.raises(ValueError, match="Every budget is zero"):
        devicemap.plan(sizes, {0: 0, "cpu": 0})
    with pytest.raises(ValueError, match="Nothing to plan"):
        devicemap.plan({}, {0: 100})
    with pytest.raises(ValueError, match=r"does not fit: 30 B .* add 30 B or more"):
        devicemap.plan(sizes, {0: 5})
    with pytest.raises(ValueError, match="Unknown strategy 'greedy'"):
        devicemap.plan(sizes, {0: 100}, "greedy")
    with pytest.raises(TypeError, match="Size of tensor 'a' must be an int"):
        devicemap.plan({"a": "10"}, {0: 100})
    with pytest.raises(ValueError, match="Size of tensor 'a' must be a non-negative int"):
        devicemap.plan({"a": -1}, {0: 100})
    with pytest.raises(ValueError, match="Tensor 'a' is listed twice"):
        devicemap.plan([("a", 1), ("a", 2)], {0: 100})
    with pytest.raises(ValueError, match=r"Invalid tensor name 'a..b'"):
        devicemap.plan({"a..b": 1}, {0: 100})
    with pytest.raises(ValueError, match="Invalid no_split pattern"):
        devicemap.plan(sizes, {0: 100}, no_split=["a..*"])
    with pytest.raises(ValueError, match="dtype= re-sizes tensors"):
        devicemap.plan(sizes, {0: 100}, dtype="float16")
    with pytest.raises(TypeError, match="source must be"):
        devicemap.plan(42, {0: 100})
    with pytest.raises(TypeError, match=r"no_split must be a list of str, got str 'a\.\*'"):
        devicemap.plan(sizes, {0: 100}, no_split="a.*")
    with pytest.raises(TypeError, match="each tied group must be a list of str, got str 'ab'"):
        devicemap.plan(sizes, {0: 100}, tied=["ab"])
    with pytest.raises(TypeError, match=r"must be a \(name, bytes\) pair, got tuple \('a',\)"):
        devicemap.plan([("a",)], {0: 100})
    with pytest.raises(TypeError, match="expected a mapping of tensor names to bytes, got tuple"):
        devicemap._core._plan((("a", 1),), {0: 100})
    with pytest.raises(ValueError, match="n must be >= 1"):
        devicemap.stages(sizes, 0)
    with pytest.raises(ValueError, match="Cannot split 2 blocks into 3 stages"):
        devicemap.stages(sizes, 3)


def test_max_memory_units_as_accelerate() -> None:
    convert = pytest.importorskip("accelerate.utils").convert_file_size_to_int
    sizes = {"w": 1}
    for text in ["20GiB", "20GB", "512MiB", "1.5GiB", "8Gb", "300KiB", "7MB"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "8Gb" is bits, and says so
            report = devicemap.plan_report(sizes, {0: text})
        assert report.devices[0]["budget"] == convert(text), text


def test_stages_balance_bytes() -> None:
    sizes = devicemap.example_model("llama-3-70b")
    stages = devicemap.stages(sizes, 4)
    assert len(stages) == 4
    assert stages[0][0] == "model.embed_tokens"
    assert stages[-1][-1] == "lm_head"
    totals = []
    for names in stages:
        totals.append(sum(size for tensor, size in sizes.items() if any(
            tensor == n or tensor.startswith(n + ".") for n in names)))  # fmt: skip
    assert sum(totals) == sum(sizes.values())
    assert max(totals) - min(totals) <= 2.1 * GIB


# --- against accelerate, on a meta model built from a transformers config ------------------


def meta_llama(layers: int = 8, tie: bool = False) -> Any:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
    )  # fmt: skip
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(config)


def test_sequential_matches_accelerate_when_layers_spill() -> None:
    accelerate = pytest.importorskip("accelerate")
    model = meta_llama()
    report = devicemap.plan_report(model, {0: 10**9}, "sequential")
    layer = report.largest_block[1]
    # Both keep one layer free on GPU 0 when layers go to the CPU (accelerate always does).
    budgets = {0: 3 * layer + layer // 2, 1: 2 * layer + layer // 3, "cpu": 100 * layer}
    ours = devicemap.plan_report(model, budgets, "sequential")
    theirs = accelerate.infer_auto_device_map(
        model, max_memory=dict(budgets), no_split_module_classes=model._no_split_modules
    )
    assert ours.spilled
    hf = ours.to_hf()
    for name, _ in model.named_parameters():
        assert device_of(hf, name) == device_of(theirs, name), name


def test_balanced_beats_accelerate_balanced() -> None:
    accelerate = pytest.importorskip("accelerate")
    model = meta_llama(layers=12)
    layer = devicemap.plan_report(model, {0: 10**9}).largest_block[1]
    budgets = {i: 5 * layer for i in range(4)}
    balanced = accelerate.utils.get_balanced_memory(
        model, max_memory=dict(budgets), no_split_module_classes=model._no_split_modules
    )
    theirs = accelerate.infer_auto_device_map(
        model, max_memory=balanced, no_split_module_classes=model._no_split_modules
    )
    ours = devicemap.plan_report(model, budgets, "balanced")
    sizes = dict(devicemap._core._module_sizes(model)[0])
    their_loads = per_device(theirs, sizes)
    our_top = max(d["bytes"] for d in ours.devices)
    assert our_top <= max(v for k, v in their_loads.items() if isinstance(k, int))
    assert sum(v for k, v in their_loads.items() if not isinstance(k, int)) >= 0


def test_module_sizes_follow_the_dtype_and_keep_ties() -> None:
    model = meta_llama(tie=True)
    full, tied = devicemap._core._module_sizes(model)
    half, tied_half = devicemap._core._module_sizes(model, "bfloat16")
    assert tied == tied_half == [["model.embed_tokens.weight", "lm_head.weight"]]
    assert [name for name, _ in full] == [name for name, _ in half]
    params = dict(model.named_parameters())
    for (name, size), (_, resized) in zip(full, half, strict=True):
        if name == "lm_head.weight":
            assert size == resized == 0  # the embedding's storage, counted there
        elif name in params:
            assert resized * 2 == size == params[name].nbytes, name


def test_module_source_ties_and_no_split() -> None:
    model = meta_llama(tie=True)
    report = devicemap.plan_report(model, {0: 10**9})
    assert report.to_hf() == {"": 0}
    layer = report.largest_block[1]
    split = devicemap.plan_report(model, {0: 2 * layer, 1: 2 * layer, 2: 10 * layer}, "sequential")
    hf = split.to_hf()
    assert device_of(hf, "lm_head.weight") == device_of(hf, "model.embed_tokens.weight")
    assert split.blocks == 8 + 3  # layers, embed+head tied, norm, rotary buffer


# --- end to end: plan a saved checkpoint, load it with offload, compare outputs ------------


def save_tiny(tmp_path: Path) -> tuple[Path, Any]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    model = tiny_llama(
        6, vocab_size=256, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
    ).eval()  # fmt: skip
    directory = tmp_path / "tiny"
    model.save_pretrained(directory, max_shard_size="30KB")
    assert (directory / "model.safetensors.index.json").exists()
    return directory, model


def test_end_to_end_cpu_and_disk_offload(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    directory, _ = save_tiny(tmp_path)
    sizes = devicemap.tensor_sizes(directory)
    assert "lm_head.weight" not in sizes  # tied: stored once
    total = sum(sizes.values())
    report = devicemap.plan_report(directory, {"cpu": total // 2, "disk": 10 * total}, "sequential")
    assert report.fits
    hf = report.to_hf()
    assert "disk" in hf.values()
    assert "cpu" in hf.values()
    assert device_of(hf, "lm_head.weight") == device_of(hf, "model.embed_tokens.weight")

    offloaded = transformers.AutoModelForCausalLM.from_pretrained(
        directory, device_map=hf, offload_folder=tmp_path / "offload"
    ).eval()
    whole = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = torch.tensor([[1, 5, 9, 200, 3, 7]])
    with torch.no_grad():
        expected = whole(ids).logits
        got = offloaded(ids).logits
    torch.testing.assert_close(got, expected)


def test_dispatch_model_accepts_the_plan(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    accelerate = pytest.importorskip("accelerate")
    _, model = save_tiny(tmp_path)
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        expected = model(ids).logits
    # The map with cpu and disk parts passes accelerate's own check of a device map ...
    total = sum(size for _, size in devicemap._core._module_sizes(model)[0])
    offloaded = devicemap.plan_report(model, {"cpu": total // 2, "disk": 10**9}, "sequential").to_hf()
    assert {"cpu", "disk"} <= set(offloaded.values())
    accelerate.utils.check_device_map(model, offloaded)
    # ... and a plan dispatch_model runs (on this CPU-only machine: the CPU budget holds it).
    whole = devicemap.plan(model, {"cpu": 10**9})
    dispatched = accelerate.dispatch_model(model, device_map=whole.to_hf())
    with torch.no_grad():
        got = dispatched(ids).logits
    torch.testing.assert_close(got, expected)


def test_device_map_to_hf() -> None:
    dm = DeviceMap.from_hf({"a": 0, "b": "cpu", "c": "disk"})
    assert dm.to_hf() == {"a": 0, "b": "cpu", "c": "disk"}


# --- under torchrun: each rank its own GPU and the same stages ------------------------------

RANK_SCRIPT = """
import json, os, sys
import torch.distributed as dist
import devicemap

dist.init_process_group("gloo")
rank = dist.get_rank()
device = devicemap.pick_device("local_rank")
stages = devicemap.stages(devicemap.example_model("llama-3-70b"), dist.get_world_size())
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, stages)
assert all(g == stages for g in gathered), "ranks disagree on the stages"
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"device": str(device), "stage": stages[rank], "world": dist.get_world_size()}, f)
dist.destroy_process_group()
"""


def test_torchrun_two_ranks(tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed")
    sys.path.insert(0, str(Path(__file__).parent))
    from _fake_nvml import gpus, scenario_env

    pytest.importorskip("torch.distributed.run")
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    env = scenario_env(tmp_path, gpus(2))
    env.pop("DEVICEMAP_DEVICE", None)
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29561",
         str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["device"] for r in ranks] == ["cuda:0", "cuda:1"]
    expected = devicemap.stages(devicemap.example_model("llama-3-70b"), 2)
    assert [r["stage"] for r in ranks] == expected
