"""bon: best-of-N selection. Reads candidate rows (several per prompt `id`); writes the chosen row per prompt.

    rtool distill --teacher T -n 8 < test.jsonl | rtool prm-score --prm P | rtool bon --method weighted | rtool eval
    rtool bon --n 1,2,4,8 --sorted < traces.jsonl | rtool eval      # accuracy per bon_n: the best-of-N curve

Each output row is the chosen candidate's row plus `bon_method`, `bon_n` (the number of candidates it was chosen
from), `votes` (how many of them give its answer) and `weight` (their score sum; null without scores). Methods:
majority (most frequent answer; a tie goes to the answer with the smallest sample number, never to a score: eval's
maj@n rule), naive (the highest --score-field), weighted (the answer with the largest score sum). Answers are
re-extracted from each completion and grouped by equivalence ("1/2" = "0.5" = "\\frac{1}{2}"; "x=2" = "y=2" = "2");
see rtool/prm/bon.py for the exact rules and the memory each mode holds. Scores of `rtool prm-score --agg prod`
rank by their `log_score` (a long trace's product is 0.0 in floats; its log still orders it); rows then also get
`log_weight`.
`--n 1,2,4,8` writes one row per (prompt, N) over the prompt's first N candidates by `sample`; a prompt with fewer
than N candidates gets no row for that N (counted on stderr). `--sorted` asserts that each prompt's candidates are
adjacent (distill writes them so) and writes each prompt as soon as its id changes. Rows are written per prompt as
decided: an input error stops the run after the rows already written to stdout (the output is then incomplete;
exit 2). `-o FILE` is written whole or not at all: it appears (or replaces the file, with --overwrite) when the run
ends without an error; a failed or killed run leaves no file, or the old one as it was (a kill -9 leaves a hidden
temporary file beside it, which the next run that writes FILE removes). bon takes seconds, not GPU hours: it has no
--resume, a run that stopped is run again.
A candidate without an answer (an empty completion; prm-score's `score: null`) gets no vote and no weight.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import InputOpt, OverwriteOpt, PromptFieldOpt, SkipBadOpt, SplitOpt, SubsetOpt, WholeOutOpt


def bon_cmd(
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    method: Annotated[str, typer.Option("--method", help="majority (self-consistency) | naive (highest score) | weighted (largest score sum per answer).")] = "majority",
    score_field: Annotated[str, typer.Option("--score-field", help="Field holding each candidate's score (naive and weighted need it; majority only reports their sum as weight). prm-score --agg prod rows rank by their log_score.")] = "score",
    n: Annotated[Optional[str], typer.Option("--n", "-n", help="Use each prompt's first N candidates (by sample); a list such as 1,2,4,8 writes one row per (prompt, N). Default: all.")] = None,
    sorted_input: Annotated[bool, typer.Option("--sorted", help="The input holds each prompt's candidates together: write each prompt when its id changes, holding one prompt in memory (an id that comes back is an error).")] = False,
    prompt_field: PromptFieldOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Keep, for each prompt, the candidate that the chosen rule ranks first.

    How it writes: stdout gets each prompt's row as soon as it is decided (with --sorted, when its id changes;
    else when the input ends). -o FILE is written whole: rows go to a hidden temporary file beside FILE, renamed
    over it when the run ends without an error; a failed or killed run leaves no FILE, or the old one as it was
    (the temporary file a kill -9 leaves is removed by the next run that writes FILE). A FILE that holds rows is
    replaced only with --overwrite.
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.prm.bon import METHODS, BonStats, best_of_n, parse_ns
    from rtool.errors import one_of
    from rtool.grade.fields import FieldMap
    from rtool.log import logger
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.progress import Progress, count_rows

    one_of("--method", method, METHODS)
    ns = parse_ns(n)
    check_outputs_distinct({"--out": out}, {"--input": input})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    stats, read_stats = BonStats(), ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats), input)
    progress = Progress("bon", total=count_rows(input))  # counts candidates read: reading them is the work
    chosen = best_of_n(progress.track(rows), method, ns, fields=FieldMap(prompt_field), score_field=score_field,
                       grouped=sorted_input, stats=stats)
    finished = False
    try:
        with writer, progress:
            for row in chosen:
                writer.write(row)
        finished = True
    except BrokenPipeError:  # the reader stopped (`| head -1`): it has what it asked for, nothing to warn about
        finished = True
        raise
    finally:
        if not finished and stats.rows:
            outcome = "the output is incomplete" if out == "-" else f"{out} is not written"
            logger.warning("bon stopped after %d rows for %d prompts: %s", stats.rows, stats.prompts, outcome)
        if read_stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    for size, count in sorted(stats.short.items()):
        logger.warning("%d prompts have fewer than %d candidates: no bon_n=%d row for them", count, size, size)
    logger.info("bon: %d candidates, %d prompts, %d rows written (method %s, N %s)%s%s%s", stats.candidates,
                stats.prompts, stats.rows, method, ",".join(map(str, ns)) if ns else "all",
                f"; {stats.no_answer} rows from candidates with no answer (votes 0)" if stats.no_answer else "",
                f"; {stats.skipped} candidates past N skipped" if stats.skipped else "",
                "; scores of prm-score --agg prod ranked by their log_score" if stats.log_scores else "")
