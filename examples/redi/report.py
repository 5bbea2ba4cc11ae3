"""Print the REDI example's results: held-out pass@1 of stage 1 and both arms, the pairs, the steps, the timings.

    python report.py WORK_DIR                 # one run of run.sh: the table; writes WORK_DIR/summary.json
    python report.py --seeds WORK_DIR...      # several runs (REDI_SEED=0,1,...): per seed, then mean and spread

Reads what run.sh wrote: eval-*.json, traces.jsonl, timings.tsv, run.json and each training run's metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "quickstart"))
import arms  # noqa: E402 - examples/quickstart/arms.py: what the arm-comparing examples' reports share
from arms import last_step, read_json  # noqa: E402

# A stage-1 student that learned the algorithm is far above 0% (60-90% at 550 steps), one that did not stays near it.
STAGE1_ABOVE_UNTRAINED = 0.20
ARMS = ("stage1", "sft-more", "redi")


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
    summary = {
        "seed": settings["seed"], "alpha": float(alpha),
        "samples": len(traces), "positives": sum(row["correct"] is True for row in traces),
        # --pairs first: one pair per prompt with both a correct and an incorrect sample.
        "pairs": sum(1 for grades in by_prompt.values() if True in grades and False in grades),
        "steps": {name: last_step(work / name) for name in ARMS},
        "pass@1": {name: read_json(work / f"eval-{name}.json")["pass@1"]
                   for name in ("teacher", "student-init", *ARMS)},
        "seconds": arms.timings(work),
        "load": settings.get("load"),
        "sampled": arms.sampled(work, ARMS),
    }
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
    arms.print_models(rows, p, s["sampled"], temperature=0.8)
    print(f"\nREDI - SFT-more: {100 * (p['redi'] - p['sft-more']):+.1f} points held-out pass@1 after {extra} "
          f"extra steps each (seed {s['seed']}; RESULTS.md has several seeds)")
    print(f"traces: {s['samples']} samples, {s['positives']} correct; {s['pairs']} prompts with both a correct and "
          f"an incorrect sample (one pair each)")
    arms.print_stages(s["seconds"], s["load"])
    return arms.broken(p, "redi example", stage1_above=STAGE1_ABOVE_UNTRAINED)


def seeds(works: list[Path]) -> int:
    runs = [summarize(work) for work in works]
    print("| seed | pairs | stage 1 | (a) SFT-more | (b) REDI | REDI - SFT-more | pipeline s |")
    print("|---|---|---|---|---|---|---|")
    for s in runs:
        p = s["pass@1"]
        print(f"| {s['seed']} | {s['pairs']} | {p['stage1']:.1%} | {p['sft-more']:.1%} | {p['redi']:.1%} | "
              f"{100 * (p['redi'] - p['sft-more']):+.1f} | {s['seconds']['total']:.0f} |")
    arms.print_arm_means(runs, "stage1", ("sft-more", "(a) SFT-more"), ("redi", "(b) REDI"))
    arms.print_stage_means(runs)
    return 0


if __name__ == "__main__":
    arms.main(one_run, seeds, __doc__)
