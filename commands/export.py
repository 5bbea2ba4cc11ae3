"""export: rtool rows in the dataset formats TRL's trainers read. Reads distill or prm-label rows; writes TRL rows.

    rtool distill --teacher T -n 4 < q.jsonl > traces.jsonl
    mkdir -p trl-data && rtool export --to trl-sft --model S -i traces.jsonl -o trl-data/train.jsonl
    trl sft --model_name_or_path S --dataset_name trl-data --output_dir runs/trl-sft
    rtool export --to trl-preference < traces.jsonl > pairs.jsonl                 # for DPOTrainer
    rtool prm-label --policy S < traces.jsonl | rtool export --to trl-stepwise > steps.jsonl

--to trl-sft: `{"prompt": [system, user turns], "completion": [{"role": "assistant", ...}]}` (TRL's conversational
prompt-completion), the conversation as `rtool sft` trains on it: a row's recorded `prompt_messages` (the system
turn the teacher was sent included) wins, other rows get --system (default: the reasoning prompt distill sends).
Rows with `correct: false` are left out unless --include-incorrect. With --model S (the student TRL will train),
a chat template that drops the reasoning from assistant turns (DeepSeek-R1-Distill's, QwQ's keep only the text after
</think>, so TRL would train on the answers alone) makes the rows `{"prompt": text, "completion": text}` rendered
through it, reasoning and end of turn included, as `rtool sft` trains on them; a line on stderr says so. Without
--model, rows whose completions hold <think> reasoning get a warning that names the risk.
--to trl-preference: `{"prompt", "chosen", "rejected"}` (conversational), pairs of a prompt's correct and incorrect
samples as `rtool redi` builds them (--pairs first|all, --max-pairs-per-prompt); with --model, text as trl-sft's.
--to trl-stepwise: `{"prompt": text, "completions": [steps], "labels": [bools]}` from prm-label's `steps` and
`step_labels`; a row keeps its steps before its first null label (none left: the row is left out; counted). TRL's
stepwise-supervision format (datasets such as trl-lib/math_shepherd), read by `rtool prm-train` and by PRM trainers
that take that format: TRL 1.16 itself has no PRM trainer (earlier TRL releases had PRMTrainer).
Output rows hold the format's fields only. A row missing a field, or whose `correct` is not true, false or null
("no" is not false), stops the run with FILE:LINE and the field.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import (ChatTemplateOpt, InputOpt, NoSystemOpt, OverwriteOpt, PromptFieldOpt, SkipBadOpt, SplitOpt,
                           SubsetOpt, SystemOpt, TrustRemoteCodeOpt, WholeOutOpt)


def export_cmd(
    to: Annotated[str, typer.Option("--to", help="trl-sft (SFTTrainer) | trl-preference (DPOTrainer) | trl-stepwise (TRL's stepwise-supervision format, for rtool prm-train or another PRM trainer: TRL 1.16 has none).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="trl-sft, trl-preference: the student TRL will train (its tokenizer's chat template): a template that drops the reasoning from assistant turns (R1-Distill, QwQ) makes the rows text rendered through it, reasoning included.")] = None,
    chat_template: ChatTemplateOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
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
    rtool export --to trl-sft --model S -i traces.jsonl -o trl-data/train.jsonl
    trl sft --model_name_or_path S --dataset_name trl-data --output_dir runs/trl-sft
    rtool export --to trl-preference < traces.jsonl > pairs.jsonl
    rtool prm-label --policy S < traces.jsonl | rtool export --to trl-stepwise > steps.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.errors import UserError
    from rtool.generate.traces import choose_system_prompt
    from rtool.grade.fields import FieldMap
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.log import logger
    from rtool.train.trl_formats import exporter

    check_outputs_distinct({"--out": out}, {"--input": input})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)  # an unwritable -o: refused before the model
    tokenizer = None
    if model is not None or chat_template is not None:
        from rtool.io.models import load_tokenizer, read_chat_template

        if model is None:
            raise UserError("--chat-template needs --model", hint="the student whose tokenizer it is for")
        tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code,
                                   chat_template=read_chat_template(chat_template))
    export = exporter(to, FieldMap(prompt_field, None), choose_system_prompt(system, no_system),
                      include_incorrect=include_incorrect, pairs=pairs, max_pairs_per_prompt=max_pairs_per_prompt,
                      tokenizer=tokenizer)
    read_stats = ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=read_stats), input)
    with writer:
        for row in export(rows):
            writer.write(row)
    if read_stats.skipped:
        logger.warning("skipped %d bad input lines (first: %s)", read_stats.skipped, read_stats.skipped_where[0])
    export.report()
