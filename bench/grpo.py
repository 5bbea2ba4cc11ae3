"""`rtool grpo` on the quickstart's tiny student: steps/s, completion tokens/s and peak RSS by group shape, each against
`rtool distill` sampling the same completions (generation alone) in the same run.

    python bench/grpo.py    # writes the "grpo" section of bench/RESULTS.md

A GRPO step samples prompts x generations completions, scores them and takes one gradient step on them. On a CPU
and a tiny model, generation dominates; the ratio to distill's time for the same number of completions shows what
the rest (TRL's scoring forward, the backward pass, rtool's rewards) adds. The model is the quickstart's student
shape (random Llama, hidden 64, 2 layers, character tokenizer); its random weights stop at random lengths (~65 of
at most 96 tokens here), and distill samples the same prompts with the same weights and settings.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import machine, run_measured, task_and_model, write_section

STEPS = 8
MAX_TOKENS = 96
SHAPES = [(2, 8), (4, 8), (8, 8), (4, 16)]  # (prompts, generations) per step


def make_inputs(scratch: Path) -> tuple[Path, Path]:
    return task_and_model(scratch, n=256, ops=("add",), hidden_size=64)


def main() -> None:
    rtool = shutil.which("rtool", path=str(Path(sys.executable).parent)) or "rtool"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    table = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        model, data = make_inputs(scratch)
        for prompts, generations in SHAPES:
            completions = prompts * generations
            out = scratch / f"grpo-{prompts}x{generations}"
            seconds, peak_kib = run_measured(
                [rtool, "-q", "grpo", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--max-steps", str(STEPS), "--num-generations", str(generations), "--batch-size", str(completions),
                 "--grad-accum", "1", "--max-completion-length", str(MAX_TOKENS), "--reward", "accuracy=1,length=1",
                 "--lr", "1e-4", "--logging-steps", "1", "--save-steps", "0", "--no-system"], env=env)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            later = [row for row in rows if row["step"] > 1]  # step 1 pays for warm-up
            # A row's interval is one optimizer step: its completion tokens over its completion tokens/s.
            step_s = statistics.median(row["completion_length"] * completions / row["completion_tokens_per_s"]
                                       for row in later)
            tokens_s = statistics.median(row["completion_tokens_per_s"] for row in later)
            length = statistics.mean(row["completion_length"] for row in rows)
            # The same number of completions of the same length, sampled by distill alone.
            prompts_file = scratch / f"p{prompts}.jsonl"
            prompts_file.write_text("".join(data.read_text().splitlines(keepends=True)[:prompts * STEPS]))
            gen_seconds, _ = run_measured(
                [rtool, "-q", "distill", "--teacher", str(model), "-n", str(generations), "--temperature", "1.0",
                 "--max-new-tokens", str(MAX_TOKENS), "--batch-size", str(completions), "--no-system",
                 "-i", str(prompts_file), "-o", str(scratch / f"d{prompts}x{generations}.jsonl")], env=env)
            table.append(f"| {prompts} x {generations} | {completions} | {length:.0f} | {1 / step_s:.2f} | "
                         f"{tokens_s:,.0f} | {seconds:.1f} | {gen_seconds:.1f} | "
                         f"{seconds / gen_seconds:.2f} | {peak_kib / 1024:.0f} |")
            print(table[-1], flush=True)
    body = "\n".join([
        f"`python bench/grpo.py` on {machine()}: `rtool grpo` on a random Llama of the quickstart student's shape "
        f"(hidden 64, 2 layers, character tokenizer), rewards accuracy + length, {STEPS} steps, completions of up to "
        f"{MAX_TOKENS} tokens, one torch thread. steps/s: 1 / the seconds of one "
        "optimizer step (generation, scoring, backward) from metrics.jsonl (a row's completion tokens over its "
        "completion tokens/s), median after step 1; completion tokens/s: metrics.jsonl's per-step median. "
        "wall s: the whole command (imports and model load included). distill s: `rtool distill` sampling the same "
        f"{STEPS} steps' completions (same prompts, -n generations, same length) in the same run: generation alone.",
        "",
        "| prompts x generations | completions per step | mean length | steps/s | completion tokens/s | "
        "grpo wall s | distill s | grpo / distill | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|", *table])
    write_section("grpo", body)
    print(body)


if __name__ == "__main__":
    main()
