"""`rtool sft` throughput and memory on a tiny random Llama (hidden 64, 2 layers) and 256 arithmetic rows.

    python bench/sft.py    # writes the "sft" section of bench/RESULTS.md

tokens/s is the median of metrics.jsonl's per-step `tokens_per_s` after step 1 (prompt + completion tokens, all
processes); peak RSS is the largest single process (/usr/bin/time -v).
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

STEPS = 30


def make_inputs(scratch: Path) -> tuple[Path, Path]:
    return task_and_model(scratch, n=256, ops=("add", "sub"), hidden_size=64)


def main() -> None:
    bin_dir = Path(sys.executable).parent
    rtool = shutil.which("rtool", path=str(bin_dir)) or "rtool"
    torchrun = shutil.which("torchrun", path=str(bin_dir)) or "torchrun"
    header = machine()
    table = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        model, data = make_inputs(scratch)
        common = ["--model", str(model), "--data", str(data), "--max-steps", str(STEPS), "--batch-size", "8",
                  "--lr", "1e-3", "--logging-steps", "1", "--save-steps", "0", "--max-length", "512", "--no-system"]
        cases = [
            ("full fine-tune", "1", [rtool, "-q", "sft"], []),
            ("full fine-tune, 2 threads", "2", [rtool, "-q", "sft"], []),
            ("LoRA r=16 all-linear", "1", [rtool, "-q", "sft"], ["--lora"]),
            ("--packing", "1", [rtool, "-q", "sft"], ["--packing"]),
            ("--mask-thought 0.2", "1", [rtool, "-q", "sft"], ["--mask-thought", "0.2"]),
            ("torchrun 2 processes (gloo)", "1", [torchrun, "--standalone", "--nproc_per_node", "2", "-m",
                                                  "rtool.cli", "-q", "sft"], []),
        ]
        for index, (name, threads, launcher, extra) in enumerate(cases):
            out = scratch / f"run{index}"
            env = {**os.environ, "OMP_NUM_THREADS": threads}
            seconds, peak_kib = run_measured([*launcher, *common, "--out", str(out), *extra], env=env)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rates = [row["tokens_per_s"] for row in rows if row["step"] > 1 and "tokens_per_s" in row]
            tokens = rows[-1].get("num_tokens", 0)
            table.append(f"| {name} | {threads} | {statistics.median(rates):,.0f} | {tokens:,.0f} | {seconds:.1f} | "
                         f"{peak_kib / 1024:.0f} |")
            print(table[-1], flush=True)
    command = " ".join(["rtool sft", *["--model M --data task.jsonl"], *common[4:], "--out OUT"])
    body = "\n".join([
        f"`python bench/sft.py` on {header}: a random Llama (hidden 64, 2 layers, char tokenizer) on 256 "
        f"arithmetic rows (MATH format, the solution is the completion), {STEPS} steps of 8 rows:", "",
        f"    {command} [extra flags]", "",
        "tokens/s: median of metrics.jsonl's per-step rate after step 1 (prompt + completion tokens of all "
        "processes). Wall s includes start-up (imports, model load, data). Peak RSS: the largest single process. "
        "OMP threads: torch intra-op threads per process; on shared, loaded cores more threads than free cores "
        "makes tiny-model steps many times slower (spinning OpenMP workers), so set OMP_NUM_THREADS there.", "",
        "| run | OMP threads | tokens/s | tokens | wall s | peak RSS MB |", "|---|---|---|---|---|---|", *table])
    write_section("sft", body)
    print(body)


if __name__ == "__main__":
    main()
