"""Start-up time of `rtool --help` and `rtool distill --help` (goal <= 0.3 s), beside `trl sft --help`.

    python bench/startup.py        # writes the "startup" section of bench/RESULTS.md
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

from common import machine, write_section


def best_and_median(command: list[str], runs: int = 7) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> None:
    bin_dir = sys.executable.rsplit("/", 1)[0]
    rtool = shutil.which("rtool", path=bin_dir) or "rtool"
    rows = []
    for label, command in [("rtool --help", [rtool, "--help"]), ("rtool distill --help", [rtool, "distill", "--help"]),
                           ("rtool eval --help", [rtool, "eval", "--help"])]:
        best, median = best_and_median(command)
        rows.append(f"| `{label}` | {best:.3f} | {median:.3f} |")
    trl = shutil.which("trl", path=bin_dir)
    if trl:
        best, median = best_and_median([trl, "sft", "--help"], runs=3)
        rows.append(f"| `trl sft --help` (for comparison) | {best:.3f} | {median:.3f} |")
    body = "\n".join([
        f"`python bench/startup.py` on {machine()}. Goal: at most 0.3 s.", "",
        "| command | best s | median s |", "|---|---|---|", *rows])
    write_section("startup", body)
    print(body)


if __name__ == "__main__":
    main()
