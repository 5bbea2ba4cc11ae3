"""rtool rows -> the dataset formats TRL's trainers read (`rtool export --to ...`), so `trl sft`, DPOTrainer and a
PRM trainer that reads TRL's stepwise format train on what rtool distilled and labelled.

    rows = SFTExport(FieldMap(), system=REASONING_SYSTEM_PROMPT)(read_records("traces.jsonl"))
    # {"prompt": [{"role": "system", ...}, {"role": "user", ...}], "completion": [{"role": "assistant", ...}]}

trl-sft (SFTTrainer, conversational prompt-completion): the conversation a row trains on, exactly as `rtool sft`
builds it (`rtool.train.data.prompt_messages`: the recorded `prompt_messages`, system turn included, wins; a bare
prompt gets `system`), and the completion (or a MATH row's `solution`) as the assistant's turn. Rows with
`correct: false` are left out unless `include_incorrect`, as sft does.
trl-preference (DPOTrainer, conversational preference): `prompt`, `chosen`, `rejected`, one pair per prompt id from
its correct and incorrect samples, paired as `rtool redi` pairs them (`rtool.train.redi.build_pairs`).
trl-stepwise (TRL's stepwise-supervision format, which `rtool prm-train` reads; TRL 1.16 has no PRM trainer, earlier
releases' PRMTrainer read it): `prompt` (text: such trainers tokenize it without a chat template, so the user's turn
alone), `completions` (the steps) and `labels` (booleans) from prm-label's `steps` / `step_labels`. A null label
(every rollout from that step was truncated) has no boolean: the row keeps its steps before the first null one (each
kept step is still labelled in the context it was labelled in); a row whose first label is null is left out. Both
are counted.
Output rows hold the format's fields only.

A student whose chat template drops the reasoning from assistant turns (DeepSeek-R1-Distill's and QwQ's keep only the
text after `</think>`: `rtool.generate.core.rewrites_assistant_turns`) would train, in TRL's conversational formats,
on the answers alone (`\boxed{5}<|im_end|>`). Given that student's tokenizer, trl-sft and trl-preference write its
rows as text already rendered (`rendered_text`): the prompt as the student is asked (the generation prompt), each
completion as written, reasoning included, then the template's end of turn, exactly what `rtool sft` trains on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from rtool.errors import UserError, one_of
from rtool.grade.fields import FieldMap, sample_grade
from rtool.log import logger
from rtool.train.data import completion_text, prompt_messages

FORMATS = ("trl-sft", "trl-preference", "trl-stepwise")
THINK_END = "</think>"


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def rendered_text(tokenizer, messages: list[dict], completion: str) -> tuple[str, str]:
    """(prompt, completion) as text through `tokenizer`'s chat template, as `rtool sft` trains them
    (`rtool.generate.core.render_turn`: the generation prompt, the completion as written, the end of turn), shaped
    for TRL's text path, which tokenizes with special tokens and ends a completion with the eos token: the bos that
    the tokenizer adds itself is left out of the prompt (else it is there twice), and the completion ends at the eos
    token where the end of turn holds one (else TRL appends a second)."""
    from rtool.generate.core import render_turn

    prompt, body, end = render_turn(tokenizer, messages, completion)
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    if eos and eos in end:
        end = end[:end.index(eos) + len(eos)]
    if bos and prompt.startswith(bos) and _adds_bos(tokenizer):
        prompt = prompt[len(bos):]
    return prompt, body + end


def _adds_bos(tokenizer) -> bool:
    with_special = tokenizer("x")["input_ids"]
    return with_special[:1] == [tokenizer.bos_token_id] and len(with_special) > len(
        tokenizer("x", add_special_tokens=False)["input_ids"])


@dataclass
class TextRendering:
    """Whether rows go out as rendered text (the student's template rewrites assistant turns), decided on the first
    row's conversation; `tokenizer` None: no student given, rows stay conversational."""

    tokenizer: object = None
    as_text: bool | None = None
    reasoning: int = 0  # rows whose completion holds a </think>: what such a template would cut

    def decide(self, messages: list[dict]) -> bool:
        if self.as_text is None:
            from rtool.generate.core import rewrites_assistant_turns

            self.as_text = self.tokenizer is not None and rewrites_assistant_turns(self.tokenizer, messages)
        return self.as_text

    def note(self, *texts: str) -> None:
        self.reasoning += any(THINK_END in text for text in texts)

    def report(self, name: str) -> None:
        if self.as_text:
            logger.info("export %s: the student's chat template drops the reasoning from assistant turns (it keeps "
                        "the text after </think>), so in TRL's conversational format TRL would train on the answers "
                        "alone: rows are text rendered through the template instead (prompt, then completion with "
                        "its reasoning and end of turn), as rtool sft trains on them", name)
        elif self.tokenizer is None and self.reasoning:
            logger.warning("export %s: %d rows hold <think> reasoning: a student whose chat template drops it from "
                           "assistant turns (DeepSeek-R1-Distill, QwQ) would train on the answers alone; pass --model "
                           "STUDENT to check its template (rows are then written as text it trains on whole)", name,
                           self.reasoning)


@dataclass
class ExportCounts:
    read: int = 0
    written: int = 0
    incorrect: int = 0  # trl-sft: skipped, correct == false
    recorded: int = 0  # written rows whose prompt is the recorded prompt_messages
    cut: int = 0  # trl-stepwise: rows cut before their first null label
    unlabelled: int = 0  # trl-stepwise: rows left out, their first label null


@dataclass
class SFTExport:
    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    include_incorrect: bool = False
    counts: ExportCounts = field(default_factory=ExportCounts)
    rendering: TextRendering = field(default_factory=TextRendering)

    def __call__(self, rows: Iterable) -> Iterator[dict]:
        c = self.counts
        for row in rows:
            c.read += 1
            if not self.include_incorrect and sample_grade(row) is False:  # a string "no" is refused, not kept
                c.incorrect += 1
                continue
            messages, recorded = prompt_messages(row, self.fields, self.system)
            text = completion_text(row, self.fields)
            c.recorded += recorded
            c.written += 1
            self.rendering.note(text)
            if self.rendering.decide(messages):
                prompt, completion = rendered_text(self.rendering.tokenizer, messages, text)
                yield {"prompt": prompt, "completion": completion}
            else:
                yield {"prompt": messages, "completion": assistant(text)}

    def report(self) -> None:
        c = self.counts
        logger.info("export trl-sft: %d rows of %d read%s", c.written, c.read,
                    f", skipped {c.incorrect} with correct == false (--include-incorrect keeps them)"
                    if c.incorrect else "")
        self.rendering.report("trl-sft")


@dataclass
class PreferenceExport:
    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    pairs: str = "first"
    max_pairs_per_prompt: int | None = None
    counts: ExportCounts = field(default_factory=ExportCounts)
    rendering: TextRendering = field(default_factory=TextRendering)

    def __call__(self, rows: Iterable) -> Iterator[dict]:
        from rtool.train.redi import PairCounts, build_pairs

        self.pair_counts = PairCounts()
        for pair in build_pairs(rows, self.fields, self.system, pairs=self.pairs,
                                max_pairs_per_prompt=self.max_pairs_per_prompt, counts=self.pair_counts):
            self.counts.written += 1
            self.counts.recorded += pair.recorded
            self.rendering.note(pair.chosen, pair.rejected)
            if self.rendering.decide(pair.messages):
                prompt, chosen = rendered_text(self.rendering.tokenizer, pair.messages, pair.chosen)
                yield {"prompt": prompt, "chosen": chosen,
                       "rejected": rendered_text(self.rendering.tokenizer, pair.messages, pair.rejected)[1]}
            else:
                yield {"prompt": pair.messages, "chosen": assistant(pair.chosen),
                       "rejected": assistant(pair.rejected)}
        self.counts.read = self.pair_counts.rows

    def report(self) -> None:
        p = self.pair_counts
        unpaired = [f"{count} prompts {why}" for count, why in ((p.no_negative, "with no incorrect sample"),
                                                                (p.no_positive, "with no correct sample"),
                                                                (p.no_graded, "with no graded sample"))
                    if count]
        logger.info("export trl-preference: %d pairs from %d rows (%d prompts)%s", self.counts.written, p.rows,
                    p.prompts, "; unpaired: " + ", ".join(unpaired) if unpaired else "")
        self.rendering.report("trl-preference")


@dataclass
class StepwiseExport:
    fields: FieldMap = field(default_factory=FieldMap)
    counts: ExportCounts = field(default_factory=ExportCounts)

    def __call__(self, rows: Iterable) -> Iterator[dict]:
        from rtool.train.prm import IGNORE, row_steps

        c = self.counts
        for row in rows:
            c.read += 1
            steps, _, labels = row_steps(row, "hard")
            known = labels.index(IGNORE) if IGNORE in labels else len(labels)
            if known == 0:
                c.unlabelled += 1
                continue
            c.cut += known < len(labels)
            messages, _ = prompt_messages(row, self.fields, None)
            user = [m["content"] for m in messages if m["role"] == "user"]
            c.written += 1
            yield {"prompt": user[-1], "completions": steps[:known], "labels": [bool(x) for x in labels[:known]]}

    def report(self) -> None:
        c = self.counts
        notes = []
        if c.cut:
            notes.append(f"{c.cut} cut before their first null step label")
        if c.unlabelled:
            notes.append(f"{c.unlabelled} left out: their first step label is null")
        logger.info("export trl-stepwise: %d rows of %d read%s", c.written, c.read,
                    "; " + ", ".join(notes) if notes else "")


def exporter(to: str, fields: FieldMap, system: str | None, *, include_incorrect: bool = False,
             pairs: str = "first", max_pairs_per_prompt: int | None = None, tokenizer=None):
    """The exporter for format `to` (one of FORMATS): call it on rows, then `.report()`. `tokenizer` is the
    student's (trl-sft and trl-preference): a chat template that drops the reasoning makes the rows rendered text."""
    one_of("--to", to, FORMATS)
    if to == "trl-sft":
        return SFTExport(fields, system, include_incorrect, rendering=TextRendering(tokenizer))
    if to == "trl-preference":
        from rtool.train.redi import check_pairing

        check_pairing(pairs, max_pairs_per_prompt)
        return PreferenceExport(fields, system, pairs, max_pairs_per_prompt, rendering=TextRendering(tokenizer))
    if tokenizer is not None:
        raise UserError("--model is for trl-sft and trl-preference",
                        hint="trl-stepwise's prompt is text already (TRL's PRM format has no chat template)")
    return StepwiseExport(fields)
