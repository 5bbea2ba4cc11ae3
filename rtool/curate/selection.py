"""Choosing traces: per prompt, at most K correct, distinct, short enough traces, the preferred ones first.

    rules = SelectRules(per_prompt=1, prefer="nll", dedup_threshold=0.9, max_tokens=4096)
    for row in select_traces(rows, rules, FieldMap(), stats=stats):   # trace rows, any order
        ...                                                            # chosen rows, unchanged

Per prompt (`id`, or the prompt text as distill keys it: `rtool.grade.fields.prompt_id`), in this order:
0. with `prompts` (a set of such keys, e.g. read from `rtool difficulty --keep`'s or `rtool decontaminate`'s
   output), a prompt outside it is skipped whole: its rows are counted in `other_prompts`, never held;
1. correct traces only (`correct` true) unless `include_incorrect`; a null `correct` (ungraded) is not correct;
2. `max_tokens`: drop traces whose `completion_tokens` is above it (a trace without the field is kept, counted unknown);
3. rank by `prefer`: shortest / longest (by `completion_tokens` when every candidate of the prompt has it, else by
   characters of the completion), nll (lowest first: the student's mean NLL per token from `rtool nll`; "Not All
   Correct Answers Are Equal": traces the student finds likely teach it more), first (input order), random
   (`seed` and the prompt id fix the order, whatever the input's order). Ties keep input order;
4. drop duplicates, walking the ranking so the preferred copy stays: the same completion text, or a near-duplicate,
   whose similarity to a trace already kept is >= `dedup_threshold` (1.0: exact duplicates only);
5. keep the first `per_prompt`.
Similarity: the Jaccard index |A n B| / |A u B| of the sets of word 3-gram shingles (lower-cased, split on
whitespace; a text of fewer than 3 words is one shingle of its words), the measure MinHash estimates (Broder 1997).
It is computed exactly: a prompt's candidates are few (K x samples, tens), so exact pairwise Jaccard is cheap, and
unlike MinHash (datasketch) it needs no dependency and no random permutations: the same input always keeps the same
traces. Memory: the rows of every prompt until the input ends (written then, in order of each prompt's first row).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rtool.errors import UserError
from rtool.grade.fields import FieldMap, prompt_id
from rtool.io.records import Row

PREFERENCES = ("shortest", "longest", "nll", "first", "random")
SHINGLE_WORDS = 3


@dataclass(frozen=True)
class SelectRules:
    per_prompt: int = 1
    prefer: str = "shortest"
    include_incorrect: bool = False
    dedup_threshold: float = 0.9
    max_tokens: int | None = None
    seed: int = 0
    prompts: frozenset[str] | None = None  # only these prompt keys (None: every prompt)

    def check(self) -> "SelectRules":
        if self.per_prompt < 1:
            raise UserError(f"--per-prompt must be at least 1, got {self.per_prompt}")
        if self.prefer not in PREFERENCES:
            raise UserError(f"unknown --prefer {self.prefer!r}", hint="valid: " + ", ".join(PREFERENCES))
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise UserError(f"--dedup-threshold must be in (0, 1], got {self.dedup_threshold:g}",
                            hint="1.0 drops exact duplicates only")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        return self


@dataclass
class SelectStats:
    rows: int = 0
    prompts: int = 0
    other_prompts: int = 0  # rows of prompts outside `rules.prompts`: skipped
    ungraded: int = 0  # correct null: dropped as not correct
    incorrect: int = 0
    too_long: int = 0
    unknown_length: int = 0  # no completion_tokens under max_tokens: kept
    duplicates: int = 0  # same completion text
    near_duplicates: int = 0
    over_limit: int = 0  # distinct candidates past per_prompt
    kept: int = 0
    empty_prompts: int = 0  # prompts with no trace left


@dataclass
class _Candidate:
    row: Row
    text: str
    order: int


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset:
    """The word n-grams of `text` (lower-cased, split on whitespace); fewer than n words: one shingle of them all."""
    words = text.lower().split()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|A n B| / |A u B|; two empty sets are identical (1.0)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def _check_row(row: Row, rules: SelectRules) -> None:
    if not rules.include_incorrect and "correct" not in row:
        raise row.error("missing field 'correct'", field="correct",
                        hint="grade the traces first (distill grades rows with a gold answer; rtool eval --records) "
                             "or pass --include-incorrect")
    if rules.prefer == "nll":
        value = row.get("nll")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            what = "missing field 'nll'" if value is None else f"field 'nll' must be a number, got {value!r}"
            raise row.error(what, field="nll", hint="score the traces first: rtool nll --model S")


def _admitted(row: Row, rules: SelectRules, stats: SelectStats) -> bool:
    """Step 1 and 2: whether the trace may be chosen at all (counts why not)."""
    if not rules.include_incorrect and row.get("correct") is not True:
        if row.get("correct") is None:
            stats.ungraded += 1
        else:
            stats.incorrect += 1
        return False
    if rules.max_tokens is not None:
        tokens = row.get("completion_tokens")
        if tokens is None:
            stats.unknown_length += 1
        elif isinstance(tokens, bool) or not isinstance(tokens, int):
            raise row.error(f"field 'completion_tokens' must be a whole number, got {tokens!r}",
                            field="completion_tokens")
        elif tokens > rules.max_tokens:
            stats.too_long += 1
            return False
    return True


def _ranked(candidates: list[_Candidate], rules: SelectRules, key: str) -> list[_Candidate]:
    if rules.prefer == "first":
        return list(candidates)
    if rules.prefer == "random":
        ranked = list(candidates)
        random.Random(f"{rules.seed}:{key}").shuffle(ranked)  # a str seed is hashed stably (sha512)
        return ranked
    if rules.prefer == "nll":
        return sorted(candidates, key=lambda c: c.row["nll"])
    by_tokens = all(isinstance(c.row.get("completion_tokens"), int) for c in candidates)
    length = (lambda c: c.row["completion_tokens"]) if by_tokens else (lambda c: len(c.text))
    return sorted(candidates, key=length, reverse=rules.prefer == "longest")  # sorted is stable: ties keep order


def choose(candidates: list[_Candidate], rules: SelectRules, key: str, stats: SelectStats) -> list[Row]:
    """Steps 3-5 for one prompt's admitted candidates."""
    kept: list[tuple[str, frozenset | None]] = []
    chosen = []
    near = rules.dedup_threshold < 1.0
    for candidate in _ranked(candidates, rules, key):
        if any(candidate.text == text for text, _ in kept):
            stats.duplicates += 1
            continue
        grams = shingles(candidate.text) if near else None
        if near and any(jaccard(grams, other) >= rules.dedup_threshold for _, other in kept):
            stats.near_duplicates += 1
            continue
        kept.append((candidate.text, grams))
        if len(chosen) < rules.per_prompt:
            chosen.append(candidate.row)
        else:
            stats.over_limit += 1
    return chosen


def select_traces(rows: Iterable[Row], rules: SelectRules, fields: FieldMap,
                  stats: SelectStats | None = None) -> Iterator[Row]:
    """The chosen rows of every prompt, prompts in the order of their first row, each prompt's in preference order."""
    stats = stats if stats is not None else SelectStats()
    prompts: dict[str, list[_Candidate]] = {}
    for order, row in enumerate(rows):
        stats.rows += 1
        _check_row(row, rules)
        key = prompt_id(row, fields)
        if rules.prompts is not None and key not in rules.prompts:
            stats.other_prompts += 1
            continue
        candidates = prompts.setdefault(key, [])
        text = fields.completion(row)
        if _admitted(row, rules, stats):
            candidates.append(_Candidate(row, text, order))
    stats.prompts = len(prompts)
    for key, candidates in prompts.items():
        chosen = choose(candidates, rules, key, stats)
        stats.empty_prompts += not chosen
        stats.kept += len(chosen)
        yield from chosen
