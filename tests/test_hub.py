"""Checkpoints on the Hugging Face Hub (`org/name`, `hf://org/name@revision`), read from a
stand-in Hub on 127.0.0.1 (`_hub_standin.py`): the same results as the same files on disk,
tokens, gated and private repositories, revisions, the CDN redirect, the cache, offline mode,
and the failures (a server that ignores `Range`, timeouts, dropped connections)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import devicemap
import pytest
from _hub_standin import BITS, COMMIT_A, COMMIT_B, Faults, Repo, StandIn, llama_tensors, write_checkpoint
from devicemap import _core

# The request that resolves `main` of org/sharded: its `X-Repo-Commit`, as huggingface_hub reads it.
RESOLVE = "/org/sharded/resolve/main/config.json"
LLAMA_CONFIG = {"model_type": "llama", "tie_word_embeddings": False}
TIED_CONFIG = {"model_type": "llama", "tie_word_embeddings": True}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, dict[str, Path]]:
    """Checkpoints on disk: a sharded one, a single-file one, a tied one, one without
    safetensors."""
    sharded = write_checkpoint(tmp_path / "sharded", llama_tensors(6), 4, LLAMA_CONFIG)
    single = write_checkpoint(tmp_path / "single", llama_tensors(2), 0, LLAMA_CONFIG)
    tied = write_checkpoint(tmp_path / "tied", llama_tensors(3, tied=True), 2, TIED_CONFIG)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"pickle")
    (tmp_path / "bin" / "config.json").write_text("{}")
    other = {p.name: p for p in (tmp_path / "bin").iterdir()}
    return {"sharded": sharded, "single": single, "tied": tied, "bin": other}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME, and no token, offline mode or proxy from the machine."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN",
        "HF_HUB_CACHE",
        "DEVICEMAP_HUB_CACHE",
        "DEVICEMAP_HUB_CONCURRENCY",
        "DEVICEMAP_HUB_TIMEOUT",
        "ALL_PROXY",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "all_proxy",
        "https_proxy",
        "http_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def hub(files: dict[str, dict[str, Path]], env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    repos = {
        "org/sharded": Repo(
            {COMMIT_A: files["sharded"], COMMIT_B: files["single"]}, {"main": COMMIT_A, "v1": COMMIT_B}
        ),
        "org/single": Repo({COMMIT_A: files["single"]}, {"main": COMMIT_A}),
        "org/tied": Repo({COMMIT_A: files["tied"]}, {"main": COMMIT_A}),
        "org/bin": Repo({COMMIT_A: files["bin"]}, {"main": COMMIT_A}),
        "org/gated": Repo({COMMIT_A: files["single"]}, {"main": COMMIT_A}, gated=True),
        "org/private": Repo({COMMIT_A: files["single"]}, {"main": COMMIT_A}, private=True),
    }
    with StandIn(repos) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        yield standin


def folder(files: dict[str, Path]) -> Path:
    return next(iter(files.values())).parent


@pytest.mark.parametrize("name", ["sharded", "single", "tied"])
def test_same_as_on_disk(hub: StandIn, files: dict[str, dict[str, Path]], name: str) -> None:
    local = folder(files[name])
    remote = devicemap.tensor_sizes(f"org/{name}")
    assert list(remote.items()) == list(devicemap.tensor_sizes(local).items())
    assert list(devicemap.tensor_sizes(f"hf://org/{name}", "float32").items()) == list(
        devicemap.tensor_sizes(local, "float32").items()
    )
    assert _core._checkpoint_sizes(f"org/{name}")[1] == _core._checkpoint_sizes(str(local))[1]
    budgets = {0: "300KiB", 1: "300KiB", "cpu": "10MiB"}
    assert devicemap.plan(f"org/{name}", budgets).to_hf() == devicemap.plan(str(local), budgets).to_hf()
    assert (
        devicemap.plan_report(f"org/{name}", budgets).to_dict()
        == devicemap.plan_report(str(local), budgets).to_dict()
    )
    assert devicemap.stages(f"org/{name}", 3) == devicemap.stages(str(local), 3)


def test_only_headers_are_read(hub: StandIn, files: dict[str, dict[str, Path]]) -> None:
    devicemap.tensor_sizes("org/sharded")
    gets = hub.requests("GET")
    shards = [s for s in gets if s.path.endswith(".safetensors")]
    assert len(shards) == 4
    assert all(s.range is not None and s.range.startswith("bytes=0-") for s in shards)
    # The branch is resolved by the first request (the API's listing of it asked for meanwhile,
    # and used because its `sha` is the same commit); every later request is pinned to it.
    assert {s.path for s in gets[:2]} == {RESOLVE, "/api/models/org/sharded/revision/main"}
    assert all(f"/resolve/{COMMIT_A}/" in s.path for s in gets[2:])
    assert not any(s.path.endswith("/config.json") for s in gets[2:])
    headers = sum(
        8 + int.from_bytes(p.read_bytes()[:8], "little")
        for n, p in files["sharded"].items()
        if n.endswith(".safetensors")
    )
    assert hub.sent < 2 * headers + 20_000


@pytest.mark.parametrize("redirect", [False, True])
def test_huggingface_hub_reads_the_same_stand_in(
    hub: StandIn, redirect: bool, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_api = pytest.importorskip("huggingface_hub")
    # huggingface_hub read HF_HOME when it was first imported: its downloads go here instead.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(env / "hub"))
    hub.redirect = redirect
    ours = devicemap.tensor_sizes("org/sharded")
    theirs = hf_api.HfApi(endpoint=hub.url).get_safetensors_metadata("org/sharded")
    sizes = {}
    for file in theirs.files_metadata.values():
        for name, info in file.tensors.items():
            elements = 1
            for dim in info.shape:
                elements *= dim
            sizes[name] = elements * BITS[info.dtype] // 8
    assert sizes == dict(ours)
    single = hf_api.HfApi(endpoint=hub.url).get_safetensors_metadata("org/single")
    assert set(single.weight_map) == set(devicemap.tensor_sizes("org/single"))


def test_second_run_is_served_from_the_cache(hub: StandIn, env: Path) -> None:
    first = devicemap.tensor_sizes("org/sharded")
    assert (env / "devicemap").is_dir()
    assert (
        not any(p.name.startswith("models--") for p in (env / "hub").glob("*"))
        if (env / "hub").exists()
        else True
    )
    hub.clear()
    assert devicemap.tensor_sizes("org/sharded") == first
    assert [s.path for s in hub.requests()] == [RESOLVE]
    hub.clear()
    assert devicemap.tensor_sizes(f"hf://org/sharded@{COMMIT_A}") == first
    assert hub.requests() == []
    stats = _core._hub_checkpoint("org/sharded").stats
    assert stats[0] == 1
    # Every file from the cache but config.json, which came with the request resolving main.
    assert stats[2] == stats[3] + 1


def test_a_branch_that_moved_is_read_at_its_new_commit(
    hub: StandIn, files: dict[str, dict[str, Path]]
) -> None:
    sharded = list(devicemap.tensor_sizes("org/sharded").items())
    assert sharded == list(devicemap.tensor_sizes(folder(files["sharded"])).items())
    # main moves to the single-file commit: what is cached of the old one is not used.
    hub.repos["org/sharded"].refs["main"] = COMMIT_B
    hub.clear()
    assert list(devicemap.tensor_sizes("org/sharded").items()) == list(
        devicemap.tensor_sizes(folder(files["single"])).items()
    )
    # Resolved to the new commit, its listing and its file asked for at that commit.
    paths = [s.path for s in hub.requests()]
    assert paths == [
        RESOLVE,
        f"/api/models/org/sharded/revision/{COMMIT_B}",
        f"/org/sharded/resolve/{COMMIT_B}/model.safetensors",
    ]
    # And back: the first commit's cache serves it again, with the one resolving request.
    hub.repos["org/sharded"].refs["main"] = COMMIT_A
    hub.clear()
    assert list(devicemap.tensor_sizes("org/sharded").items()) == sharded
    assert [s.path for s in hub.requests()] == [RESOLVE]


def test_a_file_missing_from_the_cache_is_fetched_again(hub: StandIn, env: Path) -> None:
    first = devicemap.tensor_sizes("org/sharded")
    commit = next((env / "devicemap").glob(f"*/models--org--sharded/{COMMIT_A}"))
    assert (commit / "prefetched-1.json").is_file()
    (commit / "model-00002-of-00004.safetensors.entry").unlink()
    # The checkpoint as read is kept whole: a warm plan needs no file of it.
    [kept] = commit.glob("read-*.bin")
    hub.clear()
    assert devicemap.tensor_sizes("org/sharded") == first
    assert [s.path for s in hub.requests()] == [RESOLVE]
    # A copy that does not add up is none: the files are read, the missing one fetched again.
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0xFF
    kept.write_bytes(bytes(data))
    hub.clear()
    assert devicemap.tensor_sizes("org/sharded") == first
    shard = f"/org/sharded/resolve/{COMMIT_A}/model-00002-of-00004.safetensors"
    assert [s.path for s in hub.requests()] == [RESOLVE, shard]
    assert kept.read_bytes() != bytes(data)
    # A record that cannot be read is no record: the checkpoint is looked for again.
    (commit / "prefetched-1.json").write_text("{")
    hub.clear()
    assert devicemap.tensor_sizes("org/sharded") == first
    assert [s.path for s in hub.requests()] == [RESOLVE]


def test_offline(
    hub: StandIn, env: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, dict[str, Path]]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set and 'hf://org/sharded@main' is not cached"):
        devicemap.tensor_sizes("org/sharded")
    assert hub.requests() == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online = devicemap.tensor_sizes("org/sharded")
    hub.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert devicemap.tensor_sizes("org/sharded") == online
    assert hub.requests() == []
    # Shards huggingface_hub downloaded are read where they are, with no devicemap cache.
    snapshot = env / "hub" / "models--org--single" / "snapshots" / COMMIT_A
    snapshot.mkdir(parents=True)
    for name, path in files["single"].items():
        shutil.copy(path, snapshot / name)
    (env / "hub" / "models--org--single" / "refs").mkdir()
    (env / "hub" / "models--org--single" / "refs" / "main").write_text(COMMIT_A)
    monkeypatch.setenv("DEVICEMAP_HUB_CACHE", "off")
    assert list(devicemap.tensor_sizes("org/single").items()) == list(
        devicemap.tensor_sizes(folder(files["single"])).items()
    )
    assert hub.requests() == []


def test_tokens(hub: StandIn, env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEVICEMAP_HUB_CACHE", "off")
    with pytest.raises(
        ValueError, match=r"repository 'org/private' not found on the Hub .*pass token=.*HF_TOKEN"
    ):
        devicemap.tensor_sizes("hf://org/private")
    assert devicemap.tensor_sizes("org/private", token="hf_good")
    assert {s.authorization for s in hub.requests()} >= {"Bearer hf_good"}
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert devicemap.plan("org/private", {0: "1GiB"})
    monkeypatch.delenv("HF_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("hf_good\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    assert devicemap.tensor_sizes("org/private")
    monkeypatch.delenv("HF_TOKEN_PATH")
    env.mkdir(exist_ok=True)
    (env / "token").write_text("hf_good")
    assert devicemap.tensor_sizes("org/private")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    hub.clear()
    with pytest.raises(ValueError, match="not found"):
        devicemap.tensor_sizes("org/private")
    assert {s.authorization for s in hub.requests()} == {None}


def test_gated(hub: StandIn) -> None:
    with pytest.raises(
        ValueError,
        match=r"'org/gated' is gated: accept its conditions on .*/org/gated, then it needs a token: pass",
    ):
        devicemap.tensor_sizes("org/gated")
    with pytest.raises(ValueError, match="the token given has no access"):
        devicemap.tensor_sizes("org/gated", token="hf_other")
    assert devicemap.tensor_sizes("org/gated", token="hf_good")


def test_revisions(hub: StandIn, files: dict[str, dict[str, Path]]) -> None:
    single = list(devicemap.tensor_sizes(folder(files["single"])).items())
    assert list(devicemap.tensor_sizes("hf://org/sharded@v1").items()) == single
    assert list(devicemap.tensor_sizes(f"hf://org/sharded@{COMMIT_B}").items()) == single
    assert len(devicemap.tensor_sizes("hf://org/sharded@main")) == len(
        devicemap.tensor_sizes(folder(files["sharded"]))
    )
    with pytest.raises(ValueError, match="revision 'v9' not found in repository 'org/sharded'"):
        devicemap.tensor_sizes("hf://org/sharded@v9")
    assert _core._hub_checkpoint("hf://org/sharded@v1").commit == COMMIT_B


def test_redirect_keeps_range_and_drops_the_token(hub: StandIn, files: dict[str, dict[str, Path]]) -> None:
    hub.redirect = True
    hub.repos["org/sharded"].private = True
    assert list(devicemap.tensor_sizes("org/sharded", token="hf_good").items()) == list(
        devicemap.tensor_sizes(folder(files["sharded"])).items()
    )
    cdn = hub.requests()
    cdn = [s for s in cdn if s.host == "cdn"]
    assert len(cdn) == 4
    assert all(s.range is not None and s.range.startswith("bytes=0-") for s in cdn)
    assert all(s.authorization is None for s in cdn)
    assert all(s.authorization == "Bearer hf_good" for s in hub.requests() if s.host == "hub")


def test_a_server_that_ignores_range_is_refused(hub: StandIn) -> None:
    hub.faults = Faults(match=".safetensors", ignore_range=True)
    with pytest.raises(
        RuntimeError,
        match=r"ignored the byte range and answered with the whole file \(200\); refusing to download it",
    ):
        devicemap.tensor_sizes("org/single")


def test_timeouts_and_dropped_connections(hub: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICEMAP_HUB_TIMEOUT", "0.3")
    monkeypatch.setenv("DEVICEMAP_HUB_CACHE", "off")
    hub.faults = Faults(match="model.safetensors", stall=-1, stall_seconds=1.0)
    with pytest.raises(
        RuntimeError, match=r"GET http://.*/model.safetensors \(bytes 0-99999\) failed after 3 tries: .*tim"
    ):
        devicemap.tensor_sizes("org/single")
    hub.faults = Faults(match="model.safetensors", stall=1, stall_seconds=1.0)
    assert devicemap.tensor_sizes("org/single")
    hub.faults = Faults(match="model-00002", drop=1)
    hub.clear()
    assert devicemap.tensor_sizes("org/sharded")
    assert len([s for s in hub.requests() if "model-00002" in s.path]) == 2
    hub.faults = Faults(match="model-00002", drop=-1)
    with pytest.raises(
        RuntimeError, match=r"model-00002-of-00004.safetensors \(bytes 0-\d+\) failed after 3 tries"
    ):
        devicemap.tensor_sizes("hf://org/sharded@main")


def test_not_found_names_both_readings(hub: StandIn) -> None:
    with pytest.raises(
        ValueError,
        match=r"^no local path 'org/nothing' and repository 'org/nothing' not found on the Hub \(http://127",
    ):
        devicemap.tensor_sizes("org/nothing")
    with pytest.raises(ValueError, match=r"^repository 'org/nothing' not found"):
        devicemap.plan("hf://org/nothing")
    with pytest.raises(ValueError, match="no such file or directory"):
        devicemap.tensor_sizes("no/such/path")


def test_no_safetensors_names_the_formats(hub: StandIn) -> None:
    with pytest.raises(
        ValueError, match=r"'org/bin' at commit a{40} has no safetensors weights \(it has: PyTorch .bin\)"
    ):
        devicemap.tensor_sizes("org/bin")


def test_header_above_the_limit_as_on_disk(hub: StandIn, files: dict[str, dict[str, Path]]) -> None:
    path = files["single"]["model.safetensors"]
    data = bytearray(path.read_bytes()[:64])
    path.write_bytes((200_000_000).to_bytes(8, "little") + bytes(data[8:]))
    with pytest.raises(ValueError, match="above the safetensors limit") as on_disk:
        devicemap.tensor_sizes(path)
    with pytest.raises(ValueError, match="above the safetensors limit") as on_hub:
        devicemap.tensor_sizes("org/single")
    assert str(on_hub.value).endswith(str(on_disk.value).split(": ", 1)[1])
    assert "above the safetensors limit" in str(on_hub.value)


def test_local_paths_win_and_settings_are_checked(
    hub: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, dict[str, Path]]
) -> None:
    monkeypatch.chdir(folder(files["sharded"]).parent)
    assert not _core._is_hub_source("sharded")
    shutil.copytree(folder(files["single"]), tmp_path / "org" / "single2")
    assert not _core._is_hub_source("org/single2")
    assert _core._is_hub_source("org/single3")
    assert _core._is_hub_source("hf://org/single2")
    monkeypatch.setenv("DEVICEMAP_HUB_CONCURRENCY", "many")
    with pytest.raises(
        ValueError, match="DEVICEMAP_HUB_CONCURRENCY must be a whole number from 1 to 256, got 'many'"
    ):
        devicemap.tensor_sizes("org/single")
    monkeypatch.setenv("DEVICEMAP_HUB_CONCURRENCY", "1")
    assert devicemap.tensor_sizes("org/sharded")
    with pytest.raises(ValueError, match="is not a Hub repository id"):
        devicemap.tensor_sizes("hf://a/b/c")


def test_progress_and_stats(hub: StandIn) -> None:
    seen: list[tuple[int, int, int]] = []
    checkpoint = _core._hub_checkpoint("org/sharded", progress=lambda *a: seen.append(a))
    assert [done for done, _, _ in seen] == list(range(1, 6))
    assert {total for _, total, _ in seen} == {5}
    requests, received, files_read, cached = checkpoint.stats
    assert (requests, files_read, cached) == (7, 6, 0)
    assert received == hub.sent
    assert checkpoint.source == "hf://org/sharded@main"
    assert list(devicemap.tensor_sizes(checkpoint).items()) == list(
        devicemap.tensor_sizes("org/sharded").items()
    )


def test_plan_command_line(
    hub: StandIn, files: dict[str, dict[str, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    from devicemap.cli import main

    args = ["--max-memory", "0=300KiB,1=300KiB,cpu=10MiB", "--json"]
    assert main(["plan", "org/sharded", *args]) == 0
    out, err = capsys.readouterr()
    assert f"read hf://org/sharded@main at commit {COMMIT_A}: 7 requests, " in err
    assert main(["plan", str(folder(files["sharded"])), *args]) == 0
    local = json.loads(capsys.readouterr().out)
    assert {**json.loads(out), "source": ""} == {**local, "source": ""}
    assert main(["plan", "org/sharded", *args]) == 0
    assert "1 requests, " in capsys.readouterr().err
    assert main(["plan", "org/nothing", *args]) == 2
    assert capsys.readouterr().err.startswith("error: no local path 'org/nothing' and repository")
    hub.faults = Faults(match=RESOLVE, drop=-1)
    assert main(["plan", "org/sharded", *args]) == 2
    assert "failed after 3 tries" in capsys.readouterr().err


def test_kv_cache_reads_config_json_from_the_hub(
    hub: StandIn, tmp_path: Path, files: dict[str, dict[str, Path]]
) -> None:
    config = {
        "model_type": "llama",
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "hidden_size": 256,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(config))
    hub.repos["org/llama"] = Repo(
        {COMMIT_A: {"config.json": tmp_path / "llama" / "config.json"}}, {"main": COMMIT_A}
    )
    local = devicemap.kv_cache(str(tmp_path / "llama"), 1024)
    remote = devicemap.kv_cache("org/llama", 1024)
    assert (remote.per_layer, remote.total, remote.dtype) == (local.per_layer, local.total, local.dtype)
    assert sorted(s.path for s in hub.requests()) == [
        "/api/models/org/llama/revision/main",
        "/org/llama/resolve/main/config.json",
    ]
    weights = {"model.safetensors": files["single"]["model.safetensors"]}
    hub.repos["org/weights-only"] = Repo({COMMIT_A: weights}, {"main": COMMIT_A})
    with pytest.raises(
        ValueError, match=r"^hf://org/weights-only@a{40}/config.json: no such file or directory"
    ):
        devicemap.kv_cache("org/weights-only", 1024)


def test_plans_at_a_context_read_the_config_from_the_hub(
    hub: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from devicemap.cli import main

    config = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "torch_dtype": "bfloat16",
    }
    files = write_checkpoint(tmp_path / "ctx", llama_tensors(2), 2, config)
    hub.repos["org/ctx"] = Repo({COMMIT_A: files}, {"main": COMMIT_A})
    budgets = {0: "400KiB", "cpu": "10MiB"}
    remote = devicemap.plan_report("org/ctx", budgets, context=1024, batch=2)
    local = devicemap.plan_report(str(folder(files)), budgets, context=1024, batch=2)
    assert remote.cache_bytes == local.cache_bytes == devicemap.kv_cache(config, 1024, batch=2).total
    assert remote.to_dict() == local.to_dict()
    args = ["--max-memory", "0=400KiB,cpu=10MiB", "--context", "1k", "--json"]
    assert main(["plan", "org/ctx", *args]) == 0
    remote_cli = json.loads(capsys.readouterr().out)
    assert main(["plan", str(folder(files)), *args]) == 0
    local_cli = json.loads(capsys.readouterr().out)
    assert {**remote_cli, "source": ""} == {**local_cli, "source": ""}
    assert remote_cli["context"]["tokens"] == 1024


def test_plans_take_a_token_for_the_headers_and_the_config(hub: StandIn, tmp_path: Path) -> None:
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    files = write_checkpoint(tmp_path / "gated-ctx", llama_tensors(2), 2, config)
    hub.repos["org/gated-ctx"] = Repo({COMMIT_A: files}, {"main": COMMIT_A}, gated=True)
    budgets = {0: "1GiB"}
    with pytest.raises(ValueError, match="'org/gated-ctx' is gated"):
        devicemap.plan("org/gated-ctx", budgets)
    with pytest.raises(ValueError, match="'org/gated-ctx' is gated"):
        devicemap.plan_report("org/gated-ctx", budgets, context=64, config=None)
    report = devicemap.plan_report("org/gated-ctx", budgets, context=64, token="hf_good")
    assert report.cache_bytes == devicemap.kv_cache(config, 64).total
    assert devicemap.plan("org/gated-ctx", budgets, token="hf_good").to_hf() == report.to_hf()
    assert devicemap.stages("org/gated-ctx", 2, token="hf_good") == devicemap.stages(str(folder(files)), 2)
    assert {s.authorization for s in hub.requests()} >= {"Bearer hf_good"}


def test_a_partial_huggingface_hub_snapshot_is_not_taken_for_the_listing(
    hub: StandIn, env: Path, files: dict[str, dict[str, Path]]
) -> None:
    # transformers downloads config.json first: a snapshot holding only it is not the commit's
    # file list. Online, the Hub is asked; offline, the snapshot's files are all there is.
    snapshot = env / "hub" / "models--org--sharded" / "snapshots" / COMMIT_A
    snapshot.mkdir(parents=True)
    shutil.copy(files["sharded"]["config.json"], snapshot / "config.json")
    pinned = f"hf://org/sharded@{COMMIT_A}"
    assert devicemap.tensor_sizes(pinned) == devicemap.tensor_sizes(folder(files["sharded"]))
    assert next(s.path for s in hub.requests()) == f"/api/models/org/sharded/revision/{COMMIT_A}"


def test_a_revision_cannot_step_out_of_the_refs_folder() -> None:
    with pytest.raises(ValueError, match=r"the revision may not hold '\.' or '\.\.' parts"):
        devicemap.tensor_sizes("hf://org/name@../../x")
