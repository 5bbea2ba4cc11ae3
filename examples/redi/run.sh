#!/usr/bin/env bash
# Do the teacher's wrong traces help? SFT on positives vs REDI on (correct, incorrect) pairs, on the CPU.
#
#   1. the quickstart's task, tiny models and teacher (examples/quickstart: make_task.py, build_models.py,
#      teacher.yaml), and its distill: 4 samples per training prompt at temperature 0.8, graded, negatives kept
#   2. rtool sft   stage 1: a fresh student on the correct traces, stopped short of the teacher (550 steps)
#   3. from that checkpoint, the same 100 extra steps at the same learning rate schedule as
#      (a) rtool sft  more SFT on the correct traces (sft-more.yaml)
#      (b) rtool redi REDI on one (correct, incorrect) pair per prompt that has both (redi.yaml)
#   4. rtool eval  teacher, untrained student, stage 1, (a) and (b) on the held-out problems (greedy)
#   5. rtool plot  the two arms' training curves into WORK_DIR/sft-vs-redi.png
#
#   examples/redi/run.sh [WORK_DIR]             # default examples/redi/work; rtool must be on PATH
#   REDI_SEED=1 examples/redi/run.sh            # another draw of problems, initial weights and samples
#   REDI_ALPHA=0.8 examples/redi/run.sh         # the paper's alpha instead of redi.yaml's
#   REDI_SAMPLES=4 examples/redi/run.sh         # also pass@1..4 of stage 1 and both arms, sampled at 0.8
#   REDI_STEPS=20 examples/redi/run.sh          # fewer extra steps for both arms (CI: the pipeline, not the result)
#   REDI_REUSE=examples/quickstart/work examples/redi/run.sh
#       # step 1 (task, models, teacher, traces) and the teacher's evals from a finished quickstart run of the
#       # same seed, which makes them the same way: ~2 minutes less (CI, right after make quickstart)
#
# stdout: the results table. stderr: each command's logs. Exit 1 only when the pipeline is broken (a stage
# failed, the teacher did not learn, or stage 1 is not clearly above the untrained student), never because one
# arm beat the other: the point is the measurement. See RESULTS.md for it over several seeds.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
quick="$here/../quickstart"
work="${1:-$here/work}"
seed="${REDI_SEED:-0}"
samples="${REDI_SAMPLES:-0}"
# Stage 1 is the quickstart's student recipe with 550 steps instead of 1,000. Held-out pass@1 rises steeply between
# ~450 and ~650 steps here (one draw: 400 steps 3%, 500 57%, 550 87%, 600 95%), so 550 leaves a student that has the
# algorithm but still slips (69-89% over three shuffles of one draw), with room above it for the second stage.
stage1_steps=550
steps=()  # the arms' steps: sft-more.yaml's and redi.yaml's (100) unless REDI_STEPS
if [[ -n "${REDI_STEPS:-}" ]]; then steps=(--max-steps "$REDI_STEPS"); fi
alpha=()
if [[ -n "${REDI_ALPHA:-}" ]]; then alpha=(--alpha "$REDI_ALPHA"); fi
rm -rf "$work"
mkdir -p "$work"
source "$quick/common.sh"  # step (timed into timings.tsv), teacher_and_traces (step 1), weak_student

started=$(date +%s.%N)
load_start="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"  # recorded with the timings: the machine is shared
# Step 1: the quickstart's (see examples/quickstart/common.sh for the why of each flag), or a finished run's.
teacher_and_traces "$seed" "${REDI_REUSE:-}"

# Both stages read the same traces: sft keeps the correct rows, redi pairs them with the incorrect ones. Neither
# needs --no-system: they train on the conversations distill recorded (prompt_messages).
step "stage 1 sft" weak_student "$seed" "$stage1_steps" "$work/stage1"
step "arm a: sft-more" rtool sft --model "$work/stage1" --data "$work/traces.jsonl" \
    --out "$work/sft-more" --config "$here/sft-more.yaml" "${steps[@]}" --seed "$seed" > /dev/null
step "arm b: redi" rtool redi --model "$work/stage1" --data "$work/traces.jsonl" \
    --out "$work/redi" --config "$here/redi.yaml" "${steps[@]}" "${alpha[@]}" --seed "$seed" > /dev/null

for model in teacher student-init stage1 sft-more redi; do
    if [[ -n "${REDI_REUSE:-}" && -f "$REDI_REUSE/eval-$model.json" ]]; then
        cp "$REDI_REUSE/eval-$model.json" "$work/"  # the quickstart evaluated its teacher and untrained student
        continue
    fi
    step "eval $model" rtool eval --model "$work/$model" --bench "$work/data/test.jsonl" --no-system \
        --max-new-tokens 120 --batch-size 250 --records "$work/eval-$model.jsonl" > "$work/eval-$model.json"
done
if (( samples > 1 )); then
    for model in stage1 sft-more redi; do
        step "eval $model x$samples" rtool eval --model "$work/$model" --bench "$work/data/test.jsonl" \
            --no-system -n "$samples" --temperature 0.8 --max-new-tokens 120 --batch-size 500 --seed "$seed" \
            > "$work/eval-$model-sampled.json"
    done
fi

ended=$(date +%s.%N)
awk -v b="$started" -v e="$ended" 'BEGIN { printf "total\t%.1f\n", e - b }' >> "$work/timings.tsv"
printf '{"seed": %s, "alpha": %s, "samples": %s, "load": {"start": "%s", "end": "%s"}}\n' "$seed" \
    "${REDI_ALPHA:-null}" "$samples" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)" \
    > "$work/run.json"
# Each arm's loss is its own objective (sft: mean token NLL of the positives; redi: -chosen_logp +
# alpha * rejected_logp): compare their shapes, not their levels. chosen/rejected_logp are redi's alone.
shown_alpha="${REDI_ALPHA:-$(sed -n 's/^alpha: *//p' "$here/redi.yaml")}"
rtool plot "$work/sft-more" "$work/redi" -o "$work/sft-vs-redi.png" \
    --metrics loss,chosen_logp,rejected_logp,grad_norm,learning_rate \
    --title "seed $seed, from stage 1: SFT on positives vs REDI (alpha $shown_alpha) on pairs; each loss is its own objective" \
    > /dev/null
python "$here/report.py" "$work"
