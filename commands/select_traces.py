"""select: choose the traces to train on. Reads trace rows (several per prompt `id`); writes at most K per prompt.

    rtool nll --model S < traces.jsonl | rtool select --per-prompt 1 --prefer nll > train.jsonl
    rtool select --prompts teachable.jsonl < traces.jsonl > train.jsonl   # only prompts difficulty --keep kept
    rtool select --per-prompt 2 --prefer shortest --max-tokens 8192 t1.jsonl t2.jsonl > train.jsonl

With --prompts FILE, only the prompts FILE holds (matched by `id`, or by the prompt text for rows without one, as
distill keys them) are considered. Per prompt: correct traces only (`correct` true; --include-incorrect keeps every
one), none longer than --max-tokens (`completion_tokens`; a trace without it is kept and counted), exact duplicates
(the same completion) and near-duplicates (Jaccard similarity of word 3-gram shingles >= --dedup-threshold; 1.0:
exact only) dropped, the preferred copy kept, then the first --per-prompt by --prefer: shortest | longest
(completion_tokens, or characters when a trace lacks it) | nll (lowest first: `rtool nll`'s student NLL) | first
(input order) | random (a hash of --seed, the id and the row: the same traces whatever the input's order). Rows are
written unchanged, each prompt's in preference order, when the input ends (see rtool/curate/selection.py for the
exact rules); until then they wait in unnamed temporary files sorted by prompt, so memory does not grow with the
input. Counts on stderr. A `correct` that is not true, false or null, or an `nll` of Infinity or NaN, stops the run
with file:line. `-o FILE` appears whole when the run ends
without an error. The module is select_traces.py, not select.py, so it can never shadow the standard `select`.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import (FilesArg, InputOpt, OverwriteOpt, PromptFieldOpt, SeedOpt, SkipBadOpt, SplitOpt, SubsetOpt,
                           WholeOutOpt)


def select_cmd(
    files: FilesArg = None,
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    per_prompt: Annotated[int, typer.Option("--per-prompt", "-k", help="Most traces kept per prompt.")] = 1,
    prefer: Annotated[str, typer.Option("--prefer", help="Which traces first: shortest | longest | nll (lowest first; rows from rtool nll) | first | random (by --seed, whatever the input's order).")] = "shortest",
    include_incorrect: Annotated[bool, typer.Option("--include-incorrect", help="Keep incorrect and ungraded traces too (default: only correct: true).")] = False,
    dedup_threshold: Annotated[float, typer.Option("--dedup-threshold", help="Drop a trace whose Jaccard similarity (word 3-gram shingles) to a kept one is at least this; 1.0 drops exact duplicates only.")] = 0.9,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Drop traces with more completion_tokens than this (default: no limit).")] = None,
    prompts_file: Annotated[Optional[str], typer.Option("--prompts", metavar="FILE", help="Only traces of the prompts in FILE (any rows: difficulty --keep's or decontaminate's output), matched by id, or by prompt text for rows without one.")] = None,
    seed: SeedOpt = 0,
    prompt_field: PromptFieldOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Keep, per prompt, at most K correct, distinct traces, the preferred first.

    \b
    rtool nll --model S < traces.jsonl | rtool select --per-prompt 1 --prefer nll > train.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.curate.selection import SelectRules, SelectStats, select_traces
    from rtool.grade.fields import FieldMap, prompt_id
    from rtool.io.records import ReadStats, RecordWriter, read_sources
    from rtool.log import logger

    fields = FieldMap(prompt_field)
    sources = ([input] if input != "-" or not files else []) + list(files or [])
    check_outputs_distinct({"--out": out}, {"FILES": sources, "--prompts": prompts_file})
    # The prompt set is read whole first: a bad --prompts file stops the run before any trace is read.
    wanted = None if prompts_file is None else frozenset(
        prompt_id(row, fields) for row in read_sources([prompts_file]))
    rules = SelectRules(per_prompt=per_prompt, prefer=prefer, include_incorrect=include_incorrect,
                        dedup_threshold=dedup_threshold, max_tokens=max_tokens, seed=seed, prompts=wanted).check()
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    stats, read_stats = SelectStats(), ReadStats()
    rows = read_sources(sources, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats)
    with writer:
        writer.write_many(select_traces(rows, rules, fields, stats=stats))
    if read_stats.skipped:
        logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    if stats.unknown_length:
        logger.warning("%d traces have no completion_tokens: kept whatever their length (--max-tokens %d)",
                       stats.unknown_length, max_tokens)
    if wanted is not None:
        logger.info("select: --prompts %s names %d prompts; %d rows of other prompts skipped", prompts_file,
                    len(wanted), stats.other_prompts)
    if stats.empty_prompts:
        logger.warning("%d of %d prompts have no trace left", stats.empty_prompts, stats.prompts)
    logger.info("select: %d read, %d incorrect dropped, %d ungraded dropped, %d too long, %d duplicates dropped "
                "(%d exact, %d near), %d past --per-prompt, %d kept for %d prompts", stats.rows, stats.incorrect,
                stats.ungraded, stats.too_long, stats.duplicates + stats.near_duplicates, stats.duplicates,
                stats.near_duplicates, stats.over_limit, stats.kept, stats.prompts - stats.empty_prompts)
