"""Difficulty from pass rates: many graded samples of a prompt in, one row per prompt out.

    for row in grade_difficulty(rows, FieldMap(), stats=stats):   # graded traces, any order, files and teachers mixed
        ...   # the prompt row + samples, graded, correct, pass_rate, pass_rate_by, difficulty
    keep = parse_keep("0.1:0.9"); [r for r in rows if in_window(r["pass_rate"], keep)]

A prompt's samples are its rows with the same `id` (rows without one are keyed by the prompt text as distill keys
them: `rtool.grade.fields.prompt_id`). The pass rate is correct / graded: a sample whose `correct` is null or absent
(no gold answer, an ungradable answer) is counted in `samples`, never guessed right or wrong. `pass_rate_by` is the
same rate per `teacher` (the model name distill and `eval --records` write); rows without a teacher are left out of it.

The grade buckets (`difficulty`) follow DeepDistill's idea (a-m-team 2025, AM-DeepSeek-Distilled-40M: difficulty
graded by the pass rate over several passes of several models); the bins are rtool's own, fixed and documented:
    pass_rate 1.0 -> trivial, [0.75, 1) -> easy, [0.25, 0.75) -> medium, (0, 0.25) -> hard, 0 -> unsolved,
    no graded sample -> null.
Memory: one prompt row and a few counters per prompt (not the samples), so it reads any number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rtool.errors import UserError
from rtool.grade.fields import FieldMap, prompt_id, sample_grade
from rtool.io.records import Row

# What distill, eval --records, prm-score and nll add to a prompt row for one sample: not part of the prompt.
SAMPLE_FIELDS = ("completion", "correct", "pred", "sample", "finish_reason", "completion_tokens", "teacher",
                 "sampling", "endpoint", "prompt_messages", "nll", "score", "step_scores", "bon_method", "bon_n",
                 "votes", "weight")
OUTPUT_FIELDS = ("samples", "graded", "correct", "pass_rate", "pass_rate_by", "difficulty")

# (lowest pass rate, grade), checked from the top: the first bin whose bound the rate reaches.
BUCKETS = ((1.0, "trivial"), (0.75, "easy"), (0.25, "medium"))


def difficulty_of(pass_rate: float | None) -> str | None:
    """The grade of a pass rate (see the module docstring); None for a prompt with no graded sample."""
    if pass_rate is None:
        return None
    for lowest, name in BUCKETS:
        if pass_rate >= lowest:
            return name
    return "hard" if pass_rate > 0 else "unsolved"


def parse_keep(text: str) -> tuple[float, float]:
    """`--keep LO:HI` -> (LO, HI), a closed interval inside [0, 1]."""
    lo_text, colon, hi_text = text.partition(":")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        lo = hi = float("nan")
    if not colon or not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        raise UserError(f"--keep takes LO:HI, two pass rates in [0, 1], got {text!r}", hint="e.g. --keep 0.1:0.9")
    if lo > hi:
        raise UserError(f"--keep {text}: LO {lo:g} is above HI {hi:g}", hint=f"did you mean --keep {hi_text}:{lo_text}?")
    return lo, hi


def in_window(pass_rate: float | None, keep: tuple[float, float]) -> bool:
    """Whether a prompt's pass rate lies in the closed window; a prompt with no graded sample never does."""
    return pass_rate is not None and keep[0] <= pass_rate <= keep[1]


@dataclass
class DifficultyStats:
    rows: int = 0
    ungraded: int = 0  # samples with correct null or absent
    prompts: int = 0
    no_grade: int = 0  # prompts with no graded sample: pass_rate null


@dataclass
class _Tally:
    row: dict
    samples: int = 0
    graded: int = 0
    correct: int = 0
    by: dict | None = None  # teacher -> [graded, correct]

    def add(self, grade: bool | None, teacher) -> None:
        self.samples += 1
        if grade is None:
            return
        self.graded += 1
        self.correct += grade
        if teacher is not None:
            counts = self.by.setdefault(str(teacher), [0, 0])
            counts[0] += 1
            counts[1] += grade

    def record(self) -> dict:
        rate = self.correct / self.graded if self.graded else None
        by = {teacher: correct / graded for teacher, (graded, correct) in self.by.items()}
        return {**self.row, "samples": self.samples, "graded": self.graded, "correct": self.correct,
                "pass_rate": rate, "pass_rate_by": by, "difficulty": difficulty_of(rate)}


def prompt_row(row: Row, key: str) -> dict:
    """The prompt's own fields: the sample row without what a sample adds, with its `id` (as the row spells it, or
    the key made from the prompt text)."""
    prompt = {name: value for name, value in row.items() if name not in SAMPLE_FIELDS and name not in OUTPUT_FIELDS}
    if prompt.get("id") in (None, ""):
        prompt = {"id": key, **{name: value for name, value in prompt.items() if name != "id"}}
    return prompt


def grade_difficulty(rows: Iterable[Row], fields: FieldMap, stats: DifficultyStats | None = None) -> Iterator[dict]:
    """One row per prompt, in the order of each prompt's first sample, written when the input ends."""
    stats = stats if stats is not None else DifficultyStats()
    tallies: dict[str, _Tally] = {}
    for row in rows:
        stats.rows += 1
        key = prompt_id(row, fields)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally(prompt_row(row, key), by={})
        grade = sample_grade(row)
        stats.ungraded += grade is None
        tally.add(grade, row.get("teacher"))
    stats.prompts = len(tallies)
    for tally in tallies.values():
        stats.no_grade += tally.graded == 0
        yield tally.record()
