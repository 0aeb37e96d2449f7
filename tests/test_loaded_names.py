"""Plans from a checkpoint speak the names of the model `from_pretrained` builds: tiny models
of real architectures, saved sharded with `save_pretrained`, planned from the directory and
loaded with the plan's map, give the same logits as a plain load."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate_utils = pytest.importorskip("accelerate.utils")

import _tiny_models  # noqa: E402
import devicemap  # noqa: E402

ARCHITECTURES = list(_tiny_models.BUILDERS)


class Saved:
    """A tiny model saved sharded, its meta twin and its reference logits."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.dir = root / name
        model = _tiny_models.build(name)
        model.save_pretrained(self.dir, max_shard_size="20KB")
        assert len(list(self.dir.glob("*.safetensors"))) > 1, "the checkpoint is sharded"
        self.cls = type(model)
        self.bytes = sum(t.nbytes for t in model.state_dict().values())
        self.modules = [n for n, _ in model.named_modules()]
        self.no_split = set(model._no_split_modules or [])
        self.classes = {n: type(m).__name__ for n, m in model.named_modules()}
        self.tied = dict(model.all_tied_weights_keys)
        self.state = list(model.state_dict())
        # Buffers no checkpoint stores (rotary `inv_freq`): counted and placed, as the stock
        # path counts them.
        kept = set(self.state)
        self.transient = {n: b.nbytes for n, b in model.named_buffers() if n not in kept}
        with torch.no_grad():
            reference = self.cls.from_pretrained(self.dir).eval()
            self.logits = reference(**_tiny_models.inputs(name)).logits


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Saved]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: Saved(name, root) for name in ARCHITECTURES}


def _device_of(hf_map: dict[str, Any], name: str) -> Any:
    """The device the map gives `name` (its longest covering key)."""
    covering = [key for key in hf_map if key == "" or name == key or name.startswith(key + ".")]
    assert covering, f"{name} is not covered"
    return hf_map[max(covering, key=len)]


def _check_structure(saved: Saved, hf_map: dict[str, Any]) -> None:
    # Keys are module names of the built model, in its module order.
    positions = [saved.modules.index(key) for key in hf_map if key]
    assert positions == sorted(positions), f"map keys out of module order: {list(hf_map)}"
    # Values run first-to-last: cpu, then disk (a tied head sits with its embedding).
    rank = {"cpu": 0, "disk": 1}
    tied = [key for key in hf_map if any(t == key or t.startswith(key + ".") for t in saved.tied)]
    values = [rank[str(d)] for key, d in hf_map.items() if key not in tied]
    assert values == sorted(values), hf_map
    # Tied names sit on one device.
    for target, source in saved.tied.items():
        assert _device_of(hf_map, target) == _device_of(hf_map, source), (target, source, hf_map)
    # No module of a no-split class is split: no key lies strictly inside one.
    whole = [n for n, c in saved.classes.items() if c in saved.no_split and n]
    for key in hf_map:
        for module in whole:
            assert not key.startswith(module + "."), f"{module} ({saved.classes[module]}) is split: {key}"


def _load_and_compare(saved: Saved, hf_map: dict[str, Any], offload: Path) -> None:
    with torch.no_grad():
        model = saved.cls.from_pretrained(saved.dir, device_map=hf_map, offload_folder=offload).eval()
        accelerate_utils.check_device_map(model, hf_map)
        logits = model(**_tiny_models.inputs(saved.name)).logits
    torch.testing.assert_close(logits, saved.logits)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_plan_on_cpu_loads(saved: dict[str, Saved], name: str, tmp_path: Path) -> None:
    model = saved[name]
    report = devicemap.plan_report(model.dir, {"cpu": "1GiB"})
    assert report.fits
    assert not any("checkpoint's own tensor names" in note for note in report.notes), report.notes
    hf_map = report.device_map.to_hf()
    assert set(map(str, hf_map.values())) == {"cpu"}
    _load_and_compare(model, hf_map, tmp_path)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_plan_with_disk_offload_loads(saved: dict[str, Saved], name: str, tmp_path: Path) -> None:
    model = saved[name]
    # The budget is a share of the weights: every tensor of the model is counted, so a plan in
    # the checkpoint's names (missing renamed or tied tensors) would fail the checks below.
    report = devicemap.plan_report(model.dir, {"cpu": model.bytes * 7 // 10, "disk": "1GiB"})
    assert report.fits
    hf_map = report.device_map.to_hf()
    assert set(map(str, hf_map.values())) == {"cpu", "disk"}, hf_map
    _check_structure(model, hf_map)
    _load_and_compare(model, hf_map, tmp_path)


def test_names_are_the_models(saved: dict[str, Saved]) -> None:
    # Vision-language checkpoints are saved under older names; the plan uses the model's.
    for name in ["gemma3", "qwen2-vl", "llava"]:
        budgets = {"cpu": saved[name].bytes * 7 // 10, "disk": "1GiB"}
        hf_map = devicemap.plan(saved[name].dir, budgets).to_hf()
        assert any(key.startswith("model.language_model") for key in hf_map), (name, hf_map)
    # Fused experts: per-expert tensors in the checkpoint, one parameter per layer in the
    # model, planned with the bytes the checkpoint stores for it.
    mixtral = saved["mixtral"]
    stored = devicemap.tensor_sizes(mixtral.dir)
    assert any(".experts.0." in key for key in stored)
    report = devicemap.plan_report(mixtral.dir, {"cpu": "1GiB"})
    assert mixtral.transient  # its rotary embedding's
    assert report.total_bytes == sum(stored.values()) + sum(mixtral.transient.values())
    assert report.tensors == len(mixtral.state) + len(mixtral.transient)


def test_t5_ties_and_order(saved: dict[str, Saved]) -> None:
    t5 = saved["t5"]
    # Stages run encoder before decoder (alphabetical order had the decoder first).
    first, second = devicemap.stages(t5.dir, 2)
    assert "shared" in first, first
    assert "decoder.block" not in first, first
    assert not any(name.startswith("encoder") for name in second), second
    # Two GPUs: every tied copy of `shared` goes where `shared` goes, and covers all tensors.
    half = t5.bytes // 2 + 4096
    hf_map = devicemap.plan(t5.dir, {0: half, 1: half, "cpu": "1GiB"}).to_hf()
    for target in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"]:
        assert _device_of(hf_map, target) == _device_of(hf_map, "shared.weight"), hf_map
    for name in t5.state:
        _device_of(hf_map, name)


def test_key_mapping_and_model_class(saved: dict[str, Saved]) -> None:
    llama = saved["llama"]
    # A key_mapping as from_pretrained takes it renames before the model's own conversions.
    report = devicemap.plan_report(llama.dir, {"cpu": "1GiB"}, key_mapping={r"^lm_head": "head_out"})
    assert report.fits
    # model_class= as a class or a name overrides config.json's architectures.
    by_class = devicemap.plan(llama.dir, {"cpu": "1GiB"}, model_class=transformers.LlamaModel)
    by_name = devicemap.plan(llama.dir, {"cpu": "1GiB"}, model_class="LlamaModel")
    assert by_class.to_hf() == by_name.to_hf()


def test_without_transformers_plans_in_checkpoint_names(
    saved: dict[str, Saved], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_transformers(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    gemma3 = saved["gemma3"]
    report = devicemap.plan_report(gemma3.dir, {"cpu": "1GiB"})
    assert "checkpoint's own tensor names" in report.notes[0], report.notes
    assert "transformers is not installed" in report.notes[0]
    assert "checkpoint's own tensor names" in str(report)
    hf_map = devicemap.plan(gemma3.dir, {"cpu": gemma3.bytes // 2, "disk": "1GiB"}).to_hf()
    assert not any(key.startswith("model.language_model") for key in hf_map), hf_map
    # In the checkpoint's names, parts still run in model order: the vision tower before the
    # language model; T5's encoder before its decoder.
    keys = list(hf_map)
    vision = min(i for i, key in enumerate(keys) if key.startswith("vision_tower"))
    language = min(i for i, key in enumerate(keys) if key.startswith("language_model"))
    assert vision < language, keys
    first, second = devicemap.stages(saved["t5"].dir, 2)
    assert "shared" in first, first
    assert not any(name.startswith("encoder") for name in second), second


def test_unbuildable_class_says_why(saved: dict[str, Saved], tmp_path: Path) -> None:
    llama = saved["llama"]
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in llama.dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (copy / "config.json").write_text(json.dumps(config))
    report = devicemap.plan_report(copy, {"cpu": "1GiB"})
    assert "no model class 'NoSuchModelForCausalLM'" in report.notes[0], report.notes


def test_tie_defaults_match_transformers() -> None:
    # Without transformers, a config.json that omits `tie_word_embeddings` is read by the
    # core's table of class defaults: it must be what each config class declares.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    transformers.logging.set_verbosity_error()
    tied = set()
    for model_type in CONFIG_MAPPING:
        try:
            config = CONFIG_MAPPING[model_type]()
        except Exception:  # a few classes need arguments; they are not in the table either
            continue
        if getattr(config, "tie_word_embeddings", None) is True:
            tied.add(model_type)
    assert set(devicemap._core._tied_by_default()) == tied


def test_command_line_plans_in_the_loaders_names(
    saved: dict[str, Saved], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from devicemap.cli import main

    gemma3 = saved["gemma3"]
    out = tmp_path / "map.json"
    budgets = f"cpu={gemma3.bytes * 7 // 10},disk=1GiB"
    assert main(["plan", str(gemma3.dir), "--max-memory", budgets, "-o", str(out)]) == 0
    hf_map = json.loads(out.read_text())
    assert any(key.startswith("model.language_model") for key in hf_map), hf_map
    _check_structure(gemma3, hf_map)
    assert "checkpoint's own tensor names" not in capsys.readouterr().out


def test_renaming_by_template_is_the_loaders(saved: dict[str, Saved]) -> None:
    # Keys are renamed once per template (numbers stood in for); every key must come out as
    # transformers' renamer gives it called on the key itself, as the loader calls it.
    from devicemap._loaded import _renamed

    for name, model in saved.items():
        meta_model = _meta(model)
        keys = list(devicemap.tensor_sizes(model.dir))
        assert _renamed(meta_model, keys, None) == _renamed(meta_model, keys, None, direct=True), name
    # A mapping that singles out one layer by its number is honoured for that layer.
    llama = _meta(saved["llama"])
    keys = [f"model.layers.{i}.feed.up_proj.weight" for i in range(2)]
    mapping = {r"layers\.1\.feed": "layers.1.mlp"}
    renamed, _ = _renamed(llama, keys, mapping)
    assert renamed == ["model.layers.0.feed.up_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    assert (renamed, []) == _renamed(llama, keys, mapping, direct=True)


def _meta(saved: Saved) -> Any:
    config = saved.cls.config_class.from_pretrained(saved.dir)
    with torch.device("meta"):
        return saved.cls(config)


def test_hub_repository_plans_in_the_loaders_names(
    saved: dict[str, Saved], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Hub source: config.json comes from the repository (through the stand-in; no network).
    from _hub_standin import Repo, StandIn

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    t5 = saved["t5"]
    commit = "a" * 40
    files = {file.name: file for file in t5.dir.iterdir()}
    with StandIn({"org/t5": Repo({commit: files}, {"main": commit})}) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        report = devicemap.plan_report("org/t5", {"cpu": "1GiB"})
    assert not any("checkpoint's own tensor names" in note for note in report.notes), report.notes
    assert report.device_map.to_hf() == devicemap.plan(t5.dir, {"cpu": "1GiB"}).to_hf()
    assert report.tensors == len(t5.state)


def test_fp8_weights_and_scales_as_stored(saved: dict[str, Saved], tmp_path: Path) -> None:
    # FP8 weights with their scales: sized as stored, each scale kept beside its module though
    # the plain model has no such tensor, so nothing stored goes uncounted.
    from devicemap._loaded import loaded
    from safetensors.torch import save_file

    llama = saved["llama"]
    tensors = {}
    for name, tensor in _tiny_models.build("llama").state_dict().items():
        if name.endswith("proj.weight"):
            tensors[name] = tensor.to(torch.float8_e4m3fn)
            tensors[name + "_scale_inv"] = torch.ones(1, 1)
        else:
            tensors[name] = tensor
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((llama.dir / "config.json").read_text())
    stored = devicemap.tensor_sizes(tmp_path)
    read, tied = devicemap._core._checkpoint_sizes(tmp_path)
    found = loaded(tmp_path, read, tied)
    assert found.note is None
    names = found.sizes.names()
    assert sorted(names) == sorted([*stored, *llama.transient])
    at = names.index("model.layers.0.self_attn.q_proj.weight_scale_inv")
    assert names[at - 1] == "model.layers.0.self_attn.q_proj.weight", names[at - 3 : at + 3]
    report = devicemap.plan_report(tmp_path, {"cpu": "1GiB"})
    assert report.total_bytes == sum(stored.values()) + sum(llama.transient.values())
