#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed budget and fails on any crash, panic,
# timeout, leak or out-of-memory (libFuzzer exits non-zero and leaves the input under
# fuzz/artifacts/<target>/). docs/fuzzing.md says what was run and found.
#
#   scripts/fuzz.sh                 300 s per target
#   scripts/fuzz.sh --short         10 s per target (CI)
#   scripts/fuzz.sh --seconds 60    60 s per target
#   scripts/fuzz.sh --runs 1000000  a fixed number of inputs per target instead of a time
#   scripts/fuzz.sh map_ops ...     only the named targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly it
# falls back to the stable toolchain with RUSTC_BOOTSTRAP=1 (what cargo-fuzz's sanitizer flags
# need). Builds with AddressSanitizer, whose LeakSanitizer checks each run for leaks.
# Corpora grow in fuzz/corpus/<target>/ (not committed); seeds are in fuzz/seeds/<target>/, and
# every input that once failed is kept in fuzz/regressions/<target>/ and rerun first.
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$script")/../fuzz"

seconds=300
runs=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --short) seconds=10 ;;
        --seconds) seconds="$2"; shift ;;
        --runs) runs="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$script"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    echo "fuzz.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(fuzz list)
fi

echo "== building the fuzz targets (release, AddressSanitizer)"
fuzz build -O

total=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    args=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1
          -artifact_prefix="artifacts/$target/")
    if [ -n "$runs" ]; then args+=(-runs="$runs"); else args+=(-max_total_time="$seconds"); fi
    [ -f "dicts/$target.dict" ] && args+=(-dict="dicts/$target.dict")
    corpora=("corpus/$target")
    [ -d "seeds/$target" ] && corpora+=("seeds/$target")
    [ -d "regressions/$target" ] && corpora+=("regressions/$target")
    log="artifacts/$target/last-run.log"
    printf '== %s: ' "$target"
    if ! fuzz run -O "$target" "${corpora[@]}" -- "${args[@]}" >"$log" 2>&1; then
        echo "FAILED"
        grep -E 'ERROR|panicked|Test unit written|SUMMARY' "$log" | head -20 >&2 || true
        echo "fuzz.sh: $target failed; full log in fuzz/$log" >&2
        exit 1
    fi
    executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    corpus=$(find "corpus/$target" -type f | wc -l)
    echo "$executed inputs, peak RSS ${peak} MB, corpus $corpus, no crash"
    total=$((total + executed))
done
echo "== all targets: $total inputs, no crash"
