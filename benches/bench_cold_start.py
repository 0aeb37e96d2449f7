"""Cold-start cost of choosing the default device: devicemap against Haystack, side by side.

Each row starts a fresh interpreter that imports the library and calls
`ComponentDevice.resolve_device()`, several times; the table shows the median wall time (from
spawn to exit) and the median peak RSS of the child (its VmHWM from /proc/self/status, read as its
last act; `ru_maxrss` from `os.wait4` only where there is no /proc, as on Linux it includes the
RSS of the forked parent). One unmeasured run of each command goes first so the bytecode caches
and the OS page cache are warm: "cold" means a new process, not a cold disk.

    .venv/bin/python benches/bench_cold_start.py                  # no GPU: NVML is not found
    .venv/bin/python benches/bench_cold_start.py --nvml-lib build # also with the fake NVML (8 GPUs)
    .venv/bin/python benches/bench_cold_start.py --nvml-lib /path/libfake_nvml.so [--nvml-config FILE]
    .venv/bin/python benches/bench_cold_start.py --quick          # smoke run for CI

`--nvml-lib build` compiles tests/fake_nvml/fake_nvml.c with `cc`. Without `--nvml-config`, a
config describing eight GPUs is written to a temporary file. With the fake NVML the run also
times `devicemap.cuda_devices()` after its first call. Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEVICEMAP = "import devicemap; print(devicemap.ComponentDevice.resolve_device().to_torch_str())"
HAYSTACK = (
    "from haystack.utils import ComponentDevice; print(ComponentDevice.resolve_device().to_torch_str())"
)
BARE = "pass"

CUDA_DEVICES_TIMING = """
import statistics, time, devicemap
first_start = time.perf_counter()
devices = devicemap.cuda_devices()
first = time.perf_counter() - first_start
times = []
for _ in range(2000):
    start = time.perf_counter()
    devicemap.cuda_devices()
    times.append(time.perf_counter() - start)
print(len(devices), first, statistics.median(times), min(times))
"""


@dataclass
class Run:
    wall: float
    peak_rss: int
    output: str


# The child's own high-water mark, read as its last act. `ru_maxrss` from wait4 is not used on
# Linux: exec carries over the RSS of the forked copy of this (bigger) parent, so every small
# child would report the parent's size.
PEAK_PROBE = """
try:
    with open("/proc/self/status") as _status:
        print(*[l.split()[1] for l in _status if l.startswith("VmHWM")], file=__import__("sys").stderr)
except OSError:
    pass
"""


def run_once(code: str, env: dict[str, str]) -> Run:
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code + "\n" + PEAK_PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    # wait4 gives this child's own rusage; the pipes are small enough not to block it.
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    out, err = child.stdout.read().decode(), child.stderr.read().decode()  # type: ignore[union-attr]
    child.stdout.close()  # type: ignore[union-attr]
    child.stderr.close()  # type: ignore[union-attr]
    if child.returncode != 0:
        raise SystemExit(f"child failed ({child.returncode}): {code}\n{err}")
    lines = err.split()
    if lines and lines[-1].isdigit():
        peak = int(lines[-1]) * 1024  # VmHWM, in KiB
    else:
        # No /proc: ru_maxrss, in KiB on Linux and bytes on macOS (may include the parent's size).
        peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return Run(wall, peak, out.strip())


@dataclass
class Row:
    label: str
    wall: float
    peak_rss: int
    output: str
    wall_target: float | None = None
    rss_target: int | None = None


def measure(label: str, code: str, env: dict[str, str], repeats: int) -> Row:
    run_once(code, env)
    runs = [run_once(code, env) for _ in range(repeats)]
    return Row(
        label,
        statistics.median(r.wall for r in runs),
        int(statistics.median(r.peak_rss for r in runs)),
        runs[-1].output,
    )


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Anything that would steer or skip the discovery being timed.
    for name in (
        "DEVICEMAP_NVML_LIBRARY",
        "DEVICEMAP_FAKE_NVML_CONFIG",
        "DEVICEMAP_DEVICE",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "LOCAL_RANK",
    ):
        env.pop(name, None)
    return env


def build_fake_nvml(directory: Path) -> Path:
    source = ROOT / "tests" / "fake_nvml" / "fake_nvml.c"
    target = directory / "libfake_nvml.so"
    compiler = os.environ.get("CC") or "cc"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(target), str(source)], check=True)
    return target


def eight_gpu_config(directory: Path) -> Path:
    lines = ["init=ok", "driver=550.54.15", "count=8"]
    for n in range(8):
        lines += [
            f"gpu.{n}.name=NVIDIA H100 80GB HBM3",
            f"gpu.{n}.uuid=GPU-00000000-0000-0000-0000-00000000000{n}",
            f"gpu.{n}.pci=00000000:{0x18 + n:02X}:00.0",
            f"gpu.{n}.total={80 * 2**30}",
            f"gpu.{n}.used={2**30}",
            f"gpu.{n}.cc=9.0",
        ]
    path = directory / "fake_nvml_8gpus.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two repeats; a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row (default 9, quick 2)")
    parser.add_argument("--nvml-lib", help="fake NVML library to add a row with, or 'build'")
    parser.add_argument("--nvml-config", help="DEVICEMAP_FAKE_NVML_CONFIG for the fake (default: 8 GPUs)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 9)
    judge = not args.quick

    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        env = base_env()
        bare = measure("python -c pass (interpreter alone)", BARE, env, repeats)
        ours = measure("devicemap, no GPU (NVML absent)", DEVICEMAP, env, repeats)
        ours.wall_target, ours.rss_target = 0.060, 40 * 2**20
        theirs = measure("haystack-ai (imports torch)", HAYSTACK, env, repeats)
        rows = [bare, ours, theirs]

        fake_env = None
        if args.nvml_lib:
            library = build_fake_nvml(scratch_dir) if args.nvml_lib == "build" else Path(args.nvml_lib)
            config = Path(args.nvml_config) if args.nvml_config else eight_gpu_config(scratch_dir)
            fake_env = env | {
                "DEVICEMAP_NVML_LIBRARY": str(library.resolve()),
                "DEVICEMAP_FAKE_NVML_CONFIG": str(config.resolve()),
            }
            fake = measure("devicemap, fake NVML", DEVICEMAP, fake_env, repeats)
            fake.wall_target = 0.080
            rows.insert(2, fake)

        print(f"median of {repeats} fresh processes per row, after one unmeasured warm-up run\n")
        header = ("command", "wall", "peak RSS", "vs haystack", "target", "result", "device")
        lines = [header]
        for row in rows:
            targets, passed = [], []
            if row.wall_target:
                targets.append(f"<= {row.wall_target * 1e3:.0f} ms")
                passed.append(row.wall <= row.wall_target)
            if row.rss_target:
                targets.append(f"<= {row.rss_target / 2**20:.0f} MB")
                passed.append(row.peak_rss <= row.rss_target)
            verdict = "-" if not passed else ("PASS" if all(passed) else "FAIL") if judge else "(quick)"
            ratio = (
                f"{theirs.wall / row.wall:.1f}x faster, {theirs.peak_rss / row.peak_rss:.1f}x less RSS"
                if row is not theirs and row is not bare
                else "-"
            )
            lines.append(
                (
                    row.label,
                    f"{row.wall * 1e3:.0f} ms",
                    f"{row.peak_rss / 2**20:.1f} MB",
                    ratio,
                    ", ".join(targets) or "-",
                    verdict,
                    row.output,
                )
            )
        widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
        for i, line in enumerate(lines):
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))
        print(
            "\nMB = MiB. Peak RSS is the child's VmHWM (wait4's ru_maxrss on Linux would include the\n"
            "parent's RSS, carried over the fork); wall time runs from spawn to exit."
        )

        if fake_env is None:
            print(
                "cuda_devices(): not timed (pass --nvml-lib build or --nvml-lib PATH to time it "
                "against the fake NVML)."
            )
            return
        import devicemap

        if not hasattr(devicemap, "cuda_devices"):
            print("cuda_devices(): devicemap has no cuda_devices() yet; not timed.")
            return
        out = subprocess.run(
            [sys.executable, "-c", CUDA_DEVICES_TIMING],
            env=fake_env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        count, first, median, best = int(out[0]), float(out[1]), float(out[2]), float(out[3])
        verdict = ("PASS" if median < 1e-3 else "FAIL") if judge else "(quick)"
        print(
            f"cuda_devices() with the fake NVML ({count} GPUs): first call {first * 1e3:.2f} ms, "
            f"later calls median {median * 1e6:.1f} us (best {best * 1e6:.1f} us); "
            f"target < 1 ms -> {verdict}"
        )


if __name__ == "__main__":
    main()
