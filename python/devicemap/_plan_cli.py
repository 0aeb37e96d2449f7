"""`devicemap plan`: where each part of a model goes on this machine, or on one described by
`--devices 8xH100`, and whether it fits. rich is imported only when the table is printed."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from devicemap import _bin, _core, _hub_cli
from devicemap._cli_input import CliError, write_output
from devicemap._core import _human_bytes

EXIT_OK = 0
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID = 2

MIB = 2**20

# Memory per card as the driver reports it (bytes), for planning a machine you are not on:
# key -> (name, bytes, vendor). `devicemap plan --list-devices` prints it.
CATALOGUE: dict[str, tuple[str, int, str]] = {
    "h100": ("H100 80GB", 81559 * MIB, "NVIDIA"),
    "h100-nvl": ("H100 NVL 94GB", 95830 * MIB, "NVIDIA"),
    "h200": ("H200 141GB", 143771 * MIB, "NVIDIA"),
    "h20": ("H20 96GB", 97871 * MIB, "NVIDIA"),
    "b200": ("B200 180GB", 183359 * MIB, "NVIDIA"),
    "a100": ("A100 80GB", 81920 * MIB, "NVIDIA"),
    "a100-80gb": ("A100 80GB", 81920 * MIB, "NVIDIA"),
    "a100-40gb": ("A100 40GB", 40960 * MIB, "NVIDIA"),
    "l40s": ("L40S 48GB", 46068 * MIB, "NVIDIA"),
    "l40": ("L40 48GB", 46068 * MIB, "NVIDIA"),
    "l4": ("L4 24GB", 23034 * MIB, "NVIDIA"),
    "a10g": ("A10G 24GB", 23028 * MIB, "NVIDIA"),
    "a10": ("A10 24GB", 23028 * MIB, "NVIDIA"),
    "rtx4090": ("RTX 4090 24GB", 24564 * MIB, "NVIDIA"),
    "rtx3090": ("RTX 3090 24GB", 24576 * MIB, "NVIDIA"),
    "rtx6000ada": ("RTX 6000 Ada 48GB", 49140 * MIB, "NVIDIA"),
    "v100": ("V100 32GB", 32768 * MIB, "NVIDIA"),
    "t4": ("T4 16GB", 15360 * MIB, "NVIDIA"),
    "mi300x": ("MI300X 192GB", 196592 * MIB, "AMD"),
    "mi325x": ("MI325X 256GB", 262128 * MIB, "AMD"),
}
ALIASES = {"h100-80gb": "h100", "h200-141gb": "h200", "a10g-24gb": "a10g", "4090": "rtx4090"}


def catalogue_text() -> str:
    """The cards `--devices` knows, one per line: the name to type, the card, its memory."""
    lines = [f"{'--devices':<12} {'card':<18} {'vendor':<7} memory"]
    for key, (name, memory, vendor) in CATALOGUE.items():
        lines.append(f"{key:<12} {name:<18} {vendor:<7} {_human_bytes(memory)}")
    aliases = ", ".join(f"{alias} = {key}" for alias, key in ALIASES.items())
    lines.append(f"also: {aliases}")
    lines.append("write COUNTxCARD (8xH100) or HOSTSxCOUNTxCARD (2x8xH100)")
    return "\n".join(lines)


def _digits(text: str) -> bool:
    """Whether `text` is a count in ASCII digits (`str.isdigit` also takes `²`, which `int`
    refuses)."""
    return text.isascii() and text.isdigit()


# GPUs --devices plans for, at most: far more than any model has blocks (DeepSeek-V3: 64).
MAX_GPUS = 4096
# Tokens per sequence and sequences per batch, at most: what the core takes (a C long).
MAX_COUNT = 2**63 - 1


def parse_devices(text: str) -> tuple[int, int, str, int]:
    """`8xH100` -> (hosts 1, 8 per host, card name, bytes per card); `2x8xH100` -> 2 hosts.
    Counts are the leading `<digits>x` parts, so card names may hold an `x` (`8xMI300X`)."""
    rest = text.strip().lower().replace(" ", "")
    numbers: list[int] = []
    while len(numbers) < 2:
        count, sep, tail = rest.partition("x")
        if not sep or not _digits(count) or not tail:
            break
        numbers.append(int(count))
        rest = tail
    card = rest
    more = card.partition("x")
    if not card or (_digits(card) and card not in ALIASES) or (more[1] and _digits(more[0])):
        raise CliError(
            f"--devices {text!r}: expected COUNTxCARD or HOSTSxCOUNTxCARD, e.g. 8xH100 or 2x8xH100"
        )
    if any(n < 1 for n in numbers):
        raise CliError(f"--devices {text!r}: counts must be >= 1")
    hosts, per_host = (1, numbers[0] if numbers else 1) if len(numbers) < 2 else (numbers[0], numbers[1])
    if hosts * per_host > MAX_GPUS:
        # One budget per GPU: a slip such as 8x8000xH100 would otherwise run for hours.
        raise CliError(f"--devices {text!r}: {hosts * per_host:,} GPUs; at most {MAX_GPUS:,}")
    key = ALIASES.get(card, card)
    if key not in CATALOGUE:
        raise CliError(
            f"--devices {text!r}: unknown card {card!r}; known cards: {', '.join(CATALOGUE)} "
            "(devicemap plan --list-devices shows each one's memory)"
        )
    name, memory, _ = CATALOGUE[key]
    return hosts, per_host, name, memory


def parse_max_memory(text: str) -> dict[int | str, str]:
    """`0=70GiB,1=70GiB,cpu=200GiB` -> `{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}` (values are
    checked by the planner, which names a bad entry). A key given twice is refused."""
    out: dict[int | str, str] = {}
    given: dict[int | str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CliError(f"--max-memory entry {item!r}: expected KEY=SIZE, e.g. 0=70GiB or cpu=200GiB")
        key = key.strip()
        parsed: int | str = int(key) if _digits(key) else key
        if parsed in out:
            raise CliError(f"--max-memory names {key!r} twice: {given[parsed]!r} and {item!r}")
        out[parsed] = value.strip()
        given[parsed] = item
    if not out:
        raise CliError(f"--max-memory {text!r} is empty; expected e.g. 0=70GiB,1=70GiB,cpu=200GiB")
    return out


def parse_context(text: str) -> int | None:
    """`32k` -> 32768, `128K` -> 131072, `1m` -> 1048576, `4096` -> 4096; `max` -> None (the
    longest that fits is searched). `k` and `m` are powers of 2, as context lengths are."""
    cleaned = text.strip().lower()
    if cleaned == "max":
        return None
    scale = {"k": 2**10, "m": 2**20}.get(cleaned[-1:], 1)
    number = cleaned[:-1] if scale > 1 else cleaned
    if not _digits(number):
        raise CliError(f"--context {text!r}: expected tokens such as 4096, 32k, 128k or 1m, or 'max'")
    if int(number) == 0:
        raise CliError(f"--context {text!r}: a context is at least 1 token")
    if int(number) * scale > MAX_COUNT:
        raise CliError(f"--context {text!r}: at most {MAX_COUNT:,} tokens")
    return int(number) * scale


def _config_shape(config: Any) -> tuple[Any, Any] | None:
    """A config's `model_type` and decoder layer count (a path to a config.json or its folder,
    or a dict); `None` when it cannot be read here (the planner then says why)."""
    if not isinstance(config, dict):
        path = Path(config)
        try:
            config = json.loads((path / "config.json" if path.is_dir() else path).read_text("utf-8"))
        except (OSError, ValueError):
            return None
    if not isinstance(config, dict):
        return None
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    layers = next(
        (text[k] for k in ("num_hidden_layers", "num_decoder_layers", "n_layer") if k in text), None
    )
    return config.get("model_type"), layers


def _config_warning(args: argparse.Namespace) -> str | None:
    """When --config is another model's (its model_type or decoder layer count differ from the
    checkpoint's or example's own config), a warning: the cache is sized from --config, and
    a layer list longer than its layer count is taken without a word (DeepSeek-V3's extra
    multi-token-prediction block)."""
    if not args.config or (args.checkpoint and _hub_cli.is_hub(args.checkpoint)):
        return None
    if args.checkpoint:
        from devicemap._plan import _config_beside

        own: Any = _config_beside(args.checkpoint)
        whose = f"{args.checkpoint}'s config.json"
    else:
        own = json.loads(_core._example_config(args.example or "deepseek-v3"))
        whose = f"the {args.example or 'deepseek-v3'} example's config"
    given, mine = _config_shape(args.config), _config_shape(own) if own is not None else None
    if given is None or mine is None or given == mine:
        return None
    return (
        f"--config {args.config} is a {given[0]} config of {given[1]} layers, but {whose} is a "
        f"{mine[0]} config of {mine[1]} layers: the KV cache is sized from --config"
    )


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

    found = _config_of(args.checkpoint, None, 1)
    if found is None:
        raise CliError(
            f"{args.checkpoint}: no config.json beside it, which --context needs (the decoder layers and "
            "attention); give one with --config"
        )
    return found


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    """`plan_report`'s keyword arguments for --context, --batch, --kv-dtype, --activation."""
    if args.context is None:
        for flag, value in [
            ("--batch", args.batch),
            ("--kv-dtype", args.kv_dtype),
            ("--activation", args.activation),
            ("--config", args.config),
        ]:
            if value is not None:
                raise CliError(f"{flag} needs --context (tokens per sequence, e.g. --context 32k)")
        return {}
    if args.batch is not None and args.batch > MAX_COUNT:
        raise CliError(f"--batch {args.batch}: at most {MAX_COUNT:,} sequences")
    return {
        "context": parse_context(args.context) or 1,
        "batch": args.batch,
        "kv_dtype": args.kv_dtype,
        "activation": args.activation,
        "config": _config(args),
    }


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def _budgets(args: argparse.Namespace) -> tuple[dict[int | str, Any], str, int]:
    """Budgets, a description of the GPUs ("" when only the plan's devices can say), and GPUs
    per host (0: one host)."""
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
    if args.max_memory is not None:
        budgets.update(parse_max_memory(args.max_memory))
    if not args.devices and args.max_memory is None:
        from devicemap import cuda_devices

        budgets = dict(default_max_memory(args.reserve))
        names = sorted({device.name for device in cuda_devices()})
        count = sum(1 for key in budgets if isinstance(key, int))
        described = f"{count} x {names[0]}" if len(names) == 1 else _gpus(count) if count else "this machine"
    return budgets, described, per_host


def _described(report: Any) -> str:
    """The accelerators the plan had, as the verdict names them (`2 GPUs`, `cuda:0`)."""
    fast = [d["device"] for d in report.devices if d["device"] not in ("cpu", "disk")]
    if not fast:
        return "the CPU" if any(d["device"] == "cpu" for d in report.devices) else "disk"
    return fast[0] if len(fast) == 1 else _gpus(len(fast))


def _remedy(report: Any) -> str:
    """What would make a plan that does not fit fit: never a budget the command already has."""
    # Where the blocks left over have a KV cache, the core says where room helps.
    cache_remedy: str | None = report._cache_remedy()
    if cache_remedy is not None:
        return cache_remedy
    named = {d["device"] for d in report.devices}
    if "cpu" in named and "disk" in named:
        return "more or larger GPUs, or larger cpu/disk budgets"
    return "more or larger GPUs, or a cpu/disk budget with --max-memory cpu=...,disk=..."


def _verdict(report: Any, described: str) -> str:
    devices = report.devices
    gpus = [d for d in devices if d["device"] not in ("cpu", "disk")]
    context = report.context
    at = f" at {context['tokens']:,} tokens x batch {context['batch']:,}" if context else ""
    if not report.fits:
        missing = _human_bytes(report.missing_bytes)
        return f"does not fit on {described}{at}: {missing} more is needed ({_remedy(report)})"

    spilled = {d["device"]: d["bytes"] for d in devices if d["device"] in ("cpu", "disk") and d["bytes"]}
    offload = " and ".join(f"{_human_bytes(b)} on {device}" for device, b in spilled.items())
    if gpus and spilled and not any(d["bytes"] for d in gpus):
        holder = "the GPU holds" if len(gpus) == 1 else "the GPUs hold"
        return f"nothing fits on {described}{at}: {offload}; {holder} no weights (see above)"
    if gpus and spilled:
        return f"fits on {described}{at} only with offloading: {offload}"
    if gpus:
        spare = sorted(d["spare"] for d in gpus)
        low, high = _human_bytes(spare[0]), _human_bytes(spare[-1])
        if len(spare) == 1 or low == high:
            each = "" if len(spare) == 1 else " per GPU"
            return f"fits on {described}{at} with {low} to spare{each}"
        number, _, unit = low.partition(" ")
        spread = f"{number}-{high}" if high.endswith(f" {unit}") else f"at least {low}"
        return f"fits on {described}{at} with {spread} to spare per GPU"
    cpu = next((d for d in devices if d["device"] == "cpu"), None)
    largest = max((size for _, size, _ in report.spilled), default=0)
    if not gpus and cpu is not None and largest > cpu["budget"]:
        # The CPU runs the blocks on disk, one at a time: its budget cannot hold the largest.
        return (
            f"fits on disk{at}, but the cpu, which runs it, needs {_human_bytes(largest)} free, "
            f"more than its {_human_bytes(cpu['budget'])} budget (see above)"
        )
    used = ", ".join(d["device"] for d in devices if d["bytes"] or d["cache"])
    return f"fits on {used}{at}"


def _share(share: float, width: int) -> str:
    """`62.3%`, after a bar of `width` characters when there is room for one."""
    filled = round(min(max(share, 0.0), 1.0) * width)
    bar = "#" * filled + "." * (width - filled)
    # Something placed never reads as nothing: a tiny model's share is "<0.1%", not "0.0%".
    percent = " <0.1%" if 0 < share < 0.0005 else f"{share * 100:5.1f}%"
    return f"{bar} {percent}" if width else percent


def _kept(n: int) -> str:
    return _human_bytes(n) if n else ""


def _on_host(device: str, per_host: int) -> tuple[str, str]:
    """A GPU's name on its own host, and the host (cpu and disk: host 0, as `hosts()` says)."""
    if not device.startswith("cuda:"):
        return device, "0"
    number = int(device.split(":")[1])
    return f"cuda:{number % per_host}", str(number // per_host)


# Dropped, in this order, when the table would be wider than the terminal (--json has them).
OPTIONAL_COLUMNS = ["entries", "tensors", "blocks"]


def _table(report: Any, per_host: int, width: int) -> Any:
    """The per-device table, one line per row: a narrow terminal drops the share bar, then the
    counts in OPTIONAL_COLUMNS, rather than wrap or cut cells."""
    from rich.table import Table

    context = report.context
    kept_any = any(entry["reserved"] + entry["activation"] for entry in report.devices)
    bar = 10 if width >= 100 else 0
    rows: list[dict[str, str]] = []
    for entry in report.devices:
        device, host = _on_host(entry["device"], per_host) if per_host else (entry["device"], "")
        row = {"host": host, "device": device, "placed": _human_bytes(entry["bytes"])}
        row["cache"] = _human_bytes(entry["cache"])
        row["budget"] = _human_bytes(entry["budget"])
        row["kept"] = _kept(entry["reserved"] + entry["activation"])
        row["share"] = _share(entry["share"], bar)
        row.update(blocks=f"{entry['blocks']:,}", tensors=f"{entry['tensors']:,}")
        row["entries"] = f"{entry['entries']:,}"
        rows.append(row)
    shown = [
        column
        for column in [
            "host",
            "device",
            "placed",
            "cache",
            "budget",
            "kept",
            "share",
            "blocks",
            "tensors",
            "entries",
        ]
        if (column != "host" or per_host)
        and (column != "cache" or context)
        and (column != "kept" or kept_any)
    ]

    def needed(columns: list[str]) -> int:
        cells = [max(len(c), *(len(row[c]) for row in rows)) for c in columns]
        return sum(cells) + 3 * (len(cells) - 1)

    for optional in OPTIONAL_COLUMNS:
        if needed(shown) <= width:
            break
        shown.remove(optional)
    table = Table(show_edge=False, pad_edge=False)
    for column in shown:
        justify = "left" if column in ("device", "share") else "right"
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[column] for column in shown))
    return table


def _print_table(report: Any, described: str, per_host: int, source: str, verdict: str) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    total, tensors, blocks = report.total_bytes, report.tensors, report.blocks
    name, size = report.largest_block
    # Two short lines rather than one that wraps at 80 columns; a long name is cut as notes are.
    _say(console, f"{source}: {_human_bytes(total)} in {tensors:,} tensors, {blocks:,} blocks")
    _say(console, f"largest block {name!r} ({_human_bytes(size)}), strategy {report.strategy}")
    context = report.context
    if context:
        _say(
            console,
            f"for {context['tokens']:,} tokens x batch {context['batch']:,}: KV cache "
            f"{_human_bytes(report.cache_bytes)} ({context['kv_dtype']}, {len(context['per_layer'])} layers)",
        )
    console.print(_table(report, per_host, console.width))
    if any(entry["reserved"] + entry["activation"] for entry in report.devices):
        console.print("kept: free for running offloaded blocks and for activations")
    spilled = report.spilled
    if spilled:
        shown = ", ".join(f"{n} ({_human_bytes(b)}) -> {d}" for n, b, d in spilled[:6])
        more = f", and {len(spilled) - 6} more" if len(spilled) > 6 else ""
        _say(console, f"spilled: {shown}{more}")
    for note in report.notes:
        _say(console, note)
    if per_host:
        _say(console, report.hosts_text(per_host))
    _say(console, verdict, style="bold")


# A size and its unit (`2.0 GiB`), kept on one line when a line is cut.
_SIZE = re.compile(r"(\d) (B|KiB|MiB|GiB|TiB|PiB)\b")


def _say(console: Any, text: str, style: str | None = None) -> None:
    """Prints `text` cut at spaces to the console's width (a size keeps its unit, the lines
    after the first indented by two spaces, no trailing spaces), as plain text: a tensor name
    with brackets is not read as markup."""
    import textwrap

    for line in text.splitlines():
        # textwrap breaks only at ASCII whitespace, so a no-break space holds a size together.
        kept = _SIZE.sub("\\1\xa0\\2", line)
        cut = textwrap.fill(
            kept, console.width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
        )
        console.print(cut.replace("\xa0", " "), style=style, markup=False, soft_wrap=True)


def _read_sizes(path: str, dtype: str | None) -> tuple[Any, list[list[str]]]:
    if _hub_cli.is_hub(path):
        return _hub_cli.read_sizes(path, dtype)
    found = _bin.pytorch_sizes(path, dtype)  # a pytorch_model.bin checkpoint (issue 14)
    if found is not None:
        return found  # type: ignore[no-any-return]
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
        print(error, file=sys.stderr)  # "No context fits at batch 1: ..."
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


def _plan(args: argparse.Namespace, budgets: Any) -> tuple[Any, str]:
    """The report and the source's description; budgets read as bits are warned about on
    stderr (`warning: ...`), once."""
    import warnings

    from devicemap._plan import plan_report

    if args.checkpoint:
        from devicemap._loaded import loaded

        read, tied = _read_sizes(args.checkpoint, args.dtype)
        # In the names from_pretrained gives the model, where transformers can build it.
        found = loaded(_hub_cli.opened(args.checkpoint), read, tied, args.dtype)
        sizes: Any = found
        tied = found.tied
        source = args.checkpoint
    else:
        example = args.example or "deepseek-v3"
        sizes, tied = _core.example_model(example, args.dtype), []
        source = f"example {example}"
    workload = _workload(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = plan_report(sizes, budgets, args.strategy, tied=tied, **workload)
    # After planning, which read --config through the core's reader (a regular file of at most
    # 16 MiB, not /dev/zero), so the comparison reads only what that reader accepted.
    mismatch = _config_warning(args) if workload else None
    if mismatch:
        print(f"warning: {mismatch}", file=sys.stderr)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    longest = _longest(report, args, sizes, budgets, tied, workload)
    if longest is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = plan_report(sizes, budgets, args.strategy, tied=tied, **{**workload, "context": longest})
    return report, source


def _map_data(report: Any, args: argparse.Namespace, per_host: int) -> Any:
    """What `-o` writes: the map in HF's or Haystack's form; for several hosts, one object
    keyed by host number ("0", "1", ...), each the map of that host's modules in its own
    GPU names."""

    def form(hf: dict[str, Any]) -> Any:
        if args.format != "haystack":
            return hf
        from devicemap import ComponentDevice, DeviceMap

        return ComponentDevice.from_multiple(DeviceMap.from_hf(hf)).to_dict()

    if per_host:
        return {str(host["host"]): form(host["device_map"]) for host in report.hosts(per_host)}
    return form(report.to_hf())


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        print(catalogue_text())
        return EXIT_OK
    try:
        if args.output == "-" and args.json:
            raise CliError("-o - and --json both write to standard output; give one of them")
        if args.checkpoint is not None and not args.checkpoint.strip():
            # `devicemap plan "$MODEL"` with MODEL unset planned the built-in example.
            raise CliError(f"CHECKPOINT is empty ({args.checkpoint!r}): give a path or a Hub repository")
        if args.checkpoint and args.example:
            raise CliError("give a CHECKPOINT or --example, not both")
        if not 0.0 <= args.reserve < 1.0:
            raise CliError(f"--reserve must be a fraction in [0, 1), got {args.reserve}")
        budgets, described, per_host = _budgets(args)
        report, source = _plan(args, budgets)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, TypeError, OSError, OverflowError) as error:
        # OverflowError: a KV cache above 2**64 bytes, from a context or batch that large.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID

    described = described or _described(report)
    verdict = _verdict(report, described)
    if args.output:
        if not report.fits:
            print(f"error: not writing {args.output}: {verdict}", file=sys.stderr)
            return EXIT_DOES_NOT_FIT
        data: Any = _map_data(report, args, per_host)
        try:
            write_output(args.output, json.dumps(data, indent=2) + "\n")
        except OSError as error:
            print(f"error: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
            return EXIT_INVALID
    if args.json:
        data = report.to_dict()
        if args.context is not None and parse_context(args.context) is None:
            context = report.context
            data["max_context"] = context["tokens"] if report.fits and context else None
        if per_host:
            data["hosts"] = report.hosts(per_host)
        data["source"] = source
        data["verdict"] = verdict
        data["budgets_for"] = described
        print(json.dumps(data, indent=2))
    else:
        # With `-o -` the map is standard output, and the table goes to standard error.
        with contextlib.redirect_stdout(sys.stderr) if args.output == "-" else contextlib.nullcontext():
            _print_table(report, described, per_host, source, verdict)
    return EXIT_OK if report.fits else EXIT_DOES_NOT_FIT


def add_parser(commands: Any) -> None:
    """Registers `devicemap plan` on the subcommand parsers of cli.py."""
    parser = commands.add_parser(
        "plan",
        help="plan where each part of a model goes (safetensors headers only) and whether it fits",
        description="Read a checkpoint's safetensors headers (or use a built-in example), plan where "
        "each block goes on this machine or on --devices, and print a per-device table with a verdict. "
        "Exit code 1 if the model does not fit, 2 on bad input. For several hosts (--devices 2x8xH100) "
        'the report says what each host holds, and -o writes one JSON object keyed by host ("0", "1", '
        "...), each host's map in its own GPU names (cuda:0.. on every host).",
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="a .safetensors or pytorch_model.bin file, an index, a checkpoint directory, or a Hub "
        "repository (org/name, hf://org/name@revision)",
    )
    parser.add_argument(
        "--example",
        choices=_core._EXAMPLE_NAMES,
        help="plan a built-in example model (default without CHECKPOINT: deepseek-v3)",
    )
    parser.add_argument("--max-memory", help="budgets, e.g. 0=70GiB,1=70GiB,cpu=200GiB,disk=1TiB")
    parser.add_argument(
        "--devices",
        help="plan for cards you are not on: 8xH100, 2x8xH100 (hosts), 4xA100-40GB, 8xH200, 8xMI300X ... "
        "(--list-devices shows the cards known)",
    )
    parser.add_argument(
        "--list-devices",
        action="store_true",
        help="print the cards --devices knows, with their memory, and exit",
    )
    parser.add_argument(
        "--strategy",
        default="balanced",
        choices=_core._STRATEGY_NAMES,
        help="how blocks are spread over the GPUs: balanced (default: the fullest GPU as empty as "
        "possible), sequential (fill GPU 0, then 1, ...), balanced_low_0 (GPU 0 as empty as the "
        "others allow)",
    )
    parser.add_argument(
        "--dtype",
        help="size floating-point tensors as loading with this dtype would: bf16, fp16, fp32, fp8 or a "
        "torch name (bfloat16, float8_e4m3fn ...)",
    )
    parser.add_argument(
        "--reserve",
        type=float,
        default=_core._DEFAULT_RESERVE,
        help="fraction of each device's memory kept free for what the plan does not count: the CUDA "
        "context, fragmentation, and without --context the KV cache and activations "
        f"(machine and --devices budgets; default {_core._DEFAULT_RESERVE:g})",
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
    parser.add_argument("-o", "--output", help="write the map as JSON to this file (- for standard output)")
    parser.add_argument("--format", choices=["hf", "haystack"], default="hf", help="form of the -o map")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(run=run)
