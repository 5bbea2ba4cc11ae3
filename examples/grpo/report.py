"""Print the GRPO example's results: held-out pass@1 of stage 1, GRPO and the control, GRPO's curves, the timings.

    python report.py WORK_DIR                 # one run of run.sh: the table; writes WORK_DIR/summary.json
    python report.py --seeds WORK_DIR...      # several runs (GRPO_SEED=0,1,...): per seed, then mean and spread

Reads what run.sh wrote: eval-*.json, traces.jsonl, timings.tsv, run.json and each training run's metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "quickstart"))
import arms  # noqa: E402 - examples/quickstart/arms.py: what the arm-comparing examples' reports share
from arms import last_step, mean_spread, metrics, read_json  # noqa: E402

# A stage-1 student that learned something is above 0% (20-60% at run.sh's 500 steps), one that did not stays at it.
STAGE1_ABOVE_UNTRAINED = 0.05
ARMS = ("stage1", "grpo", "sft-more")
# The first and last logged GRPO rows averaged for "start" and "end": 3, as RESULTS.md's numbers were made (rtool grpo's
# failure curves now average --watch-window 5 steps; this report is a summary, not the detector).
WINDOW = 3


def mean_of(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def grpo_curves(run_dir: Path) -> dict:
    """GRPO's logged signal at the start and the end (means of the first and last WINDOW logged rows): the reward
    (accuracy of the sampled groups), the share of groups with no signal, completion length; and any flags."""
    rows = [row for row in metrics(run_dir) if "reward" in row]
    first, last = rows[:WINDOW], rows[-WINDOW:]
    out = {key: {"start": mean_of(first, key), "end": mean_of(last, key)}
           for key in ("reward", "zero_std_share", "completions/mean_length", "entropy")}
    out["flags"] = sorted({flag for row in rows for flag in row.get("flags", [])})
    return out


def summarize(work: Path) -> dict:
    """The numbers of one run, also written to WORK_DIR/summary.json for --seeds."""
    settings = read_json(work / "run.json")
    traces = [json.loads(line) for line in (work / "traces.jsonl").open()]
    evals = {name: read_json(work / f"eval-{name}.json") for name in ("teacher", "student-init", *ARMS)}
    summary = {
        "seed": settings["seed"], "temperature": settings.get("temperature"),
        "samples": len(traces), "positives": sum(row["correct"] is True for row in traces),
        "steps": {name: last_step(work / name) for name in ARMS},
        "pass@1": {name: e["pass@1"] for name, e in evals.items()},
        "mean_tokens": {name: e.get("mean_tokens") for name, e in evals.items()},
        "grpo": grpo_curves(work / "grpo"),
        "seconds": arms.timings(work),
        "load": settings.get("load"),
        "sampled": arms.sampled(work, ARMS),
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def one_run(work: Path) -> int:
    s = summarize(work)
    p, steps, secs, tokens, g = s["pass@1"], s["steps"], s["seconds"], s["mean_tokens"], s["grpo"]
    rows = [
        ("teacher (SFT on gold solutions)", "teacher", "", secs.get("sft teacher")),
        ("student, untrained", "student-init", "", None),
        (f"stage 1: SFT on {s['positives']:,} correct traces", "stage1", f"{steps['stage1']}", secs["stage 1 sft"]),
        ("(a) stage 1 + GRPO, accuracy reward", "grpo", f"+{steps['grpo']}", secs["arm a: grpo"]),
        ("(b) stage 1 + more SFT on the correct traces", "sft-more", f"+{steps['sft-more']}", secs["arm b: sft-more"]),
    ]
    arms.print_models(rows, p, s["sampled"], s["temperature"], tokens=tokens)
    print(f"\nGRPO - SFT-more: {100 * (p['grpo'] - p['sft-more']):+.1f} points held-out pass@1 (greedy) after "
          f"{steps['grpo']} and {steps['sft-more']} extra steps (seed {s['seed']}; RESULTS.md has several seeds)")
    print(f"GRPO's groups, first -> last {WINDOW} logged steps: reward (accuracy at T {s['temperature']:g}) "
          f"{pct(g['reward']['start'])} -> {pct(g['reward']['end'])}; groups all right or all wrong (no signal) "
          f"{pct(g['zero_std_share']['start'])} -> {pct(g['zero_std_share']['end'])}; completion length "
          f"{g['completions/mean_length']['start']:.1f} -> {g['completions/mean_length']['end']:.1f} tokens; "
          "failure curves: "
          f"{', '.join(g['flags']) or 'none'}")
    arms.print_stages(s["seconds"], s["load"])
    return arms.broken(p, "grpo example", stage1_above=STAGE1_ABOVE_UNTRAINED)


def seeds(works: list[Path]) -> int:
    runs = [summarize(work) for work in works]
    sampled = all(s["sampled"] for s in runs)
    print("| seed | teacher | stage 1 | (a) GRPO | (b) SFT-more | GRPO - SFT-more | GRPO reward start -> end | "
          "no-signal groups start -> end | flags | pipeline s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in runs:
        p, g = s["pass@1"], s["grpo"]
        print(f"| {s['seed']} | {p['teacher']:.1%} | {p['stage1']:.1%} | {p['grpo']:.1%} | {p['sft-more']:.1%} | "
              f"{100 * (p['grpo'] - p['sft-more']):+.1f} | {pct(g['reward']['start'])} -> {pct(g['reward']['end'])} | "
              f"{pct(g['zero_std_share']['start'])} -> {pct(g['zero_std_share']['end'])} | "
              f"{', '.join(g['flags']) or '-'} | {s['seconds']['total']:.0f} |")
    if sampled:
        t = runs[0]["temperature"]
        print(f"\nsampled at T {t:g} (4 per held-out prompt), pass@1 / pass@4:")
        print("| seed | stage 1 | (a) GRPO | (b) SFT-more |")
        print("|---|---|---|---|")
        for s in runs:
            cells = [f"{s['sampled'][n]['pass@1']:.1%} / {s['sampled'][n]['pass@4']:.1%}" for n in ARMS]
            print(f"| {s['seed']} | " + " | ".join(cells) + " |")
    print("\nmean completion tokens (greedy, held-out):")
    for s in runs:
        print(f"  seed {s['seed']}: " + ", ".join(f"{n} {s['mean_tokens'][n]:.1f}" for n in ("teacher", *ARMS)))
    arms.print_arm_means(runs, "stage1", ("sft-more", "(b) SFT-more"), ("grpo", "(a) GRPO"), "pass@1 (greedy)")
    if sampled:
        sg = [s["sampled"]["grpo"]["pass@1"] - s["sampled"]["stage1"]["pass@1"] for s in runs]
        ss = [s["sampled"]["sft-more"]["pass@1"] - s["sampled"]["stage1"]["pass@1"] for s in runs]
        print(f"  sampled pass@1 gain over stage 1: GRPO {mean_spread(sg)}, SFT-more {mean_spread(ss)}")
    arms.print_stage_means(runs)
    print("load average (1, 5, 15 min) at start / end: " + "; ".join(
        f"seed {s['seed']} {s['load']['start']} / {s['load']['end']}" for s in runs if s.get("load")))
    return 0


if __name__ == "__main__":
    arms.main(one_run, seeds, __doc__)
