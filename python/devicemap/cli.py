"""The `devicemap` command line. Imports what a subcommand needs only when it runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2


def _resolve(args: argparse.Namespace) -> int:
    from devicemap._resolve import resolve

    resolution = resolve()
    if args.json:
        print(json.dumps({"device": str(resolution.device), "reason": resolution.reason}))
    else:
        print(f"{resolution.device}  ({resolution.reason})")
    return EXIT_OK


def _devices(args: argparse.Namespace) -> int:
    from devicemap._devices_cli import run

    return run(as_json=args.json)


def _load_json(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    return json.loads(text)


def _check_map(args: argparse.Namespace) -> int:
    from devicemap import _core

    try:
        data = _load_json(args.file)
    except OSError as error:
        print(f"error: cannot read {args.file}: {error.strerror or error}", file=sys.stderr)
        return EXIT_INVALID
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        print(f"error: {args.file} is not valid JSON: {error}", file=sys.stderr)
        return EXIT_INVALID

    if not isinstance(data, dict):
        kind = type(data).__name__
        print(
            f"error: {args.file} holds a JSON {kind}, expected an object of names to devices", file=sys.stderr
        )
        return EXIT_INVALID

    if data.get("type") in ("single", "multiple"):
        if data["type"] == "single":
            print(f"error: {args.file} is a single-device ComponentDevice, not a device map", file=sys.stderr)
            return EXIT_INVALID
        if not isinstance(data.get("device_map"), dict):
            print(f"error: {args.file}: 'device_map' must be an object", file=sys.stderr)
            return EXIT_INVALID
        form, entries, hf = "Haystack form", data["device_map"], False
    else:
        form, entries, hf = "HF form", data, True

    device_map, errors = _core._check_entries(entries, hf=hf)
    summary = {
        "file": args.file,
        "form": form,
        "entries": len(entries),
        "valid": len(device_map),
        "devices": {str(device): count for device, count in device_map.device_counts().items()},
        "errors": [{"key": key, "error": kind, "message": message} for key, kind, message in errors],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_check_summary(summary, errors)
    return EXIT_INVALID if errors else EXIT_OK


def _print_check_summary(summary: dict[str, Any], errors: list[tuple[str, str, str]]) -> None:
    print(f"{summary['file']}: {summary['entries']} entries ({summary['form']})")
    width = max((len(device) for device in summary["devices"]), default=0)
    for device, count in summary["devices"].items():
        print(f"  {device:<{width}}  {count:>9,}")
    if errors:
        shown = errors[:20]
        for key, kind, message in shown:
            print(f"invalid entry {key!r}: {kind}: {message}", file=sys.stderr)
        if len(errors) > len(shown):
            print(f"... and {len(errors) - len(shown)} more invalid entries", file=sys.stderr)
        print(f"{len(errors)} of {summary['entries']} entries are invalid", file=sys.stderr)
    else:
        print("all entries are valid")


def build_parser() -> argparse.ArgumentParser:
    from devicemap import __version__

    parser = argparse.ArgumentParser(
        prog="devicemap", description="Inspect devices and validate device maps for ML code."
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
        "Exit code 2 if any entry is invalid or the file cannot be read.",
    )
    check.add_argument("file", help="path to the JSON file, or - for standard input")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(run=_check_map)

    from devicemap import _lookup_cli

    _lookup_cli.extend_check_map(check)
    _lookup_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
