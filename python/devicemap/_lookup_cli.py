"""`devicemap check-map FILE --names NAMES`, `devicemap explain MAP NAME...`, `devicemap diff A B`.

Registered by `cli.build_parser` through `register` and `extend_check_map`. Exit codes follow
`check-map`: 0 fine, 2 invalid input or a problem found (uncovered names, unused keys), 1 for
usage; `diff` returns 1 when the maps differ, as diff(1) does. Errors are one `error:` line on
standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable
from typing import Any

from devicemap._cli_input import VALID_LINE, CliError, load_map, load_names

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_INVALID = 2

Run = Callable[[argparse.Namespace], int]


def _guarded(run: Run) -> Run:
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CliError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_INVALID
        except (ValueError, TypeError, KeyError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"error: {message}", file=sys.stderr)
            return EXIT_INVALID

    return guarded


# --- check-map --names ---------------------------------------------------------------------


def extend_check_map(check: argparse.ArgumentParser) -> None:
    """Adds `--names` and `--unused` to `check-map`, around its own run function."""
    check.add_argument(
        "--names",
        metavar="NAMES",
        help="also check that the map covers these tensor names: a text file with one name a line, "
        "or a JSON list; - for standard input",
    )
    check.add_argument(
        "--unused",
        choices=("error", "warn", "ignore"),
        default="error",
        help="keys that cover none of the names: an error (exit 2, the default), a warning, or nothing",
    )
    validate = check.get_default("run")
    check.set_defaults(run=_guarded(lambda args: _check_map_with_names(args, validate)))


def _check_map_with_names(args: argparse.Namespace, validate: Run) -> int:
    if args.names is None:
        return validate(args)
    if args.file == "-" and args.names == "-":
        raise CliError("the map and --names cannot both be read from standard input")
    # The map's own summary is held back until the names are checked: its last line ("all
    # entries are valid") is a verdict, and it is printed only when the names pass too.
    report = io.StringIO()
    try:
        with contextlib.redirect_stdout(report):
            code = validate(args)
    except CliError:
        sys.stdout.write(report.getvalue())  # `--json`'s {"file": ..., "error": ...}
        raise
    if code != EXIT_OK:
        sys.stdout.write(report.getvalue())
        return code
    # Read again: standard input is kept from the first read, so `-` works.
    device_map = load_map(args.file)
    names = load_names(args.names)
    coverage = device_map.coverage(names)
    unused_fails = args.unused == "error" and bool(coverage.unused_keys)
    failed = not coverage.complete or unused_fails
    if args.json:
        summary = json.loads(report.getvalue())
        summary["coverage"] = {
            "names": coverage.names,
            "uncovered": list(coverage.uncovered),
            "uncovered_groups": [list(group) for group in coverage.uncovered_groups],
            "unused_keys": list(coverage.unused_keys),
        }
        print(json.dumps(summary, indent=2))
        return EXIT_INVALID if failed else EXIT_OK
    # The text's last line is about unused keys when there are any (see `Coverage.__str__`).
    lines = str(coverage).splitlines()
    unused_line = lines.pop() if coverage.unused_keys else None
    summary_lines = report.getvalue().splitlines()
    if failed and summary_lines and summary_lines[-1] == VALID_LINE:
        summary_lines[-1] = "the entries are valid, but the map fails the --names check:"
    print("\n".join(summary_lines))
    if coverage.complete:
        print(lines[0])
    else:
        print("error: " + "\n".join(lines), file=sys.stderr)
    if unused_line is not None and args.unused != "ignore":
        print(f"{'error' if unused_fails else 'warning'}: {unused_line}", file=sys.stderr)
    return EXIT_INVALID if failed else EXIT_OK


# --- explain, diff ---------------------------------------------------------------------------


def _explain(args: argparse.Namespace) -> int:
    device_map = load_map(args.map)
    explanations = [device_map.explain(name) for name in args.names]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "key": e.key,
                        "device": None if e.device is None else str(e.device),
                        "shadowed": [[key, str(device)] for key, device in e.shadowed],
                        "near_misses": [
                            {"key": m.key, "device": str(m.device), "reason": m.reason, "detail": m.detail}
                            for m in e.near_misses
                        ],
                        "more_near_misses": e.more_near_misses,
                    }
                    for e in explanations
                ],
                indent=2,
            )
        )
    else:
        for explanation in explanations:
            print(explanation)
    return EXIT_OK if all(e.key is not None for e in explanations) else EXIT_INVALID


def _diff(args: argparse.Namespace) -> int:
    if args.a == "-" and args.b == "-":
        raise CliError("only one of A and B can be read from standard input")
    if args.names == "-" and "-" in (args.a, args.b):
        raise CliError("a map and --names cannot both be read from standard input")
    old, new = load_map(args.a), load_map(args.b)
    diff = old.diff(new, None if args.names is None else load_names(args.names))
    if args.json:
        data: dict[str, Any] = {
            "added": {key: str(device) for key, device in diff.added},
            "removed": {key: str(device) for key, device in diff.removed},
            "moved": {key: [str(before), str(after)] for key, before, after in diff.moved},
            "equivalent": diff.equivalent,
            "compared": "names" if args.names is not None else "keys",
            "placed_differently": {
                name: [None if a is None else str(a), None if b is None else str(b)]
                for name, a, b in diff.placed_differently
            },
        }
        print(json.dumps(data, indent=2))
    else:
        print(diff)
    return EXIT_OK if diff.equivalent else EXIT_DIFFERENT


def register(commands: Any) -> None:
    """Adds `explain` and `diff` to the `devicemap` subcommands."""
    explain = commands.add_parser(
        "explain",
        help="say which key of a device map places each tensor name, and which keys nearly do",
        description="For each tensor name, print the key that decides its device (the longest key "
        "that is a prefix of the name at a '.' boundary), shorter keys it shadows, and keys that "
        "nearly cover it. Exit code 2 if a name is not covered or the map cannot be read.",
    )
    explain.add_argument("map", help="the device map, JSON (HF or Haystack form), or - for standard input")
    explain.add_argument("names", nargs="+", metavar="NAME", help="tensor names")
    explain.add_argument("--json", action="store_true", help="print JSON for scripts")
    explain.set_defaults(run=_guarded(_explain))

    diff = commands.add_parser(
        "diff",
        help="list the keys added, removed and moved between two device maps, and whether they "
        "place names the same way",
        description="Compare device map A to B: the keys added, removed and moved, then whether "
        'the two place names the same way (maps with other keys can: {"": 0} and '
        '{"model": 0, "lm_head": 0} place every name of a model on GPU 0). Without --names every '
        "possible name is compared (through the keys of both maps); with --names, those names. "
        "Exit code 0 if they place every name compared the same way, 1 if not, 2 if either "
        "cannot be read.",
    )
    diff.add_argument("a", metavar="A", help="the old map (JSON), or - for standard input")
    diff.add_argument("b", metavar="B", help="the new map (JSON), or - for standard input")
    diff.add_argument(
        "--names",
        metavar="NAMES",
        help="compare the placement of these tensor names: a text file with one name a line, or a "
        "JSON list; - for standard input",
    )
    diff.add_argument("--json", action="store_true", help="print JSON for scripts")
    diff.set_defaults(run=_guarded(_diff))
