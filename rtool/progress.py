"""Progress of a long loop on stderr: rows done / total, rate and ETA. Never stdout; silent under -q.

    with Progress("distill", total=count_rows(path) * n) as progress:
        for row in work():
            write(row)
            progress.advance()

A terminal gets a live rich bar (drawn on the console the rtool log handler writes to, so log lines print above
it). A file or pipe (CI logs, `2> run.log`) gets one status line every RTOOL_PROGRESS_EVERY seconds (default 30),
also while no row finishes (a slow first batch still shows the run is alive):

    INFO     distill: 12/40 rows (30%)  0.52 rows/s  elapsed 23s  ETA 54s

Without a total (stdin) the line has done and rate, no ETA. Nothing is shown when the `rtool` logger is not at
INFO (`-q`, or library use where the CLI never configured logging).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from rtool.log import logger

EVERY_ENV = "RTOOL_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0

T = TypeVar("T")


class Progress:
    """A context manager counting units of work; `advance(n)` after each n done. `total` None: unknown."""

    def __init__(self, what: str, total: int | None = None, unit: str = "rows", every: float | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.every = _every_from_env() if every is None else every
        self.done = 0
        self._start = time.perf_counter()
        self._shown = logger.isEnabledFor(logging.INFO)
        self._bar = None  # rich Progress, on a terminal
        self._task = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        self._start = time.perf_counter()
        if not self._shown:
            return self
        if sys.stderr.isatty():
            self._start_bar()
        elif self.every > 0:
            # A thread, so that a status line comes even while one slow batch holds the loop.
            self._ticker = threading.Thread(target=self._tick, name="rtool-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.stop()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self._shown and self.every <= 0:
            self._log_status()

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield `items`, advancing by one after each (for loops where reading is the work)."""
        for item in items:
            yield item
            self.advance()

    def status(self) -> str:
        """`12/40 rows (30%)  0.52 rows/s  elapsed 23s  ETA 54s` (no total: `12 rows  0.52 rows/s  elapsed 23s`)."""
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            counted = f"{self.done} {self.unit}"
        else:
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            counted = f"{self.done}/{self.total} {self.unit}{share}"
        line = f"{counted}  {rate:.3g} {self.unit}/s  elapsed {format_duration(elapsed)}"
        if self.total is not None:
            line += f"  ETA {format_duration((self.total - self.done) / rate) if rate > 0 else '?'}"
        return line

    def _log_status(self) -> None:
        logger.info("%s: %s", self.what, self.status())

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self._log_status()

    def _start_bar(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        from rtool.log import log_console

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn(self.unit), _rate_column(self.unit), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=log_console())
        self._task = self._bar.add_task(self.what, total=self.total)
        self._bar.start()


def _rate_column(unit: str):
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            # Rich's own speed is over a recent window: a run that yields a batch at a time reads 0 between batches.
            rate = task.completed / task.elapsed if task.elapsed else 0.0
            return Text(f"{rate:.3g} {unit}/s")

    return Rate()


def format_duration(seconds: float) -> str:
    """45s, 12m05s, 3h07m: short enough for a status line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def count_rows(path: str | Path) -> int | None:
    """Rows in an input file, read cheaply (JSONL lines; parquet metadata), or None where that is not cheap or not
    possible (stdin, a JSON array, a dataset folder, a hub id): the progress then shows no ETA."""
    if str(path) == "-":
        return None
    source = Path(path)
    try:
        if not source.is_file() or source.suffix == ".json":
            return None
        if source.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(source).metadata.num_rows
        with open(source, "rb") as handle:  # the JSONL reader skips blank lines: so does the count
            return sum(1 for line in handle if line.strip())
    except Exception:  # noqa: BLE001 - a file the reader will refuse with a proper error: no total here
        return None


def _every_from_env() -> float:
    try:
        return float(os.environ.get(EVERY_ENV, DEFAULT_EVERY))
    except ValueError:
        logger.warning("%s=%r is not a number of seconds: using %g", EVERY_ENV, os.environ[EVERY_ENV], DEFAULT_EVERY)
        return DEFAULT_EVERY
