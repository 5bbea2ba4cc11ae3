"""Failure-curve detectors (rtool.train.failure_curves) on simulated noisy runs: the share of healthy runs flagged
and of failures flagged within 10 steps of their start, per batch size and log format (tests/noisy_runs.py).

    python bench/failure_curves.py --runs 1000 > rates.md      # a markdown table for bench/RESULTS.md

The runs are read back from the files a run leaves (metrics.jsonl; TRL's trainer_state.json every step or every
10 steps), as `rtool plot --check` reads them; the tests run 200 a setting with fixed seeds, this any number.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import noisy_runs  # noqa: E402

from rtool.train.failure_curves import COLLAPSE  # noqa: E402

LOGS = noisy_runs.LOGS


def rate(kind: str, completions: int, log: str, runs: int, seed: int) -> float | None:
    every = LOGS[log]
    if kind == noisy_runs.EARLY_LENGTH_COLLAPSE and every > 1:
        return None  # inside the first row of the log: not visible
    simulated = noisy_runs.simulate(kind, completions, runs=runs, seed=seed, first_start=every + 1)
    with tempfile.TemporaryDirectory() as directory:
        found = noisy_runs.logged_events(Path(directory), simulated, log)
    if kind == noisy_runs.HEALTHY:
        return sum(bool(events) for events in found) / runs
    wanted = (COLLAPSE,) if "length" in kind else ("reward_drop", "reward_hockey_stick")
    return sum(noisy_runs.in_time(events, start, every) and any(e.name in wanted for e in events)
               for events, start in zip(found, simulated.start.tolist())) / runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"{args.runs} runs of 200 steps a setting (seed {args.seed}); healthy: share flagged (goal <= 1%); "
          "failures: share flagged within 10 steps (goal >= 95%).\n")
    print("| kind | log | 16 a step | 32 | 64 |")
    print("|---|---|---|---|---|")
    for kind in noisy_runs.KINDS:
        for log in LOGS:
            cells = [rate(kind, completions, log, args.runs, args.seed) for completions in (16, 32, 64)]
            shown = ["n/a" if cell is None else f"{cell:.1%}" for cell in cells]
            print(f"| {kind} | {log} | " + " | ".join(shown) + " |", flush=True)
    print(f"\n{time.perf_counter() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
