"""Print the best-of-N example's results and draw them: accuracy against N for each selection method.

    python report.py WORK_DIR        # reads the eval-*.json, prm/prm_eval.json, scored.jsonl and timings.tsv of run.sh

stdout: the table (accuracy at N = 1, 2, 4, 8, 16 for majority, naive and weighted; pass@1, the mean over all
samples; the oracle pass@N, unbiased from rtool eval), the PRM's step accuracy and AUC, and stage timings.
WORK_DIR/bon.png: the same curves. Exit 1 when the pipeline is broken: a missing result, or a PRM no better than
chance at telling correct steps from wrong ones (held-out teacher steps, and the student's sampled steps labelled
exactly). A method that loses is a result, not a failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_prm import STEP_SEP, step_labels  # noqa: E402

from rtool.grade.metrics import auc  # noqa: E402

METHODS = [("majority", "majority vote"), ("naive", "PRM, best single (naive)"),
           ("weighted", "PRM-weighted vote")]
# AUC 0.5 is chance. The example's tiny PRM reaches ~0.68 on held-out teacher steps (seed 0), its untrained head on
# the teacher's backbone ~0.60; the gate catches a PRM that learned nothing, or a mismatch between how train_prm.py
# encodes steps and how prm-score reads them (scores at the wrong tokens: chance on the student's samples).
AUC_AT_LEAST, GAIN_AT_LEAST = 0.6, 0.03


def student_step_auc(work: Path) -> tuple[float | None, int, int]:
    """AUC of the PRM's step scores on the student's samples against exact labels; (auc, steps, correct steps)."""
    from rtool.prm.score import split_steps

    scores, labels = [], []
    for line in (work / "scored.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        steps = split_steps(row["completion"], STEP_SEP)
        if steps and len(steps) == len(row["step_scores"]):
            scores += row["step_scores"]
            labels += step_labels(row["problem"], steps)
    return auc(scores, labels), len(labels), sum(labels)


def draw(ns: list[int], curves: dict, pass1: float, oracle: list[float], greedy: float, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.4), dpi=120)
    ax.plot(ns, [100 * x for x in oracle], ":", color="grey", marker=".", label="oracle: pass@N")
    # Majority drawn wide and pale underneath: where a score-weighted vote picks the same answers, both show.
    styles = {"majority": ("tab:blue", "o", 5, 0.45), "naive": ("tab:orange", "s", 1.5, 1.0),
              "weighted": ("tab:green", "^", 1.5, 1.0)}
    for method, label in METHODS:
        color, marker, width, alpha = styles[method]
        ax.plot(ns, [100 * curves[method][n] for n in ns], "-", color=color, marker=marker, linewidth=width,
                alpha=alpha, label=label)
    ax.axhline(100 * pass1, color="black", linestyle="--", linewidth=1, label="pass@1 (mean over samples)")
    ax.axhline(100 * greedy, color="tab:red", linestyle="-.", linewidth=1, label="greedy decoding (one answer)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (samples per prompt)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no curve hidden
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(work: Path) -> int:
    samples = json.loads((work / "eval-samples.json").read_text())
    greedy = json.loads((work / "eval-greedy.json").read_text())["pass@1"]
    curves = {}
    for method, _ in METHODS:
        summary = json.loads((work / f"eval-bon-{method}.json").read_text())
        curves[method] = {int(n): at_n["accuracy"] for n, at_n in summary["bon"].items()}
    ns = sorted(curves["majority"])
    oracle = [samples[f"pass@{n}"] for n in ns]
    prompts = samples["prompts"]

    print(f"| N | {' | '.join(label for _, label in METHODS)} | pass@1 | oracle pass@N |")
    print("|---|" + "---|" * (len(METHODS) + 2))
    for n, best in zip(ns, oracle):
        cells = " | ".join(f"{curves[method][n]:.1%}" for method, _ in METHODS)
        print(f"| {n} | {cells} | {samples['pass@1']:.1%} | {best:.1%} |")
    print(f"\n{prompts} held-out prompts x {samples['samples_per_prompt']} samples from the weak student; its greedy "
          f"pass@1 {greedy:.1%}")

    prm = json.loads((work / "prm" / "prm_eval.json").read_text())
    held = prm["held_out"]
    student_auc, steps, good = student_step_auc(work)
    print(f"PRM steps, held-out teacher traces (+ corrupted copies): accuracy {held['step_accuracy']:.1%}, AUC "
          f"{held['auc']:.3f} ({held['steps']} steps, {held['correct_share']:.1%} correct; untrained AUC "
          f"{prm['untrained']['auc']:.3f})")
    shown = "n/a" if student_auc is None else f"{student_auc:.3f}"
    print(f"PRM steps, the student's samples (exact labels): AUC {shown} ({steps} steps, {good / steps:.1%} correct)")

    print("\n| stage | seconds |")
    print("|---|---|")
    for line in (work / "timings.tsv").read_text().splitlines():
        stage, seconds = line.split("\t")
        print(f"| {stage} | {seconds} |")

    draw(ns, curves, samples["pass@1"], oracle, greedy, work / "bon.png",
         f"Best-of-N on 3-digit addition: weak student, {prompts} held-out prompts")
    print(f"\npicture: {work / 'bon.png'}")
    weak = [name for name, value in (("held-out", held["auc"]), ("student samples", student_auc))
            if value is None or value < AUC_AT_LEAST]
    if held["auc"] is not None and held["auc"] < prm["untrained"]["auc"] + GAIN_AT_LEAST:
        weak.append(f"held-out (no better than untrained, {prm['untrained']['auc']:.3f})")
    if weak:
        print(f"bon example: the PRM is no better than chance on {', '.join(weak)} steps (AUC < {AUC_AT_LEAST})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
