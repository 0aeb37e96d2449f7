"""The tight-budget rule's last case on a tiny saved model: GPU 0 is the main device holding only
what fits beside the room to run the largest offloaded block, out of order, while the GPUs after
it hold blocks in order (docs/planning.md, "Tight budgets"). Budgets are scaled down so that no
GPU holds, in order, the block after the offloaded ones beside that room. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import devicemap
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

OFF = ("cpu", "disk")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A saved tiny Llama with its embedding tied to `lm_head`, four times a layer's size, as
    Gemma-2-27B's is about twice a layer's."""
    config = transformers.LlamaConfig(
        vocab_size=4096, hidden_size=64, intermediate_size=256, num_hidden_layers=24,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    return model, path


def sizes(model: Any) -> tuple[int, int]:
    """The embedding's bytes and a layer's."""
    embed = model.model.embed_tokens.weight
    layer = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    return embed.numel() * embed.element_size(), layer


def budgets_for(model: Any, offload: str) -> dict[Any, int]:
    """4 GPUs that hold the embedding but neither it nor a layer beside the room for the other."""
    embed, layer = sizes(model)
    each = embed + layer // 2
    assert embed + layer > each
    assert embed < each
    out: dict[Any, int] = {i: each for i in range(4)}
    out[offload] = 100 * embed
    return out


def main_device(hf: dict[str, Any]) -> Any:
    """`dispatch_model`'s main device, as accelerate 1.15 computes it."""
    gpus = set(hf.values()) - set(OFF)
    return next(iter(gpus)) if gpus else "cpu"


def test_the_map_is_valid_and_gpu_0_runs_the_offloaded_blocks(tiny: tuple[Any, Any]) -> None:
    model, path = tiny
    budgets = budgets_for(model, "cpu")
    for strategy in ["sequential", "balanced", "balanced_low_0"]:
        report = devicemap.plan_report(str(path), budgets, strategy)
        assert report.fits
        hf = report.to_hf()
        accelerate.utils.check_device_map(model, hf)
        assert main_device(hf) == 0
        in_order = [d for d in hf.values() if d not in OFF]
        assert in_order[0] != 0, hf  # GPU 0's blocks come later in the map
        assert "cpu" in hf.values()
        runner = next(d for d in report.devices if d["device"] == "cuda:0")
        assert runner["reserved"] > 0
        assert runner["bytes"] + runner["reserved"] <= budgets[0]
        # Every offloaded block fits in the room GPU 0 keeps.
        _, layer = sizes(model)
        offloaded = [k for k, d in hf.items() if d == "cpu"]
        assert all(k.startswith("model.layers.") for k in offloaded), offloaded
        assert runner["reserved"] >= layer


def test_the_map_loads_and_gives_the_same_logits(tiny: tuple[Any, Any], tmp_path: Any) -> None:
    """The plan's keys, with GPU 0 entries out of order, load with `from_pretrained` and give the
    same logits. With 4 GPUs, the map as planned; with fewer, GPU 0 keeps its entries and the
    other GPUs' go to the CPU (offloaded: GPU 0, the main device, runs them); without a GPU, the
    GPUs' entries load on the CPU and the offloaded blocks from disk (the CPU then runs them)."""
    model, path = tiny
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    offload = "cpu" if gpus else "disk"
    hf = devicemap.plan_report(str(path), budgets_for(model, offload), "sequential").to_hf()
    assert main_device(hf) == 0
    assert next(d for d in hf.values() if d not in OFF) != 0
    if gpus == 0:
        hf = {k: (d if d in OFF else "cpu") for k, d in hf.items()}
    elif gpus < 4:
        hf = {k: (d if d in (*OFF, 0) else "cpu") for k, d in hf.items()}
        assert main_device(hf) == 0
        assert hf["model.norm"] == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        path, device_map=hf, offload_folder=str(tmp_path), local_files_only=True
    ).eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        expected = model(ids).logits
        got = loaded(ids.to("cuda:0" if gpus else "cpu")).logits.cpu()
    torch.testing.assert_close(got, expected)
