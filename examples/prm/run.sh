#!/usr/bin/env bash
# Process supervision without a checker, on the quickstart task: a weak student's own traces are labelled step by
# step from its rollouts (rtool prm-label, Math-Shepherd), a tiny PRM is trained on those labels (rtool prm-train),
# and it picks among the student's samples on held-out prompts (rtool prm-score, rtool bon).
#
#   1. the quickstart's task, models and teacher (its scripts and teacher.yaml, by path) and the teacher's traces
#   2. rtool sft        a weak student: the quickstart's student schedule cut to $PRM_STUDENT_STEPS steps
#   3. rtool distill    the student as its own teacher: $PRM_SAMPLES samples of $PRM_TRAIN_PROMPTS training prompts
#   4. rtool prm-label  each step of each sample labelled by $PRM_K student rollouts from it (one step per line)
#   5. rtool prm-train  a qwen-prm PRM from the teacher's backbone on those labels, 10% of the prompts held out
#   6. rtool distill    16 samples per held-out prompt from the student; rtool prm-score scores every step
#   7. rtool bon        majority | naive | weighted at N = 1, 2, 4, 8, 16; rtool eval each
#   8. rtool prm-label  a reference: $PRM_REF_K rollouts per step on 4 samples of $PRM_REF_PROMPTS held-out prompts
#   9. report.py        the table, the picture, the PRM's step accuracy against the reference and the exact labels
#
#   examples/prm/run.sh [WORK_DIR]           # default examples/prm/work; rtool must be on PATH
#   PRM_SEED=1 examples/prm/run.sh           # another draw of problems, weights and samples
#   PRM_PROMPTS=100 PRM_TRAIN_PROMPTS=200 PRM_K=4 PRM_STEPS=150 PRM_REF_PROMPTS=10 PRM_REF_K=8 ...   # smaller (CI)
#   PRM_REUSE=examples/quickstart/work ...   # step 1 from a finished quickstart run of the same seed (~3 min less)
#
# stdout: the results tables. stderr: each command's logs. WORK_DIR/prm.png: accuracy against N.
# On a busy machine run it with OMP_NUM_THREADS=1 (torch's one thread per core is slower at load > cores).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
quickstart="$here/../quickstart"
work="${1:-$here/work}"
seed="${PRM_SEED:-0}"
prompts="${PRM_PROMPTS:-200}"              # held-out prompts for best-of-N
train_prompts="${PRM_TRAIN_PROMPTS:-500}"  # training prompts the student samples for prm-label
samples="${PRM_SAMPLES:-4}"                # samples per training prompt
k="${PRM_K:-8}"                            # rollouts per step prefix
ref_prompts="${PRM_REF_PROMPTS:-50}"       # held-out prompts whose first 4 samples get reference labels
ref_k="${PRM_REF_K:-32}"
student_steps="${PRM_STUDENT_STEPS:-550}"  # examples/bon's weak student
prm_steps="${PRM_STEPS:-300}"
rm -rf "$work"
mkdir -p "$work"
source "$quickstart/common.sh"  # step (timed into timings.tsv), teacher_and_traces (step 1), weak_student, cached

# The student samples, rolls out and is sampled again with the same settings as the examples' teacher.
sampling=(--temperature 0.8 --top-p 1.0 --max-new-tokens 120 --no-system --batch-size 256 --seed "$seed")

started=$(date +%s.%N)
cut -d" " -f1-3 /proc/loadavg > "$work/load.txt"  # load average at the start and the end (report.py)
teacher_and_traces "$seed" "${PRM_REUSE:-}"
head -n "$train_prompts" "$work/data/train.jsonl" > "$work/data/prm-train.jsonl"
head -n "$prompts" "$work/data/test.jsonl" > "$work/data/bon.jsonl"

# The student stops early on purpose: its samples must be both right and wrong, and best-of-N needs room to pick.
step "sft weak student" weak_student "$seed" "$student_steps" "$work/student"
step "sample student (train)" rtool distill --teacher "$work/student" -n "$samples" "${sampling[@]}" \
    -i "$work/data/prm-train.jsonl" -o "$work/student-traces.jsonl"
# One step per line: the solutions are column additions, "7+8+0=15, write 5 carry 1".
step "prm-label k=$k" rtool prm-label --policy "$work/student" -k "$k" --step-sep '\n' "${sampling[@]}" \
    -i "$work/student-traces.jsonl" -o "$work/labelled.jsonl"
step "prm-train" rtool prm-train -m "$work/teacher" -d "$work/labelled.jsonl" -o "$work/prm" --no-system \
    --eval-split 0.1 --eval-steps 100 --max-steps "$prm_steps" --lr 1e-3 --batch-size 32 --grad-accum 1 \
    --max-length 2048 --save-steps 0 --logging-steps 50 --seed "$seed" > /dev/null

step "eval student greedy" rtool eval --model "$work/student" --bench "$work/data/bon.jsonl" --no-system \
    --max-new-tokens 120 --batch-size 200 > "$work/eval-greedy.json"
step "sample student x16" cached "$work/candidates.jsonl" rtool distill --teacher "$work/student" -n 16 \
    "${sampling[@]}" -i "$work/data/bon.jsonl" -o "$work/candidates.jsonl"
step "prm-score" rtool prm-score --prm "$work/prm" --format qwen-prm --step-sep '\n' --batch-size 64 \
    -i "$work/candidates.jsonl" -o "$work/scored.jsonl"
step "eval samples" rtool eval -i "$work/scored.jsonl" > "$work/eval-samples.json"
for method in majority naive weighted; do
    step "bon $method" rtool bon --n 1,2,4,8,16 --sorted --method "$method" -i "$work/scored.jsonl" \
        -o "$work/bon-$method.jsonl"
    rtool eval -i "$work/bon-$method.jsonl" > "$work/eval-bon-$method.json"
done

# The reference: the same labelling with more rollouts, on held-out traces the PRM has scored (samples 0-3 of the
# first $ref_prompts held-out prompts).
python -c 'import json, sys
ids = set()
for line in open(sys.argv[1]):
    row = json.loads(line)
    if row["sample"] < 4 and (row["id"] in ids or len(ids) < int(sys.argv[2])):
        ids.add(row["id"])
        print(line, end="")' "$work/candidates.jsonl" "$ref_prompts" > "$work/reference-traces.jsonl"
step "prm-label k=$ref_k (reference)" rtool prm-label --policy "$work/student" -k "$ref_k" --step-sep '\n' \
    "${sampling[@]}" -i "$work/reference-traces.jsonl" -o "$work/reference.jsonl"

ended=$(date +%s.%N)
awk -v b="$started" -v e="$ended" 'BEGIN { printf "total\t%.1f\n", e - b }' >> "$work/timings.tsv"
cut -d" " -f1-3 /proc/loadavg >> "$work/load.txt"
python "$here/report.py" "$work"
