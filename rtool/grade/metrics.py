"""Evaluation metrics: unbiased pass@k, majority voting, and a streaming accumulator for `rtool eval`.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): with n samples of which c are
correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a stable product.
maj@n votes over answers grouped by `rtool.grade.answers.AnswerGroups` (grading's equivalence both ways, and its union),
so "0.5" and "\\frac{1}{2}" are one answer, and so are "x=2", "y=2" and "2" (an assignment to one variable votes as its
value); ties go to the answer whose earliest sample has the smallest `sample` number, never to a score, and the vote
is right when that first sample is graded correct. It is `rtool bon --method majority`'s rule, so bon's chosen rows
grade as maj@n does, whatever the order of the lines.
Each (prompt, sample) is counted once: a repeat is an error, not a second vote.
Ungraded samples (`correct` null: no gold answer, or one math-verify cannot parse; a wrong or missing answer grades
false, never null) say nothing about the model, so they are left out of every rate, as `rtool difficulty` leaves
them out of its pass rate: pass@k's n and c count a prompt's graded samples only (k up to the fewest any prompt has),
they cast no maj@n vote, and a prompt without a graded sample is left out of pass@k and maj@n. The summary counts
them: `ungradable` (samples) and `ungradable_prompts` (prompts with none graded).
Rows from `rtool bon` (they carry `bon_n`) are one chosen row per (prompt, bon_n): they are tallied per bon_n, and
the summary reports accuracy per bon_n (the best-of-N curve) instead of pass@k over samples.
`GroupedTally` keeps one EvalTally per value of a field (`rtool eval --group-by teacher`).
"""

from __future__ import annotations

import json
import statistics
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from rtool.grade.answers import AnswerGroups
from rtool.errors import UserError
from rtool.io.records import Row


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples with c correct."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): avoids the huge binomials of the closed form
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks and ks[-1] != n:
        ks.append(n)
    return ks


@dataclass(slots=True)  # one per prompt: no __dict__
class PromptTally:
    samples: int = 0
    correct: int = 0
    gradable: int = 0
    # maj@n's votes, grouped as bon groups them (`AnswerGroups`), each sample carrying its verdict: the vote is
    # right when the winning group's first sample (the row bon would choose) is correct.
    votes: AnswerGroups = field(default_factory=AnswerGroups)
    # Sample numbers seen: all of 0.._next_sample-1, plus any above (files in sample order need no set).
    _next_sample: int = 0
    _later_samples: set | None = None

    def add(self, pred: str | None, correct: bool | None, sample: int | None = None) -> None:
        """Count one sample (`sample`: its number, for maj@n's ties; default: its position). An ungraded one
        (`correct` None) is counted in `samples` only: it casts no vote."""
        order = self.samples if sample is None else sample
        self.samples += 1
        if correct is None:
            return
        self.votes.add(pred, order=order, item=correct)
        self.gradable += 1
        self.correct += bool(correct)

    def claim_sample(self, sample: int) -> bool:
        """Record sample number `sample`; False if it was recorded before."""
        later = self._later_samples
        if sample < self._next_sample or (later is not None and sample in later):
            return False
        if sample == self._next_sample:
            self._next_sample += 1
            while later and self._next_sample in later:
                later.discard(self._next_sample)
                self._next_sample += 1
        else:
            self._later_samples = (later or set()) | {sample}
        return True

    def majority_correct(self) -> bool:
        """maj@n: the most frequent answer (ties: the one whose first sample has the smallest number), as its first
        sample is graded, is correct. No answer at all counts as wrong."""
        if not self.correct:
            return False  # no math-verify call for a prompt nothing got right
        best = self.votes.best("count")
        return best is not None and best.first_item is True


@dataclass
class EvalTally:
    """Accumulates graded samples one at a time; holds one small tally per prompt, never the records."""

    prompts: dict = field(default_factory=dict)
    completion_tokens: array = field(default_factory=lambda: array("q"))  # 8 bytes a sample, not a list of ints
    truncated: int = 0
    samples: int = 0
    ungradable: int = 0
    bon: dict = field(default_factory=dict)  # rtool bon rows: bon_n -> EvalTally of that N's chosen rows
    bon_method: str | None = None

    def add(self, prompt_id: str, pred: str | None, correct: bool | None,
            completion_tokens: int | None, finish_reason: str | None, sample: int | None = None,
            source: Row | None = None, bon_n: int | None = None, bon_method: str | None = None) -> None:
        """Count one graded sample. `sample` is its number (None: numbered in order of appearance per prompt); a
        repeated (prompt_id, sample) raises a UserError naming `source`'s file:line, since counting it twice
        would inflate pass@k (a file appended to itself). A row with `bon_n` (rtool bon's output) is counted in
        that N's tally, once per (prompt_id, bon_n); rows with and without bon_n do not mix."""
        if bon_n is not None or self.bon:
            self._add_bon(prompt_id, pred, correct, completion_tokens, finish_reason, source, bon_n, bon_method)
            return
        tally = self.prompts.setdefault(prompt_id, PromptTally())
        number = _sample_number(sample, source)
        if number is None:
            number = tally.samples
        if not tally.claim_sample(number):
            message = f"repeated sample {number} of id {prompt_id!r}"
            hint = "each (id, sample) may appear once; was a file appended twice?"
            raise source.error(message, field="sample", hint=hint) if source is not None else UserError(
                message, hint=hint)
        self.samples += 1
        tally.add(pred, correct, number)
        if correct is None:
            self.ungradable += 1
        if completion_tokens is not None:
            self.completion_tokens.append(int(completion_tokens))
        if finish_reason == "length":
            self.truncated += 1

    def _add_bon(self, prompt_id, pred, correct, completion_tokens, finish_reason, source, bon_n, bon_method):
        def error(message, name, hint=None):
            return source.error(message, field=name, hint=hint) if source is not None else UserError(message,
                                                                                                    hint=hint)

        if bon_n is None or self.samples and not self.bon:
            raise error("rows with and without 'bon_n' in one input", "bon_n",
                        "rtool bon's output (one row per prompt and N) and samples are evaluated separately")
        if isinstance(bon_n, bool) or not isinstance(bon_n, int) or bon_n < 1:
            raise error(f"field 'bon_n' must be a whole number >= 1, got {bon_n!r}", "bon_n")
        if self.bon and bon_method != self.bon_method:
            raise error(f"rows of two bon methods ({self.bon_method}, {bon_method}) in one input", "bon_method",
                        "evaluate each method's output separately")
        self.bon_method = bon_method
        tally = self.bon.setdefault(bon_n, EvalTally())
        if prompt_id in tally.prompts:
            raise error(f"repeated id {prompt_id!r} at bon_n={bon_n}", "id",
                        "rtool bon writes one row per (id, bon_n); was a file appended twice?")
        tally.add(prompt_id, pred, correct, completion_tokens, finish_reason, sample=0, source=source)
        self.samples += 1
        self.ungradable += correct is None
        if completion_tokens is not None:
            self.completion_tokens.append(int(completion_tokens))
        self.truncated += finish_reason == "length"

    def summary(self) -> dict:
        if self.bon:
            return self._bon_summary()
        tallies = list(self.prompts.values())
        counts = Counter(t.samples for t in tallies)
        n = max(counts) if counts else 0
        result: dict = {
            "prompts": len(tallies),
            "samples": self.samples,
            "samples_per_prompt": n if len(counts) <= 1 else {str(k): v for k, v in sorted(counts.items())},
        }
        graded = [t for t in tallies if t.gradable]  # ungraded samples and prompts are left out (module docstring)
        for k in k_values(min(t.gradable for t in graded) if graded else min(counts) if counts else 0):
            values = [pass_at_k(t.gradable, t.correct, k) for t in graded]
            result[f"pass@{k}"] = round(sum(values) / len(values), 6) if values else None
        if tallies:
            result[f"maj@{n}"] = round(sum(t.majority_correct() for t in graded) / len(graded), 6) if graded else None
        tokens = self.completion_tokens
        result["mean_tokens"] = round(sum(tokens) / len(tokens), 2) if tokens else None
        result["median_tokens"] = statistics.median(tokens) if tokens else None
        result["truncated_share"] = round(self.truncated / self.samples, 6) if self.samples else None
        result["ungradable"] = self.ungradable
        result["ungradable_prompts"] = len(tallies) - len(graded)
        return result

    def _bon_summary(self) -> dict:
        """{prompts, samples, bon_method, bon: {"N": {prompts, accuracy, ungradable}}, tokens, ungradable}:
        accuracy is the share of correct chosen rows among the gradable prompts at that N."""
        per_n = {}
        for n, tally in sorted(self.bon.items()):
            graded = [t for t in tally.prompts.values() if t.gradable]
            per_n[str(n)] = {"prompts": len(tally.prompts),
                             "accuracy": round(sum(t.correct for t in graded) / len(graded), 6) if graded else None,
                             "ungradable": tally.ungradable}
        tokens = self.completion_tokens
        return {
            "prompts": len(set().union(*(tally.prompts for tally in self.bon.values()))),
            "samples": self.samples,
            "bon_method": self.bon_method,
            "bon": per_n,
            "mean_tokens": round(sum(tokens) / len(tokens), 2) if tokens else None,
            "median_tokens": statistics.median(tokens) if tokens else None,
            "truncated_share": round(self.truncated / self.samples, 6) if self.samples else None,
            "ungradable": self.ungradable,
        }


NO_GROUP = "(none)"  # the group of rows without the --group-by field


@dataclass
class GroupedTally:
    """One `EvalTally` per value of a row field (`rtool eval --group-by teacher`): each group is tallied as a run of
    its own, so two teachers' samples 0..n-1 of one prompt are no repeat. Rows without the field (or null) go to
    the group `NO_GROUP`, counted in `missing`. A value that is not a string is keyed by its JSON text."""

    field: str
    groups: dict = field(default_factory=dict)  # key -> EvalTally, in order of first appearance
    missing: int = 0

    def tally_for(self, row: dict) -> EvalTally:
        value = row.get(self.field)
        if value is None:
            self.missing += 1
            key = NO_GROUP
        else:
            key = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        return self.groups.setdefault(key, EvalTally())

    def summary(self) -> dict:
        """{value: that group's `EvalTally.summary()`}."""
        return {key: tally.summary() for key, tally in self.groups.items()}


def _sample_number(sample, source: Row | None) -> int | None:
    if sample is None:
        return None
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        message = f"field 'sample' must be a whole number >= 0, got {sample!r}"
        raise source.error(message, field="sample") if source is not None else UserError(message)
    return sample


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve of `scores` against 0/1 `labels`: the Mann-Whitney U statistic over
    positives x negatives, ties counted as halves. None without both classes."""
    pairs = sorted(zip(scores, labels))
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += mid_rank * sum(1 for _, label in pairs[i:j] if label)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
