"""`rtool decontaminate` on 100k GSM8K-sized prompts against MATH-500 + GSM8K test, beside a per-row set
intersection like open-r1's scripts/decontaminate.py (same normalisation, so the same drops are asserted).

    python bench/decontaminate.py    # writes the "decontaminate" section of bench/RESULTS.md

Prompts are synthesised from the shipped GSM8K questions (each one the words of two random questions, shuffled
together and cut to a question's length), with real bench questions planted in them (varied case and spacing).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine, run_measured, write_section

from rtool.curate.decontaminate import DEFAULT_NGRAM, BenchIndex, normalized_words, row_text
from rtool.io.records import read_records

BENCHES = ("math500", "gsm8k")
PLANTED_PER_BENCH = 100


def synthetic_prompts(count: int, seed: int = 0) -> tuple[list[dict], set[int]]:
    """`count` GSM8K-sized prompts and the indices of the planted real bench questions."""
    rng = random.Random(seed)
    questions = [row["question"] for row in read_records("gsm8k")]
    rows = []
    for index in range(count):
        a, b = rng.sample(questions, 2)
        words = a.split() + b.split()
        rng.shuffle(words)
        rows.append({"id": index, "question": " ".join(words[:len(a.split())])})
    planted = set(rng.sample(range(count), PLANTED_PER_BENCH * len(BENCHES)))
    real = [row_text(row) for name in BENCHES for row in rng.sample(list(read_records(name)), PLANTED_PER_BENCH)]
    for index, text in zip(sorted(planted), real):
        rows[index]["question"] = "  " + text.upper().replace(" ", "  ") if index % 2 else text.lower() + " ?"
    return rows, planted


def rtool_drops(rows: list[dict], index: BenchIndex) -> set[int]:
    return {row["id"] for row in rows if index.match(row["question"]) is not None}


def baseline_drops(rows: list[dict], n: int) -> set[int]:
    """open-r1's way: the set of the benches' n-gram strings; per row, its own n-gram set, intersected."""
    bench_ngrams = set()
    for name in BENCHES:
        for row in read_records(name):
            words = normalized_words(row_text(row))
            bench_ngrams.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    dropped = set()
    for row in rows:
        words = normalized_words(row["question"])
        if {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)} & bench_ngrams:
            dropped.add(row["id"])
    return dropped


def best_of(runs: int, work) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    header = machine()
    rows, planted = synthetic_prompts(count)
    mean_words = sum(len(row["question"].split()) for row in rows) / len(rows)

    def build_and_match():
        index = BenchIndex(n=DEFAULT_NGRAM)
        for name in BENCHES:
            index.add_bench(name, read_records(name))
        return rtool_drops(rows, index)

    ours_s, ours = best_of(2, build_and_match)
    theirs_s, theirs = best_of(2, lambda: baseline_drops(rows, DEFAULT_NGRAM))
    # open-r1 ignores bench rows shorter than n words; rtool matches them whole: those are the only extra drops
    index = BenchIndex(n=DEFAULT_NGRAM)
    for name in BENCHES:
        index.add_bench(name, read_records(name))
    hits = {row["id"]: index.match(row["question"]) for row in rows if row["id"] in ours}
    short_only = {row_id for row_id, hit in hits.items() if len(hit.ngram.split()) < DEFAULT_NGRAM}
    assert ours == theirs | short_only and not theirs & short_only, f"drops differ: {len(ours ^ theirs)} rows"
    assert planted <= ours, f"{len(planted - ours)} planted questions missed"

    table = ["| run | rows | wall s | rows/s | peak RSS MB |", "|---|---|---|---|---|",
             f"| core: rtool BenchIndex.match (windows checked in C) | {count:,} | {ours_s:.2f} | {count / ours_s:,.0f} | |",
             f"| core: per-row n-gram set & bench set (open-r1) | {count:,} | {theirs_s:.2f} | {count / theirs_s:,.0f} | |"]
    rtool = str(Path(sys.executable).with_name("rtool"))
    with tempfile.TemporaryDirectory() as scratch:
        for size in (count // 10, count):
            path = Path(scratch) / f"prompts{size}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in rows[:size]), encoding="utf-8")
            seconds, peak_kib = run_measured([rtool, "-q", "decontaminate", *sum((["--bench", b] for b in BENCHES), []),
                                              "-i", str(path), "-o", "/dev/null"], cwd=REPO)
            table.append(f"| `rtool decontaminate` CLI (JSONL in and out, startup included) | {size:,} | "
                         f"{seconds:.2f} | {size / seconds:,.0f} | {peak_kib / 1024:.0f} |")
    body = (f"`python bench/decontaminate.py` on {header}, one process (one core). {count:,} synthetic GSM8K-sized "
            f"prompts (mean {mean_words:.0f} words: two shipped GSM8K questions' words shuffled together) with "
            f"{len(planted)} real MATH-500/GSM8K test questions planted (upper-cased with doubled spaces, or "
            f"lower-cased), against MATH-500 + GSM8K test (1,819 rows), 8-grams after rtool's normalisation. "
            f"Both ways drop the same {len(theirs)} rows by 8-grams (asserted); rtool also drops {len(short_only)} "
            f"planted rows holding a whole bench question shorter than 8 words, which open-r1 ignores (every planted "
            f"row is caught: {len(ours)} dropped). Core rows are parsed dicts, "
            f"bench indexing included; wall s is the best of 2. The machine is shared with other jobs: read the "
            f"ratio, not the absolute rates.\n\n" + "\n".join(table) +
            f"\n\nrtool / open-r1-style set intersection: **{theirs_s / ours_s:.1f}x** rows/s (goal: >= 20k rows/s "
            f"on one core). Peak RSS at {count // 10:,} and {count:,} rows shows memory flat in the input: it holds "
            f"the benches' n-grams only.")
    write_section("decontaminate", body)
    print(body)


if __name__ == "__main__":
    main()
