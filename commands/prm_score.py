"""prm-score: a process reward for every step of each completion. Reads trace rows; writes each row plus
`step_scores` and `score`.

    rtool distill --teacher T -n 8 < test.jsonl | rtool prm-score --prm P > scored.jsonl
    rtool prm-score --prm Qwen/Qwen2.5-Math-PRM-7B --trust-remote-code -i traces.jsonl -o scored.jsonl
    rtool prm-score --prm P --orm R --lam 0.7 < traces.jsonl | rtool bon --method weighted | rtool eval

Each output row is its input row plus `step_scores` (one float in [0, 1] per step: P(step correct)), `score`
(--agg of the step scores; with --lam < 1, Fin-PRM's lam * aggregate + (1 - lam) * trajectory score, the trajectory
score being --orm's or the last step's), `orm_score` with --orm, and `prm_scoring` (the settings: prm, format,
step_sep, agg, lam, orm, system). With --agg prod
(and --lam 1) also `log_score`, the product's log summed in log space: the product of a long trace's steps is 0.0
in floats (0.5 a step over ~1,100 steps, 0.35 over ~700; stderr counts such rows), its log still ranks it, and
`rtool bon` ranks --agg prod rows by it (their `prm_scoring` says agg prod). Rows come out in input order, each as
soon as it and the rows before it are scored. A completion without steps (empty, or only separators) is no error:
its row has `step_scores: []` and `score: null` (and `orm_score: null`), which rtool bon counts as a candidate
without an answer; how many there were goes to stderr.

`-o FILE` is written as stdout is: row by row, each flushed, so a kill or a bad input line keeps every row scored
before it (a bad line stops the run with its FILE:LINE). A FILE that already holds rows is refused unless --resume
(score only the rows it lacks, keyed by (id, sample) as distill keys samples, and append them: hours of GPU scoring
are not redone; the same --prm and settings are required, as `prm_scoring` records them) or --overwrite (start
the file again):

    rtool prm-score --prm P -i traces.jsonl -o scored.jsonl            # killed after 30,000 rows
    rtool prm-score --prm P -i traces.jsonl -o scored.jsonl --resume   # scores the rest

Steps: the completion, as given (a <think> block included), split on --step-sep (a blank line), stripped, empty
steps dropped. The conversation a completion answered: the row's `prompt_messages` (what distill sent) when it has
one, else its prompt field with the system prompt distill sends by default (--system, --no-system); the same prompt
as Qwen2.5-Math-PRM's card. A math-shepherd PRM reads only the question (the last user turn), as its card does.
--format auto tells the convention from the model's config and tokenizer (see rtool/prm/score.py for which models each
serves). A model rtool prm-train wrote is read as it was trained: its rtool_prm.json gives the format, the step
separator and the system prompt for the flags not given (stderr says which). Every step score of a completion comes
from one forward pass; rows are batched by length.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtool.errors import UserError
from rtool.options import ChatTemplateOpt
from rtool.options import (AllowPickleOpt, DeviceOpt, DtypeOpt, InputOpt, NoSystemOpt, OutOpt, PromptFieldOpt,
                           SkipBadOpt, StepSepOpt, SystemOpt, TrustRemoteCodeOpt)
from rtool.options import SplitOpt, SubsetOpt

# Rows read ahead of scoring, in batches: enough to sort into batches of similar length.
WINDOW_BATCHES = 8


def prm_score_cmd(
    ctx: typer.Context,
    prm: Annotated[str, typer.Option("--prm", "-m", help="Process reward model: a local HF dir or hub id (*.safetensors).")],
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutOpt = "-",
    resume: Annotated[bool, typer.Option("--resume", help="Skip the rows --out already holds (by id and sample) and append the rest (same --prm and scoring settings required).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start --out again when it already holds rows (default: refuse).")] = False,
    format: Annotated[str, typer.Option("--format", help="auto | qwen-prm (token classification, <extra_0> after each step) | math-shepherd (causal LM, 'ки' tag, '+'/'-' logits) | orm (sequence classification, one score per completion).")] = "auto",
    step_sep: StepSepOpt = "\\n\\n",
    agg: Annotated[str, typer.Option("--agg", help="Step scores -> score: min | prod | last | mean.")] = "min",
    orm: Annotated[Optional[str], typer.Option("--orm", help="Outcome reward model (sequence classification) for the trajectory score that --lam weighs.")] = None,
    lam: Annotated[float, typer.Option("--lam", help="score = lam x step aggregate + (1 - lam) x trajectory score (--orm's, else the last step's); Fin-PRM's weight is not public. 1: steps only.")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Completions per forward pass (batched by length).")] = 8,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    prompt_field: PromptFieldOpt = None,
    skip_bad: SkipBadOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    chat_template: ChatTemplateOpt = None,
) -> None:
    """Score every step of each completion with a process reward model; write each row with step_scores and score."""
    from rtool.atomic import check_outputs_distinct
    from rtool.errors import one_of
    from rtool.grade.fields import FieldMap
    from rtool.log import logger
    from rtool.io.models import read_chat_template
    from rtool.prm.score import AGGREGATIONS, FORMATS, PRMScorer, check_lam, parse_step_sep
    from rtool.prm.scored import as_recorded, read_scored
    from rtool.io.records import ReadStats, RecordWriter, Written, first_rows, read_records
    from rtool.progress import Progress, count_rows
    from rtool.generate.traces import choose_system_prompt

    one_of("--format", format, FORMATS)
    one_of("--agg", agg, AGGREGATIONS)
    check_lam(lam)
    sep = parse_step_sep(step_sep)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other", hint="keep the rows, or start again")
    if resume and out == "-":
        raise UserError("--resume needs --out FILE", hint="the file whose scored rows are skipped")
    if orm is not None and lam == 1.0:
        logger.warning("--orm with --lam 1: the ORM's score is written (orm_score) but not mixed into score")
    check_outputs_distinct({"--out": out}, {"--input": input, "--prm": prm, "--orm": orm,
                                            "--chat-template": chat_template})
    fields = FieldMap(prompt_field, None)
    system_given = system is not None or no_system
    system_prompt = choose_system_prompt(system, no_system)
    format, sep, system_prompt = _as_trained(ctx, prm, format, sep, system_prompt, system_given)
    # --overwrite never reads the old file: starting again must work whatever it holds.
    existing = read_scored(Path(out), fields) if out != "-" and not overwrite else Written()
    if existing.done and not (resume or overwrite):
        raise UserError(f"already holds {existing.counts.total()} scored rows", path=out,
                        hint="--resume scores the rest, --overwrite starts again; appending would double them")
    skip = existing.counts.copy() if resume else Counter()
    if skip:
        logger.info("resuming: %d rows already scored in %s", skip.total(), out)
    writer = RecordWriter(out, append=not overwrite)  # refused now, not after loading the model
    stats = ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=stats), input)

    load = dict(step_sep=sep, batch_size=batch_size, dtype=dtype, device=device,
                trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                chat_template=read_chat_template(chat_template))
    scorer = PRMScorer.load(prm, format=format, **load)
    orm_scorer = None
    if orm is not None:
        try:
            orm_scorer = PRMScorer.load(orm, format="orm", **load)
        except UserError as error:
            raise UserError(f"--orm: {error.message}", path=error.path, hint=error.hint) from None
    settings = {"prm": prm, "format": scorer.format, "step_sep": sep, "agg": agg, "lam": lam, "orm": orm,
                "system": system_prompt}
    if resume:
        if existing.done and existing.settings is None:
            logger.warning("%s has no `prm_scoring` records (written by an older rtool): cannot check that --resume "
                           "uses the same settings", out)
        existing.check_same_settings(as_recorded(settings, existing.settings), out, what="scoring")
    run = _Run(scorer, orm_scorer, fields, system_prompt, agg, lam, settings, system_explicit=system_given,
               skip=skip)
    total = count_rows(input)
    try:
        with Progress("prm-score", total=None if total is None else max(total - skip.total(), 0)) as progress:
            run.stream(rows, writer, window=batch_size * WINDOW_BATCHES, progress=progress)
    finally:
        if stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", stats.skipped, stats.skipped_where[0])
    run.report()


class _Run:
    def __init__(self, scorer, orm_scorer, fields, system, agg, lam, settings, system_explicit=False,
                 skip: Counter | None = None) -> None:
        self.scorer, self.orm_scorer = scorer, orm_scorer
        self.skip, self.resumed = skip or Counter(), 0  # --resume: keys still to skip, rows skipped
        self.system_explicit, self.recorded = system_explicit, 0  # rows whose prompt_messages won over --system
        self.fields, self.system, self.agg, self.lam, self.settings = fields, system, agg, lam, settings
        self.rows = self.steps = self.stepless = 0
        self.underflowed = 0  # --agg prod scores below the smallest float, written as 0.0 beside their log_score
        self.score_sum = 0.0

    def stream(self, rows, writer, window: int, progress) -> None:
        """Read rows a window at a time; a bad row stops the run once the rows before it are written. `progress`
        counts the rows written."""
        self.progress = progress
        pending: list[tuple] = []
        with writer:
            iterator = iter(rows)
            while True:
                try:
                    row = next(iterator, None)
                    if row is None:
                        break
                    if self.skip and self.scored_before(row):
                        continue
                    pending.append(self.prepare(row))
                except UserError:
                    self.flush(pending, writer)
                    raise
                if len(pending) >= window:
                    self.flush(pending, writer)
            self.flush(pending, writer)

    def scored_before(self, row) -> bool:
        """The row is one of those --out already holds (rtool.prm.scored): skip it, once per row held."""
        from rtool.prm.scored import scored_key

        key = scored_key(row, self.fields)
        if self.skip[key] <= 0:
            return False
        self.skip[key] -= 1
        self.resumed += 1
        return True

    def prepare(self, row) -> tuple:
        """(row, PRM input, ORM input or None); UserError naming the row's file:line. A completion without steps
        encodes to nothing and scores [] (see output)."""
        from rtool.train.data import prompt_messages, system_not_applied

        completion = self.fields.completion(row)
        messages, recorded = prompt_messages(row, self.fields, self.system)
        self.recorded += system_not_applied(messages, recorded, self.system)
        prm_input = _encode(self.scorer, row, messages, completion)
        orm_input = _encode(self.orm_scorer, row, messages, completion) if self.orm_scorer else None
        return row, prm_input, orm_input

    def flush(self, pending: list[tuple], writer) -> None:
        """Score the pending rows and write them in input order, each as soon as the rows before it are done."""
        if not pending:
            return
        orm_scores: dict = {}
        if self.orm_scorer is not None:
            for batch in self.orm_scorer.score_batches([item[2] for item in pending]):
                orm_scores.update(batch)
        done: dict = {}
        next_index = 0
        for batch in self.scorer.score_batches([item[1] for item in pending]):
            done.update(batch)
            while next_index in done:
                writer.write(self.output(pending[next_index][0], done.pop(next_index), orm_scores.get(next_index)))
                self.progress.advance()
                next_index += 1
        pending.clear()

    def output(self, row, step_scores: list[float], orm_score: list[float] | None) -> dict:
        from rtool.prm.score import final_score

        trajectory = orm_score[0] if orm_score else None
        self.rows += 1
        self.steps += len(step_scores)
        if step_scores:
            score = final_score(step_scores, self.agg, self.lam, trajectory)
            self.score_sum += score
        else:
            score = None  # nothing to score: a candidate without an answer, not a 0 that a vote could weigh
            self.stepless += 1
        extra = {"orm_score": trajectory} if self.orm_scorer is not None else {}
        if self.agg == "prod" and self.lam == 1.0:
            extra["log_score"] = _log_score(step_scores)
            self.underflowed += score == 0.0 and extra["log_score"] is not None
        return {**row, "step_scores": step_scores, "score": score, **extra, "prm_scoring": self.settings}

    def report(self) -> None:
        from rtool.log import logger
        from rtool.train.data import warn_recorded_wins

        if self.system_explicit:
            warn_recorded_wins("prm-score", self.recorded, self.system)
        if self.resumed:
            logger.info("prm-score: %d rows were scored before (--resume)", self.resumed)
        if self.skip.total():
            logger.warning("prm-score: %d rows of --out match no input row (id, sample): was it scored from another "
                           "input?", self.skip.total())
        if not self.rows:
            logger.info("prm-score: no rows scored")
            return
        scored = self.rows - self.stepless
        logger.info("prm-score: %d rows, %d steps (%.1f per row), mean score %s (%s, --agg %s, --lam %g)",
                    self.rows, self.steps, self.steps / self.rows,
                    f"{self.score_sum / scored:.3f}" if scored else "n/a", self.settings["format"], self.agg,
                    self.lam)
        if self.underflowed:
            logger.warning("prm-score: %d rows have a product of step scores below the smallest float: their score "
                           "reads 0.0, their log_score still ranks them (rtool bon ranks --agg prod rows by it)",
                           self.underflowed)
        if self.stepless:
            logger.warning("prm-score: %d rows had a completion without steps (empty, or only --step-sep): written "
                           "with step_scores [] and score null", self.stepless)
        for model in (self.scorer, self.orm_scorer):
            if model is not None and model.too_long:
                logger.warning("prm-score: %d rows were longer than the %d positions %s was trained for",
                               model.too_long, model.max_length, model.name)


def _log_score(step_scores: list[float]) -> float | None:
    """The log of a product score, summed in log space: a long trace's product is 0.0 in floats, its log still ranks
    it. None without steps or for a step scored exactly 0 (JSON has no -Infinity)."""
    import math

    from rtool.prm.score import log_aggregate

    value = log_aggregate(step_scores, "prod") if step_scores else -math.inf
    return value if math.isfinite(value) else None


def _encode(scorer, row, messages, completion):
    try:
        return scorer.encode(messages, completion)
    except UserError as error:
        if error.path is not None:
            raise
        raise row.error(f"{scorer.name}: {error.message}", hint=error.hint) from None


def _as_trained(ctx, prm, format, sep, system, system_given):
    """(format, step separator, system prompt): those prm-train saved with `prm` (rtool.prm.score.trained_settings) in
    place of the flags not given, so that a model is read as it was trained; the flags given win."""
    from rtool.config import given
    from rtool.log import logger
    from rtool.prm.score import TRAINED_SETTINGS_FILE, trained_settings

    saved = trained_settings(prm)
    taken = []
    if saved.get("format") is not None and not given(ctx, "format"):
        format = saved["format"]
        taken.append(f"--format {format}")
    if saved.get("step_sep") is not None and not given(ctx, "step_sep"):
        sep = saved["step_sep"]
        taken.append(f"--step-sep {sep!r}")
    if saved and not system_given:  # a saved None is prm-train's --no-system
        system = saved["system"]
        taken.append("--no-system" if system is None else f"--system {system!r}")
    if taken:
        logger.info("prm-score: %s as %s was trained (its %s); flags given win", ", ".join(taken), prm,
                    TRAINED_SETTINGS_FILE)
    return format, sep, system
