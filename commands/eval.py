"""eval: accuracy, pass@k, maj@k and lengths. Generates and grades with a model, or grades completions from stdin.

    rtool eval --model ckpt/sft --bench math500 -n 4 --temperature 0.6 > summary.json          # shipped
    rtool eval --model ckpt/sft --bench openai/gsm8k --subset main --split test > summary.json   # a hub id
    rtool distill --teacher T -n 8 < test.jsonl | rtool eval --records graded.jsonl
    rtool eval --group-by teacher < traces.jsonl                     # one summary per teacher (T1, T2 appended)

stdout: one JSON summary: prompts, samples per prompt, pass@1 (mean over samples), unbiased pass@k for k = 1, 2,
4 .. n, maj@n, mean and median completion tokens, truncated share, ungradable samples and prompts (correct null:
left out of pass@k and maj@n, as difficulty leaves them out of its pass rate), and what produced them: the
model, the bench (or input) with its split and subset, and `sampling` (with --model: the settings and templates
used; grading rows: the `sampling`, `teacher` and model the rows record, a list of each value when they differ).
stderr: a table.
`--group-by FIELD` (e.g. teacher) tallies each value of the field apart: stdout is one JSON object keyed by the
value, each a summary as above (`jq '.T1["pass@1"]'`), stderr a table with one row per value; rows without the
field are summarised under "(none)" (a warning counts them). Samples of one prompt in two groups are no repeat.
`-o FILE` writes the summary to FILE instead (atomically; an existing FILE is refused unless --overwrite).
`--records FILE` writes the graded per-sample rows, whole when the run ends without an error (a file that holds rows
already is refused unless --overwrite).
Rows from `rtool bon` (with `bon_n`) are one chosen row per (id, bon_n): the summary then has `bon_method` and
`bon: {"1": {"prompts", "accuracy", "ungradable"}, "2": ...}` (accuracy per N, the best-of-N curve) in place of
samples_per_prompt, pass@k and maj@n.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Iterator, Optional

import typer

from rtool.errors import UserError
from rtool.options import DEFAULT_MAX_NEW_TOKENS
from rtool.options import (AllowPickleOpt, AnswerFieldOpt, ApiModelOpt, BackendOpt, BaseUrlOpt, BatchSizeOpt,
                           DeviceOpt, DtypeOpt, InputOpt, MaxNewTokensOpt, MinPOpt, NoSystemOpt, NumSamplesOpt,
                           PromptFieldOpt, RepetitionPenaltyOpt, RequestTimeoutOpt, SeedOpt, SkipBadOpt, SystemOpt,
                           TemperatureOpt, TopKOpt, TopPOpt, TrustRemoteCodeOpt)
from rtool.options import SplitOpt, SubsetOpt
from rtool.options import ChatTemplateOpt, GpuMemoryUtilizationOpt, MaxModelLenOpt, TensorParallelSizeOpt


def eval_cmd(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model to generate with (dir, hub id, .gguf, adapter dir, or endpoint URL). Without it, completions are read from --input and graded.")] = None,
    bench: Annotated[Optional[str], typer.Option("--bench", "-b", help="Benchmark rows with prompts and gold answers (with --model): a shipped name (gsm8k, math500), a file, a saved dataset, a data folder or a hub dataset id (with --split/--subset).")] = None,
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    records: Annotated[Optional[str], typer.Option("--records", help="Write the graded per-sample rows to this JSONL file (when the run ends whole).")] = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="One summary per value of this row field (such as teacher), in one JSON object keyed by the value; rows without the field: key \"(none)\".")] = None,
    out: Annotated[str, typer.Option("--out", "--output", "-o", help="Write the JSON summary to this file (atomically, when the run ends whole) instead of stdout; '-' is stdout.")] = "-",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out or --records FILE when it already exists (default: refuse).")] = False,
    num_samples: NumSamplesOpt = 1,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    max_new_tokens: MaxNewTokensOpt = DEFAULT_MAX_NEW_TOKENS,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 16,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_model: ApiModelOpt = None,
    request_timeout: RequestTimeoutOpt = 600.0,
    workers: Annotated[int, typer.Option("--workers", help="Grading processes when grading completions from --input.")] = 1,
    prompt_field: PromptFieldOpt = None,
    answer_field: AnswerFieldOpt = None,
    skip_bad: SkipBadOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    chat_template: ChatTemplateOpt = None,
    tensor_parallel_size: TensorParallelSizeOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    max_model_len: MaxModelLenOpt = None,
) -> None:
    """Grade a model on a benchmark, or grade existing completions; print one JSON summary."""
    from rtool.atomic import check_outputs_distinct
    from rtool.grade.fields import FieldMap
    from rtool.log import stderr_console
    from rtool.grade.metrics import EvalTally, GroupedTally
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records, write_json
    from rtool import __version__
    from rtool.generate.traces import (RowsProvenance, choose_system_prompt, sampling_record, warn_identical_samples,
                                       warn_truncated)
    from rtool.progress import Progress, count_rows

    fields = FieldMap(prompt_field, answer_field)
    stats = ReadStats()
    tally = EvalTally()
    grouped = GroupedTally(group_by) if group_by is not None else None
    if model is not None and bench is None:
        raise UserError("--model needs --bench FILE", hint="the prompts and gold answers to evaluate on")
    if model is None and bench is not None:
        raise UserError("--bench needs --model", hint="to grade existing completions, pipe them in or pass --input")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if group_by is not None and not group_by.strip():
        raise UserError(f"--group-by needs a field name, got {group_by!r}", hint="e.g. --group-by teacher")
    if model is not None:
        from rtool.generate.core import SamplingParams

        params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens,
                                seed=seed).check()
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        warn_identical_samples(params)
    check_outputs_distinct({"--out": out, "--records": records},
                           {"--input" if model is None else "--bench": input if model is None else bench,
                            "--model": model.split(",") if model else None, "--chat-template": chat_template})
    _refuse_existing_summary(out, overwrite)
    writer = RecordWriter(records, atomic=True, overwrite=overwrite) if records else None
    source = bench if model is not None else input
    rows = first_rows(read_records(source, split=split, subset=subset, skip_bad=skip_bad, stats=stats), source)
    sources: dict[int, RowsProvenance] = {}  # id(tally) -> what its rows record (grading rows from the input)
    generator = None
    finished = False
    try:
        if model is not None:
            from rtool.generate.backends import engine_settings, open_backend

            engine = engine_settings(chat_template, tensor_parallel_size, gpu_memory_utilization, max_model_len)
            generator = open_backend(model, backend, base_url=base_url, api_model=api_model, batch_size=batch_size,
                                     dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                     allow_pickle=allow_pickle, request_timeout=request_timeout, **engine)
            system_prompt = choose_system_prompt(system, no_system)
            sampling = sampling_record(generator, params, system_prompt, split=split, subset=subset,
                                       chat_template=engine["chat_template"])
            graded = _generate_and_grade(generator, rows, fields, params, system_prompt, sampling, batch_size)
        else:
            graded = _grade_completions(rows, fields, workers)
        rows_in = count_rows(source)  # generating: bench rows x samples; grading: one row per input row
        total = rows_in * num_samples if rows_in is not None and model is not None else rows_in
        with Progress("eval", total=total) as progress:
            for row, input_row in graded:
                counted = grouped.tally_for(row) if grouped else tally
                if model is None:  # what the rows say produced them, per summary
                    sources.setdefault(id(counted), RowsProvenance()).add(row)
                counted.add(row["id"], row["pred"], row["correct"], row.get("completion_tokens"),
                            row.get("finish_reason"), sample=row.get("sample"), source=input_row,
                            bon_n=row.get("bon_n"), bon_method=row.get("bon_method"))
                if writer is not None:
                    writer.write(row)
                progress.advance()
        finished = True
    finally:
        if generator is not None:
            generator.close()
        if writer is not None and finished:
            writer.close()
        elif writer is not None:
            writer.abort()  # --records FILE stays as it was
    def described(tally) -> dict:
        summary = {"model": model, "bench": source if source != "-" else None, "split": split, "subset": subset,
                   **tally.summary()}
        if stats.skipped:
            summary["skipped_lines"] = stats.skipped
        if model is not None:  # what produced the numbers: the model as the backend named it, settings, seed, system
            summary["sampling"] = {**sampling, "n": num_samples}
        else:  # what the rows record of the run that produced them
            recorded = sources.get(id(tally), RowsProvenance()).summary()
            if isinstance(recorded["sampling"], dict):
                recorded["sampling"] = {**recorded["sampling"], "n": summary.get("samples_per_prompt")}
            summary.update(recorded)
        summary["rtool_version"] = __version__
        return summary

    tallies = list(grouped.groups.values()) if grouped else [tally]
    if model is not None:
        warn_truncated(sum(t.truncated for t in tallies), sum(t.samples for t in tallies), max_new_tokens)
    else:
        _warn_mixed_sources(group_by, grouped, tally, sources)
    if grouped is None:
        summary = described(tally)
        _show_table(summary, stderr_console())
    else:
        summary = {key: described(counted) for key, counted in grouped.groups.items()}
        _warn_missing_group(grouped)
        _show_group_table(group_by, summary, stderr_console())
    write_json(summary, out)


def _refuse_existing_summary(out: str, overwrite: bool) -> None:
    # Checked before the run, not after an hour of generation.
    from pathlib import Path

    from rtool.atomic import check_writable

    if out == "-":
        return
    check_writable(out, kind="file", renamed=True)
    if Path(out).exists() and not overwrite:
        raise UserError(f"{out}: already exists", hint="pass --overwrite to replace it, or choose another --out")


def _generate_and_grade(generator, rows, fields, params, system, sampling,
                        batch_size) -> Iterator[tuple[dict, dict]]:
    """(graded row, the bench row it came from: errors name its file:line)."""
    from rtool.generate.traces import sample_traces

    # A fleet of endpoints (--model URL1,URL2) has --batch-size requests in flight per endpoint: wider chunks.
    for trace in sample_traces(generator, rows, fields, params, system=system,
                               chunk_prompts=batch_size * generator.servers):
        yield trace.record(teacher=generator.name, sampling=sampling), trace.row


def _grade_completions(rows, fields, workers: int) -> Iterator[tuple[dict, dict]]:
    """Regrade each row's completion against its gold answer (and options, for multiple choice); rows without gold
    keep a `correct` they carry. Yields (graded row, input row)."""
    from rtool.grade.answers import grade_many
    from rtool.grade.fields import prompt_id

    waiting: deque = deque()

    def pairs():
        for row in rows:
            gold = fields.gold(row)
            completion = fields.completion(row)
            waiting.append((row, gold))
            yield gold, completion, fields.choices(row)

    for pred, correct in grade_many(pairs(), workers=workers):
        row, gold = waiting.popleft()
        if gold is None and isinstance(row.get("correct"), bool):
            correct = row["correct"]
        yield {**row, "id": prompt_id(row, fields), "pred": pred, "correct": correct}, row


def _warn_mixed_sources(group_by, grouped, tally, sources) -> None:
    """One warning when a summary's rows come from several teachers or sampling settings (its `teacher` or
    `sampling` is then a list): pass@k over a mix is rarely what was meant."""
    from rtool.log import logger

    named = grouped.groups.items() if grouped else [(None, tally)]
    mixed = [(key, sources[id(counted)].mixed()) for key, counted in named if id(counted) in sources]
    mixed = [(key, fields) for key, fields in mixed if fields]
    if not mixed:
        return
    key, fields = mixed[0]
    where = f"the {group_by} {key!r} rows" if key is not None else "the rows"
    logger.warning("eval: %s record %s: one summary over all of them (its %s is a list of each); %s", where,
                   " and ".join(f"several {name} values" for name in fields), " and ".join(fields),
                   "--group-by teacher summarises each teacher apart" if group_by is None else
                   f"{len(mixed)} of the --group-by {group_by} summaries mix")


def _warn_missing_group(grouped) -> None:
    from rtool.grade.metrics import NO_GROUP
    from rtool.log import logger

    if grouped.missing:
        logger.warning("eval: %d rows without field %r (or null): summarised under %r", grouped.missing,
                       grouped.field, NO_GROUP)


def _show_group_table(field: str, summaries: dict, console) -> None:
    """One row per group: the headline numbers of each summary (the JSON has them all)."""
    from rich.table import Table

    def percent(value) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    def tokens(value) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    table = Table(title=f"rtool eval: by {field}", show_header=True)
    # Short headers: stderr is 80 columns wide when it is not a terminal; a long value folds, never cut. tokens:
    # the mean; the median and the rest are in the JSON.
    table.add_column(field, overflow="fold", min_width=min(24, max(map(len, [field, *summaries]))))
    for name in ("prompts", "samples", "pass@1", "maj@n", "tokens", "trunc.", "ungr."):
        table.add_column(name, justify="right", no_wrap=True)
    for key, summary in summaries.items():
        majority = next((k for k in summary if k.startswith("maj@")), None)
        table.add_row(key, str(summary["prompts"]), str(summary["samples"]),
                      percent(summary["pass@1"]) if "pass@1" in summary else "-",
                      percent(summary[majority]) if majority else "-",
                      tokens(summary["mean_tokens"]),
                      percent(summary["truncated_share"]), str(summary["ungradable"]))
    console.print(table)


def _show_table(summary: dict, console) -> None:
    from rich.table import Table

    model = summary.get("model") if isinstance(summary.get("model"), str) else None  # a list: rows of several
    table = Table(title=f"rtool eval: {model or summary.get('bench') or 'completions'}",
                  show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key in ("model", "bench", "split", "subset", "teacher", "sampling", "rtool_version"):  # in the JSON only
            continue
        if key == "bon":  # one line per N: the best-of-N curve
            for n, at_n in value.items():
                shown = "n/a" if at_n["accuracy"] is None else f"{at_n['accuracy']:.1%}"
                table.add_row(f"accuracy at bon_n={n}", f"{shown} of {at_n['prompts']} prompts")
            continue
        if isinstance(value, float) and (key.startswith("pass@") or key.startswith("maj@") or key.endswith("share")):
            shown = f"{value:.1%}"
        else:
            shown = str(value)
        table.add_row(key, shown)
    console.print(table)
