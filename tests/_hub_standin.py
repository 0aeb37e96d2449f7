"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests and benchmarks (no network).

It answers the calls devicemap and huggingface_hub's `get_safetensors_metadata` make, with the
headers and status codes the Hub sends (huggingface_hub's `file_download.py` and
`utils/_http.py` read them): `GET /api/models/{repo}/revision/{revision}` (`sha`,
`siblings`), and `HEAD`/`GET /{repo}/resolve/{revision}/{file}` (`X-Repo-Commit`, `ETag`,
`X-Linked-Etag`/`X-Linked-Size` and a 302 to a CDN for weights when `redirect` is on, `Range`
answered with 206 and `Content-Range`), and errors with `X-Error-Code` (`RepoNotFound`,
`RevisionNotFound`, `EntryNotFound`, `GatedRepo`). Faults on demand: added latency, a server
that ignores `Range`, dropped connections, answers that stall. Every request is recorded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Room for every connection a client opens at once (the default, 5, drops some SYNs, which
    # then wait a second to be sent again).
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing pooled connections are no error worth printing."""


@dataclass
class Repo:
    """A repository: files per commit, and the branches and tags pointing at commits."""

    commits: dict[str, dict[str, Path]]
    refs: dict[str, str]
    gated: bool = False
    private: bool = False


@dataclass
class Faults:
    """Misbehaviour: each applies to requests whose path holds `match`, `count` times (-1:
    always)."""

    match: str = ""
    drop: int = 0
    stall: int = 0
    stall_seconds: float = 0.0
    ignore_range: bool = False


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None
    host: str


@dataclass
class StandIn:
    repos: dict[str, Repo]
    tokens: set[str] = field(default_factory=lambda: {"hf_good"})
    latency: float = 0.0
    redirect: bool = False
    faults: Faults = field(default_factory=Faults)
    seen: list[Seen] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = ""
        self.cdn = ""

    def __enter__(self) -> StandIn:
        self.url = self._serve(hub=True)
        self.cdn = self._serve(hub=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def _serve(self, hub: bool) -> str:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                standin._handle(self, hub, body=False)

            def do_GET(self) -> None:
                standin._handle(self, hub, body=True)

        server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._servers.append(server)
        # The CDN is on "localhost", another origin than the Hub's "127.0.0.1".
        host = "127.0.0.1" if hub else "localhost"
        return f"http://{host}:{server.server_address[1]}"

    def requests(self, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if method is None or s.method == method]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()
            self.sent = 0

    # --- answering ---

    def _fault(self, kind: str, path: str) -> bool:
        with self._lock:
            left = getattr(self.faults, kind)
            if left == 0 or self.faults.match not in path:
                return False
            if left > 0:
                setattr(self.faults, kind, left - 1)
            return True

    def _handle(self, request: BaseHTTPRequestHandler, hub: bool, body: bool) -> None:
        path = request.path
        with self._lock:
            self.seen.append(
                Seen(
                    request.command,
                    path,
                    request.headers.get("Range"),
                    request.headers.get("Authorization"),
                    "hub" if hub else "cdn",
                )
            )
        if self.latency:
            time.sleep(self.latency)
        if self._fault("drop", path):
            request.close_connection = True
            return
        if self._fault("stall", path):
            time.sleep(self.faults.stall_seconds)
        try:
            if not hub:
                self._cdn(request, body)
            elif path.startswith("/api/models/"):
                self._api(request)
            else:
                self._resolve(request, body)
        except (BrokenPipeError, ConnectionResetError):
            request.close_connection = True

    def _answer(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        data: bytes = b"",
        length: int | None = None,
    ) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data) if length is None else length))
        request.end_headers()
        if data and request.command != "HEAD":
            request.wfile.write(data)
            with self._lock:
                self.sent += len(data)

    def _error(
        self, request: BaseHTTPRequestHandler, status: int, code: str, message: str, commit: str | None = None
    ) -> None:
        data = json.dumps({"error": message}).encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        if commit is not None:
            # The Hub says which commit a file is missing from (huggingface_hub caches that).
            headers["X-Repo-Commit"] = commit
        self._answer(request, status, headers, data)

    def _authorized(self, request: BaseHTTPRequestHandler) -> bool | None:
        """True: a known token; False: a token we do not know; None: none."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        return header.removeprefix("Bearer ") in self.tokens

    def _find(
        self, request: BaseHTTPRequestHandler, repo_id: str, revision: str, files: bool
    ) -> tuple[Repo, str] | None:
        repo = self.repos.get(repo_id)
        token = self._authorized(request)
        if repo is None or (repo.private and not token):
            self._error(request, 401, "RepoNotFound", "Repository not found")
            return None
        commit = repo.refs.get(revision, revision)
        if commit not in repo.commits:
            self._error(request, 404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        if files and repo.gated and not token:
            status = 401 if token is None else 403
            self._error(request, status, "GatedRepo", "Access to model " + repo_id + " is restricted.")
            return None
        return repo, commit

    def _api(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path).path.split("/")
        # /api/models/{org}/{name}/revision/{revision}
        if len(parts) != 7 or parts[5] != "revision":
            self._error(request, 404, "RepoNotFound", "Repository not found")
            return
        repo_id, revision = f"{parts[3]}/{parts[4]}", unquote(parts[6])
        found = self._find(request, repo_id, revision, files=False)
        if found is None:
            return
        repo, commit = found
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "siblings": [{"rfilename": name} for name in sorted(repo.commits[commit])],
        }
        self._answer(request, 200, {"Content-Type": "application/json"}, json.dumps(info).encode())

    def _resolve(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        parts = urlsplit(request.path).path.split("/")
        # /{org}/{name}/resolve/{revision}/{file...}
        if len(parts) < 6 or parts[3] != "resolve":
            self._error(request, 404, "RepoNotFound", "Repository not found")
            return
        repo_id, revision, name = f"{parts[1]}/{parts[2]}", unquote(parts[4]), unquote("/".join(parts[5:]))
        found = self._find(request, repo_id, revision, files=True)
        if found is None:
            return
        repo, commit = found
        path = repo.commits[commit].get(name)
        if path is None:
            self._error(request, 404, "EntryNotFound", "Entry not found", commit)
            return
        etag = '"' + _digest(path) + '"'
        headers = {"X-Repo-Commit": commit, "ETag": etag, "Accept-Ranges": "bytes"}
        if name.endswith(".safetensors"):
            headers["X-Linked-Etag"] = etag
            headers["X-Linked-Size"] = str(path.stat().st_size)
            if self.redirect:
                headers["Location"] = f"{self.cdn}/cdn/{commit}/{repo_id}/{name}?sig=stand-in"
                self._answer(request, 302, headers)
                return
        self._send_file(request, path, headers)

    def _cdn(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        parts = urlsplit(request.path).path.split("/")
        # /cdn/{commit}/{org}/{name}/{file...}
        repo = self.repos.get(f"{parts[3]}/{parts[4]}") if len(parts) > 5 else None
        path = repo.commits.get(parts[2], {}).get("/".join(parts[5:])) if repo else None
        if path is None:
            self._answer(request, 404, {})
            return
        self._send_file(request, path, {"Accept-Ranges": "bytes"})

    def _send_file(self, request: BaseHTTPRequestHandler, path: Path, headers: dict[str, str]) -> None:
        size = path.stat().st_size
        wanted = request.headers.get("Range")
        if wanted and not self._fault("ignore_range", request.path) and wanted.startswith("bytes="):
            start_text, _, end_text = wanted[6:].partition("-")
            start = int(start_text)
            end = min(int(end_text) if end_text else size - 1, size - 1)
            if start >= size:
                self._answer(request, 416, {**headers, "Content-Range": f"bytes */{size}"})
                return
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read(end - start + 1)
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
            self._answer(request, 206, headers, data, length=len(data))
            return
        if request.command == "HEAD":
            self._answer(request, 200, headers, length=size)
        else:
            self._answer(request, 200, headers, path.read_bytes())


def _digest(path: Path) -> str:
    """A stand-in for the Hub's ETag (a git blob id, or an LFS file's sha256): it changes with
    the content, as huggingface_hub's cache expects. Sparse shards are hashed by their length
    and first megabyte (their header). Kept per file version, as the Hub keeps it rather than
    hashing on each request (which would make the stand-in, not the clients, what is timed)."""
    stat = path.stat()
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        start = handle.read(1 << 20)
    return hashlib.sha256(str(size).encode() + start).hexdigest()


# --- sparse safetensors checkpoints ---

BITS = {"F8_E4M3": 8, "F32": 32, "BF16": 16, "F16": 16, "I64": 64}


def write_safetensors(path: Path, tensors: list[tuple[str, str, list[int]]]) -> None:
    """A safetensors file with a real header and its data as a hole."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        elements = 1
        for dim in shape:
            elements *= dim
        size = elements * BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        handle.truncate(8 + len(text) + offset)


def write_checkpoint(
    folder: Path, tensors: list[tuple[str, str, list[int]]], shards: int, config: dict[str, Any] | None = None
) -> dict[str, Path]:
    """`tensors` as one `model.safetensors` (`shards == 0`) or as `shards` files and an index,
    and `config.json`; the files by name."""
    folder.mkdir(parents=True, exist_ok=True)
    if shards == 0:
        write_safetensors(folder / "model.safetensors", tensors)
    else:
        per = -(-len(tensors) // shards)
        weight_map = {}
        for index in range(shards):
            chunk = tensors[index * per : (index + 1) * per]
            file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(folder / file, chunk)
            weight_map.update((name, file) for name, _, _ in chunk)
        index_text = json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2)
        (folder / "model.safetensors.index.json").write_text(index_text)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return {path.name: path for path in sorted(folder.iterdir())}


def llama_tensors(layers: int, hidden: int = 64, tied: bool = False) -> list[tuple[str, str, list[int]]]:
    """A small llama-shaped model's tensors, in model order."""
    tensors: list[tuple[str, str, list[int]]] = [("model.embed_tokens.weight", "BF16", [1000, hidden])]
    for layer in range(layers):
        p = f"model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors.append((f"{p}.self_attn.{proj}.weight", "BF16", [hidden, hidden]))
        for proj, shape in (("gate_proj", [4 * hidden, hidden]), ("up_proj", [4 * hidden, hidden])):
            tensors.append((f"{p}.mlp.{proj}.weight", "BF16", shape))
        tensors.append((f"{p}.mlp.down_proj.weight", "BF16", [hidden, 4 * hidden]))
        tensors.append((f"{p}.input_layernorm.weight", "F32", [hidden]))
        tensors.append((f"{p}.post_attention_layernorm.weight", "F32", [hidden]))
    tensors.append(("model.norm.weight", "F32", [hidden]))
    if not tied:
        tensors.append(("lm_head.weight", "BF16", [1000, hidden]))
    return tensors


COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
