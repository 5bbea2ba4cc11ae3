"""difficulty: grade prompts by the pass rate of their samples. Reads graded trace rows; writes one row per prompt.

    rtool distill --teacher T -n 8 < clean.jsonl | rtool difficulty --keep 0.1:0.9 > teachable.jsonl
    rtool difficulty student.jsonl teacher1.jsonl teacher2.jsonl > graded.jsonl     # files and teachers mixed

Input: rows of distill or `eval --records` (any number of samples per prompt, any order, several files). Each
output row is the prompt row (the first sample's row without what a sample adds: completion, correct, pred,
sample, finish_reason, completion_tokens, teacher, sampling, ...) plus `samples` (rows read), `graded` (those with
`correct` true or false), `correct`, `pass_rate` (correct / graded; null with no graded sample), `pass_rate_by`
({teacher: rate}) and `difficulty`: trivial (1.0), easy [0.75, 1), medium [0.25, 0.75), hard (0, 0.25), unsolved
(0), null (no graded sample). A sample with `correct` null or absent is counted in `samples`, never guessed: left
out of the rates, as eval leaves it out of pass@k; the summary on stderr counts those samples and prompts.
`--keep LO:HI` writes only prompts whose pass rate is in the closed interval [LO, HI]: `--keep 0.01:0.99` drops
the prompts always and never solved (AceReason's and Phi-4-reasoning's "teachable" prompts). Rows without `id`
are grouped by the prompt text, as distill keys them. Rows are written when the input ends; `-o FILE` appears
whole when the run ends without an error.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import FilesArg, InputOpt, OverwriteOpt, PromptFieldOpt, SkipBadOpt, SplitOpt, SubsetOpt, WholeOutOpt


def difficulty_cmd(
    files: FilesArg = None,
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    keep: Annotated[Optional[str], typer.Option("--keep", metavar="LO:HI", help="Write only prompts whose pass rate is in [LO, HI] (closed); 0.01:0.99 drops those always and never solved.")] = None,
    prompt_field: PromptFieldOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """One row per prompt with its pass rate and difficulty grade, from graded samples.

    Grades: trivial (pass rate 1), easy [0.75, 1), medium [0.25, 0.75), hard (0, 0.25), unsolved (0).

    \b
    rtool distill --teacher T -n 8 < clean.jsonl | rtool difficulty --keep 0.1:0.9 > teachable.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.curate.difficulty import DifficultyStats, grade_difficulty, in_window, parse_keep
    from rtool.grade.fields import FieldMap
    from rtool.io.records import ReadStats, RecordWriter, read_sources
    from rtool.log import logger

    window = parse_keep(keep) if keep is not None else None
    sources = ([input] if input != "-" or not files else []) + list(files or [])
    check_outputs_distinct({"--out": out}, {"FILES": sources})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    stats, read_stats = DifficultyStats(), ReadStats()
    rows = read_sources(sources, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats)
    written = 0
    with writer:
        for row in grade_difficulty(rows, FieldMap(prompt_field), stats=stats):
            if window is None or in_window(row["pass_rate"], window):
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
    logger.info("difficulty: %d samples (%d ungraded), %d prompts (%d without a graded sample), %d written%s",
                stats.rows, stats.ungraded, stats.prompts, stats.no_grade, written,
                f" (--keep {keep}: {stats.prompts - written} dropped)" if window else "")
