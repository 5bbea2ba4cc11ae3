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
   Correct Answers Are Equal": traces the student finds likely teach it more), first (input order), random (by a
   hash of `seed`, the prompt id and the row itself: `cat t1 t2` and `cat t2 t1` choose the same traces). Ties keep
   input order;
4. drop duplicates, walking the ranking so the preferred copy stays: the same completion text, or a near-duplicate,
   whose similarity to a trace already kept is >= `dedup_threshold` (1.0: exact duplicates only);
5. keep the first `per_prompt`.
Similarity: the Jaccard index |A n B| / |A u B| of the sets of word 3-gram shingles (lower-cased, split on
whitespace; a text of fewer than 3 words is one shingle of its words), the measure MinHash estimates (Broder 1997).
It is computed exactly: a prompt's candidates are few (K x samples, tens), so exact pairwise Jaccard is cheap, and
unlike MinHash (datasketch) it needs no dependency and no random permutations: the same input always keeps the same
traces. A `correct` that is not true, false or null ("true", "no") and an `nll` of Infinity or NaN stop the run with
file:line. Rows are written when the input ends, in order of each prompt's first row. Memory does not grow with the
rows: they wait in temporary files sorted by prompt (`rtool.io.spill`), read back one prompt at a time (~50 MB peak
at 20k and at 200k rows: bench/RESULTS.md "select memory").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rtool.errors import UserError
from rtool.grade.fields import FieldMap, prompt_id, sample_grade
from rtool.io.records import Row, json_line
from rtool.io.spill import RUN_CHARS, SortedSpill

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
    text: str  # the completion
    order: int
    line: str = ""  # the row as a JSON line (--prefer random hashes it)


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset:
    """The word n-grams of `text` (lower-cased, split on whitespace); fewer than n words: one shingle of them all."""
    words = text.lower().split()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(zip(*(words[i:] for i in range(n))))  # (w0, w1, w2), (w1, w2, w3), ...


def jaccard(a: frozenset, b: frozenset) -> float:
    """|A n B| / |A u B|; two empty sets are identical (1.0)."""
    common = len(a & b)
    union = len(a) + len(b) - common  # without building the union set
    return common / union if union else 1.0


def _check_row(row: Row, rules: SelectRules) -> None:
    if not rules.include_incorrect:
        if "correct" not in row:
            raise row.error("missing field 'correct'", field="correct",
                            hint="grade the traces first (distill grades rows with a gold answer; rtool eval "
                                 "--records) or pass --include-incorrect")
        sample_grade(row)  # "true" or "no" is refused: read as false or as true it would choose the wrong traces
    value = row.get("nll")
    if isinstance(value, float) and not math.isfinite(value):  # read from a non-standard Infinity or NaN
        raise row.error(f"field 'nll' must be a finite number, got {value!r}", field="nll",
                        hint="JSON has no Infinity or NaN, and select writes rows as they are: rescore the trace "
                             "or drop its nll")
    if rules.prefer == "nll" and (isinstance(value, bool) or not isinstance(value, (int, float))):
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


def random_rank(seed: int, key: str, line: str) -> bytes:
    """--prefer random's rank of a trace: a hash of the seed, the prompt key and the row's JSON line, so the order
    is the same whatever order the rows come in (only identical rows tie, and they are written alike)."""
    return hashlib.blake2b(f"{seed}\0{key}\0{line}".encode("utf-8"), digest_size=8).digest()


def _ranked(candidates: list[_Candidate], rules: SelectRules, key: str) -> list[_Candidate]:
    if rules.prefer == "first":
        return list(candidates)
    if rules.prefer == "random":
        return sorted(candidates, key=lambda c: random_rank(rules.seed, key, c.line or json_line(c.row)))
    if rules.prefer == "nll":
        return sorted(candidates, key=lambda c: c.row["nll"])
    by_tokens = all(isinstance(c.row.get("completion_tokens"), int) for c in candidates)
    length = (lambda c: c.row["completion_tokens"]) if by_tokens else (lambda c: len(c.text))
    return sorted(candidates, key=length, reverse=rules.prefer == "longest")  # sorted is stable: ties keep order


def choose(candidates: list[_Candidate], rules: SelectRules, key: str, stats: SelectStats) -> list[Row]:
    """Steps 3-5 for one prompt's admitted candidates (in input order)."""
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


def select_traces(rows: Iterable[Row], rules: SelectRules, fields: FieldMap, stats: SelectStats | None = None,
                  run_chars: int = RUN_CHARS) -> Iterator[dict]:
    """The chosen rows of every prompt, prompts in the order of their first row, each prompt's in preference order.

    Every row is checked as it is read (a bad one raises before anything is yielded). The admitted rows wait in a
    SortedSpill keyed by (prompt, input order), with a row-less marker for each other row (its prompt still counts
    and still has a first row), so each prompt's items come back together; its chosen rows wait in a second spill
    keyed by (the prompt's first row, rank). Memory: one spill's run (`run_chars`) and one prompt's candidates."""
    stats = stats if stats is not None else SelectStats()
    with SortedSpill(run_chars, prefix="rtool-select-") as traces, \
            SortedSpill(run_chars, prefix="rtool-select-") as chosen:
        for order, row in enumerate(rows):
            stats.rows += 1
            _check_row(row, rules)
            key = prompt_id(row, fields)
            if rules.prompts is not None and key not in rules.prompts:
                stats.other_prompts += 1
                continue
            fields.completion(row)  # a row without a completion stops the run at its line, admitted or not
            line = json_line(row).rstrip("\n") if _admitted(row, rules, stats) else ""
            traces.add([key, order, row.path, row.line], line)
        for key, first, candidates in _prompts(traces.sorted(), fields):
            picked = choose(candidates, rules, key, stats)
            stats.prompts += 1
            stats.empty_prompts += not picked
            stats.kept += len(picked)
            for rank, row in enumerate(picked):
                chosen.add([first, rank], json_line(row).rstrip("\n"))
        for _, line in chosen.sorted():
            yield json.loads(line)


def _prompts(items: Iterator[tuple[list, str]], fields: FieldMap) -> Iterator[tuple[str, int, list[_Candidate]]]:
    """(prompt key, its first row's order, its admitted candidates in input order) from the spill sorted by
    (prompt key, order)."""
    for key, group in itertools.groupby(items, key=lambda item: item[0][0]):
        first, candidates = None, []
        for (_, order, path, line), text in group:
            first = order if first is None else first
            if text:
                row = Row(json.loads(text), path, line)
                candidates.append(_Candidate(row, fields.completion(row), order, text))
        yield key, first, candidates
