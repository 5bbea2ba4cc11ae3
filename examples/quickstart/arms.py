"""What the examples that compare arms from one stage-1 student share in their reports (redi, grpo, curate).

    sys.path.insert(0, str(QUICKSTART_DIR)); import arms
    arms.timings(work)                         # {stage: seconds} from timings.tsv
    arms.sampled(work, ("stage1", "grpo"))     # {arm: {"pass@1", "pass@k"}} from eval-ARM-sampled.json, if any
    arms.print_models(rows, pass1, sampled, temperature)   # the per-model markdown table
    arms.print_stages(seconds, load)           # the per-stage seconds table and the load average
    arms.broken(pass1, "grpo example", stage1_above=0.05)  # 1 (with the reason on stderr) when the pipeline broke
    arms.mean_spread(values)                   # "mean ± sd [min-max]" in percent
    arms.main(one_run, seeds, __doc__)         # report.py WORK_DIR | report.py --seeds WORK_DIR...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# A broken pipeline, not a result: the quickstart's teacher reaches 99-100% and its untrained student 0%.
TEACHER_AT_LEAST, UNTRAINED_AT_MOST = 0.90, 0.05


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def last_step(run_dir: Path) -> int:
    return max(row["step"] for row in metrics(run_dir))


def timings(work: Path) -> dict[str, float]:
    return {name: float(seconds) for name, seconds in
            (line.split("\t") for line in (work / "timings.tsv").read_text().splitlines())}


def sampled(work: Path, names) -> dict:
    """{arm: {"pass@1": .., "pass@K": ..}} for the arms run.sh also evaluated sampled (K samples), else {}."""
    found = {name: read_json(work / f"eval-{name}-sampled.json") for name in names
             if (work / f"eval-{name}-sampled.json").exists()}
    if not found:
        return {}
    k = max(int(key[5:]) for key in next(iter(found.values())) if key.startswith("pass@"))
    return {name: {"pass@1": s["pass@1"], f"pass@{k}": s[f"pass@{k}"]} for name, s in found.items()}


def print_models(rows, pass1: dict, sampled_evals: dict, temperature: float, tokens: dict | None = None) -> None:
    """rows: (label, eval name, steps text, train seconds or None). Columns: greedy pass@1, mean tokens when
    given, and the sampled pass@1 / pass@K when run.sh measured them."""
    k_key = next((key for key in next(iter(sampled_evals.values()), {}) if key != "pass@1"), None)
    head = "| model | steps | train s | held-out pass@1 (greedy) |" + (" mean tokens |" if tokens else "")
    if sampled_evals:
        head += f" pass@1 / {k_key} (T {temperature:g}) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, name, steps, seconds in rows:
        line = f"| {label} | {steps} | {'' if seconds is None else f'{seconds:.0f}'} | {pass1[name]:.1%} |"
        if tokens:
            line += f" {'' if tokens.get(name) is None else f'{tokens[name]:.1f}'} |"
        if sampled_evals:
            s = sampled_evals.get(name)
            line += f" {s['pass@1']:.1%} / {s[k_key]:.1%} |" if s else " |"
        print(line)


def print_stages(seconds: dict, load: dict | None) -> None:
    print("\n| stage | seconds |")
    print("|---|---|")
    for stage, value in seconds.items():
        print(f"| {stage} | {value:.1f} |")
    if load:
        print(f"load average (1, 5, 15 min): {load['start']} at the start, {load['end']} at the end")


def print_stage_means(runs: list[dict]) -> None:
    print("\nseconds per stage, mean [min-max]:")
    for stage in runs[0]["seconds"]:
        values = [s["seconds"].get(stage, float("nan")) for s in runs]
        print(f"  {stage:<26} {statistics.mean(values):7.1f} [{min(values):.1f}-{max(values):.1f}]")


def broken(pass1: dict, example: str, *, stage1_above: float) -> int:
    """1 with the reason on stderr when the teacher did not learn, the untrained student is not at ~0%, or stage 1
    is not `stage1_above` above the untrained student; else 0. Never about which arm won."""
    problems = []
    if pass1["teacher"] < TEACHER_AT_LEAST:
        problems.append(f"teacher {pass1['teacher']:.1%} (want >= {TEACHER_AT_LEAST:.0%})")
    if pass1["student-init"] > UNTRAINED_AT_MOST:
        problems.append(f"untrained student {pass1['student-init']:.1%} (want <= {UNTRAINED_AT_MOST:.0%})")
    if pass1["stage1"] < pass1["student-init"] + stage1_above:
        problems.append(f"stage 1 {pass1['stage1']:.1%}, not {stage1_above:.0%} above the untrained student")
    if problems:
        print(f"{example}: the pipeline is broken: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def mean_spread(values: list[float]) -> str:
    """'mean ± sample standard deviation [min-max]' in percent."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f} [{100 * min(values):.1f}-{100 * max(values):.1f}]"


def print_arm_means(runs: list[dict], stage1: str, base: tuple[str, str], other: tuple[str, str],
                    metric: str = "pass@1") -> None:
    """Over seeds: stage 1 and both arms' pass@1 with their gains over stage 1, then `other` - `base` paired by
    seed. base, other: (eval name, label such as "(a) SFT-more")."""
    col = {name: [s["pass@1"][name] for s in runs] for name in (stage1, base[0], other[0])}
    print(f"\nover {len(runs)} seeds, held-out {metric} in %, mean ± sd [min-max]:")
    print(f"  {'stage 1':<14} {mean_spread(col[stage1])}")
    for name, label in sorted((base, other), key=lambda arm: arm[1]):
        gain = [s["pass@1"][name] - s["pass@1"][stage1] for s in runs]
        print(f"  {label:<14} {mean_spread(col[name])}   gain over stage 1 {mean_spread(gain)}")
    diff = [s["pass@1"][other[0]] - s["pass@1"][base[0]] for s in runs]
    short = {name: label.split(") ", 1)[-1] for name, label in (base, other)}
    print(f"  {short[other[0]]} - {short[base[0]]}, paired by seed: {mean_spread(diff)} points; {short[other[0]]} "
          f"ahead on {sum(d > 0 for d in diff)} of {len(diff)} seeds, behind on {sum(d < 0 for d in diff)}")


def main(one_run, seeds, usage: str) -> None:
    """A report's command line: `report.py WORK_DIR` -> one_run(dir); `report.py --seeds WORK_DIR...` ->
    seeds(dirs). Exits with the function's return code, or prints `usage` when the arguments fit neither."""
    args = sys.argv[1:]
    if args and args[0] == "--seeds":
        sys.exit(seeds([Path(arg) for arg in args[1:]]))
    if len(args) != 1:
        sys.exit(usage)
    sys.exit(one_run(Path(args[0])))
