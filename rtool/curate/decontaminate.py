"""Decontamination: drop rows that share a word n-gram with a benchmark (the check open-r1's
scripts/decontaminate.py and s1 run before training).

    index = BenchIndex(n=8)
    index.add_bench("math500", read_records("math500"))    # each bench row's text, found as FieldMap finds a prompt
    hit = index.match(text)                                 # None, or Hit(bench, bench_id, ngram)

Text is normalised before it is cut into words: lower-cased, every punctuation character (anything neither a letter,
a digit nor a space; `_` too) replaced by a space, then split on whitespace, so "Janet's  ducks," and "janet s ducks"
are the same words. A bench row of n words or more contributes its n-grams; a shorter one (MATH-500 has "Compute
$\\dbinom{8}{4}$.") is matched whole: a row is dropped when its words contain that short bench text as a contiguous
word sequence. A bench row with no words after normalisation matches nothing and is counted in `empty`.

Memory holds the benchmarks' n-grams (tuples of words: Python caches each word's hash, so hashing a window is cheap),
never the input: `match` looks at one text at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from rtool.grade.fields import FieldMap
from rtool.io.records import Row

DEFAULT_NGRAM = 8
# Punctuation (and symbols): whatever is not a word character or whitespace, and the underscore \w lets through.
_PUNCTUATION = re.compile(r"[^\w\s]|_")


# The same replacement for ASCII text as a str.translate table: faster than the regex, and most rows are ASCII.
_ASCII_PUNCTUATION = str.maketrans({chr(code): " " for code in range(128) if _PUNCTUATION.match(chr(code))})


def normalized_words(text: str) -> list[str]:
    """The words of `text` after lower-casing and replacing punctuation by spaces."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered.translate(_ASCII_PUNCTUATION).split()
    return _PUNCTUATION.sub(" ", lowered).split()


@dataclass(frozen=True)
class Hit:
    bench: str
    bench_id: object  # the bench row's `id` field, or its line (row number) in the bench
    ngram: str


@dataclass
class BenchIndex:
    n: int = DEFAULT_NGRAM
    ngrams: dict[tuple[str, ...], tuple[str, object]] = field(default_factory=dict)  # n-gram -> (bench, id)
    short: dict[tuple[str, ...], tuple[str, object]] = field(default_factory=dict)   # whole short text -> (bench, id)
    short_lengths: set[int] = field(default_factory=set)  # the word counts of the short texts
    short_anchors: set[str] = field(default_factory=set)  # each short text's longest word: a row without any is clean
    rows: dict[str, int] = field(default_factory=dict)   # bench -> rows read
    empty: dict[str, int] = field(default_factory=dict)  # bench -> rows with no words (they match nothing)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")

    def add_bench(self, name: str, rows: Iterable[Row], text_field: str | None = None) -> None:
        """Index every row of one benchmark; its text is `text_field`, or the prompt as FieldMap finds it
        (prompt, messages, question, problem, ...). A row without it raises the row's UserError (file:line)."""
        self.rows.setdefault(name, 0)
        self.empty.setdefault(name, 0)
        for row in rows:
            self.rows[name] += 1
            words = normalized_words(row_text(row, text_field))
            ref = (name, row["id"] if row.get("id") not in (None, "") else row.line)
            if not words:
                self.empty[name] += 1
            elif len(words) < self.n:
                self.short.setdefault(tuple(words), ref)
                self.short_lengths.add(len(words))
                self.short_anchors.add(max(words, key=len))
            else:
                for start in range(len(words) - self.n + 1):
                    self.ngrams.setdefault(tuple(words[start:start + self.n]), ref)

    def match(self, text: str) -> Hit | None:
        """The first bench n-gram (or whole short bench text) found in `text`, or None when it is clean."""
        words = normalized_words(text)
        # The common case, a clean row, is decided in C: isdisjoint walks the windows (zip over shifted views yields
        # each as a tuple) and stops at the first one in the index; Python looks for which one only on a hit.
        if not self.ngrams.keys().isdisjoint(_windows(words, self.n)):
            return _first_hit(self.ngrams, _windows(words, self.n))
        # A short text is looked for only in rows holding its longest (so rarest-looking: "235423523", "dbinom")
        # word; otherwise a few short bench rows would cost as much as all the n-grams.
        if self.short_anchors.isdisjoint(words):
            return None
        for length in sorted(self.short_lengths, reverse=True):
            if not self.short.keys().isdisjoint(_windows(words, length)):
                return _first_hit(self.short, _windows(words, length))
        return None


def _windows(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(words[shift:] for shift in range(n)))


def _first_hit(index: dict[tuple[str, ...], tuple[str, object]], windows: Iterable[tuple[str, ...]]) -> Hit:
    return next(_hit(index[window], window) for window in windows if window in index)


def _hit(ref: tuple[str, object], window: tuple[str, ...]) -> Hit:
    return Hit(ref[0], ref[1], " ".join(window))


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


def decontaminate(rows: Iterable[Row], index: BenchIndex, text_field: str | None = None,
                  stats: DecontaminateStats | None = None) -> Iterable[tuple[Row, Hit | None]]:
    """Each row with its Hit (drop it) or None (keep it), in input order, one row at a time."""
    stats = stats if stats is not None else DecontaminateStats()
    for row in rows:
        stats.rows += 1
        hit = index.match(row_text(row, text_field))
        if hit is None:
            stats.kept += 1
        else:
            stats.dropped[hit.bench] = stats.dropped.get(hit.bench, 0) + 1
        yield row, hit
