"""`rtool eval` grading 10k and 100k completion rows: time and peak RSS, to show memory stays flat.

    python bench/eval_memory.py    # writes the "eval grading memory" section of bench/RESULTS.md
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from common import machine, run_measured, write_section


def write_rows(path: Path, count: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as handle:
        for i in range(count):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            right = rng.random() < 0.6
            shown = a + b if right else a + b + rng.randint(1, 9)
            completion = f"Adding the columns of {a} and {b} step by step gives " + "x" * 600 + f" \\boxed{{{shown}}}"
            handle.write(json.dumps({"id": f"p{i // 4}", "problem": f"What is {a} + {b}?", "answer": str(a + b),
                                     "completion": completion, "completion_tokens": 160}) + "\n")


def main() -> None:
    rtool = shutil.which("rtool", path=sys.executable.rsplit("/", 1)[0]) or "rtool"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in (10_000, 100_000):
            path = Path(scratch) / f"rows{count}.jsonl"
            write_rows(path, count)
            for workers in (1, 2):
                seconds, peak_kib = run_measured([rtool, "-q", "eval", "--input", str(path), "--workers", str(workers)])
                size_mb = path.stat().st_size / 1e6
                rows.append(f"| {count:,} | {size_mb:.0f} | {workers} | {seconds:.1f} | {count / seconds:,.0f} | "
                            f"{peak_kib / 1024:.0f} |")
    body = "\n".join([
        f"`python bench/eval_memory.py` on {machine()}: `rtool eval --input rows.jsonl` regrading every row "
        "(60% right answers; the fast string path decides most of them, math-verify the rest).", "",
        "| rows | input MB | workers | seconds | rows/s | peak RSS MB |", "|---|---|---|---|---|---|", *rows])
    write_section("eval grading memory", body)
    print(body)


if __name__ == "__main__":
    main()
