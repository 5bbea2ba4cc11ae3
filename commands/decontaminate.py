"""decontaminate: drop the rows that share a word n-gram with a benchmark. Reads rows; writes the clean ones, unchanged.

    rtool decontaminate --bench math500 --bench aime.jsonl < prompts.jsonl > clean.jsonl
    rtool decontaminate --bench gsm8k --field completion --report dropped.jsonl < traces.jsonl > clean.jsonl

Each row's text (its prompt as rtool finds it: prompt, messages, question, problem; or --field) and each bench row's
question are cut into words by --rule: open-r1 (default: open-r1's scripts/decontaminate.py, lower-cased and split on
whitespace) or loose (also punctuation turned into spaces; operators such as + - = stay words in both). A row sharing
any --ngram consecutive words (default 8, as open-r1 and s1) with a bench row is dropped; --min-overlap FRACTION drops
only rows whose share of n-grams found in one bench row reaches FRACTION. A bench row shorter than --ngram words
checks nothing under open-r1 (as there) and is matched whole under loose. `--bench` takes a file, a saved or hub
dataset, or a benchmark rtool ships (gsm8k, math500); repeat it for several. Kept rows go to stdout (or -o) as they
were read; `--report FILE` gets each dropped row plus `contamination`: {bench, bench_id (its id field or line),
bench_text, ngram, overlap}. Counts per bench go to stderr. Memory holds the benchmarks' n-grams, not the input.
`-o FILE` and `--report FILE` are written whole or not at all (a failed run leaves no file); a file that holds rows
is replaced only with --overwrite, and neither may be the input, a --bench or the other. An empty input or a bench
that can match nothing (empty, or every row too short for the rule) is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from rtool.options import InputOpt, OverwriteOpt, SkipBadOpt, SplitOpt, SubsetOpt, WholeOutOpt


def decontaminate_cmd(
    bench: Annotated[List[str], typer.Option("--bench", "-b", help="A benchmark to check against (repeat for several): a .jsonl/.json/.parquet/.csv file, a saved or hub dataset, or a benchmark rtool ships (gsm8k, math500).")],
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    ngram: Annotated[int, typer.Option("--ngram", help="Words in a shared n-gram that marks a row as contaminated (open-r1 and s1 use 8).", min=1)] = 8,
    rule: Annotated[str, typer.Option("--rule", help="How text becomes words: open-r1 (lower-cased, split on whitespace, as open-r1's scripts/decontaminate.py; bench rows shorter than --ngram check nothing) or loose (also punctuation to spaces, so \"Janet's,\" = \"janet s\"; short bench rows matched whole). Operators (+ - * / = ...) and digits stay words under both.")] = "open-r1",
    min_overlap: Annotated[Optional[float], typer.Option("--min-overlap", metavar="FRACTION", help="Drop a row only when the bench row it shares most with holds at least FRACTION of the row's distinct n-grams (1 = a copy); default: any shared n-gram drops it, as open-r1.", min=0.0, max=1.0)] = None,
    text_field: Annotated[Optional[str], typer.Option("--field", help="Field of the input rows to check, e.g. completion (default: the prompt as rtool finds it: prompt, messages, question, problem).")] = None,
    bench_field: Annotated[Optional[str], typer.Option("--bench-field", help="Field of the bench rows holding their text (default: found as for a prompt: prompt, question, problem, ...).")] = None,
    bench_split: Annotated[Optional[str], typer.Option("--bench-split", help="Split of the bench datasets with several (e.g. test); refused when no --bench is a dataset (files and shipped benchmarks have none).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write each dropped row here (JSONL) with `contamination`: {bench, bench_id, bench_text, ngram, overlap}.")] = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Drop rows that share a word n-gram with a benchmark; keep the rest unchanged.

    \b
    rtool decontaminate --bench math500 --bench aime.jsonl < prompts.jsonl > clean.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.curate.decontaminate import RULES, BenchIndex, DecontaminateStats, decontaminate
    from rtool.errors import UserError, one_of
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.log import logger

    one_of("--rule", rule, RULES)
    check_outputs_distinct({"--out": out, "--report": report}, {"--input": input, "--bench": bench})
    if bench_split is not None and not any(map(_is_dataset, bench)):
        raise UserError("--bench-split given, but no --bench is a dataset with splits", path=bench[0],
                        hint="drop --bench-split: a file or a benchmark rtool ships is one split")
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    report_writer = RecordWriter(report, atomic=True, overwrite=overwrite) if report is not None else None
    index = BenchIndex(n=ngram, rule=rule)
    for name in bench:  # every bench is read before any output is made: a bad one leaves nothing behind
        split_here = bench_split if _is_dataset(name) else None
        index.add_bench(name, read_records(name, split=split_here), text_field=bench_field)
        if index.empty[name]:
            logger.warning("%s: %d rows have no words after normalisation: they match nothing", name,
                           index.empty[name])
        if index.short_rows[name] and rule == "open-r1":
            logger.info("%s: %d of %d rows have fewer than %d words: they check nothing under --rule open-r1, as "
                        "in open-r1 (--rule loose matches them whole)", name, index.short_rows[name],
                        index.rows[name], ngram)
    stats, read_stats = DecontaminateStats(), ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats), input)
    results = decontaminate(rows, index, text_field, stats, min_overlap=min_overlap or 0.0)
    try:
        with writer:
            if report_writer is not None:
                with report_writer:
                    _write(results, writer, report_writer)
            else:
                _write(results, writer, None)
    finally:
        if read_stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    counts = ", ".join(f"{name}: {stats.dropped.get(name, 0)}" for name in bench)
    below = (f"; {stats.below_min_overlap} rows sharing an n-gram kept under --min-overlap {min_overlap}"
             if min_overlap else "")
    logger.info("decontaminate: %d rows, %d kept, %d dropped (%s; %d-grams, --rule %s, over %s bench rows%s)",
                stats.rows, stats.kept, stats.rows - stats.kept, counts, ngram, rule, sum(index.rows.values()), below)


def _write(results, writer, report_writer) -> None:
    for row, hit in results:
        if hit is None:
            writer.write(row)
        elif report_writer is not None:
            report_writer.write({**row, "contamination": {"bench": hit.bench, "bench_id": hit.bench_id,
                                                          "bench_text": hit.bench_text, "ngram": hit.ngram,
                                                          "overlap": hit.overlap}})


def _is_dataset(name: str) -> bool:
    """A bench that can have splits: a dataset folder or a hub id (not a file, not a shipped benchmark)."""
    from rtool.io.sources import shipped_benchmark

    path = Path(name)
    return path.is_dir() or (not path.exists() and shipped_benchmark(name) is None)
