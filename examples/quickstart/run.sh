#!/usr/bin/env bash
# The rtool quickstart, offline on the CPU: distill a tiny teacher's reasoning into a fresh student.
#
#   1. make a task: 3-digit addition with gold digit-by-digit solutions ending in \boxed{} (make_task.py)
#   2. build tiny random Llamas and a character tokenizer for it (build_models.py)
#   3. rtool sft     the teacher on the gold solutions
#   4. rtool distill 4 samples per training prompt from the teacher at temperature 0.8, graded, all kept
#   5. rtool sft     a fresh student on the teacher's traces (sft keeps the correct ones)
#   6. rtool eval    teacher, untrained student and trained student on the held-out test split
#
#   examples/quickstart/run.sh [WORK_DIR]      # default examples/quickstart/work; rtool must be on PATH
#   QUICKSTART_SEED=1 examples/quickstart/run.sh   # another draw of problems, initial weights and samples
#
# stdout: the results table. stderr: each command's logs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$here/work}"
seed="${QUICKSTART_SEED:-0}"
rm -rf "$work"
mkdir -p "$work"
source "$here/common.sh"  # step (timed into timings.tsv) and teacher_and_traces (steps 1-4)

started=$(date +%s.%N)
teacher_and_traces "$seed"

step "sft student" rtool sft --model "$work/student-init" --data "$work/traces.jsonl" \
    --out "$work/student" --config "$here/student.yaml" --seed "$seed" > /dev/null

for model in teacher student-init student; do
    step "eval $model" rtool eval --model "$work/$model" --bench "$work/data/test.jsonl" --no-system \
        --max-new-tokens 120 --batch-size 200 --records "$work/eval-$model.jsonl" > "$work/eval-$model.json"
done

ended=$(date +%s.%N)
awk -v b="$started" -v e="$ended" 'BEGIN { printf "total\t%.1f\n", e - b }' >> "$work/timings.tsv"
python "$here/report.py" "$work"
