"""The real-GPU check, for a machine with an NVIDIA GPU, torch and transformers.

1. NVML discovery (`devicemap.cuda_devices()`) against `torch.cuda` and `nvidia-smi`: count,
   names, UUIDs and memory, with CUDA_VISIBLE_DEVICES unset, set to an index and set to a UUID.
   Each setting runs in a fresh process, since CUDA reads the variable once.
2. A plan for the real GPU, loaded with transformers: a small Llama saved with
   `save_pretrained` (sharded), planned from the directory with this machine's own budgets and
   with a GPU budget that forces part of the model onto the CPU; each plan loaded with
   `from_pretrained(device_map=plan.to_hf())`, its placement compared with the plan, and its
   logits compared with a plain CPU load.

Run: `python scripts/gpu_check.py` (prints a report; exits 1 on any mismatch);
`--load-only` skips discovery (the load check also runs, on the CPU, where there is no GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

PROBE = r"""
import json, os, subprocess
import devicemap
out = {"env": os.environ.get("CUDA_VISIBLE_DEVICES")}
out["devicemap"] = [
    {"ordinal": d.ordinal, "name": d.name, "uuid": d.uuid, "total": d.memory_total,
     "free": d.memory_free, "certain": d.ordering_certain}
    for d in devicemap.cuda_devices()
]
out["status"] = devicemap.cuda_status()
out["resolved"] = str(devicemap.ComponentDevice.resolve_device(None))
import torch
out["torch"] = []
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    free, total = torch.cuda.mem_get_info(i)
    out["torch"].append({"ordinal": i, "name": p.name, "uuid": "GPU-" + str(p.uuid),
                         "total": total, "free": free})
print(json.dumps(out))
"""


def nvidia_smi() -> list[dict[str, object]]:
    fields = "index,name,uuid,memory.total,memory.free,memory.reserved"
    text = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = []
    for line in text.strip().splitlines():
        index, name, uuid, total, free, reserved = (part.strip() for part in line.split(","))
        rows.append({"index": int(index), "name": name, "uuid": uuid, "total_mib": int(total)})
        rows[-1]["free_mib"] = int(free)
        rows[-1]["reserved_mib"] = int(reserved)
    return rows


def probe(env_value: str | None) -> dict[str, object]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if env_value is not None:
        env["CUDA_VISIBLE_DEVICES"] = env_value
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"probe failed for CUDA_VISIBLE_DEVICES={env_value!r}:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def compare(seen: dict[str, object], smi: list[dict[str, object]], failures: list[str]) -> None:
    ours = seen["devicemap"]
    theirs = seen["torch"]
    assert isinstance(ours, list)
    assert isinstance(theirs, list)
    label = f"CUDA_VISIBLE_DEVICES={seen['env']!r}"
    print(f"\n{label}: devicemap {len(ours)} GPU(s), torch {len(theirs)}; resolved {seen['resolved']}")
    print(f"  cuda_status: {seen['status']}")
    if len(ours) != len(theirs):
        failures.append(f"{label}: count {len(ours)} vs torch {len(theirs)}")
    smi_by_uuid = {row["uuid"]: row for row in smi}
    for d, t in zip(ours, theirs, strict=False):
        row = smi_by_uuid.get(d["uuid"], {})
        print(f"  ordinal {d['ordinal']}: {d['name']} {d['uuid']}")
        print(
            f"    total bytes: devicemap {d['total']}, torch {t['total']}, "
            f"nvidia-smi {row.get('total_mib')} MiB of which {row.get('reserved_mib')} reserved"
        )
        print(
            f"    free bytes:  devicemap {d['free']}, torch {t['free']}, nvidia-smi {row.get('free_mib')} MiB"
        )
        for key in ("name", "uuid", "total"):
            if d[key] != t[key]:
                failures.append(f"{label} ordinal {d['ordinal']}: {key} {d[key]!r} vs torch {t[key]!r}")
        if not row:
            failures.append(f"{label}: uuid {d['uuid']} not listed by nvidia-smi")
        elif row["name"] != d["name"] or abs(row["total_mib"] - row["reserved_mib"] - d["total"] / 2**20) > 1:
            failures.append(f"{label}: nvidia-smi says {row}")
        if not d["certain"]:
            failures.append(f"{label}: ordering_certain is False on a one-model machine")


def discovery(failures: list[str]) -> None:
    smi = nvidia_smi()
    print("nvidia-smi:", smi)
    unset = probe(None)
    compare(unset, smi, failures)
    devices = unset["devicemap"]
    assert isinstance(devices, list)
    if not devices:
        failures.append("no GPU found through NVML")
        return
    last = len(devices) - 1
    for value in (str(last), devices[last]["uuid"], devices[last]["uuid"][:12]):
        seen = probe(value)
        compare(seen, smi, failures)
        ours = seen["devicemap"]
        assert isinstance(ours, list)
        if [d["uuid"] for d in ours] != [devices[last]["uuid"]]:
            failures.append(f"CUDA_VISIBLE_DEVICES={value!r}: saw {[d['uuid'] for d in ours]}")


def load_check(failures: list[str]) -> None:
    import devicemap
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir, max_shard_size="50MB")
        ids = torch.randint(0, 32000, (2, 16))
        plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        expected = plain(ids).logits
        sizes = devicemap.tensor_sizes(model_dir, dtype="float32")
        total = sum(sizes.values())
        print(f"\nmodel: {len(sizes)} tensors, {total / 2**20:.1f} MiB as float32")
        # The second case offloads: to the CPU where there is a GPU, else to disk.
        fast, slow = (0, "cpu") if torch.cuda.is_available() else ("cpu", "disk")
        cases = {
            "this machine's budgets": None,
            f"{fast} budget of 40% of the model": {fast: int(total * 0.4), slow: "64GiB"},
        }
        for label, budgets in cases.items():
            report = devicemap.plan_report(model_dir, max_memory=budgets, dtype="float32")
            print(f"\nplan ({label}):\n{report}")
            model = AutoModelForCausalLM.from_pretrained(
                model_dir,
                dtype=torch.float32,
                device_map=report.to_hf(),
                offload_folder=os.path.join(tmp, "offload"),
            )
            planned = report.device_map
            for name, param in model.named_parameters():
                want = str(planned.device_for(name))
                got = str(param.device)
                hooked = getattr(model.get_submodule(name.rsplit(".", 1)[0]), "_hf_hook", None)
                if want.startswith("cuda") and got != want:
                    failures.append(f"{label}: {name} on {got}, planned {want}")
                if want in ("cpu", "disk") and got not in ("cpu", "meta") and hooked is None:
                    failures.append(f"{label}: {name} on {got}, planned {want}")
            counts = planned.device_counts()
            print(f"loaded; map entries per device {counts}")
            first = "cuda:0" if torch.cuda.is_available() else "cpu"
            logits = model(ids.to(first)).logits.float().cpu()
            diff = (logits - expected).abs().max().item()
            print(f"max |logits - CPU logits| = {diff:.2e}")
            if diff > 1e-3:
                failures.append(f"{label}: logits differ by {diff}")
            del model
            torch.cuda.empty_cache()
        context_check(model_dir, failures)


def context_check(model_dir: str, failures: list[str]) -> None:
    """A plan with `context=`: the GPU holds about half the weights plus the cache of every
    layer (offloaded layers run on the GPU too); after generating up to that many tokens each
    layer's cache must hold the bytes the plan charged, on the device it charged them to. The
    GPU's peak is printed beside the plan's charges: activations are not counted unless
    `activation=` is given, so the peak says how much a prefill of this length needs."""
    import devicemap
    import torch
    from transformers import AutoModelForCausalLM

    tokens = 2048
    # bfloat16, as inference runs (in float32 SDPA falls back to the math kernel, whose
    # attention scores grow with the square of the prompt: 0.6 GiB for this prompt on an H200).
    total = sum(devicemap.tensor_sizes(model_dir, dtype="bfloat16").values())
    per_token = devicemap.kv_cache(model_dir, 1, dtype="bfloat16").total
    fast, slow = (0, "cpu") if torch.cuda.is_available() else ("cpu", "disk")
    budgets = {fast: total // 2 + per_token * tokens + 64 * 2**20, slow: "64GiB"}
    report = devicemap.plan_report(
        model_dir, max_memory=budgets, dtype="bfloat16", context=tokens, kv_dtype="bfloat16"
    )
    print(f"\nplan (context {tokens}):\n{report}")
    print(f"max_context under these budgets: {report.max_context()}")
    context = report.context
    assert context is not None
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.bfloat16,
        device_map=report.to_hf(),
        offload_folder=os.path.join(model_dir, "offload-context"),
    )
    first = "cuda:0" if torch.cuda.is_available() else "cpu"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # As inference runs: a prompt and new tokens that together write `tokens` positions (a
    # p-token prompt and n new tokens write p + n - 1); generate computes only the last logits.
    new = 16
    prompt = torch.randint(0, 32000, (1, tokens - new + 1)).to(first)
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
            return_dict_in_generate=True, pad_token_id=0,
        )  # fmt: skip
    cache = out.past_key_values
    held: dict[str, int] = {}
    for i, layer in enumerate(cache.layers):
        nbytes = layer.keys.nbytes + layer.values.nbytes
        where = str(layer.keys.device)
        held[where] = held.get(where, 0) + nbytes
        if nbytes != context["per_layer"][i] or where != context["layer_devices"][i]:
            failures.append(
                f"context: layer {i} cache {nbytes} B on {where}, planned "
                f"{context['per_layer'][i]} B on {context['layer_devices'][i]}"
            )
    planned = {d["device"]: d["cache"] for d in report.devices if d["cache"]}
    print(f"cache held per device {held}; planned {planned}")
    if held != planned:
        failures.append(f"context: cache per device {held}, planned {planned}")
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated(0)
        gpu = next(d for d in report.devices if d["device"] in ("cuda:0", "0", 0))
        print(
            f"cuda:0 peak allocated during generate {peak / 2**20:.1f} MiB; planned weights "
            f"{gpu['bytes'] / 2**20:.1f} MiB + cache "
            f"{gpu['cache'] / 2**20:.1f} MiB + reserve {gpu['reserved'] / 2**20:.1f} MiB, "
            f"budget {gpu['budget'] / 2**20:.1f} MiB"
        )
    del model, cache, out
    torch.cuda.empty_cache()


def main() -> int:
    failures: list[str] = []
    if "--load-only" not in sys.argv:
        discovery(failures)
    load_check(failures)
    print("\nFAILURES:" if failures else "\nall checks passed")
    for failure in failures:
        print("  -", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
