"""Decontamination: drop rows that share a word n-gram with a benchmark, the check open-r1's
scripts/decontaminate.py (after s1's decontaminate_util.py) runs before training.

    index = BenchIndex(n=8)                                 # rule="open-r1" (the default) or "loose"
    index.add_bench("math500", read_records("math500"))    # each bench row's text, found as FieldMap finds a prompt
    hit = index.match(text)                  # None, or Hit(bench, bench_id, bench_text, ngram, overlap)

Text is cut into words by one of two rules:
- "open-r1" (default), open-r1's normalize_string: lower-cased and split on whitespace, nothing else. Punctuation
  stays in its word ("day." and "day" differ), and so do operators: "919 + 367?" and "919 - 367?" stay apart. A
  bench row shorter than n words has no n-gram and checks nothing, as in open-r1; it is counted in `short`.
- "loose": also every punctuation character (anything neither a letter, a digit nor a space; `_` too) becomes a
  space, so "Janet's  ducks," and "janet s ducks" are the same words; math operators (+ - * / ^ % = < > | and the
  Unicode math symbols) become words of their own instead, so "919+367" = "919 + 367" but not "919 - 367". A bench
  row shorter than n words (MATH-500's "Simplify $\\sqrt{242}$.") is matched whole: a row is dropped when its
  words contain that short bench text as a contiguous word sequence.
Digits stay in their words under both. A bench row with no words matches nothing and is counted in `empty`.

A hit names the bench row sharing the most of the row's distinct n-grams, and `overlap`: how many of the row's
distinct n-grams that bench row holds, over how many the row has (4 places). A copied bench question scores 1.0; a
long row that shares only stock phrasing ("how much money did she make") with a bench question scores little. A
short bench text matched whole (loose) scores the share of the row's words it covers.

Memory holds the benchmarks' n-grams and texts, never the input: `match` looks at one text at a time.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.io.records import Row

DEFAULT_NGRAM = 8
RULES = ("open-r1", "loose")
DEFAULT_RULE = "open-r1"
# Punctuation (and symbols): whatever is not a word character or whitespace, and the underscore \w lets through.
_PUNCTUATION = re.compile(r"[^\w\s]|_")
# ASCII operators that Unicode files under punctuation, not under math symbols (Sm: + < = > | and ± × ÷ − ≤ ...).
# `~` (Sm) is LaTeX's unbreakable space and `!` ends more sentences than it takes factorials: both stay punctuation.
_ASCII_OPERATORS = set("-*/^%")


def _is_operator(char: str) -> bool:
    return char in _ASCII_OPERATORS or (char != "~" and unicodedata.category(char) == "Sm")


class _LooseTable(dict):
    """str.translate's table for the loose rule, filled in per character as text meets it: punctuation -> a space,
    an operator -> itself between spaces, anything else -> itself. One C-level translate per text, not a regex."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        self[code] = f" {char} " if _is_operator(char) else " " if _PUNCTUATION.match(char) else char
        return self[code]


_LOOSE = _LooseTable()


def normalized_words(text: str, rule: str = DEFAULT_RULE) -> list[str]:
    """The words of `text` under `rule` (see the module docstring): open-r1's lower-case-and-split, or that with
    punctuation turned into spaces and operators into words."""
    if rule == "open-r1":
        return text.lower().split()
    if rule == "loose":
        return text.lower().translate(_LOOSE).split()
    raise ValueError(f"unknown rule {rule!r}: one of {', '.join(RULES)}")


@dataclass(frozen=True)
class Hit:
    bench: str
    bench_id: object  # the bench row's `id` field, or its line (row number) in the bench
    bench_text: str   # the bench row's text, as read
    ngram: str        # the first of the row's n-grams (in the row's order) that this bench row holds
    overlap: float    # the share of the row's distinct n-grams this bench row holds, rounded to 4 places


@dataclass
class BenchIndex:
    n: int = DEFAULT_NGRAM
    rule: str = DEFAULT_RULE
    sources: list[tuple[str, object, str]] = field(default_factory=list)  # bench row: (bench, id, text)
    ngrams: dict[tuple[str, ...], list[int]] = field(default_factory=dict)  # n-gram -> the bench rows holding it
    short: dict[tuple[str, ...], int] = field(default_factory=dict)  # loose: whole short text -> its bench row
    short_lengths: set[int] = field(default_factory=set)  # the word counts of the short texts
    short_anchors: set[str] = field(default_factory=set)  # each short text's longest word: a row without any is clean
    rows: dict[str, int] = field(default_factory=dict)   # bench -> rows read
    empty: dict[str, int] = field(default_factory=dict)  # bench -> rows with no words (they match nothing)
    short_rows: dict[str, int] = field(default_factory=dict)  # bench -> rows of fewer than n words

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}: one of {', '.join(RULES)}")

    def add_bench(self, name: str, rows: Iterable[Row], text_field: str | None = None) -> None:
        """Index every row of one benchmark; its text is `text_field`, or the prompt as FieldMap finds it
        (prompt, messages, question, problem, ...). A row without it raises the row's UserError (file:line); a
        bench that would check nothing (no rows; none with words; under open-r1, none of n words) raises one
        naming the bench, since a run against it would drop nothing and say nothing was wrong."""
        self.rows.setdefault(name, 0)
        self.empty.setdefault(name, 0)
        self.short_rows.setdefault(name, 0)
        for row in rows:
            self.rows[name] += 1
            text = row_text(row, text_field)
            words = normalized_words(text, self.rule)
            source = len(self.sources)
            self.sources.append((name, row["id"] if row.get("id") not in (None, "") else row.line, text))
            if not words:
                self.empty[name] += 1
            elif len(words) < self.n:
                self.short_rows[name] += 1
                if self.rule == "loose":
                    self.short.setdefault(tuple(words), source)
                    self.short_lengths.add(len(words))
                    self.short_anchors.add(max(words, key=len))
            else:
                for window in _windows(words, self.n):
                    holders = self.ngrams.setdefault(window, [])
                    if not holders or holders[-1] != source:  # an n-gram a row repeats counts once
                        holders.append(source)
        self._check_checks_something(name)

    def _check_checks_something(self, name: str) -> None:
        if not self.rows[name]:
            raise UserError("no rows", path=name, hint="the bench is empty: nothing could be dropped for it")
        unusable = self.empty[name] + (self.short_rows[name] if self.rule == "open-r1" else 0)
        if unusable == self.rows[name]:
            hint = (f"{self.short_rows[name]} of its {self.rows[name]} rows have fewer than {self.n} words, which "
                    f"the open-r1 rule ignores as open-r1 does: pass --rule loose to match them whole, or a smaller "
                    f"--ngram" if self.short_rows[name] else f"its {self.rows[name]} rows have no words")
            raise UserError("no bench row can match anything", path=name, hint=hint)

    def match(self, text: str) -> Hit | None:
        """The bench row `text` shares most with (see the module docstring), or None when it is clean."""
        words = normalized_words(text, self.rule)
        hit = None
        # The common case, a clean row, is decided in C: isdisjoint walks the windows (zip over shifted views yields
        # each as a tuple) and stops at the first one in the index; Python counts shared n-grams only on a hit.
        if not self.ngrams.keys().isdisjoint(_windows(words, self.n)):
            hit = self._ngram_hit(words)
        # A short text is looked for only in rows holding its longest (so rarest-looking: "235423523")
        # word; otherwise a few short bench rows would cost as much as all the n-grams.
        if self.short_anchors and not self.short_anchors.isdisjoint(words):
            short = self._short_hit(words)
            if short is not None and (hit is None or short.overlap > hit.overlap):
                hit = short
        return hit

    def _ngram_hit(self, words: list[str]) -> Hit:
        distinct = list(dict.fromkeys(_windows(words, self.n)))
        shared, first = Counter(), {}
        for window in distinct:
            for source in self.ngrams.get(window, ()):
                shared[source] += 1
                first.setdefault(source, window)
        best = max(shared, key=shared.__getitem__)  # ties: the bench row met first in the row
        return self._hit(best, first[best], shared[best] / len(distinct))

    def _short_hit(self, words: list[str]) -> Hit | None:
        for length in sorted(self.short_lengths, reverse=True):
            window = next((window for window in _windows(words, length) if window in self.short), None)
            if window is not None:
                return self._hit(self.short[window], window, length / len(words))
        return None

    def _hit(self, source: int, window: tuple[str, ...], overlap: float) -> Hit:
        bench, bench_id, text = self.sources[source]
        return Hit(bench, bench_id, text, " ".join(window), round(overlap, 4))


def _windows(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(words[shift:] for shift in range(n)))


def row_text(row: Row, text_field: str | None = None) -> str:
    """The text to check: `text_field` (a string, or a list of messages whose contents are joined), or the
    prompt as FieldMap finds it."""
    if text_field is None:
        return FieldMap().prompt_text(row)
    if text_field not in row:
        raise row.error(f"missing field {text_field!r}", field=text_field, hint=f"found: {', '.join(list(row)[:12])}")
    value = row[text_field]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return "\n".join(m["content"] for m in value)
    raise row.error(f"field {text_field!r} must be a string or a list of messages, got {type(value).__name__}",
                    field=text_field)


@dataclass
class DecontaminateStats:
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # bench -> rows dropped
    below_min_overlap: int = 0  # rows kept although they share an n-gram: their overlap is under min_overlap


def decontaminate(rows: Iterable[Row], index: BenchIndex, text_field: str | None = None,
                  stats: DecontaminateStats | None = None,
                  min_overlap: float = 0.0) -> Iterable[tuple[Row, Hit | None]]:
    """Each row with its Hit (drop it) or None (keep it), in input order, one row at a time. With `min_overlap`, a
    row whose hit's overlap is under it is kept (None): it shares phrasing, not the question."""
    stats = stats if stats is not None else DecontaminateStats()
    for row in rows:
        stats.rows += 1
        hit = index.match(row_text(row, text_field))
        if hit is not None and hit.overlap < min_overlap:
            stats.below_min_overlap += 1
            hit = None
        if hit is None:
            stats.kept += 1
        else:
            stats.dropped[hit.bench] = stats.dropped.get(hit.bench, 0) + 1
        yield row, hit
