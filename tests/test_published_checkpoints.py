"""Plans from checkpoints at published sizes, against the stock path on the same model.

`tests/test_plan_published.py` plans each published architecture's meta model; here the same
model is written as its checkpoint is published: the names and tensors transformers'
`save_pretrained` writes (tied copies removed, conversions reverted: vision-language models
under their older names, MoE experts one tensor per expert), in safetensors shards of about
5 GB with real headers and sparse data, and `config.json` naming the class. The plan from the
directory must cover the model `from_pretrained` builds (`accelerate.utils.check_device_map`),
keep ties and no-split modules whole, hold the budgets and meet the tight-budget rule and the
fullest-GPU bound against transformers' `_get_device_map`, for budgets from roomy to very tight.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import devicemap
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from _hub_standin import BITS, write_safetensors  # noqa: E402
from _planning_models import CONFIGS  # noqa: E402
from test_plan_published import Meta, _built, budget_sets, check_against_stock  # noqa: E402

SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}
SHARD_BYTES = 5 * 10**9


def saved_tensors(model: Any) -> list[tuple[str, str, list[int]]]:
    """`(name, dtype, shape)` of what `save_pretrained` writes for `model`, in its order."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = remove_tied_weights_from_state_dict(model.state_dict(), model)
    state = revert_weight_conversion(model, state)
    return [(name, SAFETENSORS_DTYPES[t.dtype], list(t.shape)) for name, t in state.items()]


def write_published(model: Any, directory: Path) -> int:
    """`model` as its published checkpoint (sparse shards of about 5 GB in the saved order, each
    ordered as the safetensors library orders it: wider dtypes first, then by name; an index;
    config.json naming the class); the tensor count."""
    directory.mkdir()
    model.config.architectures = [type(model).__name__]
    model.config.to_json_file(str(directory / "config.json"))
    tensors = saved_tensors(model)
    shards: list[list[tuple[str, str, list[int]]]] = [[]]
    size = 0
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * BITS[dtype] // 8
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, dtype, shape))
        size += nbytes
    weight_map = {}
    for index, shard in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(directory / file, sorted(shard, key=lambda t: (-BITS[t[1]], t[0])))
        weight_map.update((name, file) for name, _, _ in shard)
    index_json = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_json))
    return len(tensors)


@pytest.fixture(scope="module", params=list(CONFIGS))
def published(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Meta, Path]:
    name = request.param
    meta = _built.setdefault(name, Meta(name))
    directory = tmp_path_factory.mktemp("published") / name
    write_published(meta.model, directory)
    # A checkpoint holds no non-persistent buffers (rotary `inv_freq`): the plan need not cover
    # them (transformers puts an uncovered one on the CPU and the rotary forwards move it to
    # the input's device), as `check_device_map`, which reads `state_dict()`, does not.
    stored = copy.copy(meta)
    persistent = set(meta.model.state_dict())
    stored.sizes = {name: size for name, size in meta.sizes.items() if name in persistent}
    return stored, directory


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("strategy", ["sequential", "balanced"])
def test_published_checkpoints_against_the_stock_path(published: tuple[Meta, Path], strategy: str) -> None:
    meta, directory = published
    for budgets in budget_sets(meta):
        report = devicemap.plan_report(directory, budgets, strategy)
        assert not any("checkpoint's own tensor names" in note for note in report.notes), report.notes
        check_against_stock(report, meta, strategy, budgets)


def test_published_checkpoints_are_written_as_transformers_saves_them(tmp_path: Path) -> None:
    """The writer gives what the issue found in published checkpoints: a vision-language model's
    older names, per-expert MoE tensors, and T5 storing only `shared` of its tied embeddings."""
    names = {}
    for name in ["qwen2-vl-7b", "mixtral-8x7b", "t5-large"]:
        meta = _built.setdefault(name, Meta(name))
        names[name] = {t[0] for t in saved_tensors(meta.model)}
    assert "visual.patch_embed.proj.weight" in names["qwen2-vl-7b"]
    assert "model.visual.patch_embed.proj.weight" not in names["qwen2-vl-7b"]
    assert "model.layers.0.block_sparse_moe.experts.7.w1.weight" in names["mixtral-8x7b"]
    assert "shared.weight" in names["t5-large"]
    assert not {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"} & names["t5-large"]
