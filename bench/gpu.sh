#!/usr/bin/env bash
# rtool on a CUDA GPU, in one go (about 8 minutes on an H200): install what is missing from carried wheels, then
#   1. throughput: bench/gpu_throughput.py, a random SmolLM2-1.7B-shaped model in bf16: the hf backend's generation
#      modes (RTOOL_HF_GENERATION=loop|static|continuous) at batch 256, 64 and 1 with 256 new tokens on GSM8K
#      prompts, then `rtool sft` tokens/s                                                          (cap 270 s)
#   2. the test suite, GPU tests included: pytest -m "not slow" -n auto                           (cap 120 s)
#   3. the quickstart, examples/quickstart/run.sh                                                  (cap 70 s)
# Each part is time-capped; a failing or timed-out part is recorded and the script goes on. Writes OUT/gpu_results.md
# (the summary), OUT/gpu_throughput.json and one log per part, and the summary as the "gpu" section of
# bench/RESULTS.md.
#
#   bench/gpu.sh [OUT]        # OUT: default $OUT, else bench/gpu-out. Run from anywhere; it works in the repo root.
#   bench/gpu.sh prepare      # on a machine WITH network, in the repo root: fills .whl/ (below)
#
# Wheels. A GPU machine without network (Python 3.12, torch, transformers, accelerate, peft, tokenizers, pytest,
# pytest-xdist present) lacks trl, datasets (with dill and multiprocess), math-verify (with latex2sympy2_extended
# and antlr4-python3-runtime 4.13.2), gguf and rtool itself. `bench/gpu.sh prepare` fetches them into .whl/ beside
# the repo's files (and lists .whl/ in .git/info/exclude), with
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl "trl>=1.0,<2" "datasets>=3.0,<5" "dill>=0.3.0,<0.4.1" "multiprocess<0.70.19" \
#       "math-verify>=0.7,<1" "latex2sympy2_extended>=1.0,<2" "antlr4-python3-runtime==4.13.2" "gguf>=0.10,<1"
#   python3 -m pip wheel --no-deps -w .whl .        # rtool itself, a fallback (below)
#
# and this script installs them with `pip install --no-index --no-deps --target /tmp/rtool-site .whl/*.whl`, then
# rtool from this checkout into the same place (`pip install --no-build-isolation .`: setuptools is there; the
# carried rtool wheel is used only if that fails), PYTHONPATH and PATH pointing there. Nothing in the machine's own
# environment changes, except a link to the rtool command beside python when none is there: the CLI tests run the
# rtool found beside sys.executable. Where .whl/ is absent and rtool is importable, nothing is installed.
#
# Knobs (environment): PYTHON (default python3); THROUGHPUT_ARGS (extra bench/gpu_throughput.py flags, e.g.
# "--shape tiny --device cpu" for a dry run on a CPU); PYTEST_ARGS (default: -m "not slow" -n auto, or -x without
# xdist); PARTS (default "throughput tests quickstart"); WRITE_RESULTS=0 leaves bench/RESULTS.md alone.
# If datasets fails to import there (it needs pyarrow >= 21), carry a pyarrow wheel too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python3}"

if [ "${1:-}" = prepare ]; then
    set -e
    mkdir -p .whl .git/info
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "trl>=1.0,<2" "datasets>=3.0,<5" "dill>=0.3.0,<0.4.1" "multiprocess<0.70.19" \
        "math-verify>=0.7,<1" "latex2sympy2_extended>=1.0,<2" "antlr4-python3-runtime==4.13.2" "gguf>=0.10,<1"
    rm -f .whl/rtool-*.whl
    "$PY" -m pip wheel --no-deps -w .whl .
    ls -la .whl
    du -sh .whl
    exit 0
fi

OUT_DIR="${1:-${OUT:-bench/gpu-out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PARTS="${PARTS:-throughput tests quickstart}"
SUMMARY="$OUT_DIR/gpu_results.md"
started=$(date +%s)
status_rows=()

part() {  # part NAME CAP_SECONDS LOG COMMAND...: run with a time cap, record rc and seconds
    local name=$1 cap=$2 log=$3; shift 3
    local t0=$(date +%s) rc
    echo "== $name (cap ${cap}s) ==" >&2
    timeout -k 15 "$cap" "$@" > "$log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    local what="ok"
    [ $rc -ne 0 ] && what="failed (exit $rc)"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="timed out at ${cap}s"
    status_rows+=("| $name | $what | $took |")
    echo "== $name: $what in ${took}s ==" >&2
    tail -n 5 "$log" >&2
    return 0
}

# --- install ---------------------------------------------------------------------------------------------------
install_log="$OUT_DIR/install.log"
: > "$install_log"
SITE=/tmp/rtool-site
t0=$(date +%s)
installed=""
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            .whl/*.whl >> "$install_log" 2>&1; then
        installed="$(ls .whl/*.whl | wc -l) wheels"
    else
        status_rows+=("| install wheels | failed (see install.log) | $(( $(date +%s) - t0 )) |")
    fi
fi
if [ -n "$installed" ] || ! "$PY" -c "import rtool" 2> /dev/null; then
    # rtool from this checkout (so a stale carried rtool wheel never hides a change); the wheel stays if this fails.
    if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" . \
            >> "$install_log" 2>&1; then
        installed="${installed:+$installed + }rtool from the checkout"
    fi
fi
if [ -n "$installed" ]; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
    bindir="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")"
    [ -e "$bindir/rtool" ] || ln -s "$SITE/bin/rtool" "$bindir/rtool" >> "$install_log" 2>&1 \
        || echo "could not link rtool into $bindir: the CLI tests will not find it" >> "$install_log"
    status_rows+=("| install: $installed | ok | $(( $(date +%s) - t0 )) |")
else
    status_rows+=("| install | nothing installed: rtool and the rest from the environment | 0 |")
fi
"$PY" - >> "$install_log" 2>&1 <<'EOF'
import importlib, importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "math-verify", "gguf", "rtool",
             "pytest", "pytest-xdist", "flash-attn", "kernels"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    >> "$install_log" 2>&1

# --- parts -----------------------------------------------------------------------------------------------------
for name in $PARTS; do
    case $name in
        throughput)
            # shellcheck disable=SC2086
            part "throughput (bench/gpu_throughput.py)" 270 "$OUT_DIR/throughput.log" env PYTHONUNBUFFERED=1 \
                "$PY" bench/gpu_throughput.py --budget-s 170 --sft-grace-s 75 --out "$OUT_DIR/gpu_throughput.json" \
                ${THROUGHPUT_ARGS:-} ;;
        tests)
            if [ -z "${PYTEST_ARGS:-}" ]; then
                if "$PY" -c "import xdist" 2> /dev/null; then PYTEST_ARGS='-m "not slow" -n auto'
                else PYTEST_ARGS='-m "not slow" -x'; fi
            fi
            part "tests (pytest $PYTEST_ARGS)" 120 "$OUT_DIR/pytest.log" \
                bash -c "$PY -m pytest -p no:cacheprovider $PYTEST_ARGS" ;;
        quickstart)
            part "quickstart (examples/quickstart/run.sh)" 70 "$OUT_DIR/quickstart.log" \
                bash examples/quickstart/run.sh /tmp/rtool-quickstart ;;
    esac
done

# --- summary ---------------------------------------------------------------------------------------------------
{
    echo "\`bench/gpu.sh\` on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo 'no GPU'),"
    echo "$(grep -E '^(python|torch|transformers) ' "$install_log" | tr '\n' ',' | sed 's/,$//; s/,/, /g'),"
    echo "$(date -u +%Y-%m-%d), $(( $(date +%s) - started )) s in all."
    echo
    echo "| part | result | s |"
    echo "|---|---|---|"
    printf '%s\n' "${status_rows[@]}"
    if [ -f "$OUT_DIR/pytest.log" ]; then
        echo
        echo "pytest: $(grep -E '(passed|failed|error)' "$OUT_DIR/pytest.log" | tail -1)"
        grep -E '^(FAILED|ERROR) ' "$OUT_DIR/pytest.log" | head -15 | sed 's/^/    /'
    fi
    if [ -f "$OUT_DIR/throughput.log" ]; then
        echo
        echo "Generation: random SmolLM2-1.7B-shaped Llama (bf16), GSM8K prompts, 256 new tokens, sampling at"
        echo "temperature 1; tok/s = completion tokens / wall s of one generate call (cold: the first call at that"
        echo "batch size, compile and CUDA-graph capture included). Settings and raw numbers: gpu_throughput.json."
        echo
        grep -E '^\|' "$OUT_DIR/throughput.log" | sed 's/^| sft |/\n| sft |/'
    fi
    if [ -f /tmp/rtool-quickstart/timings.tsv ]; then
        echo
        echo "Quickstart stage seconds:"
        sed 's/^/    /' /tmp/rtool-quickstart/timings.tsv
        grep -E '^\|' "$OUT_DIR/quickstart.log" | head -12
    fi
} > "$SUMMARY"
[ "${WRITE_RESULTS:-1}" = 1 ] && "$PY" - "$SUMMARY" <<'EOF' || echo "bench/RESULTS.md not written" >&2
import sys
sys.path.insert(0, "bench")
from pathlib import Path
from common import write_section
write_section("gpu", Path(sys.argv[1]).read_text())
EOF
cat "$SUMMARY"
