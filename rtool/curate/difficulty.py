"""Difficulty from pass rates: many graded samples of a prompt in, one row per prompt out.

    for row in grade_difficulty(rows, FieldMap(), stats=stats):   # graded traces, any order, files and teachers mixed
        ...   # the prompt row + samples, graded, correct, pass_rate, pass_rate_by, cv, difficulty
    keep = parse_keep("0.1:0.9"); [r for r in rows if in_window(r["pass_rate"], keep)]
    keep_cv = parse_keep("0:0.5", "--keep-cv"); [r for r in rows if in_window(r["cv"], keep_cv)]

A prompt's samples are its rows with the same `id` (rows without one are keyed by the prompt text as distill keys
them: `rtool.grade.fields.prompt_id`). The pass rate is correct / graded: a sample whose `correct` is null or absent
(no gold answer, an ungradable answer) is counted in `samples`, never guessed right or wrong (eval's pass@k leaves
it out the same way). `pass_rate_by` is the same rate per value of the `by` field (default `teacher`, the model name
distill and `eval --records` write; a field naming the pass or run compares passes); rows without it are left out.

`cv`, DeepDistill's coefficient of variation of the pass rate across teachers or passes (a-m-team 2025: prompts are
selected by pass rate and CV), is the population standard deviation of the `pass_rate_by` rates over their mean:
    cv = sqrt(mean((r_g - m)^2)) / m,   m = mean(r_g),   over the groups g with a graded sample
(the population form, numpy's default, since the groups are all there are; the paper gives no formula: rtool's
choice). It is null with fewer than two groups (no spread to measure) or a mean of 0 (every group failed: 0/0).

The grade buckets (`difficulty`) follow DeepDistill's idea (a-m-team 2025, AM-DeepSeek-Distilled-40M: difficulty
graded by the pass rate over several passes of several models); the bins are rtool's own, fixed and documented:
    pass_rate 1.0 -> trivial, [0.75, 1) -> easy, [0.25, 0.75) -> medium, (0, 0.25) -> hard, 0 -> unsolved,
    no graded sample -> null.
Memory: one prompt row and a few counters per prompt (not the samples), so it reads any number of samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rtool.errors import UserError
from rtool.grade.fields import FieldMap, prompt_id, sample_grade
from rtool.io.records import Row

# What distill, eval --records, prm-score and nll add to a prompt row for one sample: not part of the prompt.
SAMPLE_FIELDS = ("completion", "correct", "pred", "sample", "finish_reason", "completion_tokens", "teacher",
                 "sampling", "endpoint", "prompt_messages", "question_messages", "nll", "score", "step_scores",
                 "bon_method", "bon_n", "votes", "weight")
OUTPUT_FIELDS = ("samples", "graded", "correct", "pass_rate", "pass_rate_by", "cv", "difficulty")

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


# What each window flag takes: (what LO and HI are, the highest value, an example).
WINDOWS = {"--keep": ("two pass rates in [0, 1]", 1.0, "0.1:0.9"), "--keep-cv": ("two CVs >= 0", math.inf, "0:0.5")}


def parse_keep(text: str, flag: str = "--keep") -> tuple[float, float]:
    """`--keep LO:HI` -> (LO, HI), a closed interval inside [0, 1]; `--keep-cv LO:HI` one inside [0, inf)."""
    what, highest, example = WINDOWS[flag]
    lo_text, colon, hi_text = text.partition(":")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        lo = hi = float("nan")
    if not colon or not (0.0 <= lo <= highest and 0.0 <= hi <= highest):
        raise UserError(f"{flag} takes LO:HI, {what}, got {text!r}", hint=f"e.g. {flag} {example}")
    if lo > hi:
        raise UserError(f"{flag} {text}: LO {lo:g} is above HI {hi:g}",
                        hint=f"did you mean {flag} {hi_text}:{lo_text}?")
    return lo, hi


def in_window(value: float | None, keep: tuple[float, float]) -> bool:
    """Whether a prompt's pass rate (or cv) lies in the closed window; a null one (no graded sample, no cv) never
    does."""
    return value is not None and keep[0] <= value <= keep[1]


def coefficient_of_variation(rates: Iterable[float]) -> float | None:
    """Population standard deviation / mean of `rates` (see the module docstring); None for fewer than two rates
    or a mean of 0."""
    rates = list(rates)
    if len(rates) < 2:
        return None
    mean = sum(rates) / len(rates)
    if mean == 0:
        return None
    return math.sqrt(sum((rate - mean) ** 2 for rate in rates) / len(rates)) / mean


@dataclass
class DifficultyStats:
    rows: int = 0
    ungraded: int = 0  # samples with correct null or absent
    prompts: int = 0
    no_grade: int = 0  # prompts with no graded sample: pass_rate null
    no_cv: int = 0  # prompts whose cv is null (fewer than two groups, or every group's rate 0)


@dataclass
class _Tally:
    row: dict
    samples: int = 0
    graded: int = 0
    correct: int = 0
    by: dict | None = None  # group (a teacher, a pass) -> [graded, correct]

    def add(self, grade: bool | None, group) -> None:
        self.samples += 1
        if grade is None:
            return
        self.graded += 1
        self.correct += grade
        if group is not None:
            counts = self.by.setdefault(str(group), [0, 0])
            counts[0] += 1
            counts[1] += grade

    def record(self) -> dict:
        rate = self.correct / self.graded if self.graded else None
        by = {group: correct / graded for group, (graded, correct) in self.by.items()}
        return {**self.row, "samples": self.samples, "graded": self.graded, "correct": self.correct,
                "pass_rate": rate, "pass_rate_by": by, "cv": coefficient_of_variation(by.values()),
                "difficulty": difficulty_of(rate)}


def prompt_row(row: Row, key: str, by: str = "teacher") -> dict:
    """The prompt's own fields: the sample row without what a sample adds (nor the `by` field, whose values differ
    from sample to sample), with its `id` (as the row spells it, or the key made from the prompt text)."""
    prompt = {name: value for name, value in row.items()
              if name not in SAMPLE_FIELDS and name not in OUTPUT_FIELDS and name != by}
    if prompt.get("id") in (None, ""):
        prompt = {"id": key, **{name: value for name, value in prompt.items() if name != "id"}}
    return prompt


def grade_difficulty(rows: Iterable[Row], fields: FieldMap, stats: DifficultyStats | None = None,
                     by: str = "teacher") -> Iterator[dict]:
    """One row per prompt, in the order of each prompt's first sample, written when the input ends; `pass_rate_by`
    and `cv` compare the values of field `by`."""
    stats = stats if stats is not None else DifficultyStats()
    tallies: dict[str, _Tally] = {}
    for row in rows:
        stats.rows += 1
        key = prompt_id(row, fields)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally(prompt_row(row, key, by), by={})
        grade = sample_grade(row)
        stats.ungraded += grade is None
        tally.add(grade, row.get(by))
    stats.prompts = len(tallies)
    for tally in tallies.values():
        record = tally.record()
        stats.no_grade += tally.graded == 0
        stats.no_cv += record["cv"] is None
        yield record
