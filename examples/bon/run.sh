#!/usr/bin/env bash
# Best-of-N on the quickstart task, offline on the CPU: sample a weak student N times, pick one answer by majority
# vote or by a process reward model (PRM), and see accuracy grow with N.
#
#   1. the quickstart's task, models and teacher (its scripts and teacher.yaml, by path), and 4 graded samples per
#      training prompt from the teacher (negatives kept)
#   2. rtool sft       a weak student: the quickstart's student schedule cut to $BON_STUDENT_STEPS steps
#   3. train_prm.py    a qwen-prm PRM from the teacher's backbone, on exactly labelled steps of the teacher's traces
#   4. rtool distill   16 samples per held-out prompt from the weak student; rtool prm-score scores every step
#   5. rtool bon       majority | naive | weighted at N = 1, 2, 4, 8, 16; rtool eval each; report.py the table
#
#   examples/bon/run.sh [WORK_DIR]          # default examples/bon/work; rtool must be on PATH
#   BON_SEED=1 examples/bon/run.sh          # another draw of problems, weights and samples
#   BON_PROMPTS=100 BON_PRM_STEPS=100 ...   # smaller (CI): held-out prompts sampled, PRM training steps
#   BON_REUSE=examples/quickstart/work ...  # step 1 (task, models, teacher, traces) from a finished quickstart run
#                                           # of the same seed: ~2-3 minutes less (CI, right after make quickstart)
#
# stdout: the results table. stderr: each command's logs. WORK_DIR/bon.png: accuracy against N.
# On a busy machine run it with OMP_NUM_THREADS=1: torch's one thread per core made it 4x slower at load ~5.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
quickstart="$here/../quickstart"
work="${1:-$here/work}"
seed="${BON_SEED:-0}"
prompts="${BON_PROMPTS:-200}"
student_steps="${BON_STUDENT_STEPS:-550}"
prm_steps="${BON_PRM_STEPS:-400}"
rm -rf "$work"
mkdir -p "$work"
source "$quickstart/common.sh"  # step (timed into timings.tsv), teacher_and_traces (step 1), weak_student, cached

started=$(date +%s.%N)
teacher_and_traces "$seed" "${BON_REUSE:-}"
head -n "$prompts" "$work/data/test.jsonl" > "$work/data/bon.jsonl"

# The student stops early on purpose: a student near 100% leaves best-of-N nothing to pick from.
step "sft weak student" weak_student "$seed" "$student_steps" "$work/student"
step "train prm" python "$here/train_prm.py" --traces "$work/traces.jsonl" --init "$work/teacher" \
    --out "$work/prm" --steps "$prm_steps" --seed "$seed" >&2

step "eval student greedy" rtool eval --model "$work/student" --bench "$work/data/bon.jsonl" --no-system \
    --max-new-tokens 120 --batch-size 200 > "$work/eval-greedy.json"
step "sample student x16" cached "$work/candidates.jsonl" rtool distill --teacher "$work/student" -n 16 \
    --temperature 0.8 --top-p 1.0 --max-new-tokens 120 --no-system --batch-size 256 --seed "$seed" \
    -i "$work/data/bon.jsonl" -o "$work/candidates.jsonl"
# One step per line, so the steps are split on a newline (prm-score's default is a blank line).
step "prm-score" rtool prm-score --prm "$work/prm" --format qwen-prm --step-sep '\n' --batch-size 64 \
    -i "$work/candidates.jsonl" -o "$work/scored.jsonl"
step "eval samples" rtool eval -i "$work/scored.jsonl" > "$work/eval-samples.json"
for method in majority naive weighted; do
    step "bon $method" rtool bon --n 1,2,4,8,16 --sorted --method "$method" -i "$work/scored.jsonl" \
        -o "$work/bon-$method.jsonl"
    rtool eval -i "$work/bon-$method.jsonl" > "$work/eval-bon-$method.json"
done

ended=$(date +%s.%N)
awk -v b="$started" -v e="$ended" 'BEGIN { printf "total\t%.1f\n", e - b }' >> "$work/timings.tsv"
python "$here/report.py" "$work"
