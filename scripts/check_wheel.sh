#!/usr/bin/env bash
# Packaging check: builds the release abi3 wheel (exactly one) and the sdist, builds a wheel from
# the sdist, checks the version is the same everywhere (Cargo.toml is the one source), then for
# every CPython >= 3.10 it finds installs the release wheel into a fresh venv and runs the test
# suite there, against the installed wheel (a copy of tests/, not the source tree).
#
#   scripts/check_wheel.sh            full hypothesis profile
#   scripts/check_wheel.sh --quick    hypothesis "quick" profile (fewer examples per property)
#
# Environment:
#   PYTHONS="/path/python3.10 ..."  interpreters to test (default: every pyenv CPython >= 3.10)
#   FULL_SITE_PACKAGES=/path/lib/pythonX.Y/site-packages
#       a site-packages holding torch, transformers, accelerate, haystack-ai...; the venv of the
#       same X.Y sees it (after its own packages, so the wheel under test wins). Other versions
#       get only what installs quickly (pytest, hypothesis, rich, haystack-ai when it installs);
#       tests needing torch or transformers skip there, and the summary says how many.
#   CHECK_WHEEL_DIR=dir             where wheels, venvs and logs go (default: target/check_wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

profile=devicemap
case "${1:-}" in
    --quick) profile=quick ;;
    "") ;;
    *) echo "check_wheel.sh: unknown option $1" >&2; exit 2 ;;
esac

work=${CHECK_WHEEL_DIR:-$root/target/check_wheel}
rm -rf "$work"
mkdir -p "$work"
step() { printf '\n== %s\n' "$*"; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
step "version $version (Cargo.toml)"

step "maturin build --release"
maturin build --release --out "$work/wheel" 2>&1 | tail -3
mapfile -t wheels < <(find "$work/wheel" -name '*.whl')
if [ ${#wheels[@]} -ne 1 ]; then
    echo "expected one wheel, got: ${wheels[*]}" >&2
    exit 1
fi
wheel=${wheels[0]}
case "$(basename "$wheel")" in
    devicemap-"$version"-cp310-abi3-*.whl) echo "one abi3 wheel: $(basename "$wheel")" ;;
    *) echo "not an abi3 (cp310) wheel of version $version: $wheel" >&2; exit 1 ;;
esac

step "maturin sdist, and a wheel built from it (dev profile: this checks that it builds)"
maturin sdist --out "$work/sdist" 2>&1 | tail -1
sdist=$(find "$work/sdist" -name "devicemap-$version.tar.gz")
[ -n "$sdist" ] || { echo "no sdist devicemap-$version.tar.gz" >&2; exit 1; }
MATURIN_PEP517_ARGS="--profile dev" python3 -m pip wheel -q --no-deps -w "$work/from-sdist" "$sdist"
ls "$work/from-sdist"

if [ -n "${PYTHONS:-}" ]; then
    read -r -a pythons <<<"$PYTHONS"
else
    pythons=()
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/python; do
        [ -x "$candidate" ] || continue
        "$candidate" -c 'import sys; sys.exit(sys.implementation.name != "cpython" or sys.version_info < (3, 10))' \
            2>/dev/null && pythons+=("$candidate")
    done
fi
[ ${#pythons[@]} -gt 0 ] || { echo "no CPython >= 3.10 found" >&2; exit 1; }

mkdir -p "$work/run"
cp -r tests pyproject.toml "$work/run/"
rm -rf "$work/run/tests/_build" "$work/run/tests/__pycache__"

summary=()
status=0
for python in "${pythons[@]}"; do
    pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    full=$("$python" -c 'import sys; print(sys.version.split()[0])')
    venv="$work/venv-$pyver"
    step "CPython $full ($python)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "$wheel" pytest pytest-timeout hypothesis rich
    extras="pytest, hypothesis, rich"
    if "$venv/bin/python" -m pip install -q "haystack-ai==3.4.1" >"$work/haystack-$pyver.log" 2>&1; then
        extras="$extras, haystack-ai"
    fi
    if [ -n "${FULL_SITE_PACKAGES:-}" ] && [[ "$FULL_SITE_PACKAGES" == *"/python$pyver/"* ]]; then
        echo "$FULL_SITE_PACKAGES" >"$venv/lib/python$pyver/site-packages/zz_full_deps.pth"
        extras="$extras, torch/transformers/accelerate from $FULL_SITE_PACKAGES"
    fi
    # The wheel under test, not a source tree or another install, and one version everywhere.
    "$venv/bin/python" - "$venv" "$version" <<'PY'
import importlib.metadata, os, sys
import devicemap
venv, version = sys.argv[1], sys.argv[2]
assert os.path.realpath(devicemap.__file__).startswith(os.path.realpath(venv)), devicemap.__file__
assert devicemap.__version__ == importlib.metadata.version("devicemap") == version, (
    devicemap.__version__, importlib.metadata.version("devicemap"), version)
print(f"devicemap {devicemap.__version__} from {os.path.dirname(devicemap.__file__)}")
PY
    log="$work/pytest-$pyver.log"
    set +e
    (cd "$work/run" && DEVICEMAP_HYPOTHESIS_PROFILE=$profile HF_HUB_OFFLINE=1 \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs tests >"$log" 2>&1)
    rc=$?
    set -e
    result=$(tail -1 "$log")
    echo "$result"
    summary+=("CPython $full [$extras]: $result")
    [ $rc -eq 0 ] || status=1
done

step "summary (wheel $(basename "$wheel"), hypothesis profile $profile)"
printf '%s\n' "${summary[@]}"
exit $status
