#!/usr/bin/env bash
# Which data to distil: rtool's data stage (decontaminate, difficulty, nll, select, eval --group-by) against
# training on everything, on the CPU.
#
#   1. the quickstart's task, tiny models, teacher and its traces (examples/quickstart); the student of stage 1
#      (the quickstart's student recipe stopped at 550 steps: it solves most problems, not all)
#   2. the held-out problems as a benchmark words them: "Take the numbers 347 and 158 and add them. What is 347 +
#      158?" (make_data.py bench; the task's own 5-word question is too short for open-r1's 8-gram rule)
#   3. training prompts = the first CURATE_PROMPTS (500) training problems + 50 of those benchmark problems,
#      lightly paraphrased (make_data.py planted: case, spacing, a word changed or added at one end)
#   4. a second, verbose teacher: the same tiny model trained on the gold solutions padded with restatements (~2.2x
#      longer; make_data.py verbose); both teachers sample 4 traces of each prompt
#   5. a neutral student for the NLL: the student's initial weights trained on the gold solutions in a third
#      notation (make_data.py neutral), so it has learned the task from neither teacher
#   6. the data stage:
#        rtool decontaminate --bench bench.jsonl       the planted problems out (word 8-grams)
#        rtool distill --teacher stage1 | rtool difficulty    pass rates of the student's own samples
#        rtool eval --group-by teacher                 the teachers side by side
#        rtool select | rtool nll --model neutral      the neutral student's NLL of each distinct correct trace
#        rtool select --per-prompt 1 --prefer nll      one trace per prompt
#   7. rtool sft from stage 1, one epoch over each arm's own set (stage2.yaml): a smaller set trains fewer steps
#        (a) all:       every correct trace of both teachers, every prompt (planted ones included)
#        (a2) one teacher: every correct trace of the quickstart teacher alone
#        (b) curated:   clean prompts, one lowest-NLL correct trace each
#        (c) teachable: (b) on the prompts stage 1 solves in some of its samples, not all (difficulty --keep)
#   8. rtool eval  stage 1 and the arms on the 500 held-out problems in the task's own words (greedy: the tiny
#      models read no other wording); report.py splits the planted ones out
#
#   examples/curate/run.sh [WORK_DIR]            # default examples/curate/work; rtool must be on PATH
#   CURATE_SEED=1 examples/curate/run.sh         # another draw of problems, weights, samples and planted problems
#   CURATE_PROMPTS=2000 ...                      # training prompts after step 1 (default the first 500 of 2,000)
#   CURATE_REUSE=DIR examples/curate/run.sh
#       # step 1 from a finished quickstart run of the same seed (checked by check_reuse.py). By default
#       # examples/quickstart/work, the README's `make quickstart`, when it is such a run; else step 1 is made
#       # here (CURATE_REUSE= forces that).
# Reduced (CI: the pipeline and its gates, not the measurement):
#   CURATE_STEPS=5 ...                           # at most 5 steps per arm instead of one epoch
#   CURATE_TEACHER_STEPS=20 ...                  # a shorter schedule for the verbose teacher (too short for it
#                                                # to learn its format: it is then neither evaluated nor checked)
#   CURATE_NEUTRAL_STEPS=20 ...                  # the neutral student's steps (default 200)
#   CURATE_SAMPLES=2 ...                         # samples per prompt from the verbose teacher and stage 1
#   CURATE_EVAL=100 ...                          # evaluate on the first 100 held-out problems only
#
# stdout: the results table. stderr: each command's logs. The run's wall time (from the start of this script to the
# end of its last stage, before the report) goes to run.json and timings.tsv. Exit 1 only when the pipeline is
# broken (a stage failed, decontamination missed a planted problem or dropped a clean one, a teacher or stage 1 did
# not learn), never because one arm beat another: the point is the measurement. RESULTS.md: several seeds.
set -euo pipefail
started=$(date +%s.%N)

here="$(cd "$(dirname "$0")" && pwd)"
quick="$here/../quickstart"
work="${1:-$here/work}"
seed="${CURATE_SEED:-0}"
prompts="${CURATE_PROMPTS:-500}"
planted=50
# The teachable window of AceReason and Phi-4-reasoning: prompts the stage-1 student solves in some of its samples,
# not all and not none (with 4 samples: 1, 2 or 3).
keep=0.01:0.99
stage1_steps=550
neutral_steps="${CURATE_NEUTRAL_STEPS:-200}"
steps=()
if [[ -n "${CURATE_STEPS:-}" ]]; then steps=(--max-steps "$CURATE_STEPS"); fi
samples="${CURATE_SAMPLES:-4}"  # the quickstart teacher's are step 1's: 4 per prompt
teacher_steps=()
if [[ -n "${CURATE_TEACHER_STEPS:-}" ]]; then teacher_steps=(--max-steps "$CURATE_TEACHER_STEPS"); fi
rm -rf "$work"
mkdir -p "$work"
source "$quick/common.sh"  # step (timed into timings.tsv), teacher_and_traces (step 1), weak_student, cached

load_start="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"  # recorded with the timings: the machine is shared
reuse="${CURATE_REUSE-$quick/work}"  # unset: the quickstart's own run if it fits; set and empty: none
if [[ -z "${CURATE_REUSE+set}" ]] && ! python "$quick/check_reuse.py" "$reuse" "$seed" 2> /dev/null; then
    reuse=""  # no finished quickstart run of this seed: make step 1 here
fi
teacher_and_traces "$seed" "$reuse"
step "stage 1 sft" weak_student "$seed" "$stage1_steps" "$work/stage1"

data() {  # data SUBCOMMAND ARGS...: make_data.py, which prints the paths it wrote (to the log)
    python "$here/make_data.py" "$@" >&2
}
step "benchmark wording" data bench --test "$work/data/test.jsonl" --out "$work/bench.jsonl"
# The quickstart teacher's traces of the kept training problems are step 1's: it samples only the planted ones.
step "plant benchmark problems" data planted --train "$work/data/train.jsonl" --bench "$work/bench.jsonl" \
    --traces "$work/traces.jsonl" --prompts "$prompts" --count "$planted" --seed "$seed" \
    --out "$work/prompts.jsonl" --planted-out "$work/planted.jsonl" --map-out "$work/planted-ids.jsonl" \
    --traces-out "$work/traces-kept.jsonl"
step "verbose teacher data" data verbose --train "$work/data/train.jsonl" --tokenizer "$work/student-init" \
    --seed "$seed" --out "$work/verbose-train.jsonl" --model-out "$work/verbose-teacher-init"
step "neutral data" data neutral --train "$work/data/train.jsonl" --out "$work/neutral-train.jsonl"
step "sft verbose teacher" rtool sft --model "$work/verbose-teacher-init" --data "$work/verbose-train.jsonl" \
    --no-system --out "$work/verbose-teacher" --config "$here/verbose-teacher.yaml" "${teacher_steps[@]}" \
    --seed "$seed" > /dev/null
# The quickstart's student recipe from stage 1's initial weights, on the neutral notation.
step "sft neutral student" rtool sft --model "$work/student-init" --data "$work/neutral-train.jsonl" --no-system \
    --out "$work/neutral" --config "$quick/student.yaml" --max-steps "$neutral_steps" --logging-steps 50 \
    --seed "$seed" > /dev/null
sample=(--temperature 0.8 --top-p 1.0 --no-system --batch-size 256 --seed "$seed")
step "distill teacher (planted)" rtool distill --teacher "$work/teacher" --teacher-name teacher -n 4 "${sample[@]}" \
    --max-new-tokens 120 -i "$work/planted.jsonl" -o "$work/traces-planted.jsonl"
step "distill verbose teacher" rtool distill --teacher "$work/verbose-teacher" --teacher-name verbose-teacher \
    -n "$samples" "${sample[@]}" --max-new-tokens 240 -i "$work/prompts.jsonl" -o "$work/traces-verbose.jsonl"
cat "$work/traces-kept.jsonl" "$work/traces-planted.jsonl" > "$work/traces-teacher.jsonl"
cat "$work/traces-teacher.jsonl" "$work/traces-verbose.jsonl" > "$work/traces-all.jsonl"

# The data stage, as a user would pipe it.
step "decontaminate" rtool decontaminate --bench "$work/bench.jsonl" --report "$work/contaminated.jsonl" \
    -i "$work/prompts.jsonl" -o "$work/clean.jsonl"
step "sample stage 1" rtool distill --teacher "$work/stage1" --teacher-name stage1 -n "$samples" "${sample[@]}" \
    --max-new-tokens 120 -i "$work/clean.jsonl" -o "$work/student-samples.jsonl"
step "difficulty" rtool difficulty -i "$work/student-samples.jsonl" -o "$work/difficulty.jsonl"
rtool difficulty --keep "$keep" -i "$work/student-samples.jsonl" -o "$work/teachable.jsonl" 2> /dev/null
step "compare teachers" rtool eval --group-by teacher -i "$work/traces-all.jsonl" > "$work/teachers.json"
# Distinct correct traces of clean prompts (a prompt's correct traces are mostly identical here), then the neutral
# student's NLL of each: one forward per distinct trace instead of per sample.
step "nll" bash -c 'rtool decontaminate --bench "$1/bench.jsonl" -i "$1/traces-all.jsonl" 2> /dev/null |
    rtool select --per-prompt 8 --prefer first |
    rtool nll --model "$1/neutral" --batch-size 64 -o "$1/candidates.jsonl"' nll "$work"
step "select" rtool select --per-prompt 1 --prefer nll -i "$work/candidates.jsonl" -o "$work/curated.jsonl"
rtool select --per-prompt 1 --prefer nll --prompts "$work/teachable.jsonl" -i "$work/candidates.jsonl" \
    -o "$work/teachable-traces.jsonl" 2> /dev/null

# The arms: one epoch each over its own file from stage 1 (sft keeps the correct rows; all of the curated ones are).
for arm in all one-teacher curated teachable; do
    case $arm in
        all) arm_data="$work/traces-all.jsonl" ;;
        one-teacher) arm_data="$work/traces-teacher.jsonl" ;;
        curated) arm_data="$work/curated.jsonl" ;;
        teachable) arm_data="$work/teachable-traces.jsonl" ;;
    esac
    step "arm $arm" rtool sft --model "$work/stage1" --data "$arm_data" --out "$work/arm-$arm" \
        --config "$here/stage2.yaml" "${steps[@]}" --seed "$seed" > /dev/null
done

test_set="$work/data/test.jsonl"
if [[ -n "${CURATE_EVAL:-}" ]]; then
    head -n "$CURATE_EVAL" "$test_set" > "$work/test-head.jsonl"
    test_set="$work/test-head.jsonl"
fi
for model in teacher verbose-teacher stage1 arm-all arm-one-teacher arm-curated arm-teachable; do
    if [[ -n "$reuse" && "$model" == teacher && -f "$reuse/eval-teacher.json" ]]; then
        cp "$reuse/eval-teacher.json" "$reuse/eval-teacher.jsonl" "$work/"
        continue
    fi
    if [[ "$model" == verbose-teacher && -n "${CURATE_TEACHER_STEPS:-}" ]]; then
        continue  # cut short, it has not learned its format: nothing to check, nothing to report
    fi
    step "eval $model" rtool eval --model "$work/$model" --bench "$test_set" --no-system \
        --max-new-tokens 240 --batch-size 250 --records "$work/eval-$model.jsonl" > "$work/eval-$model.json"
done
rtool plot "$work/arm-all" "$work/arm-one-teacher" "$work/arm-curated" "$work/arm-teachable" -o "$work/arms.png" \
    --metrics loss,num_tokens,grad_norm \
    --title "seed $seed, from stage 1, one epoch each: all correct traces, one teacher's, curated, teachable" \
    > /dev/null

ended=$(date +%s.%N)
wall=$(awk -v b="$started" -v e="$ended" 'BEGIN { printf "%.1f", e - b }')
printf "total\t%s\n" "$wall" >> "$work/timings.tsv"
python - "$work/run.json" "$seed" "$prompts" "$planted" "$keep" "$samples" "${CURATE_TEACHER_STEPS:-}" \
    "$neutral_steps" "${CURATE_STEPS:-}" "${CURATE_EVAL:-}" "$reuse" "$wall" "$load_start" \
    "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)" <<'EOF'
import json, sys
(out, seed, prompts, planted, keep, samples, teacher_steps, neutral_steps, arm_steps, evaluated, reuse, wall, start,
 end) = sys.argv[1:]
number = lambda value: int(value) if value else None
settings = {"seed": int(seed), "prompts": int(prompts), "planted": int(planted), "keep": keep,
            "samples": int(samples), "teacher_steps": number(teacher_steps), "neutral_steps": int(neutral_steps),
            "arm_steps": number(arm_steps), "eval_problems": number(evaluated), "step 1 reused": bool(reuse),
            "wall_seconds": float(wall), "load": {"start": start, "end": end}}
open(out, "w").write(json.dumps(settings) + "\n")
EOF
python "$here/report.py" "$work"
