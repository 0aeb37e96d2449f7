#!/usr/bin/env bash
# Installs everything the tests need into ./.venv and runs the whole suite: Rust format, lints
# and unit tests (with and without the `python` feature), the fuzz targets' lints, Python lints,
# type checks, stub check, pytest, and a smoke run of the benchmarks. DEVICEMAP_FUZZ_SHORT=1 adds
# a short cargo-fuzz run (scripts/fuzz.sh --short); scripts/check_wheel.sh checks packaging.
# README.md gives this as the test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
venv=.venv/bin
"$venv/python" -m pip install -q --upgrade pip
# The `testing` cargo feature adds `_core._panic_for_tests`, which tests/test_panics.py needs
# (maturin's PEP 517 backend takes its build arguments from MATURIN_PEP517_ARGS).
MATURIN_PEP517_ARGS="--features testing" "$venv/python" -m pip install -q -e '.[test]'

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy -q --all-targets -- -D warnings
cargo clippy -q --all-targets --features testing -- -D warnings
step "cargo test"
cargo test -q
step "cargo clippy + test --no-default-features (the core alone: no pyo3 in the build)"
cargo clippy -q --all-targets --no-default-features -- -D warnings
cargo test -q --no-default-features
step "fuzz targets: fmt, clippy (they compile against the core's API)"
(cd fuzz && cargo fmt --check && cargo clippy -q --all-targets -- -D warnings)
if [ "${DEVICEMAP_FUZZ_SHORT:-0}" = 1 ]; then
    step "cargo fuzz, 10 s per target (DEVICEMAP_FUZZ_SHORT=1; needs cargo-fuzz and nightly)"
    scripts/fuzz.sh --short
fi
step "ruff"
"$venv/ruff" check python tests benches scripts
"$venv/ruff" format --check python tests benches scripts
step "mypy"
"$venv/mypy"
step "stubtest"
"$venv/python" -m mypy.stubtest devicemap._core
step "benchmarks (smoke run, no timing checks)"
for bench in bench_maps bench_mutation bench_lookup bench_plan bench_from_pretrained bench_hub; do
    "$venv/python" "benches/$bench.py" --quick >/dev/null
done
step "pytest"
"$venv/python" -m pytest -q
