"""nll: the student's negative log-likelihood of each trace. Reads trace rows; writes each row plus `nll` and
`completion_tokens` (when the row has none).

    rtool nll --model S < traces.jsonl | rtool select --per-prompt 1 --prefer nll > train.jsonl
    rtool nll --model ckpt/s -i traces.jsonl -o scored.jsonl --batch-size 16

`nll` is the mean over the completion's tokens of -log p(token | everything before it) under --model, in nats: the
per-token loss `rtool sft --model S` would start from on that row, so the traces a student finds most likely (DED,
"Not All Correct Answers Are Equal": the teacher whose traces suit the student) have the lowest. The row is
tokenized exactly as sft trains on it (rtool.train.data): its recorded `prompt_messages` when it has them, else its
prompt with the system prompt sft adds (--system, --no-system, --prompt-field as in sft), then the completion (or a
MATH row's `solution`, as sft) and the template's end of turn, which counts as a completion token.
`completion_tokens`, when the row has none, is the number of tokens `nll` averages over. Every row is scored,
`correct: false` ones too, and none is cut to a length.

One forward pass per row, no backward; rows are read --batch-size x 8 at a time, batched by length and written in
input order. --dtype and --device as eval and prm-score (auto: bf16 on a GPU that supports it, fp32 on CPU). A row
without a completion stops the run with its file:line (--skip-bad skips and counts it). `-o FILE` is written whole
or not at all.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rtool.errors import UserError
from rtool.options import (AllowPickleOpt, ChatTemplateOpt, DeviceOpt, DtypeOpt, InputOpt, NoSystemOpt, OverwriteOpt,
                           PromptFieldOpt, SkipBadOpt, SplitOpt, SubsetOpt, SystemOpt, TrustRemoteCodeOpt, WholeOutOpt)

# Rows read ahead of scoring: enough to sort into batches of similar length.
WINDOW_BATCHES = 8


def nll_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="The student: a local HF dir, hub id, .gguf file or PEFT adapter dir.")],
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: WholeOutOpt = "-",
    overwrite: OverwriteOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass (batched by length).")] = 8,
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
    """Write each trace row with the student's mean negative log-likelihood per completion token (nll).

    The row is tokenized as sft trains on it; a lower nll: a trace the student finds more likely.

    \b
    rtool nll --model S < traces.jsonl | rtool select --per-prompt 1 --prefer nll > train.jsonl
    """
    from rtool.atomic import check_outputs_distinct
    from rtool.generate.traces import choose_system_prompt
    from rtool.grade.fields import FieldMap
    from rtool.io.models import load_model, read_chat_template
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.log import logger
    from rtool.progress import Progress, count_rows
    from rtool.train.data import warn_recorded_wins
    from rtool.train.nll import NLLScorer

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    system_prompt = choose_system_prompt(system, no_system)
    check_outputs_distinct({"--out": out}, {"--input": input, "--model": model, "--chat-template": chat_template})
    writer = RecordWriter(out, atomic=True, overwrite=overwrite)  # refused now, not after loading the model
    stats = ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=stats), input)
    student, tokenizer = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                    allow_pickle=allow_pickle, chat_template=read_chat_template(chat_template))
    scorer = NLLScorer(student, tokenizer, FieldMap(prompt_field, None), system_prompt, batch_size)
    run = _Run(scorer, skip_bad)
    try:
        with Progress("nll", total=count_rows(input)) as progress, writer:
            run.stream(rows, writer, batch_size * WINDOW_BATCHES, progress)
    finally:
        skipped = stats.skipped + run.bad
        if skipped:
            where = (stats.skipped_where or run.bad_where)[0]
            logger.warning("nll: skipped %d bad input rows (first: %s)", skipped, where)
    if system is not None or no_system:
        warn_recorded_wins("nll", scorer.recorded, system_prompt)
    run.report()


class _Run:
    def __init__(self, scorer, skip_bad: bool) -> None:
        self.scorer, self.skip_bad = scorer, skip_bad
        self.rows = self.tokens = self.bad = 0
        self.nll_sum = 0.0
        self.bad_where: list[str] = []

    def stream(self, rows, writer, window: int, progress) -> None:
        """Score the rows a window at a time and write them in input order; a bad row stops the run once the rows
        before it are written (or, with --skip-bad, is counted and left out)."""
        pending: list[tuple] = []
        for row in rows:
            try:
                pending.append((row, self.scorer.encode(row)))
            except UserError as error:
                if not self.skip_bad:
                    self.flush(pending, writer, progress)
                    raise
                self.bad += 1
                self.bad_where.append(error.message if error.path is None else f"{error.path}:{error.line}")
            if len(pending) >= window:
                self.flush(pending, writer, progress)
        self.flush(pending, writer, progress)

    def flush(self, pending: list[tuple], writer, progress) -> None:
        done: dict = {}
        next_index = 0
        for batch in self.scorer.score([encoded for _, encoded in pending]):
            done.update((index, (nll, tokens)) for index, nll, tokens in batch)
            while next_index in done:
                writer.write(self.output(pending[next_index][0], *done.pop(next_index)))
                progress.advance()
                next_index += 1
        pending.clear()

    def output(self, row, nll: float, tokens: int) -> dict:
        self.rows += 1
        self.tokens += tokens
        self.nll_sum += nll
        extra = {} if row.get("completion_tokens") is not None else {"completion_tokens": tokens}
        return {**row, "nll": nll, **extra}

    def report(self) -> None:
        from rtool.log import logger

        if not self.rows:
            logger.info("nll: no rows scored")
            return
        logger.info("nll: %d rows, %d completion tokens, mean nll %.4f per token (mean over rows)", self.rows,
                    self.tokens, self.nll_sum / self.rows)
