"""What the examples may reuse instead of making it again (common.sh's teacher_and_traces and cached).

    python check_reuse.py QUICKSTART_WORK_DIR SEED     # exit 0, or 2 with the reason on stderr
    python check_reuse.py --key OUT COMMAND...          # the cache key of a step: COMMAND writes OUT

A finished quickstart work dir may stand in for an example's step 1 only when it is a run of the same seed whose
traces were sampled as the examples sample them (4 samples of each of the 2,000 training prompts at temperature 0.8,
top-p 1, 120 new tokens, no system prompt, the teacher named "teacher"), with its task files, models and teacher
beside them.

A step's key is the command with OUT as a placeholder and every file or directory it names by a path with a slash
(data, models, configs) replaced by a hash of its content, with the hash of rtool's source and torch's thread count:
two steps with one key run the same code on the same inputs with the same flags and seed, so they make the same
output.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

WANT = {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": 120, "system": ""}  # "": no system prompt
PROMPTS, SAMPLES = 2000, 4
TEACHER_NAME = "teacher"  # common.sh's distill --teacher-name
NEEDED = ("data/train.jsonl", "data/test.jsonl", "teacher", "student-init", "traces.jsonl")
REPO = Path(__file__).resolve().parents[2]


def problem(work: Path, seed: int) -> str | None:
    """Why `work` cannot be reused for `seed`, or None."""
    missing = [name for name in NEEDED if not (work / name).exists()]
    if missing:
        return f"it has no {', '.join(missing)}"
    rows = [json.loads(line) for line in (work / "traces.jsonl").open() if line.strip()]
    want = {**WANT, "seed": seed}
    got = {key: (rows[0].get("sampling") or {}).get(key) for key in want} if rows else {}
    per_prompt = Counter(row["id"] for row in rows)
    if rows and rows[0].get("teacher") != TEACHER_NAME:
        # Runs before common.sh named the teacher record its path: examples/curate groups teachers by the name.
        return f"its traces name their teacher {rows[0].get('teacher')!r}, not {TEACHER_NAME!r} (an older run)"
    if got != want or len(per_prompt) != PROMPTS or set(per_prompt.values()) != {SAMPLES}:
        return (f"its traces are not {SAMPLES} samples of {PROMPTS:,} prompts sampled with {want} (found "
                f"{len(per_prompt)} prompts, {got})")
    return None


def content_hash(path: Path, pattern: str = "*") -> str:
    """sha256 of a file's bytes, or of a directory's files matching `pattern` (relative names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        file for file in path.rglob(pattern) if file.is_file() and "__pycache__" not in file.parts)
    for file in files:
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def step_key(out: str, command: list[str]) -> str:
    """The cache key of running `command` (its program name first) to write `out`."""
    parts = [command[0], *(content_hash(REPO / name, "*.py") for name in ("rtool", "commands")),
             # torch's thread count changes the order of float sums, so the trained weights (measured: another
             # weak student with 2 threads than with 1)
             f"threads {os.environ.get('OMP_NUM_THREADS', 'all')} of {os.cpu_count()}"]
    for arg in command[1:]:
        if arg == out:
            parts.append("<out>")  # each example writes to its own work dir
        elif os.sep in arg and os.path.exists(arg):  # a path (run.sh passes them whole), not a value such as 50
            parts.append(f"<content {content_hash(Path(arg))}>")  # inputs are compared by content, not by path
        else:
            parts.append(arg)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def main() -> int:
    if sys.argv[1] == "--key":
        print(step_key(sys.argv[2], sys.argv[3:]))
        return 0
    work, seed = Path(sys.argv[1]), int(sys.argv[2])
    reason = problem(work, seed)
    if reason:
        print(f"cannot reuse {work} for seed {seed}: {reason}; run without the reuse variable", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
