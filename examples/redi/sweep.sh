#!/usr/bin/env bash
# The tuning behind sft-more.yaml and redi.yaml: both arms over one learning-rate grid, REDI also over alpha,
# from the stage-1 checkpoint of a finished run.sh. Every other setting is the arms' YAML (100 steps, linear,
# warmup 0.1, 16 positives per step). Held-out pass@1 (greedy) per setting, as a table on stdout.
#
#   examples/redi/run.sh /tmp/redi-0 && examples/redi/sweep.sh /tmp/redi-0    # ~10 min on 2 cores
#   REDI_LRS="1e-3 3e-4" REDI_ALPHAS="0.8 0.2" examples/redi/sweep.sh /tmp/redi-0
#
# It tunes on that run's held-out split: RESULTS.md tuned on seed 0 and reads the other seeds as the measurement.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: sweep.sh WORK_DIR (a finished examples/redi/run.sh)}"
lrs="${REDI_LRS:-1e-3 3e-4 1e-4 3e-5}"
alphas="${REDI_ALPHAS:-0.8 0.5 0.2 0}"
seed="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["seed"])' "$work/run.json")"
out="$work/sweep"
mkdir -p "$out"

pass1() {  # pass1 MODEL_DIR: held-out pass@1, greedy, as run.sh evaluates
    rtool eval --model "$1" --bench "$work/data/test.jsonl" --no-system --max-new-tokens 120 --batch-size 250 \
        2> /dev/null | python -c 'import json, sys; print("%.1f" % (100 * json.load(sys.stdin)["pass@1"]))'
}
train() {  # train NAME COMMAND...: skip when NAME was trained before (the sweep resumes)
    local name="$1"
    shift
    [[ -f "$out/$name/model.safetensors" ]] || "$@" --out "$out/$name" --seed "$seed" > /dev/null 2> "$out/$name.log"
}

echo "| lr | SFT-more |$(for a in $alphas; do printf ' REDI alpha %s |' "$a"; done)"
echo "|---|---|$(for a in $alphas; do printf -- '---|'; done)"
for lr in $lrs; do
    train "sft-lr$lr" rtool sft --model "$work/stage1" --data "$work/traces.jsonl" --config "$here/sft-more.yaml" --lr "$lr"
    row="| $lr | $(pass1 "$out/sft-lr$lr") |"
    for a in $alphas; do
        train "redi-lr$lr-a$a" rtool redi --model "$work/stage1" --data "$work/traces.jsonl" \
            --config "$here/redi.yaml" --lr "$lr" --alpha "$a"
        row+=" $(pass1 "$out/redi-lr$lr-a$a") |"
    done
    echo "$row"
done
echo "stage 1: $(pass1 "$work/stage1")% (seed $seed); models and logs in $out"
