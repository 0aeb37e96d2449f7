"""Wave 7: bad input found by hunting across `plan`/`plan_report`/`stages` with `context=`,
`kv_cache`, `PlanReport.max_context()/max_batch()/hosts()`, `tensor_sizes` and the command line.
Each test is one case that broke the rule (a panic, a Python-internal error that names no
argument, a hang, a silently wrong answer) before its fix. pyo3's PanicException derives from
BaseException, so `pytest.raises(ValueError)` does not swallow one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import zipfile

import devicemap
import pytest
from devicemap import cli
from hypothesis import given, settings
from hypothesis import strategies as st

LLAMA_1 = {"model_type": "llama", "num_hidden_layers": 1}
ONE_LAYER = {"model.layers.0.w": 8}


def run_cli(*args: str) -> tuple[int, str]:
    """Runs the command line in this process: (exit status, standard error)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(list(args))
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
    return status, err.getvalue()


# --- counts past 64 bits: were OverflowError("Python int too large to convert to C long") ---


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: devicemap.kv_cache(LLAMA_1, 2**64), "tokens must be at most 18446744073709551615"),
        (lambda: devicemap.kv_cache(LLAMA_1, 1, batch=2**64), "batch must be at most"),
        (
            lambda: devicemap.kv_cache({"model_type": "t5"}, 1, encoder_tokens=2**64),
            "encoder_tokens must be at most",
        ),
        (
            lambda: devicemap.plan_report(ONE_LAYER, {0: 100}, context=2**64, config=LLAMA_1),
            "context must be at most 18446744073709551615 (2**64 - 1), got 18446744073709551616",
        ),
        (
            lambda: devicemap.plan_report(ONE_LAYER, {0: 100}, context=4, batch=10**30, config=LLAMA_1),
            "batch must be at most 18446744073709551615 (2**64 - 1), got 1000000000000000000000000000000",
        ),
        (
            lambda: devicemap.plan_report(ONE_LAYER, {0: 10**9}, context=1, config=LLAMA_1).max_context(
                batch=2**64
            ),
            "batch must be at most",
        ),
        (
            lambda: devicemap.plan_report(ONE_LAYER, {0: 10**9}, context=1, config=LLAMA_1).max_batch(
                context=2**64
            ),
            "context must be at most",
        ),
        (lambda: devicemap.plan_report(ONE_LAYER, {0: 100}).hosts(2**64), "gpus_per_host must be at most"),
        (lambda: devicemap.stages(ONE_LAYER, 2**64), "n must be at most"),
    ],
)
def test_counts_past_64_bits_are_value_errors_naming_the_argument(call, message):
    with pytest.raises(ValueError, match="must be at most") as raised:
        call()
    assert message in str(raised.value)


def test_counts_between_2_63_and_2_64_are_counts():
    # They fit in 64 bits unsigned: the cache's own overflow check answers, not the conversion.
    with pytest.raises(OverflowError, match="larger than 2\\*\\*64 bytes"):
        devicemap.kv_cache(LLAMA_1, 2**63)
    with pytest.raises(OverflowError, match="The KV cache for 9223372036854775808 tokens"):
        devicemap.plan_report(ONE_LAYER, {0: 100}, context=2**63, config=LLAMA_1)


def test_very_negative_counts_are_named_as_given():
    with pytest.raises(ValueError, match=r"tokens must be >= 0, got -100000000000000000000000"):
        devicemap.kv_cache(LLAMA_1, -(10**23))


# --- sizes that total past 2**64: were a Rust panic (RuntimeError "internal error") ---


def test_sizes_totalling_past_2_64_bytes_are_refused():
    with pytest.raises(OverflowError, match="The model's tensors total more than 2\\*\\*64 bytes") as raised:
        devicemap.plan({"a.w": 2**64 - 1, "b.w": 2**64 - 1}, {0: 100})
    assert "internal error" not in str(raised.value)
    assert "the largest 'b.w', 18446744073709551615 bytes" in str(raised.value)


def test_plan_report_and_stages_refuse_them_too():
    with pytest.raises(OverflowError, match="total more than 2\\*\\*64 bytes"):
        devicemap.plan_report({"a.w": 2**64 - 1, "b.w": 1}, {0: 100})
    with pytest.raises(OverflowError, match="total more than 2\\*\\*64 bytes"):
        devicemap.stages({"a.w": 2**64 - 1, "b.w": 2**64 - 1}, 2)


def test_sizes_totalling_exactly_2_64_minus_1_are_planned():
    report = devicemap.plan_report({"a.w": 2**64 - 2, "b.w": 1}, {0: 2**64 - 1})
    assert report.fits


def test_max_context_with_huge_weights_does_not_panic():
    # Was a PanicException (a BaseException) out of max_context(): weights plus the cache of
    # the contexts tried passed 2**64 inside the search.
    config = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 2**20,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
    }
    sizes = {"model.layers.0.w": 2**63, "model.layers.1.w": 2**62}
    report = devicemap.plan_report(sizes, {0: 2**64 - 1, 1: 2**64 - 1}, context=1, config=config)
    found = report.max_context()
    assert found is not None
    # The answer is exact: it fits, one more token does not.
    assert devicemap.plan_report(sizes, {0: 2**64 - 1, 1: 2**64 - 1}, context=found, config=config).fits
    with pytest.raises((OverflowError, AssertionError)):
        assert devicemap.plan_report(
            sizes, {0: 2**64 - 1, 1: 2**64 - 1}, context=found + 1, config=config
        ).fits


@pytest.mark.parametrize("n", [10**12, 2**63, 2**64 - 1])
def test_stages_far_more_than_tensors_are_refused_without_a_budget_each(n):
    # 10**12 allocated 10**12 budgets (memory ran out); from 2**63 a panic ("capacity overflow").
    with pytest.raises(ValueError, match=f"Cannot split 2 blocks into {n} stages"):
        devicemap.stages({"a.w": 1, "b.w": 2}, n)


# --- a config that is not a file: /dev/zero was read until memory ran out, a FIFO blocked ---


def test_kv_cache_config_from_dev_zero_is_refused_before_reading():
    with pytest.raises(
        ValueError, match="cannot read the model config /dev/zero: it is a character device, not a file"
    ):
        devicemap.kv_cache("/dev/zero", 10)


def test_plan_config_from_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="it is a FIFO \\(named pipe\\), not a file"):
        devicemap.plan_report(ONE_LAYER, {0: 100}, context=4, config=str(fifo))


def test_a_config_file_over_16_mib_is_refused(tmp_path):
    big = tmp_path / "config.json"
    with big.open("wb") as f:
        f.truncate(17 << 20)  # sparse: no disk used
    with pytest.raises(ValueError, match="is more than 16777216 bytes, far more than a config\\.json holds"):
        devicemap.kv_cache(str(tmp_path), 10)


def test_cli_config_from_dev_zero_under_a_memory_limit():
    # In a child with 2 GiB of address space: reading /dev/zero to its end anywhere (the core,
    # or Python glue that looks at --config) fails this test with a MemoryError, not the machine.
    limit = (2 << 30, 2 << 30)
    options = ["--devices", "2xH100", "--context", "1k", "--config", "/dev/zero"]
    done = subprocess.run(
        [sys.executable, "-m", "devicemap", "plan", "--example", "llama-3-70b", *options],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, limit),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    expected = "error: cannot read the model config /dev/zero: it is a character device, not a file"
    assert done.stderr.strip().endswith(expected), done.stderr


# --- config dicts with ints past 64 bits: were read as missing (null), so a default was used ---


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model_type": "llama", "num_hidden_layers": 2**64}, "num_hidden_layers"),
        ({"model_type": "llama", "head_dim": 2**64}, "head_dim"),
        ({"model_type": "mistral", "num_hidden_layers": 1, "sliding_window": 2**64}, "sliding_window"),
        ({"model_type": "llama", "head_dim": 10**400}, "head_dim"),
    ],
)
def test_config_ints_past_64_bits_are_refused_by_field(config, field):
    with pytest.raises(ValueError, match=f"field '{field}' must be a non-negative integer, got ") as raised:
        devicemap.kv_cache(config, 10)
    assert "lacks them" not in str(raised.value)


def test_config_ints_past_64_bits_in_a_plan():
    config = {"model_type": "llama", "num_hidden_layers": 1, "head_dim": 2**64}
    with pytest.raises(
        ValueError, match=r"field 'head_dim' must be a non-negative integer, got 1\.8446744073709552e"
    ):
        devicemap.plan_report(ONE_LAYER, {0: 100}, context=4, config=config)


def test_a_dict_config_and_the_same_config_json_agree(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "num_hidden_layers": 18446744073709551616}')
    messages = []
    for config in (str(path), {"model_type": "llama", "num_hidden_layers": 2**64}):
        with pytest.raises(ValueError, match="num_hidden_layers") as raised:
            devicemap.kv_cache(config, 10)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


def test_unused_huge_config_ints_are_still_fine():
    assert devicemap.kv_cache({"model_type": "llama", "vocab_size": 2**70}, 10).total > 0


# --- damaged pytorch_model.bin: torch's RuntimeError / UnpicklingError, naming no file ---


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        zip_bytes({"archive/data.pkl": b"garbage"}),  # no version record
        zip_bytes({"hello.txt": b"hi"}),  # not in a subdirectory
        b"PK\x03\x04" + bytes(100),  # no central directory
    ],
    ids=["no-version", "flat", "truncated"],
)
def test_damaged_pytorch_archive_is_a_value_error_naming_the_file(tmp_path, data):
    pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"torch\.load cannot read this PyTorch checkpoint: ") as raised:
        devicemap.tensor_sizes(str(tmp_path))
    assert str(raised.value).startswith(f"{path}: ")


class RunsCode:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("exit 3",))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": RunsCode()}, path)
    with pytest.raises(
        ValueError, match=r"holds objects other than tensors, which torch\.load\(weights_only=True\)"
    ):
        devicemap.tensor_sizes(str(path))


def test_cli_plan_of_a_damaged_archive(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + bytes(100))
    status, err = run_cli("plan", str(tmp_path), "--max-memory", "cpu=1GiB")
    assert status == 2, err
    assert "torch.load cannot read this PyTorch checkpoint" in err, err
    assert "unexpected" not in err, err


# --- arguments of the wrong type named by pyo3 or Python without the argument's name ---


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: devicemap.plan({"a.w": 1}, {0: 10}, strategy=5), "strategy must be a str, got int 5"),
        (lambda: devicemap.plan({"a.w": 1}, {0: 10}, token=5), "token must be a str, got int 5"),
        (lambda: devicemap.tensor_sizes("hf://org/name", token=5), "token must be a str, got int 5"),
        (lambda: devicemap.stages({"a.w": 1}, 1, token=b"x"), "token must be a str, got bytes b'x'"),
        (
            lambda: devicemap.plan({"a.w": 1}, {0: 10}, tied=5),
            "tied must be a list of groups (lists of str), got int 5",
        ),
        (
            lambda: devicemap.plan({"a.w": 1}, {0: 10}, tied="ab"),
            "tied must be a list of groups (lists of str), got str 'ab'",
        ),
    ],
)
def test_wrong_types_name_the_argument(call, message):
    with pytest.raises(TypeError) as raised:
        call()
    assert str(raised.value) == message


def test_max_batch_at_context_0_is_refused_as_context_0_is():
    # Was None ("every batch fits"), while plan_report(context=0) is refused.
    report = devicemap.plan_report(ONE_LAYER, {0: 10**9}, context=1, config=LLAMA_1)
    with pytest.raises(ValueError, match="context must be >= 1, got 0"):
        report.max_batch(context=0)


@pytest.mark.parametrize(
    "config",
    [{"model_type": 5}, {"model_type": ["llama"]}, {"model_type": "llava", "text_config": {"model_type": 7}}],
)
def test_a_model_type_that_is_not_a_str_is_named(config):
    # Was "the model config has no 'model_type'".
    with pytest.raises(
        ValueError, match="the model config's 'model_type' must be a str such as \"llama\", got "
    ):
        devicemap.kv_cache(config, 10)


# --- config.json beside a checkpoint with "architectures" that is not a list ---


def safetensors_bytes(header: dict[str, dict[str, object]]) -> bytes:
    text = json.dumps(header).encode()
    end = max(entry["data_offsets"][1] for entry in header.values())  # type: ignore[index]
    return struct.pack("<Q", len(text)) + text + bytes(end)  # type: ignore[call-overload]


@pytest.mark.parametrize("architectures", [5, "LlamaForCausalLM", {"a": 1}])
def test_architectures_that_is_not_a_list_falls_back_with_a_note(tmp_path, architectures):
    # Was TypeError "'int' object is not subscriptable" (the str form planned with its first letter).
    pytest.importorskip("transformers")
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes({"model.layers.0.w": entry}))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": architectures}))
    report = devicemap.plan_report(str(tmp_path), {"cpu": 10**6})
    assert report.fits
    assert "config.json names no model class (`architectures`)" in report.to_dict()["notes"][0]


# --- NaN and infinities in a config dict: were read as null, so the field's default was used ---


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [("head_dim", float("nan"), '"nan"'), ("num_hidden_layers", float("-inf"), '"-inf"')],
)
def test_non_finite_config_floats_are_refused_by_field(field, value, shown):
    with pytest.raises(ValueError, match=f"field '{field}' must be a non-negative integer, got {shown}"):
        devicemap.kv_cache({"model_type": "llama", field: value}, 10)


def test_non_finite_floats_in_fields_not_read_are_fine():
    assert devicemap.kv_cache({"model_type": "llama", "rope_theta": float("inf")}, 10).total > 0


# --- empty paths: messages began ": no such file", and `devicemap plan ""` planned the example ---


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: devicemap.tensor_sizes(""), "'': no such file or directory"),
        (lambda: devicemap.tensor_sizes([""]), "'': cannot read: "),
        (lambda: devicemap.plan("", {0: 1}), "'': no such file or directory"),
        (lambda: devicemap.kv_cache("", 1), "cannot read the model config '': "),
    ],
)
def test_an_empty_path_is_shown_quoted(call, message):
    with pytest.raises(ValueError, match="''") as raised:
        call()
    assert str(raised.value).startswith(message), raised.value


@pytest.mark.parametrize("checkpoint", ["", " "])
def test_cli_plan_of_an_empty_checkpoint_is_refused(checkpoint):
    status, err = run_cli("plan", checkpoint, "--devices", "2xH100")
    assert status == 2, err
    assert err == f"error: CHECKPOINT is empty ({checkpoint!r}): give a path or a Hub repository\n", err


# --- size strings: read through f64, so whole numbers past 2**53 lost bytes, 2**64 - 1 refused ---


@pytest.mark.parametrize("text", ["9007199254740993", "9223372036854775807", "18446744073709551615"])
def test_whole_byte_counts_as_strings_are_exact(text):
    report = devicemap.plan_report({"a.w": 1}, {0: text})
    assert report.to_dict()["devices"][0]["budget"] == int(text)


@pytest.mark.parametrize("text", ["18446744073709551616", "17179869184GiB", "1e30"])
def test_sizes_past_64_bits_say_so(text):
    expected = f"max_memory[0] = '{text}': Memory size '{text}' is more than 18446744073709551615 bytes"
    with pytest.raises(ValueError, match=re.escape(expected)):
        devicemap.plan({"a.w": 1}, {0: text})


def test_cli_activation_of_2_64_minus_1_bytes_is_a_size():
    status, err = run_cli(
        "plan",
        "--example",
        "llama-3-70b",
        "--devices",
        "2xH100",
        "--context",
        "4k",
        "--activation",
        str(2**64 - 1),
    )
    assert status == 1, err  # it does not fit, rather than "Invalid memory size"
    assert "Invalid memory size" not in err, err


# --- lookup on an empty map: group_by_device panicked (index out of bounds) ---


def test_group_by_device_on_an_empty_map_is_a_key_error():
    with pytest.raises(KeyError, match="No key of the device map covers tensor 'a' \\(at position 0\\)"):
        devicemap.DeviceMap().group_by_device(["a"])
    assert devicemap.DeviceMap().group_by_device([]) == {}


# --- a tensor with tensors under it: an internal error ("the compact map places tensors ...") ---


def test_a_tensor_with_a_tensor_under_it_placed_apart_is_refused():
    sizes = {"x.a": 10, "x.a.a": 10, "y": 10}
    expected = "Tensor 'x.a' has another tensor under it, 'x.a.a': a device map key 'x.a' covers both"
    with pytest.raises(ValueError, match=re.escape(expected)):
        devicemap.plan_report(sizes, {0: 15, 1: 15, 2: 15})
    with pytest.raises(ValueError, match=re.escape(expected)):
        devicemap.stages(sizes, 2)
    # Placed together, the map is fine.
    assert devicemap.plan(sizes, {0: 100}).to_hf() == {"": 0}


# --- property: sizes, budgets and contexts anywhere in 64 bits give a report or a clear error ---

byte_counts = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1), st.sampled_from([2**64 - 1, 2**63, 0]))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(byte_counts, min_size=1, max_size=5),
    st.dictionaries(st.one_of(st.integers(0, 3), st.sampled_from(["cpu", "disk"])), byte_counts, min_size=1),
    st.sampled_from(["balanced", "sequential", "balanced_low_0"]),
    st.one_of(st.none(), st.integers(1, 2**20), st.integers(2**62, 2**64 + 1)),
    st.integers(1, 4),
)
def test_plans_with_huge_numbers_never_panic(sizes, budgets, strategy, context, gpus_per_host):
    names = {f"model.layers.{i}.w": size for i, size in enumerate(sizes)}
    config = {"model_type": "llama", "num_hidden_layers": len(sizes), "hidden_size": 64}
    caught: Exception | None = None
    try:
        report = devicemap.plan_report(
            names, budgets, strategy, context=context, config=config if context else None
        )
        str(report)
        report.to_dict()
        report.hosts(gpus_per_host)
        if context:
            report.max_context()
            report.max_batch()
    except (ValueError, TypeError, OverflowError) as error:  # a panic is neither
        caught = error
    if isinstance(caught, OverflowError):
        assert "2**64" in str(caught), caught
    assert "internal error" not in str(caught)


def test_an_empty_pytorch_checkpoint_holds_no_tensors_as_an_empty_safetensors_does(tmp_path):
    # Was {} from tensor_sizes.
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({}, path)
    with pytest.raises(ValueError, match=re.escape(f"The checkpoint '{path}' holds no tensors")):
        devicemap.tensor_sizes(str(tmp_path))
