# Sourced by the examples built on the quickstart (quickstart, redi, bon, grpo): the timing wrapper and step 1.
#
#   source "$quick/common.sh"            # needs $work (the example's work dir); defines step, teacher_and_traces
#   teacher_and_traces "$seed" "$reuse"  # task, tiny models, teacher, its traces in $work (or a quickstart run's)
#
# The seed draws the problems, the initial weights and the samples. `reuse` is a finished quickstart work dir of
# the same seed (CI runs the examples right after make quickstart): its data, models, teacher and traces are
# copied instead of made again, ~2-3 minutes less, after check_reuse.py has made sure they were made the same way.

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
    step "distill" rtool distill --teacher "$work/teacher" -n 4 --temperature 0.8 --top-p 1.0 --max-new-tokens 120 \
        --no-system --batch-size 256 --seed "$seed" -i "$work/data/train.jsonl" -o "$work/traces.jsonl"
}
