"""Logging to stderr (rich), never stdout: stdout carries data only.

Library modules use `logging.getLogger("rtool")`; the CLI calls `setup(verbosity)` once.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("rtool")


def setup(verbosity: int = 0) -> None:
    """verbosity: -1 quiet (warnings), 0 info, 1 debug."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    from rich.logging import RichHandler
    from rich.console import Console

    if sys.stderr.isatty():
        handler = RichHandler(console=log_console(), show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        # A log file or pipe gets whole lines in rich's layout: rich wraps at 80 columns there and pads each line,
        # which breaks a long progress line in two (and grep with it).
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    _quiet_libraries(show_progress=verbosity > 0)


_log_console = None


def log_console():
    """The rich console log lines go to on a terminal, one per process: a live progress bar (rtool.progress) draws on
    it too, so log lines print above the bar instead of through it."""
    global _log_console
    if _log_console is None:
        from rich.console import Console

        _log_console = Console(stderr=True, soft_wrap=True)  # stderr=True: whatever sys.stderr is when it writes
    return _log_console


def stderr_console():
    from rich.console import Console

    # Tables, summaries and progress are info: -q (the logger at WARNING) silences them with the info lines.
    return Console(file=sys.stderr, soft_wrap=True, quiet=not logger.isEnabledFor(logging.INFO))


def _quiet_libraries(show_progress: bool = False) -> None:
    # transformers and datasets chat on stderr at INFO/WARNING about things the user did not ask about, and draw
    # a progress bar for every weight load; rtool logs its own progress. -v brings them back.
    import os

    if not show_progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
