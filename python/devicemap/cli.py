"""The `devicemap` command line. Imports what a subcommand needs only when it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from devicemap._cli_input import VALID_LINE, CliError, load_json, map_entries

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2


# Bad entries `check-map` keeps in full; the rest are counted. A file of a million bad entries
# then costs little more than the file itself.
KEPT_ERRORS = 200
# Bad entries printed in the plain-text report.
SHOWN_ERRORS = 20


def _check_override() -> None:
    """`DEVICEMAP_DEVICE`, if set, must name a usable device before anything is resolved."""
    import warnings

    from devicemap._resolve import UnseenDeviceWarning, from_environment

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnseenDeviceWarning)
        try:
            from_environment()
        except ValueError as error:
            raise CliError(str(error)) from None
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    # Said once: the resolution that follows reads the variable again.
    warnings.simplefilter("ignore", UnseenDeviceWarning)


def _resolve(args: argparse.Namespace) -> int:
    _check_override()
    from devicemap._resolve import resolve

    resolution = resolve()
    if args.json:
        print(json.dumps({"device": str(resolution.device), "reason": resolution.reason}))
    else:
        print(f"{resolution.device}  ({resolution.reason})")
    return EXIT_OK


def _devices(args: argparse.Namespace) -> int:
    _check_override()
    from devicemap._devices_cli import run

    return run(as_json=args.json)


def _check_map(args: argparse.Namespace) -> int:
    try:
        return _check_map_file(args)
    except CliError as error:
        if args.json:
            print(json.dumps({"file": args.file, "error": str(error)}, indent=2))
        raise


def _check_map_file(args: argparse.Namespace) -> int:
    from devicemap import _core

    form, entries, hf = map_entries(args.file, load_json(args.file))

    device_map, invalid, errors = _core._check_map(entries, hf=hf, keep=KEPT_ERRORS)
    summary = {
        "file": args.file,
        "form": form,
        "entries": len(entries),
        "valid": len(device_map),
        "invalid": invalid,
        "devices": {str(device): count for device, count in device_map.device_counts().items()},
        # The first KEPT_ERRORS bad entries; "invalid" counts them all.
        "errors": [{"key": key, "error": kind, "message": message} for key, kind, message in errors],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_check_summary(summary, errors)
    return EXIT_INVALID if invalid else EXIT_OK


def _print_check_summary(summary: dict[str, Any], errors: list[tuple[str, str, str]]) -> None:
    from devicemap._text import shown as quote

    print(f"{summary['file']}: {summary['entries']} entries ({summary['form']})")
    width = max((len(device) for device in summary["devices"]), default=0)
    for device, count in summary["devices"].items():
        print(f"  {device:<{width}}  {count:>9,}")
    invalid = summary["invalid"]
    if invalid:
        shown = errors[:SHOWN_ERRORS]
        for key, kind, message in shown:
            print(f"invalid entry {quote(key)}: {kind}: {message}", file=sys.stderr)
        if invalid > len(shown):
            print(f"... and {invalid - len(shown)} more invalid entries", file=sys.stderr)
        print(f"{invalid} of {summary['entries']} entries are invalid", file=sys.stderr)
    else:
        print(VALID_LINE)


def build_parser() -> argparse.ArgumentParser:
    from devicemap import __version__

    parser = argparse.ArgumentParser(
        prog="devicemap",
        description="Inspect devices, validate device maps, and plan where each part of a model\n"
        "goes (from its safetensors headers alone), on this machine or on cards you are\n"
        "about to rent, and whether it fits.",
        epilog="examples:\n"
        "  devicemap plan /models/Llama-3-70B --devices 2xH100\n"
        "  devicemap plan --example deepseek-v3 --devices 8xH200 --context 32k\n"
        "  devicemap plan --list-devices       the cards --devices knows\n"
        "  devicemap COMMAND --help            each command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"devicemap {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    resolve = commands.add_parser("resolve", help="print the default device and why it was chosen")
    resolve.add_argument("--json", action="store_true", help="print JSON for scripts")
    resolve.set_defaults(run=_resolve)

    devices = commands.add_parser(
        "devices", help="list the CUDA devices this process sees, the CPU and the default device"
    )
    devices.add_argument("--json", action="store_true", help="print JSON for scripts")
    devices.set_defaults(run=_devices)

    check = commands.add_parser(
        "check-map",
        help="validate a JSON device map (HF form or Haystack's serialized form)",
        description="Validate every entry of a device map and print the entries per device. "
        "Exit code 2 if any entry is invalid or the file cannot be used. With --json, a file "
        'that cannot be used gives {"file": ..., "error": ...}; otherwise "invalid" counts the '
        f'bad entries and "errors" lists the first {KEPT_ERRORS}.',
    )
    check.add_argument("file", help="path to the JSON file, or - for standard input")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(run=_check_map)

    from devicemap import _lookup_cli

    _lookup_cli.extend_check_map(check)
    _lookup_cli.register(commands)
    from devicemap._plan_cli import add_parser as add_plan_parser

    add_plan_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand. No input makes a traceback: a problem with the input or the
    environment is an `error:` line and exit 2, anything unexpected an `error:` line and exit 1,
    Ctrl-C exit 130, and a closed pipe (`devicemap check-map f | head`) a quiet exit."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return EXIT_ERROR
        return int(args.run(args))
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except Exception as error:
        print(f"error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR


def _silence_stdout() -> None:
    """After the reader of stdout went away, send what is left (and the flush at exit) nowhere,
    so Python prints no second BrokenPipeError while shutting down."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
