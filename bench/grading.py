"""Grading throughput of rtool.grade.answers on MATH-500, serial and with a process pool.

    python bench/grading.py            # prints a markdown table, rewrites the "## grading" section of RESULTS.md

Workloads:
- reference: each of the 500 reference solutions against its own answer, as `rtool eval` sees a correct sample.
- mismatched: solution i against the answers of problems i+1, i+2, i+3 (1,500 distinct pairs), as it sees wrong
  samples that all differ: the worst case, where few pairs are settled without math-verify.
- samples: a synthetic eval of 8 samples per problem (4,000 answers): 5 right (the reference solution), 3 wrong
  (the answers of problems i+1, i+2, i+1: wrong answers recur among samples, so the caches help as in a real run).
- math-verify only: the 500 reference answers sent straight to math-verify (no string or number fast path): the
  cost of an answer spelt differently from its gold.
Each row runs in a fresh process (math-verify imported, its caches and ANTLR's parser cache cold), so serial and
pool rows start alike; pool rows also pay for starting their workers (spawn, importing sympy).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from rtool.grade import answers, verifier

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "rtool" / "benchmarks" / "math500" / "test.jsonl"
RESULTS = ROOT / "bench" / "RESULTS.md"
ROWS = [("reference", 1), ("reference", 2), ("mismatched", 1), ("mismatched", 2), ("samples", 1), ("samples", 2),
        ("math-verify only", 1)]


def workload(name: str) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    n = len(rows)
    if name == "reference":
        return [(row["answer"], row["solution"]) for row in rows]
    if name == "mismatched":
        return [(rows[(i + k) % n]["answer"], row["solution"]) for k in (1, 2, 3) for i, row in enumerate(rows)]
    if name == "samples":
        return [(row["answer"], solution) for i, row in enumerate(rows)
                for solution in [row["solution"]] * 5 + [rf"\boxed{{{rows[(i + k) % n]['answer']}}}" for k in (1, 2, 1)]]
    if name == "math-verify only":
        return [(row["answer"], answers.extract_answer(row["solution"])) for row in rows]
    raise ValueError(name)


def cpu_seconds() -> float:
    # This process and its reaped children (the pool's workers). On a shared machine CPU time per answer is the
    # stable measure of cost per core; wall-clock rates also carry other jobs' load.
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_row(name: str, workers: int) -> dict:
    """Time one row in this (fresh) process."""
    pairs = workload(name)
    import math_verify  # noqa: F401  (the import is start-up, not grading)

    wall, cpu = time.perf_counter(), cpu_seconds()
    if name == "math-verify only":
        correct = sum(verifier.math_verify_here(gold, pred) is True for gold, pred in pairs)
    else:
        correct = sum(c is True for _, c in answers.grade_many(pairs, workers=workers))
    seconds = time.perf_counter() - wall
    verifier.shared_pool().close()  # the warm workers are counted in RUSAGE_CHILDREN only once reaped
    return {"answers": len(pairs), "correct": correct, "wall": seconds, "cpu": cpu_seconds() - cpu}


def pool_startup() -> float:
    # One pair that only math-verify settles: the time is a 2-worker pool's start plus one parse.
    start = time.perf_counter()
    list(answers.grade_many([("x^2+1", r"\boxed{1+x^2}")], workers=2))
    return time.perf_counter() - start


def main() -> None:
    table = ["| workload | workers | answers | correct | wall s | answers/s | CPU s | answers per CPU-s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, workers in ROWS:
        out = subprocess.run([sys.executable, __file__, "--row", name, str(workers)], capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.splitlines()[-1])
        table.append(f"| {name} | {workers} | {r['answers']} | {r['correct']} | {r['wall']:.2f} | "
                     f"{r['answers'] / r['wall']:,.0f} | {r['cpu']:.2f} | {r['answers'] / r['cpu']:,.0f} |")
    startup = pool_startup()

    section = "\n".join([
        "## grading",
        "",
        f"`python bench/grading.py` on {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the CPUs), Python {platform.python_version()}. "
        f"Each row in a fresh process, caches cold. CPU s counts the process and its pool workers, so "
        f"'answers per CPU-s' is the rate per core whatever else the machine runs. Starting a 2-worker pool and "
        f"grading one answer takes {startup:.2f} s (wall).",
        "",
        *table,
        "",
    ])
    print(section)
    write_section(section)


def write_section(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md (or append it), leaving other sections as they are."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## grading\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--row"]:
        print(json.dumps(run_row(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
