"""difficulty: grade prompts by the pass rate of their samples. Reads graded trace rows; writes one row per prompt.

    rtool distill --teacher T -n 8 < clean.jsonl | rtool difficulty --keep 0.1:0.9 > teachable.jsonl
    rtool difficulty student.jsonl teacher1.jsonl teacher2.jsonl > graded.jsonl     # files and teachers mixed

Input: rows of distill or `eval --records` (any number of samples per prompt, any order, several files). Each
output row is the prompt row (the first sample's row without what a sample adds: completion, correct, pred,
sample, finish_reason, completion_tokens, teacher, sampling, ...) plus `samples` (rows read), `graded` (those with
`correct` true or false), `correct`, `pass_rate` (correct / graded; null with no graded sample), `pass_rate_by`
({teacher: rate}; `--by FIELD` groups by another field, e.g. one naming the pass), `cv` (DeepDistill's coefficient
of variation of the pass_rate_by rates: population std / mean; null with fewer than two groups or a mean of 0) and
`difficulty`: trivial (1.0), easy [0.75, 1), medium [0.25, 0.75), hard (0, 0.25), unsolved (0), null (no graded
sample). A sample with `correct` null or absent is counted in `samples`, never guessed: left out of the rates, as
eval leaves it out of pass@k; the summary on stderr counts those samples and prompts.
`--keep LO:HI` writes only prompts whose pass rate is in the closed interval [LO, HI]: `--keep 0.01:0.99` drops
the prompts always and never solved (AceReason's and Phi-4-reasoning's "teachable" prompts). `--keep-cv LO:HI`
writes only prompts whose cv is in [LO, HI] (a null cv never is): `--keep-cv 0:0.5` keeps the prompts the teachers
roughly agree on, `--keep-cv 0.5:inf` those they disagree on. Rows without `id` are grouped by the prompt text, as
distill keys them. Rows are written when the input ends; `-o FILE` appears whole when the run ends without an error.

    rtool difficulty --by teacher --keep 0.1:0.9 --keep-cv 0:0.5 t1.jsonl t2.jsonl t3.jsonl > graded.jsonl
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.errors import UserError
from rtool.options import FilesArg, InputOpt, OverwriteOpt, PromptFieldOpt, SkipBadOpt, SplitOpt, SubsetOpt, WholeOutOpt


def difficulty_cmd(
    files: FilesArg = None,
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    keep: Annotated[Optional[str], typer.Option("--keep", metavar="LO:HI", help="Write only prompts whose pass rate is in [LO, HI] (closed); 0.01:0.99 drops those always and never solved.")] = None,
    keep_cv: Annotated[Optional[str], typer.Option("--keep-cv", metavar="LO:HI", help="Write only prompts whose cv (coefficient of variation of the pass rate across --by groups: population std / mean) is in [LO, HI] (closed); a prompt without a cv (fewer than two groups, or a mean of 0) is dropped.")] = None,
    by: Annotated[str, typer.Option("--by", metavar="FIELD", help="The sample field whose values pass_rate_by and cv compare: teacher (default), or a field naming the pass or run.")] = "teacher",
    prompt_field: PromptFieldOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """One row per prompt with its pass rate and difficulty grade, from graded samples.

    Grades: trivial (pass rate 1), easy [0.75, 1), medium [0.25, 0.75), hard (0, 0.25), unsolved (0).
    cv: population std / mean of the pass rates per --by group (DeepDistill's CV); null with fewer than two groups
    or a mean of 0. Ungraded samples (correct null) are left out of the rates, as eval leaves them out of pass@k.

    \b
    rtool distill --teacher T -n 8 < clean.jsonl | rtool difficulty --keep 0.1:0.9 > teachable.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.curate.difficulty import DifficultyStats, grade_difficulty, in_window, parse_keep
    from rtool.grade.fields import FieldMap
    from rtool.io.records import ReadStats, RecordWriter, read_sources
    from rtool.log import logger

    window = parse_keep(keep) if keep is not None else None
    cv_window = parse_keep(keep_cv, "--keep-cv") if keep_cv is not None else None
    if not by.strip():
        raise UserError(f"--by needs a field name, got {by!r}", hint="e.g. --by teacher")
    sources = ([input] if input != "-" or not files else []) + list(files or [])
    check_outputs_distinct({"--out": out}, {"FILES": sources})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    stats, read_stats = DifficultyStats(), ReadStats()
    rows = read_sources(sources, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats)
    written = 0
    with writer:
        for row in grade_difficulty(rows, FieldMap(prompt_field), stats=stats, by=by):
            if (window is None or in_window(row["pass_rate"], window)) and (
                    cv_window is None or in_window(row["cv"], cv_window)):
                writer.write(row)
                written += 1
    if read_stats.skipped:
        logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    if stats.ungraded:
        logger.warning("%d of %d samples have no grade (correct null or absent): counted, not in the pass rates",
                       stats.ungraded, stats.rows)
    if stats.no_grade:
        logger.warning("%d prompts have no graded sample: pass_rate null%s", stats.no_grade,
                       " (dropped by --keep)" if window else "")
    if cv_window and stats.no_cv:
        logger.warning("%d prompts have no cv (graded by fewer than two %s values, or a pass rate of 0 in each): "
                       "dropped by --keep-cv", stats.no_cv, by)
    filters = " ".join(f"{flag} {text}" for flag, text in (("--keep", keep), ("--keep-cv", keep_cv)) if text)
    logger.info("difficulty: %d samples (%d ungraded), %d prompts (%d without a graded sample), %d written%s",
                stats.rows, stats.ungraded, stats.prompts, stats.no_grade, written,
                f" ({filters}: {stats.prompts - written} dropped)" if filters else "")
