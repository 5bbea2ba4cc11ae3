"""Print the PRM example's results and draw them: accuracy against N, and how good the labels and the PRM are.

    python report.py WORK_DIR              # one run of run.sh: tables on stdout, WORK_DIR/prm.png
    python report.py --mean DIR DIR ...    # the mean best-of-N table over finished runs (seeds)

stdout: best-of-N accuracy at N = 1, 2, 4, 8, 16 (majority, naive, weighted; pass@1; oracle pass@N); the step labels
(prm-label with k rollouts on the training traces, and with more rollouts on held-out traces) against the exact
labels of examples/bon/train_prm.py; the PRM's step accuracy and AUC on held-out steps against prm-label's labels
(prm-train's eval split), the reference labels and the exact labels; the stage timings. The picture and the exact
labels come from examples/bon (report.py's draw, train_prm.py's step_labels; auc is rtool.grade.metrics'), imported by path.
Exit 1 when the pipeline is broken: a missing result, or a PRM no better than chance on held-out steps (prm-train's
eval AUC, or the AUC against exact labels on the student's held-out samples). A method that loses is a result.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

BON_DIR = Path(__file__).resolve().parent.parent / "bon"


def _by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bon_report = _by_path("bon_report", BON_DIR / "report.py")  # it puts examples/bon on sys.path for train_prm
from train_prm import STEP_SEP, step_labels  # noqa: E402

from rtool.grade.metrics import auc  # noqa: E402

METHODS = bon_report.METHODS
# AUC 0.5 is chance. The example's tiny PRM reaches 0.69-0.72 on prm-train's held-out steps and 0.67-0.77 against
# exact labels on the student's samples (seeds 0-2, RESULTS.md); the gate catches a PRM that learned nothing, or
# scores read at the wrong tokens (chance on the student's samples).
AUC_AT_LEAST = 0.6


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def curves_of(work: Path) -> tuple[list[int], dict, dict, dict]:
    samples = json.loads((work / "eval-samples.json").read_text())
    greedy = json.loads((work / "eval-greedy.json").read_text())
    curves = {}
    for method, _ in METHODS:
        summary = json.loads((work / f"eval-bon-{method}.json").read_text())
        curves[method] = {int(n): at_n["accuracy"] for n, at_n in summary["bon"].items()}
    return sorted(curves["majority"]), curves, samples, greedy


def print_bon(ns, curves, pass1: float, oracle: list[float]) -> None:
    print(f"| N | {' | '.join(label for _, label in METHODS)} | pass@1 | oracle pass@N |")
    print("|---|" + "---|" * (len(METHODS) + 2))
    for n, best in zip(ns, oracle):
        cells = " | ".join(f"{curves[method][n]:.1%}" for method, _ in METHODS)
        print(f"| {n} | {cells} | {pass1:.1%} | {best:.1%} |")


def agreement(labels: list[int], exact: list[int]) -> str:
    """Accuracy of 0/1 labels against exact ones, with the two error kinds."""
    n = len(labels)
    right = sum(a == b for a, b in zip(labels, exact))
    false_pos = sum(a == 1 and b == 0 for a, b in zip(labels, exact))
    false_neg = sum(a == 0 and b == 1 for a, b in zip(labels, exact))
    wrong = n - sum(exact)
    return (f"{right / n:.1%} agree ({n} steps, {sum(labels) / n:.1%} labelled 1, exactly {sum(exact) / n:.1%}); "
            f"1 on a wrong step {false_pos}/{wrong}, 0 on a right step {false_neg}/{n - wrong}")


def label_table(path: Path) -> tuple[list[int], list[int], dict]:
    """(labels, exact labels, {(id, sample): labels}) of a prm-label output, step by step."""
    labels, exact, by_trace = [], [], {}
    for row in rows(path):
        labels += row["step_labels"]
        exact += step_labels(row["problem"], row["steps"])
        by_trace[(row["id"], row["sample"])] = row["step_labels"]
    return labels, exact, by_trace


def scored_steps(work: Path) -> list[tuple]:
    """(id, sample, step scores, exact labels) of each scored held-out sample."""
    from rtool.prm.score import split_steps

    out = []
    for row in rows(work / "scored.jsonl"):
        steps = split_steps(row["completion"], STEP_SEP)
        if steps and len(steps) == len(row["step_scores"]):
            out.append((row["id"], row["sample"], row["step_scores"], step_labels(row["problem"], steps)))
    return out


def judged(scores: list[float], labels: list[int]) -> tuple[str, float | None]:
    """'accuracy, AUC' of step scores against 0/1 labels (threshold 0.5), and the AUC."""
    value = auc(scores, labels)
    accuracy = sum((s > 0.5) == bool(label) for s, label in zip(scores, labels)) / len(labels)
    shown = "n/a" if value is None else f"{value:.3f}"
    return f"accuracy {accuracy:.1%}, AUC {shown} ({len(labels)} steps, {sum(labels) / len(labels):.1%} 1)", value


def last_eval(work: Path) -> dict:
    evals = [row for row in rows(work / "prm" / "metrics.jsonl") if "eval_loss" in row]
    return evals[-1] if evals else {}


def main(work: Path) -> int:
    ns, curves, samples, greedy = curves_of(work)
    oracle = [samples[f"pass@{n}"] for n in ns]
    print_bon(ns, curves, samples["pass@1"], oracle)
    print(f"\n{samples['prompts']} held-out prompts x {samples['samples_per_prompt']} samples from the weak student; "
          f"its greedy pass@1 {greedy['pass@1']:.1%}")

    labelled = rows(work / "labelled.jsonl")
    k = labelled[0]["prm_labeling"]["k"]
    labels, exact, _ = label_table(work / "labelled.jsonl")
    correct = sum(bool(row.get("correct")) for row in labelled) / len(labelled)
    print(f"\nStep labels against the exact ones (examples/bon/train_prm.py's step_labels):")
    print(f"  prm-label k={k}, {len(labelled)} training traces ({correct:.1%} correct): {agreement(labels, exact)}")
    reference = rows(work / "reference.jsonl")
    ref_k = reference[0]["prm_labeling"]["k"]
    ref_labels, ref_exact, ref_by_trace = label_table(work / "reference.jsonl")
    print(f"  prm-label k={ref_k}, {len(reference)} held-out traces (the reference): "
          f"{agreement(ref_labels, ref_exact)}")

    held = last_eval(work)
    held_auc = held.get("eval_auc")
    print(f"\nThe PRM's held-out steps:")
    print(f"  prm-train's eval split (k={k} labels): accuracy {held.get('eval_accuracy', float('nan')):.1%}, AUC "
          + ("n/a" if held_auc is None else f"{held_auc:.3f}"))
    scored = scored_steps(work)
    on_ref = [(scores, ref_by_trace[(i, s)], ex) for i, s, scores, ex in scored
              if (i, s) in ref_by_trace and len(ref_by_trace[(i, s)]) == len(scores)]
    text, _ = judged([x for s, _, _ in on_ref for x in s], [x for _, r, _ in on_ref for x in r])
    print(f"  reference traces, k={ref_k} labels: {text}")
    text, _ = judged([x for s, _, _ in on_ref for x in s], [x for _, _, e in on_ref for x in e])
    print(f"  reference traces, exact labels: {text}")
    text, exact_auc = judged([x for _, _, s, _ in scored for x in s], [x for _, _, _, e in scored for x in e])
    print(f"  all {len(scored)} held-out samples, exact labels: {text}")
    # A step's position alone predicts its label (the later, the likelier after an error): AUC within a position
    # is what the PRM knows about the step itself.
    within = []
    for position in range(4):
        value = auc([s[position] for _, _, s, _ in scored if len(s) > position],
                    [e[position] for _, _, _, e in scored if len(e) > position])
        within.append("n/a" if value is None else f"{value:.3f}")
    print(f"  the same, within step position 1 / 2 / 3 / 4: AUC {' / '.join(within)}")

    print("\n| stage | seconds |")
    print("|---|---|")
    for line in (work / "timings.tsv").read_text().splitlines():
        stage, seconds = line.split("\t")
        print(f"| {stage} | {seconds} |")
    load = work / "load.txt"
    if load.exists():
        print("load average (1, 5, 15 min), start / end: " + " / ".join(load.read_text().split("\n")[:2]))

    bon_report.draw(ns, curves, samples["pass@1"], oracle, greedy["pass@1"], work / "prm.png",
                    f"Best-of-N with a PRM trained on prm-label's labels: weak student, {samples['prompts']} "
                    f"held-out prompts")
    print(f"\npicture: {work / 'prm.png'}")
    weak = [f"{name} (AUC {'n/a' if value is None else f'{value:.3f}'})"
            for name, value in (("prm-train's eval split", held_auc), ("the held-out samples, exact labels",
                                                                        exact_auc))
            if value is None or value < AUC_AT_LEAST]
    if weak:
        print(f"prm example: the PRM is no better than chance on {', '.join(weak)}; want AUC >= {AUC_AT_LEAST}",
              file=sys.stderr)
        return 1
    return 0


def mean(works: list[Path]) -> int:
    runs = [curves_of(work) for work in works]
    ns = runs[0][0]
    curves = {method: {n: statistics.mean(run[1][method][n] for run in runs) for n in ns} for method, _ in METHODS}
    pass1 = statistics.mean(run[2]["pass@1"] for run in runs)
    oracle = [statistics.mean(run[2][f"pass@{n}"] for run in runs) for n in ns]
    greedy = statistics.mean(run[3]["pass@1"] for run in runs)
    print(f"mean over {len(runs)} runs ({', '.join(str(work) for work in works)}); greedy pass@1 {greedy:.1%}\n")
    print_bon(ns, curves, pass1, oracle)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mean"]:
        sys.exit(mean([Path(arg) for arg in sys.argv[2:]]))
    sys.exit(main(Path(sys.argv[1])))
