"""A plan at a context of a model on the Hub (stand-in: `_hub_standin.py`): its config.json
and its headers are read at one commit, the revision resolved once, and the plan is the plan
of the same files on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import devicemap
import pytest
from _hub_standin import COMMIT_A, Repo, StandIn, llama_tensors, write_checkpoint

CONFIG = {
    "model_type": "llama",
    "tie_word_embeddings": False,
    "num_hidden_layers": 4,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "torch_dtype": "bfloat16",
}
BUDGETS = {0: "1MiB", 1: "1MiB", "cpu": "64MiB"}
RESOLVE = "/org/llama/resolve/main/config.json"


@pytest.fixture
def local(tmp_path: Path) -> Path:
    write_checkpoint(tmp_path / "llama", llama_tensors(4), 2, CONFIG)
    return tmp_path / "llama"


@pytest.fixture
def hub(local: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "DEVICEMAP_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    files = {p.name: p for p in local.iterdir()}
    with StandIn({"org/llama": Repo({COMMIT_A: files}, {"main": COMMIT_A})}) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        yield standin


def resolving(hub: StandIn) -> list[str]:
    """The requests that resolve the branch (asked by name, not by commit)."""
    return [s.path for s in hub.requests() if "/main" in s.path]


def test_a_plan_at_a_context_resolves_the_branch_once(hub: StandIn, local: Path) -> None:
    report = devicemap.plan_report("org/llama", BUDGETS, context=512)
    assert report.to_dict() == devicemap.plan_report(str(local), BUDGETS, context=512).to_dict()
    # The branch resolved by one request (the listing of it asked for meanwhile, cold).
    assert sorted(resolving(hub)) == ["/api/models/org/llama/revision/main", RESOLVE]
    hub.clear()
    stages = devicemap.stages("org/llama", 2, context=512)
    assert stages == devicemap.stages(str(local), 2, context=512)
    assert [s.path for s in hub.requests()] == [RESOLVE]
    hub.clear()
    plan = devicemap.plan("org/llama", BUDGETS, context=512)
    assert plan.to_hf() == devicemap.plan(str(local), BUDGETS, context=512).to_hf()
    assert [s.path for s in hub.requests()] == [RESOLVE]


def test_a_hub_config_missing_is_said(hub: StandIn, local: Path) -> None:
    (local / "config.json").unlink()
    del hub.repos["org/llama"].commits[COMMIT_A]["config.json"]
    with pytest.raises(ValueError, match=r"hf://org/llama@a{40}/config\.json"):
        devicemap.plan_report("org/llama", BUDGETS, context=512)


def test_the_command_line_at_a_context_resolves_the_branch_once(
    hub: StandIn, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from devicemap.cli import main

    args = ["--max-memory", "0=1MiB,1=1MiB,cpu=64MiB", "--context", "512", "--json"]
    for run in range(2):
        hub.clear()
        assert main(["plan", "org/llama", *args]) == 0
        remote = json.loads(capsys.readouterr().out)
        resolved = [RESOLVE] if run else ["/api/models/org/llama/revision/main", RESOLVE]
        assert sorted(resolving(hub)) == resolved
    assert main(["plan", str(local), *args]) == 0
    assert {**remote, "source": ""} == {**json.loads(capsys.readouterr().out), "source": ""}
