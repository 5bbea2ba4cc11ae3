"""The default --max-new-tokens (32768) against --max-new-tokens 120 on the quickstart teacher, whose completions
end by ~100 tokens: a large budget must cost nothing while completions are short (goal: within 1.2x).

    make quickstart && python bench/generation_budget.py     # writes the "generation budget" section of RESULTS.md
    python bench/generation_budget.py --work DIR --repeats 5  # another quickstart work dir; more runs per setting

Both commands as a user runs them, hf backend on the CPU, default --batch-size (16), torch on 1 thread:

    distill: rtool distill --teacher WORK/teacher -n 4 --temperature 0.8 --top-p 1.0 --no-system on the first 100
             training prompts (400 samples)
    eval:    rtool eval --model WORK/teacher --bench WORK/data/test.jsonl --no-system (500 prompts, greedy)
    eval of the untrained student on 16 test prompts: every row runs on to the model's context (1024 positions),
             where the default budget is clamped; it used to run to 32768 tokens (over 150 s for 2 prompts)

The settings alternate run by run, so a change in the machine's load falls on both. The goal is on CPU seconds
(user + system of the process, torch on one thread), which the other jobs of a shared machine barely change; wall
seconds are shown beside them. Ratios are of the medians.
The outputs of the two budgets are compared: completions that end by 120 tokens must be the same.

Rows that have ended stay in their batch until its last row ends (transformers' `generate` pads them): what that
costs is measured apart, in this process: the teacher's decode step with 16 rows against 1 row, the end-of-turn
token forbidden so that every row runs 200 steps (best of 3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, machine, run_timed, write_section

RTOOL = str(Path(sys.executable).with_name("rtool"))
GOAL = 1.2


def commands(work: Path, scratch: Path) -> dict[str, list[str]]:
    prompts = scratch / "prompts.jsonl"
    with open(work / "data" / "train.jsonl", encoding="utf-8") as rows:
        prompts.write_text("".join(line for _, line in zip(range(100), rows)), encoding="utf-8")
    student_bench = scratch / "student-bench.jsonl"
    with open(work / "data" / "test.jsonl", encoding="utf-8") as rows:
        student_bench.write_text("".join(line for _, line in zip(range(16), rows)), encoding="utf-8")
    return {
        "distill (400 samples)": [RTOOL, "distill", "--teacher", str(work / "teacher"), "-n", "4", "--temperature",
                                  "0.8", "--top-p", "1.0", "--no-system", "-i", str(prompts), "-q"],
        "eval (500 prompts)": [RTOOL, "eval", "--model", str(work / "teacher"), "--bench",
                               str(work / "data" / "test.jsonl"), "--no-system", "-q"],
        "eval, untrained student (16 prompts)": [RTOOL, "eval", "--model", str(work / "student-init"), "--bench",
                                                 str(student_bench), "--no-system", "-q"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "examples" / "quickstart" / "work",
                        help="a finished quickstart work dir (teacher, student-init, data)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.work / "teacher").is_dir():
        sys.exit(f"bench/generation_budget.py: no quickstart teacher in {args.work}: run `make quickstart` first")
    os.environ["OMP_NUM_THREADS"] = "1"  # tiny models on shared cores (see "generation")
    setup = machine()
    scratch = Path(tempfile.mkdtemp(prefix="rtool-budget-"))
    table = ["| workload | budget | median CPU s | runs: CPU s | runs: wall s | peak RSS MB | mean tokens | truncated "
             "| default / 120 (CPU) |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, command in commands(args.work, scratch).items():
        student = "student" in name
        budgets = ["default (32768)"] if student else ["default (32768)", "--max-new-tokens 120"]
        runs: dict[str, dict] = {budget: {"times": [], "walls": []} for budget in budgets}
        for _ in range(1 if student else args.repeats):
            for budget in budgets:
                out = scratch / "out.jsonl"
                flags = ["--max-new-tokens", "120"] if budget.startswith("--") else []
                target = ["-o", str(out), "--overwrite"] if command[1] == "distill" else \
                    ["--records", str(out), "--overwrite"]
                wall, seconds, peak = run_timed([*command, *flags, *target])
                rows = [json.loads(line) for line in out.read_text().splitlines()]
                run = runs[budget]
                run["times"].append(seconds)
                run["walls"].append(wall)
                run["peak"] = max(run.get("peak", 0), peak // 1024)
                run["tokens"] = statistics.mean(row["completion_tokens"] for row in rows)
                run["truncated"] = sum(row["finish_reason"] == "length" for row in rows) / len(rows)
                run["outputs"] = sorted((str(row["id"]), row["sample"], row["completion"]) for row in rows)
                print(json.dumps({"workload": name, "budget": budget, "cpu_s": round(seconds, 2),
                                  "wall_s": round(wall, 2), "peak_rss_mb": run["peak"],
                                  "mean_tokens": round(run["tokens"], 1), "truncated": run["truncated"]}), flush=True)
        medians = {budget: statistics.median(run["times"]) for budget, run in runs.items()}
        ratio = None if student else medians[budgets[0]] / medians[budgets[1]]
        if ratio is not None:
            same = runs[budgets[0]]["outputs"] == runs[budgets[1]]["outputs"]
            notes.append(f"{name}: {ratio:.2f}x ({'same' if same else 'different'} outputs)")
            print(json.dumps({"workload": name, "ratio": round(ratio, 2), "goal": GOAL, "ok": ratio <= GOAL,
                              "same_outputs": same}), flush=True)
        for budget, run in runs.items():
            shown = f"{ratio:.2f}x" if ratio is not None and budget == budgets[0] else ""
            shown_runs = " | ".join(", ".join(f"{t:.1f}" for t in run[kind]) for kind in ("times", "walls"))
            table.append(f"| {name} | {budget} | {medians[budget]:.1f} | {shown_runs} | {run['peak']} | "
                         f"{run['tokens']:.1f} | {run['truncated']:.0%} | {shown} |")
    rows_cost = finished_rows_cost(args.work / "teacher")
    body = (f"`python bench/generation_budget.py` on {setup}, torch on 1 thread, the quickstart's teacher and "
            f"untrained student (tiny Llamas, 1024 positions), hf backend on the CPU, default --batch-size 16. The "
            f"two budgets alternate run by run ({args.repeats} runs each); goal: default within {GOAL}x of "
            f"--max-new-tokens 120 in CPU seconds (user + system, which the machine's other jobs barely change).\n\n"
            + "\n".join(table) + "\n\n"
            + "Default / 120: " + "; ".join(notes) + ". Before (750708e: batches capped at --batch-size x 2048 "
            "padded tokens of prompt + budget, so one row each, and no clamp to the context), the same eval took "
            "90.6 s by default against 12.9 s with 120 (7.0x wall; one run each, load 1.4), and issue 24 reports the "
            "untrained student killed after 150 s on 2 prompts.\n\n"
            + f"Rows that ended early stay in their batch until its last row ends: a decode step of the teacher with "
            f"16 rows took {rows_cost[16]:.2f} ms against {rows_cost[1]:.2f} ms with 1 row "
            f"({rows_cost[16] / rows_cost[1]:.1f}x, best of 3 runs of 200 steps), so a batch whose other rows had "
            f"ended would run at most that much faster without them; rtool does not evict them (continuous batching, "
            f"RTOOL_HF_GENERATION=continuous, refills their places instead).")
    write_section("generation budget", body)


def finished_rows_cost(teacher: Path, steps: int = 200) -> dict[int, float]:
    """Milliseconds per decode step of `teacher` with 1 and with 16 rows that never end (best of 3)."""
    import time

    import torch

    from rtool.generate.backends.hf import HFBackend
    from rtool.generate.core import SamplingParams
    from rtool.io.models import load_model

    torch.set_num_threads(1)
    model, tokenizer = load_model(teacher)
    bias = torch.zeros(model.lm_head.weight.shape[0])
    bias[tokenizer.eos_token_id] = -1e4  # no row ends
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)
    backend = HFBackend(model, tokenizer, name="teacher", batch_size=16)
    conversations = [[{"role": "user", "content": f"What is {100 + i} + {200 + i}?"}] for i in range(16)]
    params = SamplingParams(temperature=0, max_new_tokens=steps)
    best = {1: float("inf"), 16: float("inf")}
    for _ in range(3):
        for rows in best:
            started = time.perf_counter()
            backend.generate(conversations[:rows], params)
            best[rows] = min(best[rows], 1000 * (time.perf_counter() - started) / steps)
    return best


if __name__ == "__main__":
    main()
