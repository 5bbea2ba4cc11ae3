"""decontaminate: drop the rows that share a word n-gram with a benchmark. Reads rows; writes the clean ones, unchanged.

    rtool decontaminate --bench math500 --bench aime.jsonl < prompts.jsonl > clean.jsonl
    rtool decontaminate --bench gsm8k --field completion --report dropped.jsonl < traces.jsonl > clean.jsonl

Each row's text (its prompt as rtool finds it: prompt, messages, question, problem; or --field) and each bench row's
question are lower-cased, stripped of punctuation (replaced by spaces) and cut into words; a row sharing any
--ngram consecutive words (default 8, as open-r1 and s1) with a bench row is dropped. A bench row shorter than
--ngram words is matched whole: a row whose words contain it as a contiguous sequence is dropped. `--bench` takes a
file, a saved or hub dataset, or a benchmark rtool ships (gsm8k, math500); repeat it for several. Kept rows go to
stdout (or -o) as they were read; `--report FILE` gets each dropped row plus `contamination`: {bench, bench_id (its
id field or line), ngram}. Counts per bench go to stderr. Memory holds the benchmarks' n-grams, not the input.
`-o FILE` and `--report FILE` are written whole or not at all (a failed run leaves no file); a file that holds rows
is replaced only with --overwrite, and neither may be the input, a --bench or the other.
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
    ngram: Annotated[int, typer.Option("--ngram", help="Words in a shared n-gram that marks a row as contaminated (open-r1 and s1 use 8); shorter bench rows are matched whole.", min=1)] = 8,
    text_field: Annotated[Optional[str], typer.Option("--field", help="Field of the input rows to check, e.g. completion (default: the prompt as rtool finds it: prompt, messages, question, problem).")] = None,
    bench_field: Annotated[Optional[str], typer.Option("--bench-field", help="Field of the bench rows holding their text (default: found as for a prompt: prompt, question, problem, ...).")] = None,
    bench_split: Annotated[Optional[str], typer.Option("--bench-split", help="Split of a bench dataset with several (e.g. test); not for files or shipped benchmarks.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write each dropped row here (JSONL) with `contamination`: {bench, bench_id, ngram}.")] = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Drop rows that share a word n-gram with a benchmark; keep the rest unchanged.

    \b
    rtool decontaminate --bench math500 --bench aime.jsonl < prompts.jsonl > clean.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.curate.decontaminate import BenchIndex, DecontaminateStats, decontaminate
    from rtool.io.records import ReadStats, RecordWriter, read_records
    from rtool.log import logger

    check_outputs_distinct({"--out": out, "--report": report}, {"--input": input, "--bench": bench})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    report_writer = RecordWriter(report, atomic=True, overwrite=overwrite) if report is not None else None
    index = BenchIndex(n=ngram)
    for name in bench:  # every bench is read before any output is made: a bad one leaves nothing behind
        split_here = bench_split if _is_dataset(name) else None
        index.add_bench(name, read_records(name, split=split_here), text_field=bench_field)
        if index.empty[name]:
            logger.warning("%s: %d rows have no words after normalisation: they match nothing", name,
                           index.empty[name])
    stats, read_stats = DecontaminateStats(), ReadStats()
    rows = read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats)
    try:
        with writer:
            if report_writer is not None:
                with report_writer:
                    _write(decontaminate(rows, index, text_field, stats), writer, report_writer)
            else:
                _write(decontaminate(rows, index, text_field, stats), writer, None)
    finally:
        if read_stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    counts = ", ".join(f"{name}: {stats.dropped.get(name, 0)}" for name in bench)
    logger.info("decontaminate: %d rows, %d kept, %d dropped (%s; %d-grams over %s bench rows)", stats.rows,
                stats.kept, stats.rows - stats.kept, counts, ngram, sum(index.rows.values()))


def _write(results, writer, report_writer) -> None:
    for row, hit in results:
        if hit is None:
            writer.write(row)
        elif report_writer is not None:
            report_writer.write({**row, "contamination": {"bench": hit.bench, "bench_id": hit.bench_id,
                                                          "ngram": hit.ngram}})


def _is_dataset(name: str) -> bool:
    """A bench that can have splits: a dataset folder or a hub id (not a file, not a shipped benchmark)."""
    from rtool.io.sources import shipped_benchmark

    path = Path(name)
    return path.is_dir() or (not path.exists() and shipped_benchmark(name) is None)
