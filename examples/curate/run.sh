#!/usr/bin/env bash
# Which data to distil: rtool's data stage (decontaminate, difficulty, nll, select, eval --group-by) against
# training on everything, on the CPU.
#
#   1. the quickstart's task, tiny models, teacher and its traces (examples/quickstart); the student of stage 1
#      (the quickstart's student recipe stopped at 550 steps: it solves most problems, not all)
#   2. a second, verbose teacher: the same tiny model trained on the gold solutions padded with restatements (~2.2x
#      longer; make_data.py verbose); sampled, it slips more often than the quickstart's (its pass rate is lower)
#   3. training prompts = the 2,000 training problems + 50 held-out problems planted among them with their case and
#      spacing changed (make_data.py planted); both teachers sample 4 traces of each
#   4. the data stage:
#        rtool decontaminate --bench test.jsonl        the planted problems out
#        rtool distill --teacher stage1 | rtool difficulty    pass rates of the student's own samples
#        rtool eval --group-by teacher                 the teachers side by side
#        rtool select | rtool nll --model stage1       the student's NLL of each distinct correct trace
#        rtool select --per-prompt 1 --prefer nll      one trace per prompt
#   5. rtool sft from stage 1, the same steps (stage2.yaml) on
#        (a) all:       every correct trace of both teachers, every prompt (planted ones included)
#        (a2) one teacher: every correct trace of the quickstart teacher alone (the control: (a) without the
#                       verbose teacher, (b) without the curation)
#        (b) curated:   clean prompts, one lowest-NLL correct trace each
#        (c) teachable: (b) on the prompts stage 1 solves in some of its samples, not all (difficulty --keep)
#   6. rtool eval  stage 1 and the arms on the held-out problems (greedy); report.py splits the planted ones out
#
#   examples/curate/run.sh [WORK_DIR]            # default examples/curate/work; rtool must be on PATH
#   CURATE_SEED=1 examples/curate/run.sh         # another draw of problems, weights, samples and planted problems
#   CURATE_STEPS=20 examples/curate/run.sh       # fewer steps for every arm (CI: the pipeline, not the result)
#   CURATE_TEACHER_STEPS=100 ...                 # a shorter schedule for the verbose teacher (CI: too short for it
#                                                # to learn its format, so its accuracy is then not checked)
#   CURATE_SAMPLES=2 ...                         # samples per prompt from the verbose teacher and stage 1 (CI)
#   CURATE_PROMPTS=500 ...                       # the verbose teacher and stage 1 sample only the first 500
#                                                # prompts (CI); decontamination still checks them all
#   CURATE_REUSE=DIR examples/curate/run.sh
#       # step 1 from a finished quickstart run of the same seed (checked by check_reuse.py): ~2 minutes less.
#       # By default examples/quickstart/work, the README's `make quickstart`, when it is such a run; else step 1
#       # is made here (CURATE_REUSE= forces that).
#
# stdout: the results table. stderr: each command's logs. Exit 1 only when the pipeline is broken (a stage failed,
# decontamination missed a planted problem or dropped a clean one, a teacher or stage 1 did not learn), never
# because one arm beat another: the point is the measurement. See RESULTS.md for it over several seeds.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
quick="$here/../quickstart"
work="${1:-$here/work}"
seed="${CURATE_SEED:-0}"
planted=50
# The teachable window of AceReason and Phi-4-reasoning: prompts the stage-1 student solves in some of its samples,
# not all and not none (with 4 samples: 1, 2 or 3).
keep=0.01:0.99
stage1_steps=550
steps=()
if [[ -n "${CURATE_STEPS:-}" ]]; then steps=(--max-steps "$CURATE_STEPS"); fi
samples="${CURATE_SAMPLES:-4}"  # the quickstart teacher's are step 1's: 4 per prompt
teacher_steps=()
if [[ -n "${CURATE_TEACHER_STEPS:-}" ]]; then teacher_steps=(--max-steps "$CURATE_TEACHER_STEPS"); fi
first() {  # first FILE: FILE, or its first CURATE_PROMPTS rows in FILE.head
    if [[ -z "${CURATE_PROMPTS:-}" ]]; then echo "$1"; return; fi
    head -n "$CURATE_PROMPTS" "$1" > "$1.head"
    echo "$1.head"
}
rm -rf "$work"
mkdir -p "$work"
source "$quick/common.sh"  # step (timed into timings.tsv), teacher_and_traces (step 1), weak_student, cached

started=$(date +%s.%N)
load_start="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"  # recorded with the timings: the machine is shared
reuse="${CURATE_REUSE-$quick/work}"  # unset: the quickstart's own run if it fits; set and empty: none
if [[ -z "${CURATE_REUSE+set}" ]] && ! python "$quick/check_reuse.py" "$reuse" "$seed" 2> /dev/null; then
    reuse=""  # no finished quickstart run of this seed: make step 1 here
fi
teacher_and_traces "$seed" "$reuse"
step "stage 1 sft" weak_student "$seed" "$stage1_steps" "$work/stage1"

# Both teachers sample the same prompts with the quickstart's flags; the verbose one needs room for its length.
# The quickstart teacher's traces of the 2,000 training problems are step 1's: it samples only the planted ones.
step "plant held-out problems" python "$here/make_data.py" planted --train "$work/data/train.jsonl" \
    --test "$work/data/test.jsonl" --count "$planted" --seed "$seed" --out "$work/prompts.jsonl" \
    --planted-out "$work/planted.jsonl" --map-out "$work/planted-ids.jsonl" >&2
step "verbose teacher data" python "$here/make_data.py" verbose --train "$work/data/train.jsonl" \
    --tokenizer "$work/student-init" --seed "$seed" --out "$work/verbose-train.jsonl" \
    --model-out "$work/verbose-teacher-init" >&2
step "sft verbose teacher" rtool sft --model "$work/verbose-teacher-init" --data "$work/verbose-train.jsonl" \
    --no-system --out "$work/verbose-teacher" --config "$here/verbose-teacher.yaml" "${teacher_steps[@]}" \
    --seed "$seed" > /dev/null
sample=(--temperature 0.8 --top-p 1.0 --no-system --batch-size 256 --seed "$seed")
step "distill teacher (planted)" rtool distill --teacher "$work/teacher" --teacher-name teacher -n 4 "${sample[@]}" \
    --max-new-tokens 120 -i "$work/planted.jsonl" -o "$work/traces-planted.jsonl"
step "distill verbose teacher" rtool distill --teacher "$work/verbose-teacher" --teacher-name verbose-teacher \
    -n "$samples" "${sample[@]}" --max-new-tokens 240 -i "$(first "$work/prompts.jsonl")" \
    -o "$work/traces-verbose.jsonl"
cat "$work/traces.jsonl" "$work/traces-planted.jsonl" > "$work/traces-teacher.jsonl"
cat "$work/traces-teacher.jsonl" "$work/traces-verbose.jsonl" > "$work/traces-all.jsonl"

# The data stage, as a user would pipe it.
step "decontaminate" rtool decontaminate --bench "$work/data/test.jsonl" --report "$work/contaminated.jsonl" \
    -i "$work/prompts.jsonl" -o "$work/clean.jsonl"
step "sample stage 1" rtool distill --teacher "$work/stage1" --teacher-name stage1 -n "$samples" "${sample[@]}" \
    --max-new-tokens 120 -i "$(first "$work/clean.jsonl")" -o "$work/student-samples.jsonl"
step "difficulty" rtool difficulty -i "$work/student-samples.jsonl" -o "$work/difficulty.jsonl"
rtool difficulty --keep "$keep" -i "$work/student-samples.jsonl" -o "$work/teachable.jsonl" 2> /dev/null
step "compare teachers" rtool eval --group-by teacher -i "$work/traces-all.jsonl" > "$work/teachers.json"
# Distinct correct traces of clean prompts (a prompt's correct traces are mostly identical here), then the
# student's NLL of each: one forward per distinct trace instead of per sample.
step "nll" bash -c 'rtool decontaminate --bench "$1/data/test.jsonl" -i "$1/traces-all.jsonl" 2> /dev/null |
    rtool select --per-prompt 8 --prefer first |
    rtool nll --model "$1/stage1" --batch-size 64 -o "$1/candidates.jsonl"' nll "$work"
step "select" rtool select --per-prompt 1 --prefer nll -i "$work/candidates.jsonl" -o "$work/curated.jsonl"
rtool select --per-prompt 1 --prefer nll --prompts "$work/teachable.jsonl" -i "$work/candidates.jsonl" \
    -o "$work/teachable-traces.jsonl" 2> /dev/null

# The arms: the same steps from stage 1; sft keeps the correct rows of each file (all of the curated ones are).
for arm in all one-teacher curated teachable; do
    case $arm in
        all) data="$work/traces-all.jsonl" ;;
        one-teacher) data="$work/traces-teacher.jsonl" ;;
        curated) data="$work/curated.jsonl" ;;
        teachable) data="$work/teachable-traces.jsonl" ;;
    esac
    step "arm $arm" rtool sft --model "$work/stage1" --data "$data" --out "$work/arm-$arm" \
        --config "$here/stage2.yaml" "${steps[@]}" --seed "$seed" > /dev/null
done

for model in teacher verbose-teacher stage1 arm-all arm-one-teacher arm-curated arm-teachable; do
    if [[ -n "$reuse" && "$model" == teacher && -f "$reuse/eval-teacher.json" ]]; then
        cp "$reuse/eval-teacher.json" "$reuse/eval-teacher.jsonl" "$work/"
        continue
    fi
    step "eval $model" rtool eval --model "$work/$model" --bench "$work/data/test.jsonl" --no-system \
        --max-new-tokens 240 --batch-size 250 --records "$work/eval-$model.jsonl" > "$work/eval-$model.json"
done

ended=$(date +%s.%N)
awk -v b="$started" -v e="$ended" 'BEGIN { printf "total\t%.1f\n", e - b }' >> "$work/timings.tsv"
python - "$work/run.json" "$seed" "$planted" "$keep" "$samples" "${CURATE_TEACHER_STEPS:-}" "$load_start" \
    "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)" <<'EOF'
import json, sys
out, seed, planted, keep, samples, teacher_steps, start, end = sys.argv[1:]
settings = {"seed": int(seed), "planted": int(planted), "keep": keep, "samples": int(samples),
            "teacher_steps": int(teacher_steps) if teacher_steps else None, "load": {"start": start, "end": end}}
open(out, "w").write(json.dumps(settings) + "\n")
EOF
rtool plot "$work/arm-all" "$work/arm-one-teacher" "$work/arm-curated" "$work/arm-teachable" -o "$work/arms.png" \
    --metrics loss,num_tokens,grad_norm \
    --title "seed $seed, from stage 1: all correct traces, one teacher's, curated (lowest NLL), teachable" \
    > /dev/null
python "$here/report.py" "$work"
