# Sourced by the examples built on the quickstart (quickstart, redi, bon, grpo, prm): the timing wrapper, step 1
# and the weak student.
#
#   source "$quick/common.sh"            # needs $work (the example's work dir); defines the functions below
#   teacher_and_traces "$seed" "$reuse"  # task, tiny models, teacher, its traces in $work (or a quickstart run's)
#   weak_student "$seed" 550 "$work/stage1"   # the quickstart's student recipe stopped at 550 steps
#   cached OUT COMMAND...                # COMMAND writes OUT, or OUT is copied from $EXAMPLES_CACHE
#
# The seed draws the problems, the initial weights and the samples. `reuse` is a finished quickstart work dir of
# the same seed (CI runs the examples right after make quickstart): its data, models, teacher and traces are
# copied instead of made again, ~2-3 minutes less, after check_reuse.py has made sure they were made the same way.
# EXAMPLES_CACHE (CI) is a directory the examples run one after another share: a step that runs the same command on
# the same inputs as one before it (check_reuse.py --key: inputs compared by content) is copied from there. The
# redi, bon, grpo and prm examples all start from a weak student made by one command, so CI trains it once.

quick="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HF_HUB_DISABLE_PROGRESS_BARS=1  # build_models.py saves with transformers, which would draw a bar
# torch uses every core by default, fastest on an idle machine; on a busy one, OMP_NUM_THREADS=1 is.

step() {  # step NAME COMMAND...: run it, append "NAME<TAB>seconds" to $work/timings.tsv
    local name="$1" begin end
    shift
    echo ">> $name" >&2
    begin=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v n="$name" -v b="$begin" -v e="$end" 'BEGIN { printf "%s\t%.1f\n", n, e - b }' >> "$work/timings.tsv"
}

teacher_and_traces() {  # teacher_and_traces SEED [REUSE_DIR]
    local seed="$1" reuse="${2:-}"
    if [[ -n "$reuse" ]]; then
        # Only traces sampled as below, for this seed, may stand in for step 1: anything else changes the example.
        python "$quick/check_reuse.py" "$reuse" "$seed"
        echo ">> step 1 reused from $reuse" >&2
        cp -r "$reuse/data" "$reuse/teacher" "$reuse/student-init" "$reuse/traces.jsonl" "$work/"
        return
    fi
    # The scripts print the paths they wrote; they go to the log, so stdout stays the example's results.
    step "make task" python "$quick/make_task.py" --out-dir "$work/data" --train 2000 --test 500 --seed "$seed" >&2
    step "build models" python "$quick/build_models.py" --data "$work/data/train.jsonl" "$work/data/test.jsonl" \
        --teacher-out "$work/teacher-init" --student-out "$work/student-init" --seed "$seed" >&2
    # --no-system, here and in distill: the task's prompts are the questions alone. Students trained on the traces
    # need no flag: they train on the conversations distill records (prompt_messages), which are the teacher's.
    step "sft teacher" rtool sft --model "$work/teacher-init" --data "$work/data/train.jsonl" --no-system \
        --out "$work/teacher" --config "$quick/teacher.yaml" --seed "$seed" > /dev/null
    # --teacher-name: the rows say "teacher" wherever the run's work dir is (examples/curate adds a second teacher).
    step "distill" rtool distill --teacher "$work/teacher" --teacher-name teacher -n 4 --temperature 0.8 --top-p 1.0 \
        --max-new-tokens 120 --no-system --batch-size 256 --seed "$seed" -i "$work/data/train.jsonl" \
        -o "$work/traces.jsonl"
}

cached() {  # cached OUT COMMAND...: run COMMAND, which writes OUT (a file or a directory), or copy OUT from the cache
    local out="$1" key
    shift
    if [[ -z "${EXAMPLES_CACHE:-}" ]]; then
        "$@"
        return
    fi
    key="$(python "$quick/check_reuse.py" --key "$out" "$@")"
    if [[ -e "$EXAMPLES_CACHE/$key" ]]; then
        echo ">> the same command on the same inputs ran before: $out copied from $EXAMPLES_CACHE/$key" >&2
        cp -r "$EXAMPLES_CACHE/$key" "$out"
        return
    fi
    "$@"
    mkdir -p "$EXAMPLES_CACHE"
    # Examples may run side by side (.ci/run's lanes): when another one stored the same step meanwhile, keep theirs.
    cp -r "$out" "$EXAMPLES_CACHE/$key.partial.$$" &&
        { mv -T "$EXAMPLES_CACHE/$key.partial.$$" "$EXAMPLES_CACHE/$key" 2>/dev/null ||
            rm -rf "$EXAMPLES_CACHE/$key.partial.$$"; }
}

weak_student() {  # weak_student SEED STEPS OUT: a fresh student on the correct traces, stopped short on purpose
    # The quickstart's student recipe (student.yaml: lr 3e-3, linear, batch 16) with STEPS steps instead of 1,000.
    # One command for every example's stage-1 or weak student, so that EXAMPLES_CACHE can share it. sft trains on
    # the conversations distill recorded (prompt_messages): no --no-system needed.
    cached "$3" rtool sft --model "$work/student-init" --data "$work/traces.jsonl" --out "$3" \
        --config "$quick/student.yaml" --max-steps "$2" --logging-steps 50 --seed "$1" > /dev/null
}
