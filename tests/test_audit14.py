"""Issue 14 checked item by item as a new user would (the checklist: /work/notes/audit-14.md):
what was still wrong on main, each with the test that failed before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from devicemap.cli import main


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads COLUMNS: every report here is printed as at an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")


def _plan_lines(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    code = main(["plan", *args])
    out, _ = capsys.readouterr()
    assert code == 0, out
    return out.splitlines()


def _write(path: Path, tensors: dict[str, int]) -> None:
    """A safetensors file of F32 vectors `{name: elements}`, data zero."""
    import json

    header, offset = {}, 0
    for name, elements in tensors.items():
        header[name] = {"dtype": "F32", "shape": [elements], "data_offsets": [offset, offset + 4 * elements]}
        offset += 4 * elements
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(offset))


def test_a_long_largest_block_name_is_cut_as_notes_are(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T5's tied embeddings make the largest block 'shared + encoder.embed_tokens + ...': the
    header line was cut by rich with a trailing space and the size alone on the next line."""
    tied = "shared + encoder.embed_tokens + decoder.embed_tokens + lm_head.w[x]"
    name = tied.replace(" + ", "_").replace(".", "_")
    _write(tmp_path / "model.safetensors", {f"{name}.weight": 4096, "block.0.w": 16, "block.1.w": 16})
    monkeypatch.chdir(tmp_path)  # a short path: a path is never cut
    lines = _plan_lines(capsys, "model.safetensors", "--max-memory", "cpu=1GiB")
    header = [line for line in lines[:4] if not line.startswith("device")]
    assert not [line for line in lines if line != line.rstrip()], lines
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    # Read as text, not rich markup: the brackets stay.
    assert "[x]" in " ".join(header), header
    largest = next(i for i, line in enumerate(lines) if line.startswith("largest block"))
    assert lines[largest + 1].startswith("  "), lines


def test_every_plan_option_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    """`devicemap plan --help`: --strategy had no text, and the checkpoint and --dtype texts did
    not name what they take (a pytorch_model.bin; bf16, fp8)."""
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--strategy {sequential,balanced,balanced_low_0} how" in out, out
    assert "pytorch_model.bin" in out
    assert "bf16" in out.split("--dtype DTYPE", 2)[2].split("--reserve")[0]
    assert "default 0.1" in out.split("--reserve RESERVE", 2)[2]


def test_context_without_a_config_names_the_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A checkpoint without config.json and --context: the error spoke the API's `context=` and
    `config=`, not the command's --context and --config."""
    _write(tmp_path / "model.safetensors", {"model.layers.0.w": 16})
    assert main(["plan", str(tmp_path), "--max-memory", "cpu=1GiB", "--context", "16"]) == 2
    err = capsys.readouterr().err
    assert "--config" in err, err
    assert "config=" not in err, err
    assert err.startswith(f"error: {tmp_path}: no config.json"), err


@pytest.mark.parametrize("family", ["mixtral", "phi3"])
def test_context_plans_for_mixtral_and_phi3_size_transformers_cache(family: str) -> None:
    """Two of the issue's architectures were refused with --context ("kv_cache does not know
    model_type 'mixtral'"): the cache is sized as transformers' own caches hold it, with and
    without a sliding window."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import devicemap
    from test_kv_cache import DECODE_STEPS, SMALL, WINDOW, measured

    for window in (None, WINDOW):
        if family == "mixtral":
            experts = {"num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2}
            config = transformers.MixtralConfig(**SMALL, **experts, sliding_window=window)
        else:
            extra = {"pad_token_id": 0}
            config = transformers.Phi3Config(**SMALL, **extra, num_hidden_layers=2, sliding_window=window)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        for prompt in (WINDOW - 3, WINDOW + 3):
            for mode in ("dynamic", "static"):
                real = measured(model, prompt, 2, mode)
                ours = devicemap.kv_cache(
                    model.config, prompt + DECODE_STEPS, batch=2, dtype=torch.float32, cache=mode
                )
                assert ours.per_layer == real, (family, window, prompt, mode, ours.layer_kinds)
        # A config.json naming only the model_type means the class's defaults.
        bare = devicemap.kv_cache({"model_type": config.model_type}, 100)
        assert bare.per_layer == devicemap.kv_cache(type(config)(), 100).per_layer


def _qwen2_vl(window: int | None) -> object:
    import transformers
    from test_kv_cache import SMALL

    text = {**SMALL, "num_hidden_layers": 3, "model_type": "qwen2_vl_text", "max_window_layers": 1}
    text.update(use_sliding_window=window is not None, sliding_window=window)
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [1, 1, 2]}
    vision = {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
    tokens = {"image_token_id": 63, "video_token_id": 62}
    return transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)


@pytest.mark.parametrize("family", ["qwen2", "qwen2_vl"])
def test_context_plans_for_qwen2_and_qwen2_vl_size_transformers_cache(family: str) -> None:
    """Qwen2-VL (one of the issue's architectures) and Qwen2 were refused with --context: the
    cache is sized as transformers' caches hold it, sliding only from `max_window_layers` on and
    only with `use_sliding_window`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import devicemap
    from test_kv_cache import DECODE_STEPS, SMALL, WINDOW, measured

    for window in (None, WINDOW):
        if family == "qwen2":
            sliding = {"use_sliding_window": window is not None, "sliding_window": window}
            sliding["max_window_layers"] = 1
            config: Any = transformers.Qwen2Config(**SMALL, **sliding, num_hidden_layers=3)
            model = transformers.AutoModelForCausalLM.from_config(config).eval()
        else:
            config = _qwen2_vl(window)
            model = transformers.Qwen2VLForConditionalGeneration(config).eval()
            model.config.vocab_size = config.text_config.vocab_size  # for `measured`'s prompts
        kinds = devicemap.kv_cache(config, 10).layer_kinds
        assert kinds == (["full_attention"] + ["sliding_attention"] * 2 if window else ["full_attention"] * 3)
        for prompt in (WINDOW - 3, WINDOW + 3):
            for mode in ("dynamic", "static"):
                real = measured(model, prompt, 2, mode)
                ours = devicemap.kv_cache(
                    config, prompt + DECODE_STEPS, batch=2, dtype=torch.float32, cache=mode
                )
                assert ours.per_layer == real, (family, window, prompt, mode, ours.layer_kinds)


def test_str_of_a_report_keeps_a_long_largest_block_within_80_columns() -> None:
    """`print(report)` of T5 (its four tied embeddings are one block) printed the largest-block
    line at 89 characters."""
    import devicemap

    names = ["shared", "encoder.embed_tokens", "decoder.embed_tokens", "lm_head"]
    sizes = {f"{name}.weight": 2**20 for name in names}
    sizes.update({f"encoder.block.{i}.w": 2**10 for i in range(2)})
    report = devicemap.plan_report(sizes, {"cpu": 2**30}, tied=[[f"{n}.weight" for n in names]])
    lines = str(report).splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    largest = next(i for i, line in enumerate(lines) if line.startswith("largest block"))
    assert lines[largest + 1].startswith("  "), lines
    assert "MiB)" in lines[largest + 1], lines


def _image_inputs(name: str) -> dict[str, Any]:
    """Text with one image (token 95) for the tiny `name` of tests/_tiny_models.py."""
    import torch

    torch.manual_seed(1)
    if name == "qwen2-vl":  # 2 x 2 patches of 14 pixels, two frames, merged 2 x 2 into one token
        ids = torch.tensor([[1, 5, 95, 9, 13]])
        patches = torch.randn(4, 3 * 2 * 14 * 14)
        grid = torch.tensor([[1, 2, 2]])
        return {
            "input_ids": ids,
            "mm_token_type_ids": (ids == 95).long(),
            "pixel_values": patches,
            "image_grid_thw": grid,
        }
    return {
        "input_ids": torch.tensor([[1, 5, 95, 95, 95, 95, 9, 13]]),
        "pixel_values": torch.randn(1, 3, 28, 28),
    }


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["llava", "qwen2-vl"])
def test_a_vision_tower_split_over_cpu_and_disk_runs_an_image(name: str, tmp_path: Path) -> None:
    """The tiny-model tests run text only, which never calls the vision tower: here an image runs
    through a tower the plan splits between cpu and disk, with the plain load's logits. (Gemma-3's
    tiny SigLIP has an attention-pooling head, which accelerate cannot run offloaded, planned by
    devicemap or by `device_map="auto"` alike; the published Gemma-3 has no head.)"""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import _tiny_models
    import devicemap

    model = _tiny_models.build(name)
    model.save_pretrained(tmp_path / "model", max_shard_size="20KB")
    total = sum(t.nbytes for t in model.state_dict().values())
    hf_map = devicemap.plan(tmp_path / "model", {"cpu": total * 7 // 10, "disk": "1GiB"}).to_hf()
    tower = [key for key in hf_map if key.startswith(("model.visual", "model.vision_tower"))]
    assert {hf_map[key] for key in tower} == {"cpu", "disk"}, hf_map
    cls = type(model)
    with torch.no_grad():
        plain = cls.from_pretrained(tmp_path / "model").eval()(**_image_inputs(name)).logits
        loaded = cls.from_pretrained(
            tmp_path / "model", device_map=hf_map, offload_folder=tmp_path / "offload"
        )
        torch.testing.assert_close(loaded.eval()(**_image_inputs(name)).logits, plain)
