"""A training run's inputs as its OUT records them: local paths resolved, data by content.

    describe_input("../tpl/traces.jsonl", content=True)
    # {"path": "/home/u/tpl/traces.jsonl", "bytes": 51234, "sha256": "9f2c..."}
    describe_input("org/dataset")        # "org/dataset": not local, kept as given (a hub id, a benchmark, '-')
    same_input(recorded, now)            # the same content (files), else the same resolved path

So `--resume` from another directory, or with `./x` for `x`, finds the same input, and a file whose bytes changed
under the same name is told apart. What cannot be hashed before the rows are read (stdin, a hub dataset, a shipped
benchmark) is compared by name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def describe_input(value, *, content: bool = False):
    """A local path as its resolved absolute path (with `content`: a dict with its size and sha256 as well, see
    `digest`); anything else (None, '-', a hub id, a benchmark name) as given."""
    if value is None or str(value) in ("", "-") or not os.path.exists(value):
        return value if value is None else str(value)
    path = str(Path(value).resolve())
    if not content:
        return path
    size, sha256 = digest(path)
    return {"path": path, "bytes": size, "sha256": sha256}


def same_input(recorded, now) -> bool:
    """`recorded` (as run_settings.json holds it, maybe from an rtool that kept paths as typed) and `now` (as
    `describe_input` gives it) are the same input: equal content when both were hashed, else the same path,
    resolved against the current directory."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        return (recorded.get("bytes"), recorded.get("sha256")) == (now.get("bytes"), now.get("sha256"))
    return _path_of(recorded) == _path_of(now)


def digest(path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a dir's files: their relative names and bytes, in name order (a saved
    dataset, a data folder). Read in 1 MiB blocks: any size hashes in constant memory."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hasher = hashlib.sha256()
    size = 0
    for file in files:
        if path.is_dir():
            hasher.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
                size += len(block)
    return size, hasher.hexdigest()


def _path_of(value):
    if isinstance(value, dict):
        value = value.get("path")
    if value is None or str(value) in ("", "-") or not os.path.exists(value):
        return value
    return str(Path(value).resolve())
