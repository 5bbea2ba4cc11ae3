"""Small helpers for CLI tests: run `rtool` as a user does (a subprocess) and read JSONL."""

import json
import os
import subprocess
import sys
from pathlib import Path

from rtool.tiny import SMOLLM2_GGUF_NAME, smollm2_gguf  # noqa: F401 - tests import them from here


# The installed console script, as a user runs it (beside this interpreter in the venv).
RTOOL = str(Path(sys.executable).with_name("rtool"))


def run_rtool(*args, input=None, timeout=300, env=None):
    """Run `rtool ARGS` with `input` (str or bytes) on stdin; returns CompletedProcess (bytes)."""
    data = input.encode() if isinstance(input, str) else input
    environment = {**os.environ, "RTOOL_DEBUG": "0", **(env or {})}
    return subprocess.run([RTOOL, *map(str, args)], input=data, capture_output=True,
                          timeout=timeout, env=environment)


def jsonl(text):
    if isinstance(text, bytes):
        text = text.decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def last_error_line(result):
    return result.stderr.decode().strip().splitlines()[-1]


def same_weights(a, b) -> bool:
    """Two models hold exactly the same tensors under the same names."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run_in_process(capfd, command: str, *args):
    """`rtool COMMAND ARGS` in this process (fast: nothing re-imported); (exit code, stdout, stderr) as captured at
    the file descriptors by pytest's `capfd`."""
    import pytest

    from rtool.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, *map(str, args)])
    captured = capfd.readouterr()
    return exit_.value.code, captured.out, captured.err
