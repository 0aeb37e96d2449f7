"""`tensor_sizes`: per-tensor bytes from safetensors headers, checked against safetensors' own
reader on files it wrote, and every malformed header refused with the file and tensor named."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import devicemap
import pytest
from _models import tiny_llama

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402

# Bits per element, written out independently of the code under test.
BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
FLOATS = {"F8_E4M3", "F8_E4M3FNUZ", "F8_E5M2", "F8_E5M2FNUZ", "F8_E8M0", "F16", "BF16", "F32", "F64"}


def expected_sizes(files: list[Path], dtype_bits: int | None = None) -> dict[str, int]:
    """What safetensors' own reader says: shape x dtype, per tensor."""
    out = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                piece = handle.get_slice(name)
                elements = 1
                for dim in piece.get_shape():
                    elements *= dim
                dtype = piece.get_dtype()
                bits = dtype_bits if dtype_bits is not None and dtype in FLOATS else BITS[dtype]
                out[name] = (elements * bits + 7) // 8
    return out


def all_dtype_tensors() -> dict[str, object]:
    tensors = {}
    for index, (name, dtype) in enumerate(sorted(safetensors_torch._TYPES.items())):
        shape = (3, index + 1)
        tensors[f"t.{name.lower()}"] = torch.zeros(shape, dtype=torch.float32).to(dtype)
    tensors["t.scalar"] = torch.tensor(1.5)
    tensors["t.empty"] = torch.zeros((0, 4), dtype=torch.bfloat16)
    return tensors


def test_every_dtype_safetensors_writes(tmp_path: Path) -> None:
    path = tmp_path / "all.safetensors"
    safetensors_torch.save_file(all_dtype_tensors(), str(path), metadata={"format": "pt"})
    sizes = devicemap.tensor_sizes(path)
    assert sizes == expected_sizes([path])
    assert len(sizes) == len(safetensors_torch._TYPES) + 2


def test_dtype_override(tmp_path: Path) -> None:
    path = tmp_path / "all.safetensors"
    safetensors_torch.save_file(all_dtype_tensors(), str(path))
    for dtype, bits in [("float16", 16), (torch.bfloat16, 16), ("float32", 32), ("F8_E4M3", 8)]:
        assert devicemap.tensor_sizes(str(path), dtype=dtype) == expected_sizes([path], bits)
    with pytest.raises(ValueError, match="Unknown dtype 'float7'"):
        devicemap.tensor_sizes(path, dtype="float7")
    with pytest.raises(TypeError, match="dtype must be"):
        devicemap.tensor_sizes(path, dtype=3)


def write_raw(path: Path, header: object, data_len: int | None = None, raw: bytes | None = None) -> Path:
    """A safetensors file written by hand: 8-byte length, JSON header, data section."""
    text = raw if raw is not None else json.dumps(header).encode()
    if data_len is None:
        data_len = 0
        if isinstance(header, dict):
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            data_len = max(ends, default=0)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * data_len)
    return path


def test_sub_byte_dtypes_round_up(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]},
        "b": {"dtype": "F6_E2M3", "shape": [5], "data_offsets": [2, 6]},
        "c": {"dtype": "F6_E3M2", "shape": [4], "data_offsets": [6, 9]},
        "d": {"dtype": "F8_E8M0", "shape": [2, 2], "data_offsets": [9, 13]},
    }
    path = write_raw(tmp_path / "sub.safetensors", header)
    assert devicemap.tensor_sizes(path) == {"a": 2, "b": 4, "c": 3, "d": 4}
    assert devicemap.tensor_sizes(path, dtype="bfloat16") == {"a": 6, "b": 10, "c": 8, "d": 8}


def save_sharded(tmp_path: Path) -> Path:
    """A tiny Llama saved by transformers as several shards with an index."""
    pytest.importorskip("transformers")
    model = tiny_llama(
        4, vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048,
    )  # fmt: skip
    directory = tmp_path / "tiny"
    model.save_pretrained(directory, max_shard_size="20KB")
    return directory


def test_sharded_checkpoint_with_index(tmp_path: Path) -> None:
    directory = save_sharded(tmp_path)
    shards = sorted(directory.glob("*.safetensors"))
    assert len(shards) > 2
    expected = expected_sizes(shards)
    for source in (directory, directory / "model.safetensors.index.json", shards, str(directory)):
        sizes = devicemap.tensor_sizes(source)
        assert sizes == expected
    # Model order, not name order: layer 2 before layer 10 would be; embeddings first, head last.
    names = list(devicemap.tensor_sizes(directory))
    assert names[0] == "model.embed_tokens.weight"
    assert names[-1] == "lm_head.weight"
    layer_numbers = [int(n.split(".")[2]) for n in names if n.startswith("model.layers.")]
    assert layer_numbers == sorted(layer_numbers)


def write_model_checkpoint(directory: Path, embeddings_last: bool) -> tuple[list[Path], list[str]]:
    """A checkpoint of three shards and an index, in safetensors' own order within each shard
    (by name: `layers.10` would come before `layers.2`). Its shards follow the model, or keep
    the embeddings in the last shard. Returns the shards and the names in model order."""
    layers = [
        {f"model.layers.{layer}.{part}": {"dtype": "BF16" if part.endswith("q") else "I8", "shape": [4]}
         for part in ("mlp.up", "attn.q")}
        for layer in range(6)
    ]  # fmt: skip
    outside = {"model.embed_tokens.weight": {"dtype": "F32", "shape": [8]}}
    ending = {
        "model.norm.weight": {"dtype": "F32", "shape": [2]},
        "lm_head.weight": {"dtype": "F32", "shape": [8]},
    }
    groups: list[dict[str, dict[str, Any]]] = [
        {**outside, **layers[0]},
        {**layers[1], **layers[2], **layers[3]},
        {**layers[4], **layers[5], **ending},
    ]
    if embeddings_last:
        del groups[0]["model.embed_tokens.weight"]
        groups[2].update(outside)
    weight_map: dict[str, str] = {}
    for index, group in enumerate(groups):
        # safetensors' own order: by name inside a file, and data in that order.
        header: dict[str, Any] = {}
        offset = 0
        for name in sorted(group):
            info = group[name]
            size = info["shape"][0] * (4 if info["dtype"] == "F32" else 2 if info["dtype"] == "BF16" else 1)
            header[name] = {**info, "data_offsets": [offset, offset + size]}
            offset += size
        file = f"model-{index + 1}-of-3.safetensors"
        write_raw(directory / file, header)
        weight_map.update(dict.fromkeys(header, file))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    names = [
        "model.embed_tokens.weight",
        *(f"model.layers.{layer}.{part}" for layer in range(6) for part in ("attn.q", "mlp.up")),
        "model.norm.weight",
        "lm_head.weight",
    ]
    return sorted(directory.glob("*.safetensors")), names


def sizes_and_path(source: object, dtype: object = None) -> tuple[dict[str, int], str]:
    """`tensor_sizes(source, dtype)` and how its result was built: `"by file"` (as the files were
    read, while they follow the model) or `"at the end"` (once all were read). The entry point
    exists in builds with the `testing` feature only."""
    entry = getattr(devicemap._core, "_tensor_sizes_and_path", None)
    assert entry is not None, "build with the 'testing' feature (scripts/test.sh does)"
    return entry(source, dtype)  # type: ignore[no-any-return]


@pytest.mark.parametrize("embeddings_last", [False, True])
def test_model_order_whether_or_not_shards_follow_the_model(tmp_path: Path, embeddings_last: bool) -> None:
    """Shards that follow the model are ordered shard by shard as they are read; a checkpoint
    that keeps its embeddings in the last shard is ordered once all are read. The result is
    the same model order either way, from the directory and from the list of shards, and with
    a dtype override."""
    files, expected_names = write_model_checkpoint(tmp_path, embeddings_last)
    expected = expected_sizes(files)
    halved = expected_sizes(files, dtype_bits=16)
    path = "at the end" if embeddings_last else "by file"
    for source in (tmp_path, files):
        for dtype, want in ((None, expected), ("float16", halved)):
            sizes = devicemap.tensor_sizes(source, dtype)
            assert list(sizes) == expected_names
            assert sizes == want
            built, how = sizes_and_path(source, dtype)
            assert (list(built.items()), how) == (list(sizes.items()), path)


def test_both_ways_of_building_the_result_agree(tmp_path: Path) -> None:
    """The same tensors written twice, following the model and with the embeddings in the last
    shard: one result is built file by file, the other once all files are read, and they are
    equal, in the same order."""
    results = {}
    for embeddings_last in (False, True):
        directory = tmp_path / f"embeddings_last_{embeddings_last}"
        directory.mkdir()
        write_model_checkpoint(directory, embeddings_last)
        sizes, how = sizes_and_path(directory)
        results[how] = list(sizes.items())
    assert set(results) == {"by file", "at the end"}
    assert results["by file"] == results["at the end"]


def test_directory_with_one_file(tmp_path: Path) -> None:
    safetensors_torch.save_file({"w": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    assert devicemap.tensor_sizes(tmp_path) == {"w": 64}


GOOD = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

MALFORMED = [
    ("past_end", None, b'{"w": 1}', "header length .* runs past the end of the file"),
    ("not_object", [1, 2], None, "not a valid safetensors JSON object"),
    ("bad_json", None, b"{not json", "not a valid safetensors JSON object"),
    ("unknown_dtype", {"w": {**GOOD, "dtype": "F9"}}, None, "tensor 'w': unknown dtype 'F9'"),
    (
        "overflow",
        {"w": {**GOOD, "shape": [2**40, 2**40, 2**40]}},
        None,
        r"tensor 'w': shape \[.*\] overflows",
    ),
    ("out_of_file", {"w": {**GOOD, "data_offsets": [96, 104]}}, None, "tensor 'w': data offsets .* run past"),
    ("mismatch", {"w": {**GOOD, "shape": [3]}}, None, "tensor 'w': data offsets .* span 8 bytes, but shape"),
    ("reversed", {"w": {**GOOD, "data_offsets": [8, 0]}}, None, "tensor 'w': data offsets .* end before"),
    (
        "overlap",
        {"w": GOOD, "v": {**GOOD, "data_offsets": [4, 12]}},
        None,
        "tensor 'v': data offsets .* overlap those of tensor 'w'",
    ),
    ("negative_dim", {"w": {**GOOD, "shape": [-2]}}, None, "tensor 'w'"),
]


@pytest.mark.parametrize(("case", "header", "raw", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_headers(
    tmp_path: Path, case: str, header: object, raw: bytes | None, message: str
) -> None:
    path = tmp_path / f"{case}.safetensors"
    if case == "past_end":
        path.write_bytes(struct.pack("<Q", 1000) + raw)  # type: ignore[operator]
    else:
        write_raw(path, header, data_len=16, raw=raw)
    with pytest.raises(ValueError, match=message) as info:
        devicemap.tensor_sizes(path)
    assert f"{case}.safetensors" in str(info.value)


def test_truncated_and_duplicates(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match=r"short.safetensors: file is 2 bytes, too short"):
        devicemap.tensor_sizes(short)

    twice = tmp_path / "twice.safetensors"
    entry = b'{"dtype": "F32", "shape": [1], "data_offsets": [%d, %d]}'
    text = b'{"w": ' + entry % (0, 4) + b', "w": ' + entry % (4, 8) + b"}"
    write_raw(twice, None, data_len=8, raw=text)
    with pytest.raises(ValueError, match=r"twice.safetensors: tensor 'w': duplicate tensor name"):
        devicemap.tensor_sizes(twice)

    a = write_raw(tmp_path / "a.safetensors", {"w": GOOD})
    b = write_raw(tmp_path / "b.safetensors", {"w": GOOD})
    with pytest.raises(
        ValueError, match=r"b.safetensors: tensor 'w': duplicate tensor name \(also in .*a.safetensors"
    ):
        devicemap.tensor_sizes([a, b])


def test_empty_and_missing(tmp_path: Path) -> None:
    empty = write_raw(tmp_path / "empty.safetensors", {"__metadata__": {"format": "pt"}})
    with pytest.raises(ValueError, match="holds no tensors"):
        devicemap.tensor_sizes(empty)
    with pytest.raises(ValueError, match="no such file or directory"):
        devicemap.tensor_sizes(tmp_path / "nowhere")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ValueError, match=r"holds neither model.safetensors.index.json nor model.safetensors"):
        devicemap.tensor_sizes(bare)
    with pytest.raises(ValueError, match="list of checkpoint files is empty"):
        devicemap.tensor_sizes([])
    with pytest.raises(TypeError, match="expected a path"):
        devicemap.tensor_sizes(12)


def test_index_errors(tmp_path: Path) -> None:
    write_raw(tmp_path / "model-1.safetensors", {"w": GOOD})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "model-1.safetensors", "v": "model-2.safetensors"}}))
    with pytest.raises(
        ValueError, match=r"tensor 'v': the index names shard 'model-2.safetensors', which is missing"
    ):
        devicemap.tensor_sizes(tmp_path)
    index.write_text(json.dumps({"weight_map": {"w": "model-1.safetensors", "v": "model-1.safetensors"}}))
    with pytest.raises(
        ValueError, match=r"tensor 'v': the index puts this tensor in 'model-1.safetensors', but no shard"
    ):
        devicemap.tensor_sizes(tmp_path)
    write_raw(tmp_path / "model-2.safetensors", {"v": GOOD, "u": {**GOOD, "data_offsets": [8, 16]}})
    index.write_text(
        json.dumps(
            {
                "weight_map": {
                    "w": "model-1.safetensors",
                    "v": "model-1.safetensors",
                    "u": "model-2.safetensors",
                }
            }
        )
    )
    with pytest.raises(
        ValueError,
        match=r"index.json: tensor 'v': the index puts this tensor in 'model-1.safetensors', "
        r"but it is in .*model-2",
    ):
        devicemap.tensor_sizes(tmp_path)
    index.write_text('{"weight_map": {"w": "model-1.safetensors", "w": "model-1.safetensors"}}')
    with pytest.raises(ValueError, match=r"index.json: tensor 'w': the index lists this tensor twice"):
        devicemap.tensor_sizes(tmp_path)
    index.write_text("[]")
    with pytest.raises(ValueError, match="not a safetensors index"):
        devicemap.tensor_sizes(tmp_path)
    # Entries that would leave the checkpoint are refused before anything reads them.
    for entry in ("../model-1.safetensors", str(tmp_path / "model-1.safetensors"), "a/../../b"):
        index.write_text(json.dumps({"weight_map": {"w": "model-1.safetensors", "x": entry}}))
        with pytest.raises(ValueError, match=r"index.json: the index names shard .*, a path outside"):
            devicemap.tensor_sizes(tmp_path)


def test_index_checked_name_by_name(tmp_path: Path) -> None:
    """Every name of every shard is looked up in the index, in file order: a shard holding a
    tensor its index does not list is allowed, and of two errors the one in the earlier place
    is reported, whichever kind it is."""
    write_raw(tmp_path / "model-1.safetensors", {"w": GOOD, "extra": {**GOOD, "data_offsets": [8, 16]}})
    write_raw(tmp_path / "model-2.safetensors", {"v": GOOD})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "model-1.safetensors", "v": "model-2.safetensors"}}))
    assert devicemap.tensor_sizes(tmp_path) == {"extra": 8, "w": 8, "v": 8}

    # 'a' is in model-1 but the index says model-2; 'z', later in model-2, repeats a name of
    # model-1. Name by name, 'a' is met first.
    write_raw(tmp_path / "model-1.safetensors", {"a": GOOD, "z": {**GOOD, "data_offsets": [8, 16]}})
    write_raw(tmp_path / "model-2.safetensors", {"v": GOOD, "z": {**GOOD, "data_offsets": [8, 16]}})
    index.write_text(
        json.dumps(
            {
                "weight_map": {
                    "a": "model-2.safetensors",
                    "z": "model-1.safetensors",
                    "v": "model-2.safetensors",
                }
            }
        )
    )
    with pytest.raises(ValueError, match=r"tensor 'a': the index puts this tensor in 'model-2.safetensors'"):
        devicemap.tensor_sizes(tmp_path)
    index.write_text(
        json.dumps(
            {
                "weight_map": {
                    "a": "model-1.safetensors",
                    "z": "model-1.safetensors",
                    "v": "model-2.safetensors",
                }
            }
        )
    )
    with pytest.raises(ValueError, match=r"model-2.safetensors: tensor 'z': .*also in .*model-1.safetensors"):
        devicemap.tensor_sizes(tmp_path)
    # The index lists 'z' twice, once for each shard that holds it: the index's repeated name
    # is reported before anything about the shards.
    index.write_text(
        '{"weight_map": {"a": "model-1.safetensors", "z": "model-1.safetensors", '
        '"v": "model-2.safetensors", "z": "model-2.safetensors"}}'
    )
    with pytest.raises(ValueError, match=r"index.json: tensor 'z': the index lists this tensor twice"):
        devicemap.tensor_sizes(tmp_path)


def test_index_order_does_not_matter(tmp_path: Path) -> None:
    """Shards are read as the index first names them, on several threads; the sizes, their
    order, and which of two broken shards is reported do not depend on that order or on timing."""
    shards = 24
    names = {
        f"model-{i:02d}.safetensors": {
            f"model.layers.{i}.w{j}": {**GOOD, "data_offsets": [8 * j, 8 * j + 8]} for j in range(3)
        }
        for i in range(shards)
    }
    for file, tensors in names.items():
        write_raw(tmp_path / file, tensors)
    index = tmp_path / "model.safetensors.index.json"
    weight_map = {tensor: file for file, tensors in names.items() for tensor in tensors}
    index.write_text(json.dumps({"weight_map": weight_map}))
    forward = devicemap.tensor_sizes(tmp_path)
    index.write_text(json.dumps({"metadata": {}, "weight_map": dict(reversed(weight_map.items()))}))
    backward = devicemap.tensor_sizes(tmp_path)
    assert list(forward.items()) == list(backward.items())
    assert len(forward) == 3 * shards

    for broken in ("model-05.safetensors", "model-17.safetensors"):
        (tmp_path / broken).write_bytes(struct.pack("<Q", 2) + b"[]")
    for _ in range(20):
        with pytest.raises(ValueError, match=r"model-05.safetensors: header is not a valid"):
            devicemap.tensor_sizes(tmp_path)

    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"not a safetensors index.*missing field `weight_map`"):
        devicemap.tensor_sizes(tmp_path)
    index.write_text('{"weight_map": {}, "weight_map": {}}')
    with pytest.raises(ValueError, match=r"not a safetensors index.*duplicate field `weight_map`"):
        devicemap.tensor_sizes(tmp_path)
    index.write_text(json.dumps({"weight_map": {}}))
    with pytest.raises(ValueError, match="holds no tensors"):
        devicemap.tensor_sizes(tmp_path)


def test_progress_is_called_per_file(tmp_path: Path) -> None:
    files = [write_raw(tmp_path / f"s{i}.safetensors", {f"w{i}": GOOD}) for i in range(20)]
    seen: list[tuple[int, int]] = []
    sizes = devicemap.tensor_sizes(files, progress=lambda done, total: seen.append((done, total)))
    assert len(sizes) == 20
    assert seen[-1] == (20, 20)
    assert [d for d, _ in seen] == list(range(1, 21))

    def fail(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        devicemap.tensor_sizes(files, progress=fail)


@pytest.mark.parametrize(
    ("alias", "name"),
    [("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32"), ("fp8", "float8_e4m3fn")],
)
def test_dtype_short_names_size_as_the_torch_names(alias: str, name: str) -> None:
    assert devicemap.example_model("llama-3-70b", dtype=alias) == devicemap.example_model(
        "llama-3-70b", dtype=name
    )
