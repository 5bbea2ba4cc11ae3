"""Train the best-of-N example's process reward model (PRM) on the teacher's graded traces, with exact step labels.

    python train_prm.py --traces traces.jsonl --init teacher --out prm --seed 0   # prints the PRM dir

The quickstart's solutions are column additions, one step per line ("7+8+0=15, write 5 carry 1"). Each step is
therefore labelled exactly: it is correct when it and every step before it equal the gold solution's lines, which
make_task.py derives from the problem's digits (a step after the first wrong one is wrong too: the trace has left
the path to the answer, as in PRM800K's first-error labels and Math-Shepherd's). That is process supervision with
exact labels, possible only because the task is this mechanical; `rtool prm-label`/`prm-train` estimate labels
without such a checker.

Training rows: every teacher trace (correct and incorrect; a trace's prompt is the `prompt_messages` distill
recorded), plus, because the teacher is rarely wrong, one copy of some correct traces with one digit of one step
changed. The model follows the qwen-prm convention that `rtool prm-score --format qwen-prm` reads: a Llama
`LlamaForTokenClassification` with 2 labels, the teacher's character tokenizer plus the separator token `<extra_0>`,
the assistant turn being the steps each followed by `<extra_0>`, a label at each separator only. Inputs are encoded
by rtool's own `PRMScorer.encode`, so training and scoring read exactly the same tokens and positions. The backbone
starts from the teacher (Qwen2.5-Math-PRM likewise starts from a math-tuned LM): it already reads column sums.

A tenth of the prompts is held out; their step accuracy and AUC are printed to stderr and written to
OUT/prm_eval.json (run.sh fails when the PRM is no better than chance).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "quickstart"))
from make_task import add_solution  # noqa: E402  (the quickstart's gold solution, reused by path)

from rtool.grade.metrics import auc  # noqa: E402

STEP_SEP = "\n"  # one step per line; run.sh passes the same to rtool prm-score --step-sep
PROBLEM = re.compile(r"What is (\d+) \+ (\d+)\?")


def step_labels(problem: str, steps: list[str]) -> list[int]:
    """1 for each step that, with all steps before it, matches the gold solution of `problem`; else 0."""
    a, b = map(int, PROBLEM.fullmatch(problem.strip()).groups())
    gold = [line.strip() for line in add_solution(a, b).split("\n")]
    labels, on_path = [], True
    for index, step in enumerate(steps):
        on_path = on_path and index < len(gold) and step == gold[index]
        labels.append(int(on_path))
    return labels


def corrupt(completion: str, rng: random.Random) -> str | None:
    """The completion with one digit of one step changed (None when it has no digit)."""
    lines = completion.split(STEP_SEP)
    spots = [(i, j) for i, line in enumerate(lines) for j, ch in enumerate(line) if ch.isdigit()]
    if not spots:
        return None
    i, j = rng.choice(spots)
    line = lines[i]
    digit = rng.choice([d for d in "0123456789" if d != line[j]])
    lines[i] = line[:j] + digit + line[j + 1:]
    return STEP_SEP.join(lines)


def build_init(teacher_dir: Path, out_dir: Path, seed: int) -> None:
    """The teacher's backbone under a fresh 2-label token-classification head, its tokenizer plus `<extra_0>`."""
    import torch
    import transformers
    from transformers import AutoTokenizer, LlamaForTokenClassification

    from rtool.prm.score import QWEN_SEPARATOR

    transformers.logging.set_verbosity_error()  # the head is new on purpose: no "newly initialized" report

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    tokenizer.add_tokens([QWEN_SEPARATOR])
    torch.manual_seed(seed)
    model = LlamaForTokenClassification.from_pretrained(teacher_dir, num_labels=2, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.architectures = ["LlamaForTokenClassification"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def examples(rows: list[dict], scorer, rng: random.Random, corrupt_share: float) -> list[tuple]:
    """(ids, positions, labels) for each trace, plus corrupted copies of a share of the correct ones."""
    from rtool.prm.score import split_steps

    out = []
    for row in rows:
        completions = [row["completion"]]
        if row.get("correct") is True and rng.random() < corrupt_share:
            bad = corrupt(row["completion"], rng)
            if bad is not None:
                completions.append(bad)
        for completion in completions:
            encoded = scorer.encode(row["prompt_messages"], completion)
            if encoded.steps:
                labels = step_labels(row["problem"], split_steps(completion, STEP_SEP))
                out.append((encoded.ids, encoded.positions, labels))
    return out


def evaluate(scorer, items: list[tuple]) -> dict:
    """Step accuracy (threshold 0.5), AUC and the share of correct steps on `items`, scored as prm-score does."""
    from rtool.prm.score import Encoded

    scorer.model.eval()
    encoded = [Encoded(ids, positions, len(positions)) for ids, positions, _ in items]
    scores: list[list[float]] = [[] for _ in items]
    for batch in scorer.score_batches(encoded, batch_size=64):
        for index, values in batch:
            scores[index] = values
    flat = [s for row in scores for s in row]
    labels = [label for _, _, row in items for label in row]
    accuracy = sum((s > 0.5) == bool(label) for s, label in zip(flat, labels)) / len(labels)
    return {"steps": len(labels), "correct_share": sum(labels) / len(labels), "step_accuracy": accuracy,
            "auc": auc(flat, labels)}


def train(scorer, items: list[tuple], steps: int, batch_size: int, lr: float, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = scorer.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)  # linear decay
    pad = scorer.tokenizer.pad_token_id
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(items)), len(items))
        batch, order = [items[i] for i in order[:batch_size]], order[batch_size:]
        width = max(len(ids) for ids, _, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)  # ignored everywhere but at the separators
        for row, (ids, positions, step_labels_) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
            labels[row, positions] = torch.tensor(step_labels_)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"prm step {step + 1}/{steps} loss {loss.item():.4f}", file=sys.stderr, flush=True)
    model.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", required=True, type=Path, help="rtool distill output (graded, negatives kept)")
    parser.add_argument("--init", required=True, type=Path, help="the model whose backbone the PRM starts from")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps (default 400)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, decayed linearly (default 1e-3)")
    parser.add_argument("--corrupt-share", type=float, default=0.5,
                        help="share of correct traces that also get a one-digit-corrupted copy (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from rtool.prm.score import PRMScorer

    rows = [json.loads(line) for line in args.traces.open(encoding="utf-8") if line.strip()]
    ids = sorted({row["id"] for row in rows})
    rng = random.Random(args.seed)
    held = set(rng.sample(ids, len(ids) // 10))
    build_init(args.init, args.out, args.seed)
    scorer = PRMScorer.load(str(args.out), format="qwen-prm", step_sep=STEP_SEP, device="cpu", dtype="float32")
    train_items = examples([r for r in rows if r["id"] not in held], scorer, rng, args.corrupt_share)
    held_items = examples([r for r in rows if r["id"] in held], scorer, rng, args.corrupt_share)
    positives = sum(label for _, _, labels in train_items for label in labels)
    total = sum(len(labels) for _, _, labels in train_items)
    print(f"prm: {len(train_items)} training traces, {total} steps ({positives / total:.1%} correct); "
          f"{len(held_items)} held out", file=sys.stderr, flush=True)
    before = evaluate(scorer, held_items)
    train(scorer, train_items, args.steps, args.batch_size, args.lr, args.seed)
    after = evaluate(scorer, held_items)
    print(f"prm held-out steps: accuracy {after['step_accuracy']:.1%} (untrained {before['step_accuracy']:.1%}), "
          f"AUC {after['auc']:.3f} (untrained {before['auc']:.3f}), {after['correct_share']:.1%} correct",
          file=sys.stderr, flush=True)
    scorer.model.save_pretrained(args.out, safe_serialization=True)
    (args.out / "prm_eval.json").write_text(json.dumps({"held_out": after, "untrained": before,
                                                        "train_traces": len(train_items), "steps": args.steps}))
    print(args.out)


if __name__ == "__main__":
    main()
