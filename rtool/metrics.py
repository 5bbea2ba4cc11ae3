"""Evaluation metrics: unbiased pass@k, majority voting, and a streaming accumulator for `rtool eval`.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): with n samples of which c are
correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a stable product.
"""

from __future__ import annotations

import statistics
from array import array
from collections import Counter
from dataclasses import dataclass, field


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


@dataclass
class PromptTally:
    samples: int = 0
    correct: int = 0
    gradable: int = 0
    # answer key -> [count, first-seen order, correct of that answer]
    answers: dict = field(default_factory=dict)

    def add(self, answer_key: str | None, correct: bool | None) -> None:
        self.samples += 1
        if correct is not None:
            self.gradable += 1
            self.correct += bool(correct)
        if answer_key is not None:
            entry = self.answers.setdefault(answer_key, [0, len(self.answers), correct])
            entry[0] += 1

    def majority_correct(self) -> bool:
        """maj@n: the most frequent answer (ties: first seen) is correct. No answer at all counts as wrong."""
        if not self.answers:
            return False
        best = min(self.answers.values(), key=lambda entry: (-entry[0], entry[1]))
        return bool(best[2])


@dataclass
class EvalTally:
    """Accumulates graded samples one at a time; holds one small tally per prompt, never the records."""

    prompts: dict = field(default_factory=dict)
    completion_tokens: array = field(default_factory=lambda: array("q"))  # 8 bytes a sample, not a list of ints
    truncated: int = 0
    samples: int = 0
    ungradable: int = 0

    def add(self, prompt_id: str, answer_key: str | None, correct: bool | None,
            completion_tokens: int | None, finish_reason: str | None) -> None:
        self.samples += 1
        self.prompts.setdefault(prompt_id, PromptTally()).add(answer_key, correct)
        if correct is None:
            self.ungradable += 1
        if completion_tokens is not None:
            self.completion_tokens.append(int(completion_tokens))
        if finish_reason == "length":
            self.truncated += 1

    def summary(self) -> dict:
        tallies = list(self.prompts.values())
        counts = Counter(t.samples for t in tallies)
        n = max(counts) if counts else 0
        result: dict = {
            "prompts": len(tallies),
            "samples": self.samples,
            "samples_per_prompt": n if len(counts) <= 1 else {str(k): v for k, v in sorted(counts.items())},
        }
        graded = [t for t in tallies if t.gradable]
        for k in k_values(min(counts) if counts else 0):
            values = [pass_at_k(t.samples, t.correct, k) for t in graded]
            result[f"pass@{k}"] = round(sum(values) / len(values), 6) if values else None
        if tallies:
            result[f"maj@{n}"] = round(sum(t.majority_correct() for t in graded) / len(graded), 6) if graded else None
        tokens = self.completion_tokens
        result["mean_tokens"] = round(sum(tokens) / len(tokens), 2) if tokens else None
        result["median_tokens"] = statistics.median(tokens) if tokens else None
        result["truncated_share"] = round(self.truncated / self.samples, 6) if self.samples else None
        result["ungradable"] = self.ungradable
        return result
