"""Print the quickstart's results: accuracy of each model on the held-out split, the traces, and stage timings.

    python report.py WORK_DIR        # reads eval-*.json, traces.jsonl and timings.tsv written by run.sh
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = [("teacher", "teacher (SFT on gold solutions)"), ("student-init", "student, untrained"),
          ("student", "student (SFT on the teacher's verified traces)")]


def main(work: Path) -> None:
    print("| model | held-out pass@1 | mean tokens | truncated |")
    print("|---|---|---|---|")
    for name, label in MODELS:
        summary = json.loads((work / f"eval-{name}.json").read_text())
        print(f"| {label} | {summary['pass@1']:.1%} | {summary['mean_tokens']} | {summary['truncated_share']:.1%} |")
    traces = [json.loads(line) for line in (work / "traces.jsonl").open()]
    correct = sum(row["correct"] is True for row in traces)
    print(f"\ntraces: {len(traces)} samples from {len({row['id'] for row in traces})} prompts, "
          f"{correct} correct ({correct / len(traces):.1%}), {len(traces) - correct} negatives kept")
    print("\n| stage | seconds |")
    print("|---|---|")
    for line in (work / "timings.tsv").read_text().splitlines():
        stage, seconds = line.split("\t")
        print(f"| {stage} | {seconds} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
