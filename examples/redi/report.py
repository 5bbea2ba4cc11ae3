"""Print the REDI example's results: held-out pass@1 of stage 1 and both arms, the pairs, the steps, the timings.

    python report.py WORK_DIR                 # one run of run.sh: the table; writes WORK_DIR/summary.json
    python report.py --seeds WORK_DIR...      # several runs (REDI_SEED=0,1,...): per seed, then mean and spread

Reads what run.sh wrote: eval-*.json, traces.jsonl, timings.tsv, run.json and each training run's metrics.jsonl.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# A broken pipeline, not a result: the quickstart's teacher reaches 99-100% and its untrained student 0%; a
# stage-1 student that learned the algorithm is far above 0% (60-90% at 550 steps), one that did not stays near it.
TEACHER_AT_LEAST, UNTRAINED_AT_MOST, STAGE1_ABOVE_UNTRAINED = 0.90, 0.05, 0.20
ARMS = ("stage1", "sft-more", "redi")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def last_step(run_dir: Path) -> int:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(row["step"] for row in rows)


def summarize(work: Path) -> dict:
    """The numbers of one run, also written to WORK_DIR/summary.json for --seeds."""
    settings = read_json(work / "run.json")
    alpha = settings.get("alpha")
    if alpha is None:
        alpha = yaml.safe_load((HERE / "redi.yaml").read_text())["alpha"]
    traces = [json.loads(line) for line in (work / "traces.jsonl").open()]
    by_prompt: dict[str, set] = {}
    for row in traces:
        by_prompt.setdefault(row["id"], set()).add(row["correct"])
    timings = dict(line.split("\t") for line in (work / "timings.tsv").read_text().splitlines())
    summary = {
        "seed": settings["seed"], "alpha": float(alpha),
        "samples": len(traces), "positives": sum(row["correct"] is True for row in traces),
        # --pairs first: one pair per prompt with both a correct and an incorrect sample.
        "pairs": sum(1 for grades in by_prompt.values() if True in grades and False in grades),
        "steps": {name: last_step(work / name) for name in ARMS},
        "pass@1": {name: read_json(work / f"eval-{name}.json")["pass@1"]
                   for name in ("teacher", "student-init", *ARMS)},
        "seconds": {name: float(seconds) for name, seconds in timings.items()},
        "load": settings.get("load"),
    }
    sampled = {name: read_json(work / f"eval-{name}-sampled.json") for name in ARMS
               if (work / f"eval-{name}-sampled.json").exists()}
    if sampled:
        k = max(int(key[5:]) for key in next(iter(sampled.values())) if key.startswith("pass@"))
        summary["sampled"] = {name: {"pass@1": s["pass@1"], f"pass@{k}": s[f"pass@{k}"]} for name, s in sampled.items()}
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def one_run(work: Path) -> int:
    s = summarize(work)
    p, steps, secs = s["pass@1"], s["steps"], s["seconds"]
    extra = steps["sft-more"]
    rows = [
        ("teacher (SFT on gold solutions)", "teacher", "", secs.get("sft teacher")),
        ("student, untrained", "student-init", "", None),
        (f"stage 1: SFT on {s['positives']:,} correct traces", "stage1", f"{steps['stage1']}", secs["stage 1 sft"]),
        ("(a) stage 1 + more SFT on the correct traces", "sft-more", f"+{steps['sft-more']}", secs["arm a: sft-more"]),
        (f"(b) stage 1 + REDI on {s['pairs']} pairs, alpha {s['alpha']:g}", "redi", f"+{steps['redi']}",
         secs["arm b: redi"]),
    ]
    sampled = s.get("sampled", {})
    k_key = next((key for key in next(iter(sampled.values()), {}) if key != "pass@1"), None)
    head = "| model | steps | train s | held-out pass@1 (greedy) |"
    if sampled:
        head += f" pass@1 / {k_key} (T 0.8) |"
    print(head)
    print("|---|---|---|---|" + ("---|" if sampled else ""))
    for label, name, n, seconds in rows:
        line = f"| {label} | {n} | {'' if seconds is None else f'{seconds:.0f}'} | {p[name]:.1%} |"
        if sampled:
            line += f" {sampled[name]['pass@1']:.1%} / {sampled[name][k_key]:.1%} |" if name in sampled else " |"
        print(line)
    print(f"\nREDI - SFT-more: {100 * (p['redi'] - p['sft-more']):+.1f} points held-out pass@1 after {extra} "
          f"extra steps each (seed {s['seed']}; RESULTS.md has several seeds)")
    print(f"traces: {s['samples']} samples, {s['positives']} correct; {s['pairs']} prompts with both a correct and "
          f"an incorrect sample (one pair each)")
    print("\n| stage | seconds |")
    print("|---|---|")
    for stage, seconds in s["seconds"].items():
        print(f"| {stage} | {seconds:.1f} |")
    if s["load"]:
        print(f"load average (1, 5, 15 min): {s['load']['start']} at the start, {s['load']['end']} at the end")

    broken = []
    if p["teacher"] < TEACHER_AT_LEAST:
        broken.append(f"teacher {p['teacher']:.1%} (want >= {TEACHER_AT_LEAST:.0%})")
    if p["student-init"] > UNTRAINED_AT_MOST:
        broken.append(f"untrained student {p['student-init']:.1%} (want <= {UNTRAINED_AT_MOST:.0%})")
    if p["stage1"] < p["student-init"] + STAGE1_ABOVE_UNTRAINED:
        broken.append(f"stage 1 {p['stage1']:.1%}, not {STAGE1_ABOVE_UNTRAINED:.0%} above the untrained student")
    if broken:
        print("redi example: the pipeline is broken: " + "; ".join(broken), file=sys.stderr)
        return 1
    return 0


def mean_spread(values: list[float]) -> str:
    """'mean ± sample standard deviation [min-max]' in percent."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f} [{100 * min(values):.1f}-{100 * max(values):.1f}]"


def seeds(works: list[Path]) -> int:
    runs = [summarize(work) for work in works]
    print("| seed | pairs | stage 1 | (a) SFT-more | (b) REDI | REDI - SFT-more | pipeline s |")
    print("|---|---|---|---|---|---|---|")
    for s in runs:
        p = s["pass@1"]
        print(f"| {s['seed']} | {s['pairs']} | {p['stage1']:.1%} | {p['sft-more']:.1%} | {p['redi']:.1%} | "
              f"{100 * (p['redi'] - p['sft-more']):+.1f} | {s['seconds']['total']:.0f} |")
    col = {name: [s["pass@1"][name] for s in runs] for name in ARMS}
    diff = [s["pass@1"]["redi"] - s["pass@1"]["sft-more"] for s in runs]
    gain = {name: [s["pass@1"][name] - s["pass@1"]["stage1"] for s in runs] for name in ("sft-more", "redi")}
    print(f"\nover {len(runs)} seeds, held-out pass@1 in %, mean ± sd [min-max]:")
    print(f"  stage 1        {mean_spread(col['stage1'])}")
    print(f"  (a) SFT-more   {mean_spread(col['sft-more'])}   gain over stage 1 {mean_spread(gain['sft-more'])}")
    print(f"  (b) REDI       {mean_spread(col['redi'])}   gain over stage 1 {mean_spread(gain['redi'])}")
    print(f"  REDI - SFT-more, paired by seed: {mean_spread(diff)} points; REDI ahead on "
          f"{sum(d > 0 for d in diff)} of {len(diff)} seeds, behind on {sum(d < 0 for d in diff)}")
    stages = list(runs[0]["seconds"])
    print("\nseconds per stage, mean [min-max]:")
    for stage in stages:
        values = [s["seconds"].get(stage, float("nan")) for s in runs]
        print(f"  {stage:<18} {statistics.mean(values):7.1f} [{min(values):.1f}-{max(values):.1f}]")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--seeds":
        sys.exit(seeds([Path(arg) for arg in args[1:]]))
    if len(args) != 1:
        sys.exit(__doc__)
    sys.exit(one_run(Path(args[0])))
