#!/usr/bin/env bash
# The tuning behind grpo.yaml: rtool grpo from the stage-1 checkpoint of a finished run.sh over a grid of learning
# rates and sampling temperatures; every other setting is grpo.yaml's. Held-out pass@1 (greedy) per setting, with
# the run's last logged reward (accuracy of its groups) and share of groups with no signal, as a table on stdout.
#
#   examples/grpo/run.sh /tmp/grpo-0 && examples/grpo/sweep.sh /tmp/grpo-0    # 9 runs, ~2-3 min each on 2 cores
#   GRPO_LRS="1e-3 3e-4" GRPO_TEMPS="0.5" GRPO_EXTRA="--batch-size 32 --grad-accum 2 --max-steps 150" examples/grpo/sweep.sh /tmp/grpo-0
#
# It tunes on that run's held-out split: RESULTS.md tuned on seed 0 and reads the other seeds as the measurement.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: sweep.sh WORK_DIR (a finished examples/grpo/run.sh)}"
lrs="${GRPO_LRS:-3e-4 1e-4 3e-5}"
temps="${GRPO_TEMPS:-0.2 0.3 0.4}"
extra=(${GRPO_EXTRA:-})
tag="${GRPO_TAG:-}"
seed="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["seed"])' "$work/run.json")"
out="$work/sweep"
mkdir -p "$out"

pass1() {  # pass1 MODEL_DIR: held-out pass@1, greedy, as run.sh evaluates
    rtool eval --model "$1" --bench "$work/data/test.jsonl" --no-system --max-new-tokens 120 --batch-size 250 \
        2> /dev/null | python -c 'import json, sys; print("%.1f" % (100 * json.load(sys.stdin)["pass@1"]))'
}
last() {  # last RUN_DIR: the last logged reward and zero_std_share, and the run's seconds
    python - "$1" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1] + "/metrics.jsonl")]
logged = [row for row in rows if "reward" in row]
tail = logged[-3:]
print("%.2f | %.2f | %s" % (sum(r["reward"] for r in tail) / len(tail), sum(r["zero_std_share"] for r in tail) / len(tail),
                            ",".join(rows[-1].get("flags", [])) or "-"))
PY
}

echo "| lr | temperature | held-out pass@1 | reward (last 3 logs) | zero_std_share | flags | s |"
echo "|---|---|---|---|---|---|---|"
for lr in $lrs; do
    for t in $temps; do
        name="grpo$tag-lr$lr-t$t"
        if [[ ! -f "$out/$name/model.safetensors" ]]; then
            begin=$(date +%s)
            rtool grpo --model "$work/stage1" --data "$work/data/train.jsonl" --no-system --config "$here/grpo.yaml" \
                --lr "$lr" --temperature "$t" "${extra[@]}" --out "$out/$name" --seed "$seed" > /dev/null 2> "$out/$name.log"
            echo $(( $(date +%s) - begin )) > "$out/$name.seconds"
        fi
        echo "| $lr | $t | $(pass1 "$out/$name") | $(last "$out/$name") | $(cat "$out/$name.seconds") |"
    done
done
echo "stage 1: $(pass1 "$work/stage1")% (seed $seed); models and logs in $out"
