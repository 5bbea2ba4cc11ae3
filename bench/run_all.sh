#!/usr/bin/env bash
# All benchmarks; each rewrites its own section of bench/RESULTS.md. Run from the repo root: make bench
set -euo pipefail
cd "$(dirname "$0")"
python startup.py
python grading.py
python eval_memory.py
python select_memory.py
python generation.py
# The default --max-new-tokens against 120 on the quickstart's teacher: needs a finished `make quickstart`.
if [ -d ../examples/quickstart/work/teacher ]; then python generation_budget.py
else echo "bench: generation_budget.py skipped: run make quickstart first" >&2; fi
python prm_score.py
python bon.py
python sft.py
python redi.py
python grpo.py
if [ -d merge ]; then for script in merge/*.py; do [ -f "$script" ] && python "$script"; done; fi
