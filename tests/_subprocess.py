"""Running Python code in a fresh interpreter (the venv's), for what must not share this process:
torch hidden or not yet imported, NVML initialized with another configuration."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs `code` with `args` in `sys.argv[1:]`; with `check`, a failure shows its output."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
