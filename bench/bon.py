"""`rtool bon` on 10k and 100k candidate rows (8 per prompt): time and peak RSS, to show memory stays flat.

    python bench/bon.py    # writes the "bon" section of bench/RESULTS.md

Rows as distill writes them (each prompt's 8 samples together, ~700 bytes each, a score per row), and the same rows
shuffled. Modes: --sorted (one prompt in memory), the default with --n (a prompt is decided once its samples 0..7
are in), and the default without --n (every prompt stays in flight to the end: a ~150-200 byte summary per
candidate in memory, the rows in a temporary file).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from common import machine, run_measured, write_section

PER_PROMPT = 8


def write_rows(path: Path, count: int, shuffled: bool) -> None:
    rng = random.Random(0)
    rows = []
    for p in range(count // PER_PROMPT):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        for s in range(PER_PROMPT):
            shown = a + b if rng.random() < 0.6 else a + b + rng.randint(1, 3)
            completion = f"Adding the columns of {a} and {b} step by step gives " + "x" * 600 + f" \\boxed{{{shown}}}"
            rows.append(json.dumps({"id": f"p{p}", "problem": f"What is {a} + {b}?", "answer": str(a + b),
                                    "completion": completion, "sample": s, "score": round(rng.random(), 4)}))
    if shuffled:
        rng.shuffle(rows)
    path.write_text("\n".join(rows) + "\n")


RUNS = [  # (label, input order, flags)
    ("--sorted, majority", "grouped", ["--sorted"]),
    ("--sorted --n 1,2,4,8, weighted", "grouped", ["--sorted", "--n", "1,2,4,8", "--method", "weighted"]),
    ("any order --n 8, naive", "grouped", ["--n", "8", "--method", "naive"]),
    ("any order, majority", "grouped", []),
    ("any order, majority", "shuffled", []),
]


def main() -> None:
    rtool = shutil.which("rtool", path=sys.executable.rsplit("/", 1)[0]) or "rtool"
    table = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in (10_000, 100_000):
            files = {}
            for order in ("grouped", "shuffled"):
                files[order] = Path(scratch) / f"{order}{count}.jsonl"
                write_rows(files[order], count, order == "shuffled")
            for label, order, flags in RUNS:
                out = Path(scratch) / "out.jsonl"
                seconds, peak_kib = run_measured([rtool, "-q", "bon", "-i", str(files[order]), "-o", str(out),
                                                  *flags])
                written = sum(1 for _ in open(out))
                size_mb = files[order].stat().st_size / 1e6
                table.append(f"| {count:,} | {size_mb:.0f} | {order} | `{' '.join(flags) or '(none)'}` "
                             f"({label.split(', ')[-1]}) | {written:,} | {seconds:.1f} | {count / seconds:,.0f} | "
                             f"{peak_kib / 1024:.0f} |")
                print(table[-1], flush=True)
    body = "\n".join([
        f"`python bench/bon.py` on {machine()}: `rtool bon -i rows.jsonl -o out.jsonl [flags]` over candidates "
        f"{PER_PROMPT} per prompt (~700-byte rows with a score; answers are integers, 60% right). 'grouped' is "
        "distill's order (a prompt's samples together); 'shuffled' is the same rows in random order. Peak RSS is "
        "the whole process (Python and rtool's imports are ~35 MB of it).", "",
        "| rows | input MB | order | flags (method) | rows out | seconds | rows/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|", *table])
    write_section("bon", body)
    print(body)


if __name__ == "__main__":
    main()
