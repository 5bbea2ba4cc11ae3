"""export: rtool rows in the dataset formats TRL's trainers read. Reads distill or prm-label rows; writes TRL rows.

    rtool distill --teacher T -n 4 < q.jsonl > traces.jsonl
    mkdir -p trl-data && rtool export --to trl-sft -i traces.jsonl -o trl-data/train.jsonl
    trl sft --model_name_or_path S --dataset_name trl-data --output_dir runs/trl-sft
    rtool export --to trl-preference < traces.jsonl > pairs.jsonl                 # for DPOTrainer
    rtool prm-label --policy S < traces.jsonl | rtool export --to trl-stepwise > steps.jsonl

--to trl-sft: `{"prompt": [system, user turns], "completion": [{"role": "assistant", ...}]}` (TRL's conversational
prompt-completion), the conversation as `rtool sft` trains on it: a row's recorded `prompt_messages` (the system
turn the teacher was sent included) wins, other rows get --system (default: the reasoning prompt distill sends).
Rows with `correct: false` are left out unless --include-incorrect.
--to trl-preference: `{"prompt", "chosen", "rejected"}` (conversational), pairs of a prompt's correct and incorrect
samples as `rtool redi` builds them (--pairs first|all, --max-pairs-per-prompt).
--to trl-stepwise: `{"prompt": text, "completions": [steps], "labels": [bools]}` from prm-label's `steps` and
`step_labels`; a row keeps its steps before its first null label (none left: the row is left out; counted).
Output rows hold the format's fields only. A row missing a field stops the run with FILE:LINE and the field.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import (InputOpt, NoSystemOpt, OverwriteOpt, PromptFieldOpt, SkipBadOpt, SplitOpt, SubsetOpt,
                           SystemOpt, WholeOutOpt)


def export_cmd(
    to: Annotated[str, typer.Option("--to", help="trl-sft (SFTTrainer) | trl-preference (DPOTrainer) | trl-stepwise (TRL's stepwise supervision, for a PRM trainer).")],
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    include_incorrect: Annotated[bool, typer.Option("--include-incorrect", help="trl-sft: also export rows marked correct: false (left out by default).")] = False,
    pairs: Annotated[str, typer.Option("--pairs", help="trl-preference: first (one pair per prompt) | all (every correct x incorrect combination).")] = "first",
    max_pairs_per_prompt: Annotated[Optional[int], typer.Option("--max-pairs-per-prompt", help="trl-preference with --pairs all: at most this many pairs per prompt.")] = None,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    prompt_field: PromptFieldOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Write rows in TRL's conversational SFT, preference or stepwise-supervision format.

    \b
    rtool export --to trl-sft -i traces.jsonl -o trl-data/train.jsonl
    trl sft --model_name_or_path S --dataset_name trl-data --output_dir runs/trl-sft
    rtool export --to trl-preference < traces.jsonl > pairs.jsonl
    rtool prm-label --policy S < traces.jsonl | rtool export --to trl-stepwise > steps.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.generate.traces import choose_system_prompt
    from rtool.grade.fields import FieldMap
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.log import logger
    from rtool.train.trl_formats import exporter

    export = exporter(to, FieldMap(prompt_field, None), choose_system_prompt(system, no_system),
                      include_incorrect=include_incorrect, pairs=pairs, max_pairs_per_prompt=max_pairs_per_prompt)
    check_outputs_distinct({"--out": out}, {"--input": input})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)
    read_stats = ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats), input)
    with writer:
        for row in export(rows):
            writer.write(row)
    if read_stats.skipped:
        logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    export.report()
