"""`rtool redi` against `rtool sft` on the same sequences: tokens/s and peak RSS (goal: redi <= 1.1x sft's RSS).

    python bench/redi.py    # writes the "redi" section of bench/RESULTS.md

REDI has no reference model, so a step over B pairs should cost what SFT costs on the same 2B sequences. The model
is a random Llama (hidden 128, 2 layers) whose tokenizer carries 32,000 extra tokens, so the logits have a real
vocabulary's size (Llama-2 / Mistral: 32k) and dominate activation memory as they do on real models. Data: 256
arithmetic problems, each with its gold solution (correct) and the same solution with a wrong final answer
(incorrect); redi pairs them, sft trains on both rows (--include-incorrect).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import string
import sys
import tempfile
from pathlib import Path

from common import machine, run_measured, write_section

REPO = Path(__file__).resolve().parent.parent
STEPS = 20
PAIRS_PER_STEP = 8
EXTRA_VOCAB = 32_000


def make_inputs(scratch: Path) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location("make_task", REPO / "examples" / "quickstart" / "make_task.py")
    make_task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_task)
    rows = make_task.make_rows(256, seed=0, ops=("add",))
    lines = []
    for row in rows:
        wrong = row["solution"].replace(f"\\boxed{{{row['answer']}}}", f"\\boxed{{{int(row['answer']) + 1}}}")
        lines.append({**row, "completion": row["solution"], "sample": 0, "correct": True})
        lines.append({**row, "completion": wrong, "sample": 1, "correct": False})
    data = scratch / "traces.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))

    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    texts = [string.printable] + [row["problem"] + row["solution"] for row in rows]
    tokenizer = char_tokenizer(texts, extra_tokens=[f"<v{i}>" for i in range(EXTRA_VOCAB)])
    model = tiny_llama(tokenizer, hidden_size=128, num_layers=2, num_heads=4, seed=0)
    return save_tiny(model, tokenizer, scratch / "model"), data


def main() -> None:
    rtool = shutil.which("rtool", path=str(Path(sys.executable).parent)) or "rtool"
    header = machine()
    table = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        model, data = make_inputs(scratch)
        common = ["--model", str(model), "--data", str(data), "--max-steps", str(STEPS), "--lr", "1e-3",
                  "--logging-steps", "1", "--save-steps", "0", "--max-length", "512", "--no-system",
                  "--warmup-ratio", "0", "--grad-accum", "1"]
        cases = [
            ("sft, both rows of each pair", "sft", ["--include-incorrect", "--batch-size", str(2 * PAIRS_PER_STEP)]),
            ("redi, the same pairs", "redi", ["--batch-size", str(PAIRS_PER_STEP)]),
        ]
        measured = {}
        for index, (name, command, extra) in enumerate(cases):
            out = scratch / f"run{index}"
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            seconds, peak_kib = run_measured([rtool, "-q", command, *common, "--out", str(out), *extra], env=env)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rates = [row["tokens_per_s"] for row in rows if row["step"] > 1 and "tokens_per_s" in row]
            measured[command] = (statistics.median(rates), peak_kib / 1024)
            table.append(f"| {name} | {2 * PAIRS_PER_STEP} | {statistics.median(rates):,.0f} | {seconds:.1f} | "
                         f"{peak_kib / 1024:.0f} |")
            print(table[-1], flush=True)
    rss_ratio = measured["redi"][1] / measured["sft"][1]
    speed_ratio = measured["redi"][0] / measured["sft"][0]
    body = "\n".join([
        f"`python bench/redi.py` on {header}: a random Llama (hidden 128, 2 layers) with a {EXTRA_VOCAB + 100:,}-token "
        f"vocabulary (char tokenizer + {EXTRA_VOCAB:,} extra tokens: real-size logits), 256 arithmetic problems each "
        f"with a correct and an incorrect solution, {STEPS} steps, one torch thread. sft trains on both rows of each "
        f"pair ({2 * PAIRS_PER_STEP} rows a step), redi on the pairs ({PAIRS_PER_STEP} pairs = the same "
        f"{2 * PAIRS_PER_STEP} sequences a step). tokens/s: median of metrics.jsonl's per-step rate after step 1.", "",
        "| run | sequences per step | tokens/s | wall s | peak RSS MB |", "|---|---|---|---|---|", *table, "",
        f"redi / sft: peak RSS {rss_ratio:.2f}x (goal <= 1.1x), tokens/s {speed_ratio:.2f}x."])
    write_section("redi", body)
    print(body)


if __name__ == "__main__":
    main()
