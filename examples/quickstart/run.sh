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
export HF_HUB_DISABLE_PROGRESS_BARS=1  # build_models.py saves with transformers, which would draw a bar
# torch uses every core by default, which is fastest on an idle machine; on a busy one, OMP_NUM_THREADS=1 is.

started=$(date +%s.%N)
timings="$work/timings.tsv"
step() {  # step NAME COMMAND...: run it, append "NAME<TAB>seconds" to the timings
    local name="$1" begin end
    shift
    echo ">> $name" >&2
    begin=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v n="$name" -v b="$begin" -v e="$end" 'BEGIN { printf "%s\t%.1f\n", n, e - b }' >> "$timings"
}

# The two scripts print the paths they wrote; they go to the log, so stdout stays the results table.
step "make task" python "$here/make_task.py" --out-dir "$work/data" --train 2000 --test 500 --seed "$seed" >&2
step "build models" python "$here/build_models.py" --data "$work/data/train.jsonl" "$work/data/test.jsonl" \
    --teacher-out "$work/teacher-init" --student-out "$work/student-init" --seed "$seed" >&2

# --no-system, here and below: the task's prompts are the questions alone. The student needs no flag: it trains
# on the conversations distill records (prompt_messages), which are the teacher's.
step "sft teacher" rtool sft --model "$work/teacher-init" --data "$work/data/train.jsonl" --no-system \
    --out "$work/teacher" --config "$here/teacher.yaml" --seed "$seed" > /dev/null

step "distill" rtool distill --teacher "$work/teacher" -n 4 --temperature 0.8 --top-p 1.0 --max-new-tokens 120 \
    --no-system --batch-size 256 --seed "$seed" -i "$work/data/train.jsonl" -o "$work/traces.jsonl"

step "sft student" rtool sft --model "$work/student-init" --data "$work/traces.jsonl" \
    --out "$work/student" --config "$here/student.yaml" --seed "$seed" > /dev/null

for model in teacher student-init student; do
    step "eval $model" rtool eval --model "$work/$model" --bench "$work/data/test.jsonl" --no-system \
        --max-new-tokens 120 --batch-size 200 --records "$work/eval-$model.jsonl" > "$work/eval-$model.json"
done

ended=$(date +%s.%N)
awk -v b="$started" -v e="$ended" 'BEGIN { printf "total\t%.1f\n", e - b }' >> "$timings"
python "$here/report.py" "$work"
