"""Small helpers for CLI tests: run `rtool` as a user does (a subprocess) and read JSONL."""

import json
import os
import subprocess
import sys
from pathlib import Path


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
