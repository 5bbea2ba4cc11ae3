"""Sorting more (key, text) items than memory should hold: an external merge sort over unnamed temporary files.

    with SortedSpill() as spill:
        for row in rows:
            spill.add([prompt_key, order], json_line(row).rstrip("\\n"))
        for key, text in spill.sorted():       # by key; read once
            ...

Items gather in memory until their texts reach `run_chars` characters (each item counts ITEM_CHARS more, for the
Python objects around it); that run is then sorted and written to an unnamed temporary file (in $TMPDIR, with no name
from the start, so its space comes back when it is closed or the process ends, by an error, Ctrl-C or kill -9) and
the memory is freed. `sorted()` merges the runs (more than `fan_in` of them are first merged in groups, so thousands
of runs never hold thousands of files open). Memory: one run, whatever the number of items. A key is a list of JSON
values compared as Python compares lists (no two items should have equal keys); a text is one line (no newline).
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

RUN_CHARS = 8 << 20  # ~8 MiB of text per run: ~4k rows of a few hundred words
ITEM_CHARS = 300  # what Python holds for an item beside its text (tuple, key list, strings, ints): a textless item
FAN_IN = 64  # runs merged at once


class SortedSpill:
    def __init__(self, run_chars: int = RUN_CHARS, fan_in: int = FAN_IN, prefix: str = "rtool-spill-") -> None:
        assert fan_in >= 2
        self.run_chars, self.fan_in, self.prefix = run_chars, fan_in, prefix
        self._items: list[tuple[list, str]] = []
        self._chars = 0
        self._runs: list[IO[bytes]] = []

    def add(self, key: list, text: str) -> None:
        self._items.append((key, text))
        self._chars += len(text) + ITEM_CHARS
        if self._chars >= self.run_chars:
            self._runs.append(self._write(sorted(self._items, key=_first)))
            self._items, self._chars = [], 0

    def sorted(self) -> Iterator[tuple[list, str]]:
        """Every item added, by key (the spill is emptied: call it once)."""
        if self._runs and self._items:  # written too, so the merge holds no run in memory
            self._runs.append(self._write(sorted(self._items, key=_first)))
            self._items = []
        in_memory = sorted(self._items, key=_first)
        self._items, self._chars = [], 0
        while len(self._runs) > self.fan_in:
            merged = self._write(heapq.merge(*map(_read, self._runs[:self.fan_in]), key=_first))
            for run in self._runs[:self.fan_in]:
                run.close()
            self._runs = self._runs[self.fan_in:] + [merged]
        yield from heapq.merge(*map(_read, self._runs), in_memory, key=_first)

    def close(self) -> None:
        for run in self._runs:
            run.close()
        self._runs, self._items = [], []

    def __enter__(self) -> "SortedSpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, items: Iterable[tuple[list, str]]) -> IO[bytes]:
        run = tempfile.TemporaryFile(prefix=self.prefix)
        for key, text in items:
            assert "\n" not in text
            # The key's JSON has no raw tab or newline (json escapes them), so the first tab ends it.
            run.write(f"{json.dumps(key, ensure_ascii=False)}\t{text}\n".encode("utf-8"))
        run.seek(0)
        return run


def _first(item: tuple[list, str]) -> list:
    return item[0]


def _read(run: IO[bytes]) -> Iterator[tuple[list, str]]:
    for line in run:
        key, _, text = line.decode("utf-8").rstrip("\n").partition("\t")
        yield json.loads(key), text
