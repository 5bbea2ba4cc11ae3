"""Print the curate example's results: the data stage (planted problems caught, difficulty, the teachers side by
side, which teacher the neutral student's NLL prefers) and the four arms (traces trained on, steps, tokens trained,
train seconds, held-out pass@1 split by the planted problems), and the run's wall time.

    python report.py WORK_DIR                 # one run of run.sh: the tables; writes WORK_DIR/summary.json
    python report.py --seeds WORK_DIR...      # several runs (CURATE_SEED=0,1,...): per seed, then mean and spread

Reads what run.sh wrote: planted-ids.jsonl, contaminated.jsonl, difficulty.jsonl, teachable.jsonl, teachers.json,
candidates.jsonl, the arms' data and trainer_state.json, eval-*.json(l), timings.tsv and run.json.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "quickstart"))
import arms  # noqa: E402 - examples/quickstart/arms.py: what the arm-comparing examples' reports share
from arms import read_json  # noqa: E402
from make_data import read_rows  # noqa: E402 - this directory's make_data.py, whose files it reads back

ARMS = {"all": "(a) all correct traces", "one-teacher": "(a2) the quickstart teacher's", "curated": "(b) curated",
        "teachable": "(c) curated, teachable"}
DATA = {"all": "traces-all.jsonl", "one-teacher": "traces-teacher.jsonl", "curated": "curated.jsonl",
        "teachable": "teachable-traces.jsonl"}
GRADES = ("trivial", "easy", "medium", "hard", "unsolved")
# A broken pipeline, not a result: the quickstart teacher reaches 99-100% greedy; the verbose one 64-99% after its
# 800 steps (CI trains it less); stage 1 at 550 steps 41-94% (seen so far).
TEACHER_AT_LEAST, VERBOSE_AT_LEAST, STAGE1_AT_LEAST = 0.90, 0.30, 0.20


def held_out_split(records: list[dict], planted_tests: set[str]) -> dict:
    """Greedy pass@1 on the held-out problems that were planted in the training prompts and on the others."""
    split = {"planted": [], "other": []}
    for row in records:
        split["planted" if str(row["id"]) in planted_tests else "other"].append(row["correct"] is True)
    return {part: sum(values) / len(values) if values else None for part, values in split.items()}


def percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def trained(run_dir: Path) -> dict:
    """Steps, tokens (prompt + completion) and the training loop's own seconds (transformers' train_runtime, without
    loading and saving), from the trainer's log: metrics.jsonl stops at the last logging step. The token count is
    the last logged one (the end summary carries it only when the last step was not a logging step)."""
    state = read_json(run_dir / "trainer_state.json")
    last = {key: entry[key] for entry in state["log_history"] for key in ("num_tokens", "train_runtime") if key in entry}
    return {"steps": state["global_step"], "tokens": last["num_tokens"], "seconds": last["train_runtime"]}


def summarize(work: Path) -> dict:
    """The numbers of one run, also written to WORK_DIR/summary.json for --seeds."""
    settings = read_json(work / "run.json")
    planted = {row["id"]: row["test_id"] for row in read_rows(work / "planted-ids.jsonl")}
    dropped = {row["id"] for row in read_rows(work / "contaminated.jsonl")}
    grades = Counter(row["difficulty"] for row in read_rows(work / "difficulty.jsonl"))
    teachers = read_json(work / "teachers.json")
    candidates = read_rows(work / "candidates.jsonl")
    nll_by_teacher: dict[str, list[float]] = {}
    for row in candidates:
        nll_by_teacher.setdefault(row["teacher"], []).append(row["nll"])
    curated_teachers = Counter(row["teacher"] for row in read_rows(work / "curated.jsonl"))
    # The verbose teacher cut short (CURATE_TEACHER_STEPS) is not evaluated.
    greedy = {name: read_json(work / f"eval-{name}.json")["pass@1"] if (work / f"eval-{name}.json").exists() else None
              for name in ("teacher", "verbose-teacher")}
    data = {}
    for arm, file in DATA.items():
        rows = [row for row in read_rows(work / file) if row["correct"] is True]  # what sft trains on
        data[arm] = {"traces": len(rows), "prompts": len({row["id"] for row in rows}),
                     "planted": len({row["id"] for row in rows} & planted.keys()),
                     "verbose share": sum(row["teacher"] == "verbose-teacher" for row in rows) / max(len(rows), 1)}
    planted_tests = set(planted.values())
    evals = {name: read_json(work / f"eval-{name}.json") for name in ("stage1", *(f"arm-{a}" for a in ARMS))}
    seconds = arms.timings(work)
    runs = {arm: trained(work / f"arm-{arm}") for arm in ARMS}
    summary = {
        "seed": settings["seed"], "keep": settings["keep"], "samples": settings["samples"],
        "prompts given": settings["prompts"], "teacher steps": settings["teacher_steps"],
        "neutral steps": settings["neutral_steps"], "arm steps cap": settings["arm_steps"],
        "planted": len(planted), "caught": len(dropped & planted.keys()),
        "clean dropped": len(dropped - planted.keys()),
        "prompts": sum(grades.values()), "grades": {grade: grades.get(grade, 0) for grade in GRADES},
        "teachable": len(read_rows(work / "teachable.jsonl")),
        "teachers": {name: {"sampled pass@1": t["pass@1"], "maj@n": t.get(f"maj@{round(t['samples_per_prompt'])}"),
                            "samples per prompt": t["samples_per_prompt"], "mean tokens": t["mean_tokens"],
                            "truncated": t["truncated_share"], "greedy pass@1": greedy[name],
                            "neutral nll": statistics.mean(nll_by_teacher.get(name, [float("nan")])),
                            "curated traces": curated_teachers.get(name, 0)}
                     for name, t in sorted(teachers.items())},
        "data": data,
        "tokens trained": {arm: runs[arm]["tokens"] for arm in ARMS},
        "steps": {arm: runs[arm]["steps"] for arm in ARMS},
        "train seconds": {arm: runs[arm]["seconds"] for arm in ARMS},
        "pass@1": {name: e["pass@1"] for name, e in evals.items()},
        "mean tokens": {name: e["mean_tokens"] for name, e in evals.items()},
        "held-out split": {name: held_out_split(read_rows(work / f"eval-{name}.jsonl"), planted_tests)
                           for name in evals},
        "seconds": seconds,
        "wall seconds": settings["wall_seconds"], "step 1 reused": settings["step 1 reused"],
        "load": settings.get("load"),
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def print_data_stage(s: dict) -> None:
    print(f"decontaminate: {s['caught']} of {s['planted']} planted held-out problems caught, {s['clean dropped']} "
          f"clean prompts dropped")
    grades = ", ".join(f"{grade} {count}" for grade, count in s["grades"].items())
    print(f"difficulty by stage 1's {s['samples']} samples of the {s['prompts']:,} clean prompts: {grades}; "
          f"--keep {s['keep']}: {s['teachable']:,} teachable")
    print("\n| teacher | held-out pass@1 (greedy) | samples per prompt | sampled pass@1 (T 0.8) | maj@n | "
          "mean tokens | truncated | neutral student's NLL / token | traces in (b) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t in s["teachers"].items():
        maj = "" if t["maj@n"] is None else f"{t['maj@n']:.1%}"
        print(f"| {name} | {percent(t['greedy pass@1'])} | {t['samples per prompt']:g} | {t['sampled pass@1']:.1%} | "
              f"{maj} | {t['mean tokens']:.0f} | {t['truncated']:.1%} | {t['neutral nll']:.3f} | "
              f"{t['curated traces']:,} |")


def print_arms(s: dict) -> None:
    print("\n| model | traces trained on | prompts | planted in them | verbose share | steps | tokens trained | "
          "train s | held-out pass@1 | on the planted | on the others | mean tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    split = s["held-out split"]
    stage1 = split["stage1"]
    print(f"| stage 1 | | | | | 550 | | | {s['pass@1']['stage1']:.1%} | {percent(stage1['planted'])} | "
          f"{percent(stage1['other'])} | {s['mean tokens']['stage1']:.0f} |")
    for arm, label in ARMS.items():
        d, name = s["data"][arm], f"arm-{arm}"
        print(f"| {label} | {d['traces']:,} | {d['prompts']:,} | {d['planted']} | {d['verbose share']:.0%} | "
              f"+{s['steps'][arm]} | {s['tokens trained'][arm]:,.0f} | {s['train seconds'][arm]:.0f} | "
              f"{s['pass@1'][name]:.1%} | {percent(split[name]['planted'])} | {percent(split[name]['other'])} | "
              f"{s['mean tokens'][name]:.0f} |")
    print(f"\nwall time of run.sh: {s['wall seconds']:.0f} s (step 1 {'reused' if s['step 1 reused'] else 'made'})")


def broken(s: dict) -> int:
    """1 with the reason on stderr when a stage did not do its job; never about which arm won."""
    problems = []
    if s["caught"] != s["planted"] or s["clean dropped"]:
        problems.append(f"decontaminate caught {s['caught']} of {s['planted']} planted problems and dropped "
                        f"{s['clean dropped']} clean prompts")
    greedy = {name: t["greedy pass@1"] for name, t in s["teachers"].items()}
    if greedy["teacher"] < TEACHER_AT_LEAST:
        problems.append(f"teacher {greedy['teacher']:.1%} (want >= {TEACHER_AT_LEAST:.0%})")
    # A verbose teacher trained fewer steps than verbose-teacher.yaml's (CURATE_TEACHER_STEPS, CI) has not learned
    # its format yet: it is not checked.
    if s["teacher steps"] is None and greedy["verbose-teacher"] < VERBOSE_AT_LEAST:
        problems.append(f"verbose teacher {greedy['verbose-teacher']:.1%} (want >= "
                        f"{VERBOSE_AT_LEAST:.0%})")
    if s["pass@1"]["stage1"] < STAGE1_AT_LEAST:
        problems.append(f"stage 1 {s['pass@1']['stage1']:.1%} (want >= {STAGE1_AT_LEAST:.0%})")
    empty = [arm for arm, d in s["data"].items() if not d["traces"]]
    if empty:
        problems.append(f"no training data for {', '.join(empty)}")
    if problems:
        print("curate example: the pipeline is broken: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def one_run(work: Path) -> int:
    s = summarize(work)
    print_data_stage(s)
    print_arms(s)
    arms.print_stages(s["seconds"], s["load"])
    return broken(s)


def seeds(works: list[Path]) -> int:
    runs = [summarize(work) for work in works]
    names = ("stage1", *(f"arm-{arm}" for arm in ARMS))
    print("| seed | caught | teachable | stage 1 | (a) all | (a2) one teacher | (b) curated | (c) teachable | "
          "traces (a) / (a2) / (b) / (c) | steps | tokens | train s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in runs:
        p = s["pass@1"]
        per_arm = {key: " / ".join(fmt(value[arm]) for arm in ARMS) for key, value, fmt in (
            ("traces", {arm: s["data"][arm]["traces"] for arm in ARMS}, "{:,}".format),
            ("steps", s["steps"], str), ("tokens", s["tokens trained"], lambda t: f"{t / 1e3:.0f}k"),
            ("seconds", s["train seconds"], lambda t: f"{t:.0f}"))}
        print(f"| {s['seed']} | {s['caught']}/{s['planted']} | {s['teachable']} | "
              + " | ".join(f"{p[name]:.1%}" for name in names)
              + f" | {per_arm['traces']} | {per_arm['steps']} | {per_arm['tokens']} | {per_arm['seconds']} | "
              f"{s['wall seconds']:.0f} |")
    print(f"\nover {len(runs)} seeds, held-out pass@1 in %, mean ± sd [min-max]:")
    for name in names:
        print(f"  {name:<16} {arms.mean_spread([s['pass@1'][name] for s in runs])}")
    # Each arm against (a), and the two curation steps on their own: (b) against all of the chosen teacher's
    # traces, (c) against (b). Compute: each arm's own epoch, so tokens and seconds follow its data.
    for arm, base in (("one-teacher", "all"), ("curated", "all"), ("teachable", "all"), ("curated", "one-teacher"),
                      ("teachable", "curated")):
        diff = [s["pass@1"][f"arm-{arm}"] - s["pass@1"][f"arm-{base}"] for s in runs]
        tokens = [s["tokens trained"][arm] / s["tokens trained"][base] for s in runs]
        secs = [s["train seconds"][arm] / s["train seconds"][base] for s in runs]
        print(f"  {arm} - {base}, paired by seed: {arms.mean_spread(diff)} points, ahead on "
              f"{sum(d > 0 for d in diff)} of {len(diff)}, behind on {sum(d < 0 for d in diff)}; tokens trained "
              f"{statistics.mean(tokens):.2f}x, train seconds {statistics.mean(secs):.2f}x")
    print("\nneutral student's NLL per token, by teacher, and traces (b) took from each:")
    for s in runs:
        print(f"  seed {s['seed']}: " + "; ".join(
            f"{name} {t['neutral nll']:.3f} ({t['curated traces']:,} traces)" for name, t in s["teachers"].items()))
    print("\nplanted prompts with a correct trace in (a), and caught by decontaminate: "
          + ", ".join(f"seed {s['seed']}: {s['data']['all']['planted']}, {s['caught']}/{s['planted']} caught, "
                      f"{s['clean dropped']} clean dropped" for s in runs))
    arms.print_stage_means(runs)
    return 0


if __name__ == "__main__":
    arms.main(one_run, seeds, __doc__)
