"""Check that a finished quickstart work dir may stand in for an example's step 1 (common.sh's teacher_and_traces).

    python check_reuse.py QUICKSTART_WORK_DIR SEED     # exit 0, or 2 with the reason on stderr

Only a quickstart run of the same seed whose traces were sampled as the examples sample them (4 samples of each of
the 2,000 training prompts at temperature 0.8, top-p 1, 120 new tokens, no system prompt) qualifies, with its task
files, models and teacher beside them.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

WANT = {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": 120, "system": None}
PROMPTS, SAMPLES = 2000, 4
NEEDED = ("data/train.jsonl", "data/test.jsonl", "teacher", "student-init", "traces.jsonl")


def problem(work: Path, seed: int) -> str | None:
    """Why `work` cannot be reused for `seed`, or None."""
    missing = [name for name in NEEDED if not (work / name).exists()]
    if missing:
        return f"it has no {', '.join(missing)}"
    rows = [json.loads(line) for line in (work / "traces.jsonl").open() if line.strip()]
    want = {**WANT, "seed": seed}
    got = {key: (rows[0].get("sampling") or {}).get(key) for key in want} if rows else {}
    per_prompt = Counter(row["id"] for row in rows)
    if got != want or len(per_prompt) != PROMPTS or set(per_prompt.values()) != {SAMPLES}:
        return (f"its traces are not {SAMPLES} samples of {PROMPTS:,} prompts sampled with {want} (found "
                f"{len(per_prompt)} prompts, {got})")
    return None


def main() -> int:
    work, seed = Path(sys.argv[1]), int(sys.argv[2])
    reason = problem(work, seed)
    if reason:
        print(f"cannot reuse {work} for seed {seed}: {reason}; run without the reuse variable", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
