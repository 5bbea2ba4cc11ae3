"""The curate example's data: training prompts with held-out problems planted in them, and a verbose teacher's
training set and initial weights.

    python make_data.py planted --train data/train.jsonl --test data/test.jsonl --count 50 --seed 0 \\
        --out prompts.jsonl --planted-out planted.jsonl --map-out planted-ids.jsonl
    python make_data.py verbose --train data/train.jsonl --tokenizer student-init --seed 0 \\
        --out verbose-train.jsonl --model-out verbose-teacher-init

`planted`: the training rows plus COUNT held-out problems copied in as a scraped training set would hold them:
the same question with its case and spacing changed ("WHAT IS 347 + 158?", "what  is 347 +  158 ?"), its gold
answer with it, a training-style id, shuffled among the rest. `planted.jsonl` holds the planted rows alone (for
the teacher whose other traces exist already), `planted-ids.jsonl` which held-out row each copies (`id`, `test_id`):
the report counts how many decontamination caught and splits the held-out accuracy by them; no rtool command reads it.

`verbose`: the training rows with each gold solution padded with redundant restatements, the way a verbose
reasoning model writes (the question restated before the columns, "Let me check: ..." after them): the same
algorithm and answer in ~2x the characters. Also a fresh tiny Llama sized like the quickstart's teacher, on the
student's tokenizer (a character tokenizer that already covers every letter and punctuation mark), saved to
--model-out.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

# The quickstart's problems and gold lines (examples/quickstart/make_task.py).
PROBLEM = re.compile(r"What is (\d+) \+ (\d+)\?")
COLUMN = re.compile(r"(\d+)\+(\d+)\+(\d+)=(\d+), write (\d+)(?: carry (\d+))?$")

# Case and spacing as scraped copies vary them; every variant normalises to the same words as the original.
VARIANTS = (
    lambda q: q.upper(),
    lambda q: q.lower(),
    lambda q: q.replace(" ", "  "),
    lambda q: q.replace("?", " ?").replace("+", " +  "),
    lambda q: "  " + q.replace("What is", "what IS") + "\n",
    lambda q: q.replace("What is ", "What is\n"),
)


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_rows(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def planted_prompts(train: list[dict], test: list[dict], count: int, seed: int):
    """The training rows with `count` held-out problems planted among them, the planted rows, and their
    (planted id, test id) pairs."""
    rng = random.Random(seed)
    chosen = rng.sample(test, count)
    planted, ids = [], []
    for i, row in enumerate(chosen):
        row_id = f"q{len(train) + len(test) + i:05d}"  # numbered on from the task's ids, like any other row
        question = VARIANTS[i % len(VARIANTS)](row["problem"])
        planted.append({"id": row_id, "problem": question, "solution": row["solution"], "answer": row["answer"]})
        ids.append({"id": row_id, "test_id": row["id"]})
    rows = train + planted
    rng.shuffle(rows)
    return rows, planted, ids


def verbose_solution(problem: str, solution: str) -> str:
    """The gold column-addition solution with the question restated before it and the sum restated after it."""
    question = PROBLEM.fullmatch(problem)
    if question is None:
        raise ValueError(f"not a quickstart addition problem: {problem!r}")
    a, b = question.groups()
    *columns, answer = solution.splitlines()
    if not columns or not all(COLUMN.match(line) for line in columns):
        raise ValueError(f"not a quickstart solution: {solution!r}")
    restated = f"We need {a} + {b}. In other words, we add {a} and {b}, column by column."
    checked = f"Let me check: {a} + {b} = {int(a) + int(b)}."
    return "\n".join([restated, *columns, checked, answer])


def build_verbose_teacher(tokenizer_dir: Path, out: Path, seed: int) -> Path:
    """A fresh tiny Llama the size of the quickstart's teacher (build_models.py's defaults), on the student's
    tokenizer."""
    from transformers import AutoTokenizer

    from rtool.tiny import save_tiny, tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # seed + 2: build_models.py seeds the teacher with `seed` and the student with `seed + 1`.
    model = tiny_llama(tokenizer, hidden_size=64, num_layers=2, num_heads=4, seed=seed + 2)
    return save_tiny(model, tokenizer, out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plant = commands.add_parser("planted", help="training prompts with held-out problems planted in them")
    plant.add_argument("--train", required=True, type=Path)
    plant.add_argument("--test", required=True, type=Path)
    plant.add_argument("--count", type=int, default=50)
    plant.add_argument("--seed", type=int, default=0)
    plant.add_argument("--out", required=True, type=Path)
    plant.add_argument("--planted-out", required=True, type=Path)
    plant.add_argument("--map-out", required=True, type=Path)
    verbose = commands.add_parser("verbose", help="a verbose teacher's training set and initial weights")
    verbose.add_argument("--train", required=True, type=Path)
    verbose.add_argument("--tokenizer", required=True, type=Path, help="the student's model dir")
    verbose.add_argument("--seed", type=int, default=0)
    verbose.add_argument("--out", required=True, type=Path)
    verbose.add_argument("--model-out", required=True, type=Path)
    args = parser.parse_args(argv)

    train = read_rows(args.train)
    if args.command == "planted":
        test = read_rows(args.test)
        if not 0 < args.count <= len(test):
            parser.error(f"--count must be in 1..{len(test)}")
        rows, planted, ids = planted_prompts(train, test, args.count, args.seed)
        for path, part in ((args.out, rows), (args.planted_out, planted), (args.map_out, ids)):
            write_rows(path, part)
            print(path)
    else:
        try:
            padded = [{**row, "solution": verbose_solution(row["problem"], row["solution"])} for row in train]
        except ValueError as err:
            parser.error(f"{args.train}: {err}")
        write_rows(args.out, padded)
        print(args.out)
        print(build_verbose_teacher(args.tokenizer, args.model_out, args.seed))


if __name__ == "__main__":
    main()
