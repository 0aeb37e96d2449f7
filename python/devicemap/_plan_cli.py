"""`devicemap plan`: where each part of a model goes on this machine, or on one described by
`--devices 8xH100`, and whether it fits. rich is imported only when the table is printed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from devicemap import _core, _hub_cli
from devicemap._cli_input import CliError
from devicemap._core import _human_bytes

EXIT_OK = 0
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID = 2

MIB = 2**20

# Memory per card as the driver reports it (bytes), for planning a machine you are not on.
CATALOGUE: dict[str, tuple[str, int]] = {
    "h100": ("H100 80GB", 81559 * MIB),
    "h100-nvl": ("H100 NVL 94GB", 95830 * MIB),
    "h200": ("H200 141GB", 143771 * MIB),
    "h20": ("H20 96GB", 97871 * MIB),
    "b200": ("B200 180GB", 183359 * MIB),
    "a100": ("A100 80GB", 81920 * MIB),
    "a100-80gb": ("A100 80GB", 81920 * MIB),
    "a100-40gb": ("A100 40GB", 40960 * MIB),
    "l40s": ("L40S 48GB", 46068 * MIB),
    "l40": ("L40 48GB", 46068 * MIB),
    "l4": ("L4 24GB", 23034 * MIB),
    "a10g": ("A10G 24GB", 23028 * MIB),
    "a10": ("A10 24GB", 23028 * MIB),
    "rtx4090": ("RTX 4090 24GB", 24564 * MIB),
    "rtx3090": ("RTX 3090 24GB", 24576 * MIB),
    "rtx6000ada": ("RTX 6000 Ada 48GB", 49140 * MIB),
    "v100": ("V100 32GB", 32768 * MIB),
    "t4": ("T4 16GB", 15360 * MIB),
    "mi300x": ("MI300X 192GB", 196592 * MIB),
    "mi325x": ("MI325X 256GB", 262128 * MIB),
}
ALIASES = {"h100-80gb": "h100", "h200-141gb": "h200", "a10g-24gb": "a10g", "4090": "rtx4090"}


def parse_devices(text: str) -> tuple[int, int, str, int]:
    """`8xH100` -> (hosts 1, 8 per host, card name, bytes per card); `2x8xH100` -> 2 hosts."""
    parts = text.strip().lower().split("x")
    *counts, card = parts
    if len(counts) > 2 or not card:
        raise CliError(
            f"--devices {text!r}: expected COUNTxCARD or HOSTSxCOUNTxCARD, e.g. 8xH100 or 2x8xH100"
        )
    try:
        numbers = [int(c) for c in counts]
    except ValueError:
        raise CliError(f"--devices {text!r}: counts must be integers, e.g. 8xH100") from None
    if any(n < 1 for n in numbers):
        raise CliError(f"--devices {text!r}: counts must be >= 1")
    hosts, per_host = (1, 1) if not numbers else (1, numbers[0]) if len(numbers) == 1 else tuple(numbers)
    key = ALIASES.get(card.replace(" ", ""), card.replace(" ", ""))
    if key not in CATALOGUE:
        known = ", ".join(sorted({name for name, _ in CATALOGUE.values()}))
        raise CliError(f"--devices {text!r}: unknown card {card!r}; known cards: {known}")
    name, memory = CATALOGUE[key]
    return hosts, per_host, name, memory


def parse_max_memory(text: str) -> dict[int | str, str]:
    """`0=70GiB,1=70GiB,cpu=200GiB` -> `{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}` (values are
    checked by the planner, which names a bad entry)."""
    out: dict[int | str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CliError(f"--max-memory entry {item!r}: expected KEY=SIZE, e.g. 0=70GiB or cpu=200GiB")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = value.strip()
    if not out:
        raise CliError("--max-memory is empty; expected e.g. 0=70GiB,1=70GiB,cpu=200GiB")
    return out


def parse_context(text: str) -> int | None:
    """`32k` -> 32768, `128K` -> 131072, `1m` -> 1048576, `4096` -> 4096; `max` -> None (the
    longest that fits is searched). `k` and `m` are powers of 2, as context lengths are."""
    cleaned = text.strip().lower()
    if cleaned == "max":
        return None
    scale = {"k": 2**10, "m": 2**20}.get(cleaned[-1:], 1)
    number = cleaned[:-1] if scale > 1 else cleaned
    if not number.isdigit():
        raise CliError(f"--context {text!r}: expected tokens such as 4096, 32k, 128k or 1m, or 'max'")
    return int(number) * scale


def _config(args: argparse.Namespace) -> Any:
    """The model config a plan with --context sizes the cache from: --config, the example's,
    or the checkpoint's config.json, on disk or on the Hub (`None` when there is none: the
    planner then says so)."""
    if args.config:
        return args.config
    if not args.checkpoint:
        return json.loads(_core._example_config(args.example or "deepseek-v3"))
    if _hub_cli.is_hub(args.checkpoint):
        return _hub_cli.config(args.checkpoint)
    from devicemap._plan import _config_of

    return _config_of(args.checkpoint, None, 1)


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    """`plan_report`'s keyword arguments for --context, --batch, --kv-dtype, --activation."""
    if args.context is None:
        for flag, value in [
            ("--batch", args.batch),
            ("--kv-dtype", args.kv_dtype),
            ("--activation", args.activation),
        ]:
            if value is not None:
                raise CliError(f"{flag} needs --context (tokens per sequence, e.g. --context 32k)")
        return {}
    return {
        "context": parse_context(args.context) or 1,
        "batch": args.batch,
        "kv_dtype": args.kv_dtype,
        "activation": args.activation,
        "config": _config(args),
    }


def _budgets(args: argparse.Namespace) -> tuple[dict[int | str, Any], str, int]:
    """Budgets, a description of the GPUs, and GPUs per host (0: one host)."""
    from devicemap._plan import default_max_memory

    budgets: dict[int | str, Any] = {}
    described = ""
    per_host = 0
    if args.devices:
        hosts, per_host, name, memory = parse_devices(args.devices)
        usable = max(0, memory - _core._headroom(memory, args.reserve))
        for gpu in range(hosts * per_host):
            budgets[gpu] = usable
        described = f"{per_host} x {name}" if hosts == 1 else f"{hosts} hosts x {per_host} x {name}"
        if hosts == 1:
            per_host = 0
    if args.max_memory:
        budgets.update(parse_max_memory(args.max_memory))
    if not args.devices and not args.max_memory:
        from devicemap import cuda_devices

        budgets = dict(default_max_memory(args.reserve))
        names = sorted({device.name for device in cuda_devices()})
        count = sum(1 for key in budgets if isinstance(key, int))
        described = (
            f"{count} x {names[0]}" if len(names) == 1 else f"{count} GPUs" if count else "this machine"
        )
    if not described:
        count = sum(1 for key in budgets if isinstance(key, int))
        described = f"{count} GPUs" if count else "the CPU"
    return budgets, described, per_host


def _verdict(report: Any, described: str) -> str:
    devices = report.devices
    gpus = [d for d in devices if d["device"] not in ("cpu", "disk")]
    context = report.context
    at = f" at {context['tokens']:,} tokens x batch {context['batch']:,}" if context else ""
    if not report.fits:
        return (
            f"does not fit on {described}{at}: {_human_bytes(report.missing_bytes)} more is needed "
            "(more or larger GPUs, or a cpu/disk budget with --max-memory cpu=...,disk=...)"
        )
    spilled = {d["device"]: d["bytes"] for d in devices if d["device"] in ("cpu", "disk") and d["bytes"]}
    if gpus and spilled:
        offload = " and ".join(f"{_human_bytes(b)} on {device}" for device, b in spilled.items())
        return f"fits on {described}{at} only with offloading: {offload}"
    if gpus:
        spare = min(d["spare"] for d in gpus)
        return f"fits on {described}{at} with {_human_bytes(spare)} to spare per GPU"
    used = ", ".join(d["device"] for d in devices if d["bytes"] or d["cache"])
    return f"fits on {used}{at}"


def _share(share: float, width: int) -> str:
    """`62.3%`, after a bar of `width` characters when there is room for one."""
    filled = round(min(max(share, 0.0), 1.0) * width)
    bar = "#" * filled + "." * (width - filled)
    return f"{bar} {share * 100:5.1f}%" if width else f"{share * 100:5.1f}%"


def _print_table(report: Any, described: str, per_host: int, source: str, verdict: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    total, tensors, blocks = report.total_bytes, report.tensors, report.blocks
    name, size = report.largest_block
    console.print(
        f"{source}: {_human_bytes(total)} in {tensors:,} tensors, {blocks:,} blocks "
        f"(largest {name!r}, {_human_bytes(size)}), strategy {report.strategy}"
    )
    context = report.context
    if context:
        console.print(
            f"for {context['tokens']:,} tokens x batch {context['batch']:,}: KV cache "
            f"{_human_bytes(report.cache_bytes)} ({context['kv_dtype']}, {len(context['per_layer'])} layers)"
        )
    table = Table(show_edge=False, pad_edge=False)
    if per_host:
        table.add_column("host", justify="right")
    columns = [("device", "left"), ("placed", "right")]
    if context:
        columns.append(("cache", "right"))
    for column, justify in [
        *columns,
        ("budget", "right"),
        ("share", "left"),
        ("blocks", "right"),
        ("tensors", "right"),
        ("entries", "right"),
    ]:
        # A row is one line: a narrow terminal drops the share bar rather than wrap cells.
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    bar = 10 if console.width >= 100 else 0
    for entry in report.devices:
        share = entry["share"]
        row = [
            entry["device"],
            _human_bytes(entry["bytes"]),
            *([_human_bytes(entry["cache"])] if context else []),
            _human_bytes(entry["budget"]),
            _share(share, bar),
            f"{entry['blocks']:,}",
            f"{entry['tensors']:,}",
            f"{entry['entries']:,}",
        ]
        kept = entry["reserved"] + entry["activation"]
        if kept:
            row[3 if context else 2] += f" (keeps {_human_bytes(kept)})"
        if per_host:
            device = entry["device"]
            host = str(int(device.split(":")[1]) // per_host) if device.startswith("cuda:") else ""
            row.insert(0, host)
        table.add_row(*row)
    console.print(table)
    spilled = report.spilled
    if spilled:
        shown = ", ".join(f"{n} ({_human_bytes(b)}) -> {d}" for n, b, d in spilled[:6])
        more = f", and {len(spilled) - 6} more" if len(spilled) > 6 else ""
        console.print(f"spilled: {shown}{more}")
    for note in report.notes:
        console.print(note)
    console.print(f"[bold]{verdict}[/bold]")


def _read_sizes(path: str, dtype: str | None) -> tuple[Any, list[list[str]]]:
    if _hub_cli.is_hub(path):
        return _hub_cli.read_sizes(path, dtype)
    if not sys.stderr.isatty():
        return _core._checkpoint_sizes(path, dtype, None)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("reading safetensors headers", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return _core._checkpoint_sizes(path, dtype, advance)


def _longest(
    report: Any, args: argparse.Namespace, sizes: Any, budgets: Any, tied: Any, workload: dict[str, Any]
) -> int | None:
    """For --context max: the longest context that fits (printed on stderr), to plan at; `None`
    otherwise, or when no context fits (the plan at 1 token then says by how much)."""
    if args.context is None or parse_context(args.context) is not None:
        return None
    try:
        longest = report.max_context()
    except ValueError as error:
        print(f"no context fits: {error}", file=sys.stderr)
        return None
    if longest is None:
        print(
            "every context fits: the cache stops growing (sliding windows or fixed states)", file=sys.stderr
        )
        return None
    print(
        f"longest context that fits: {longest:,} tokens x batch {report.context['batch']:,}", file=sys.stderr
    )
    return int(longest)


def run(args: argparse.Namespace) -> int:
    from devicemap._plan import plan_report

    try:
        if args.checkpoint and args.example:
            raise CliError("give a CHECKPOINT or --example, not both")
        if not 0.0 <= args.reserve < 1.0:
            raise CliError(f"--reserve must be a fraction in [0, 1), got {args.reserve}")
        budgets, described, per_host = _budgets(args)
        if args.checkpoint:
            sizes, tied = _read_sizes(args.checkpoint, args.dtype)
            source = args.checkpoint
        else:
            example = args.example or "deepseek-v3"
            sizes, tied = _core.example_model(example, args.dtype), []
            source = f"example {example}"
        workload = _workload(args)
        report = plan_report(sizes, budgets, args.strategy, tied=tied, **workload)
        longest = _longest(report, args, sizes, budgets, tied, workload)
        if longest is not None:
            report = plan_report(sizes, budgets, args.strategy, tied=tied, **{**workload, "context": longest})
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID

    verdict = _verdict(report, described)
    if args.output:
        if not report.fits:
            print(f"error: not writing {args.output}: {verdict}", file=sys.stderr)
            return EXIT_DOES_NOT_FIT
        if args.format == "haystack":
            from devicemap import ComponentDevice

            data: Any = ComponentDevice.from_multiple(report.device_map).to_dict()
        else:
            data = report.to_hf()
        try:
            Path(args.output).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            print(f"error: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
            return EXIT_INVALID
    if args.json:
        data = report.to_dict()
        if args.context is not None and parse_context(args.context) is None:
            context = report.context
            data["max_context"] = context["tokens"] if report.fits and context else None
        data["source"] = source
        data["verdict"] = verdict
        data["budgets_for"] = described
        print(json.dumps(data, indent=2))
    else:
        _print_table(report, described, per_host, source, verdict)
    return EXIT_OK if report.fits else EXIT_DOES_NOT_FIT


def add_parser(commands: Any) -> None:
    """Registers `devicemap plan` on the subcommand parsers of cli.py."""
    parser = commands.add_parser(
        "plan",
        help="plan where each part of a model goes (safetensors headers only) and whether it fits",
        description="Read a checkpoint's safetensors headers (or use a built-in example), plan where "
        "each block goes on this machine or on --devices, and print a per-device table with a verdict. "
        "Exit code 1 if the model does not fit, 2 on bad input.",
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="a .safetensors file, an index, a checkpoint directory, or a Hub repository "
        "(org/name, hf://org/name@revision)",
    )
    parser.add_argument(
        "--example",
        choices=_core._EXAMPLE_NAMES,
        help="plan a built-in example model (default without CHECKPOINT: deepseek-v3)",
    )
    parser.add_argument("--max-memory", help="budgets, e.g. 0=70GiB,1=70GiB,cpu=200GiB,disk=1TiB")
    parser.add_argument(
        "--devices",
        help="plan for cards you are not on: 8xH100, 2x8xH100 (hosts), 4xA100-40GB, 8xH200, 8xMI300X ...",
    )
    parser.add_argument("--strategy", default="balanced", choices=_core._STRATEGY_NAMES)
    parser.add_argument(
        "--dtype", help="size floating-point tensors as this torch dtype (bfloat16, float16 ...)"
    )
    parser.add_argument(
        "--reserve",
        type=float,
        default=_core._DEFAULT_RESERVE,
        help="fraction of each device's memory kept free for what the plan does not count: the CUDA "
        "context, fragmentation, and without --context the KV cache and activations "
        "(machine and --devices budgets)",
    )
    parser.add_argument(
        "--context",
        help="plan for inference at this many tokens per sequence (4096, 32k, 128k, 1m): each layer's "
        "KV cache is charged where the layer runs; 'max' plans at the longest context that fits",
    )
    parser.add_argument("--batch", type=int, help="sequences in the batch (with --context; default 1)")
    parser.add_argument(
        "--kv-dtype",
        help="dtype of the KV cache: fp8, bf16, fp16, fp32 or a torch name (default: the config's)",
    )
    parser.add_argument(
        "--activation",
        help="kept free for activations on each device that runs layers, e.g. 2GiB (with --context)",
    )
    parser.add_argument(
        "--config", help="the model's config.json (default: the checkpoint's, or the example's) for --context"
    )
    parser.add_argument("-o", "--output", help="write the map as JSON to this file")
    parser.add_argument("--format", choices=["hf", "haystack"], default="hf", help="form of the -o map")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(run=run)
