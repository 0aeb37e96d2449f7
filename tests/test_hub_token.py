"""The token for a Hub repository when none is given: `HF_TOKEN`, the token file, then
huggingface_hub's `get_token()` (OAuth logins, OIDC, Colab secrets), imported and asked only
when the Hub refuses without a token (importing it and its first call take about a second,
which a public repository does not pay), and none of them under
`HF_HUB_DISABLE_IMPLICIT_TOKEN`. A stand-in `huggingface_hub` module records
whether it was asked; the stand-in Hub (`_hub_standin.py`) serves a private repository."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import devicemap
import pytest
from _hub_standin import COMMIT_A, Repo, StandIn, llama_tensors, write_checkpoint

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    files = write_checkpoint(tmp_path / "model", llama_tensors(2), 0, config)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("DEVICEMAP_HUB_CACHE", "off")
    for name in (*TOKEN_VARIABLES, "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    repos = {
        "org/private": Repo({COMMIT_A: files}, {"main": COMMIT_A}, private=True),
        "org/gated": Repo({COMMIT_A: files}, {"main": COMMIT_A}, gated=True),
        "org/public": Repo({COMMIT_A: files}, {"main": COMMIT_A}),
    }
    with StandIn(repos) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        yield standin


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A `huggingface_hub` whose `get_token()` gives the stand-in's token and records each call."""
    calls: list[str] = []
    module = types.ModuleType("huggingface_hub")

    def get_token() -> str:
        calls.append("get_token")
        return "hf_good"

    module.get_token = get_token  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return calls


def tokens_sent(hub: StandIn) -> set[str | None]:
    return {seen.authorization for seen in hub.requests() if seen.host == "hub"}


@pytest.mark.parametrize("repo", ["org/private", "org/gated"])
def test_get_token_is_asked_when_the_hub_wants_a_token(hub: StandIn, asked: list[str], repo: str) -> None:
    assert devicemap.tensor_sizes(repo)
    assert asked == ["get_token"]
    # Refused without one, then every request with it.
    assert hub.requests()[0].authorization is None
    pinned = {s.authorization for s in hub.requests() if COMMIT_A in s.path and s.host == "hub"}
    assert pinned == {"Bearer hf_good"}


def test_get_token_is_not_asked_for_a_public_repository(hub: StandIn, asked: list[str]) -> None:
    assert devicemap.tensor_sizes("org/public")
    assert devicemap.plan_report("org/public", {"cpu": "1GiB"}, context=64).fits
    assert asked == []
    assert tokens_sent(hub) == {None}


@pytest.mark.parametrize("given", ["argument", "HF_TOKEN", "token file"])
def test_get_token_is_not_asked_when_a_token_is_given(
    hub: StandIn, asked: list[str], given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = None
    if given == "argument":
        token = "hf_good"
    elif given == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", "hf_good")
    else:
        (tmp_path / "token").write_text("hf_good\n")
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    assert devicemap.tensor_sizes("org/private", token=token)
    assert asked == []
    assert tokens_sent(hub) == {"Bearer hf_good"}


def test_no_implicit_token_when_disabled(
    hub: StandIn, asked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    with pytest.raises(ValueError, match="repository 'org/private' not found on the Hub"):
        devicemap.tensor_sizes("org/private")
    assert asked == []
    assert tokens_sent(hub) == {None}


def test_a_failing_get_token_is_no_token(hub: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("huggingface_hub")

    def get_token() -> str:
        raise RuntimeError("OIDC exchange failed")

    module.get_token = get_token  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    with pytest.raises(ValueError, match="not found on the Hub"):
        devicemap.tensor_sizes("org/private")
    assert tokens_sent(hub) == {None}


def test_huggingface_hub_is_not_imported_for_a_local_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    write_checkpoint(folder, llama_tensors(2), 0, {"model_type": "llama"})
    code = (
        "import sys, devicemap\n"
        f"devicemap.tensor_sizes({str(folder)!r})\n"
        "print('huggingface_hub' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
