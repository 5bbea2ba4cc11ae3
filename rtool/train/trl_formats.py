"""rtool rows -> the dataset formats TRL's trainers read (`rtool export --to ...`), so `trl sft`, DPOTrainer and a
PRM trainer train on what rtool distilled and labelled.

    rows = SFTExport(FieldMap(), system=REASONING_SYSTEM_PROMPT)(read_records("traces.jsonl"))
    # {"prompt": [{"role": "system", ...}, {"role": "user", ...}], "completion": [{"role": "assistant", ...}]}

trl-sft (SFTTrainer, conversational prompt-completion): the conversation a row trains on, exactly as `rtool sft`
builds it (`rtool.train.data.prompt_messages`: the recorded `prompt_messages`, system turn included, wins; a bare
prompt gets `system`), and the completion (or a MATH row's `solution`) as the assistant's turn. Rows with
`correct: false` are left out unless `include_incorrect`, as sft does.
trl-preference (DPOTrainer, conversational preference): `prompt`, `chosen`, `rejected`, one pair per prompt id from
its correct and incorrect samples, paired as `rtool redi` pairs them (`rtool.train.redi.build_pairs`).
trl-stepwise (TRL's stepwise supervision, what its PRM trainer reads): `prompt` (text: TRL's PRM trainer tokenizes
it without a chat template, so the user's turn alone), `completions` (the steps) and `labels` (booleans) from
prm-label's `steps` / `step_labels`. A null label (every rollout from that step was truncated) has no boolean: the
row keeps its steps before the first null one (each kept step is still labelled in the context it was labelled
in); a row whose first label is null is left out. Both are counted.
Output rows hold the format's fields only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from rtool.errors import one_of
from rtool.grade.fields import FieldMap
from rtool.log import logger
from rtool.train.data import completion_text, prompt_messages

FORMATS = ("trl-sft", "trl-preference", "trl-stepwise")


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


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

    def __call__(self, rows: Iterable) -> Iterator[dict]:
        c = self.counts
        for row in rows:
            c.read += 1
            if row.get("correct") is False and not self.include_incorrect:
                c.incorrect += 1
                continue
            messages, recorded = prompt_messages(row, self.fields, self.system)
            text = completion_text(row, self.fields)
            c.recorded += recorded
            c.written += 1
            yield {"prompt": messages, "completion": assistant(text)}

    def report(self) -> None:
        c = self.counts
        logger.info("export trl-sft: %d rows of %d read%s", c.written, c.read,
                    f", skipped {c.incorrect} with correct == false (--include-incorrect keeps them)"
                    if c.incorrect else "")


@dataclass
class PreferenceExport:
    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    pairs: str = "first"
    max_pairs_per_prompt: int | None = None
    counts: ExportCounts = field(default_factory=ExportCounts)

    def __call__(self, rows: Iterable) -> Iterator[dict]:
        from rtool.train.redi import PairCounts, build_pairs

        self.pair_counts = PairCounts()
        for pair in build_pairs(rows, self.fields, self.system, pairs=self.pairs,
                                max_pairs_per_prompt=self.max_pairs_per_prompt, counts=self.pair_counts):
            self.counts.written += 1
            self.counts.recorded += pair.recorded
            yield {"prompt": pair.messages, "chosen": assistant(pair.chosen), "rejected": assistant(pair.rejected)}
        self.counts.read = self.pair_counts.rows

    def report(self) -> None:
        p = self.pair_counts
        unpaired = [f"{count} prompts {why}" for count, why in ((p.no_negative, "with no incorrect sample"),
                                                                (p.no_positive, "with no correct sample"),
                                                                (p.no_graded, "with no graded sample"))
                    if count]
        logger.info("export trl-preference: %d pairs from %d rows (%d prompts)%s", self.counts.written, p.rows,
                    p.prompts, "; unpaired: " + ", ".join(unpaired) if unpaired else "")


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
             pairs: str = "first", max_pairs_per_prompt: int | None = None):
    """The exporter for format `to` (one of FORMATS): call it on rows, then `.report()`."""
    one_of("--to", to, FORMATS)
    if to == "trl-sft":
        return SFTExport(fields, system, include_incorrect)
    if to == "trl-preference":
        from rtool.train.redi import check_pairing

        check_pairing(pairs, max_pairs_per_prompt)
        return PreferenceExport(fields, system, pairs, max_pairs_per_prompt)
    return StepwiseExport(fields)
