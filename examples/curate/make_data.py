"""The curate example's data: the held-out problems as a benchmark words them, training prompts with some of them
planted in them, a verbose teacher's training set and initial weights, and a neutral student's training set.

    python make_data.py bench --test data/test.jsonl --out bench.jsonl
    python make_data.py planted --train data/train.jsonl --bench bench.jsonl --traces traces.jsonl --prompts 1000 \\
        --count 50 --seed 0 --out prompts.jsonl --planted-out planted.jsonl --map-out planted-ids.jsonl \\
        --traces-out traces-kept.jsonl
    python make_data.py verbose --train data/train.jsonl --tokenizer student-init --seed 0 \\
        --out verbose-train.jsonl --model-out verbose-teacher-init
    python make_data.py neutral --train data/train.jsonl --out neutral-train.jsonl

`bench`: each held-out problem as a sentence of 14 words, "Take the numbers 347 and 158 and add them. What is 347 +
158?": long enough for open-r1's word 8-grams (the task's own "What is 347 + 158?" has 5 words, so no 8-gram rule
can catch a copy of it). Every 8-word window of it holds both numbers, in both tokenisations (open-r1's, which keeps
punctuation on its words, and rtool's loose one, which drops it), so a window is shared only by the same problem:
the stock words alone match nothing.

`planted`: the first PROMPTS training rows plus COUNT bench problems copied in as a scraped training set would hold
them, lightly paraphrased: case and spacing changed and a word changed or added at one end ("USE THE NUMBERS 347 AND
158 AND ADD THEM. ...", "... What is 347 + 158? Show your work."), so none equals its bench row as a string or
after normalisation and what catches it is the 8-gram windows the edit left whole; with its gold answer, a
training-style id, shuffled among the rest. `planted.jsonl` holds the planted rows alone (for the teacher whose
other traces exist already), `planted-ids.jsonl` which held-out row each copies (`id`, `test_id`): the report counts
how many decontamination caught and splits the held-out accuracy by them; no rtool command reads it.
`--traces-out`: the rows of --traces (step 1's teacher traces) whose prompt is among the PROMPTS kept.

`verbose`: the training rows with each gold solution padded with redundant restatements, the way a verbose
reasoning model writes (the question restated before the columns, "Let me check: ..." after them): the same
algorithm and answer in ~2x the characters. Also a fresh tiny Llama sized like the quickstart's teacher, on the
student's tokenizer (a character tokenizer that already covers every letter and punctuation mark), saved to
--model-out.

`neutral`: the training rows with each gold solution in a third notation, neither teacher's ("7 plus 8 plus 0 is
15; put 5, carry 1"), for the student whose NLL ranks the teachers' traces: it learns the task from it, not either
teacher's way of writing it.
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
BENCH = "Take the numbers {a} and {b} and add them. What is {a} + {b}?"

# Light paraphrases of a bench problem, as scraped copies vary one: each changes the case or the spacing and a word
# at one end, so it is not the bench text even after normalisation, and leaves at least one 8-word window of it
# whole under both tokenisations (the windows that hold the edit are lost; the others are not).
VARIANTS = (
    lambda q: q.replace("Take", "Use", 1).upper(),
    lambda q: "Problem:  " + q.lower().replace(" and ", "  and "),
    lambda q: q.replace(". ", ".\n") + " Show your work.",
    lambda q: "  " + q.replace("Take", "Add", 1).lower() + "\n",
    lambda q: q.replace("What is", "So what is").swapcase(),
    lambda q: q.replace("Take the", "Take  the two", 1),
)


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_rows(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def operands(problem: str) -> tuple[str, str]:
    question = PROBLEM.fullmatch(problem)
    if question is None:
        raise ValueError(f"not a quickstart addition problem: {problem!r}")
    return question.group(1), question.group(2)


def bench_rows(test: list[dict]) -> list[dict]:
    """The held-out rows with each problem in the benchmark's words (BENCH)."""
    return [{**row, "problem": BENCH.format(a=a, b=b)} for row in test for a, b in [operands(row["problem"])]]


def planted_prompts(train: list[dict], bench: list[dict], count: int, seed: int):
    """The training rows with `count` bench problems planted among them, paraphrased, the planted rows, and their
    (planted id, test id) pairs."""
    rng = random.Random(seed)
    chosen = rng.sample(bench, count)
    planted, ids = [], []
    for i, row in enumerate(chosen):
        row_id = f"q{10**5 + i:06d}"  # numbered past the task's ids, like any other row
        question = VARIANTS[i % len(VARIANTS)](row["problem"])
        planted.append({"id": row_id, "problem": question, "solution": row["solution"], "answer": row["answer"]})
        ids.append({"id": row_id, "test_id": row["id"]})
    rows = train + planted
    rng.shuffle(rows)
    return rows, planted, ids


def columns_and_answer(solution: str) -> tuple[list[str], str]:
    *columns, answer = solution.splitlines()
    if not columns or not all(COLUMN.match(line) for line in columns):
        raise ValueError(f"not a quickstart solution: {solution!r}")
    return columns, answer


def verbose_solution(problem: str, solution: str) -> str:
    """The gold column-addition solution with the question restated before it and the sum restated after it."""
    a, b = operands(problem)
    columns, answer = columns_and_answer(solution)
    restated = f"We need {a} + {b}. In other words, we add {a} and {b}, column by column."
    checked = f"Let me check: {a} + {b} = {int(a) + int(b)}."
    return "\n".join([restated, *columns, checked, answer])


def neutral_solution(solution: str) -> str:
    """The gold columns in words neither teacher writes ("7 plus 8 plus 0 is 15; put 5, carry 1"), the same answer
    line (both teachers end with it: the task's, not a teacher's)."""
    columns, answer = columns_and_answer(solution)
    lines = []
    for line in columns:
        x, y, carry, total, digit, carry_out = COLUMN.match(line).groups()
        lines.append(f"{x} plus {y} plus {carry} is {total}; put {digit}" + (f", carry {carry_out}" if carry_out
                                                                               else ""))
    return "\n".join([*lines, answer])


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
    bench = commands.add_parser("bench", help="the held-out problems in the benchmark's words")
    bench.add_argument("--test", required=True, type=Path)
    bench.add_argument("--out", required=True, type=Path)
    plant = commands.add_parser("planted", help="training prompts with bench problems planted in them")
    plant.add_argument("--train", required=True, type=Path)
    plant.add_argument("--bench", required=True, type=Path)
    plant.add_argument("--traces", required=True, type=Path, help="step 1's teacher traces of the training rows")
    plant.add_argument("--prompts", type=int, help="keep the first PROMPTS training rows (default: all)")
    plant.add_argument("--count", type=int, default=50)
    plant.add_argument("--seed", type=int, default=0)
    plant.add_argument("--out", required=True, type=Path)
    plant.add_argument("--planted-out", required=True, type=Path)
    plant.add_argument("--map-out", required=True, type=Path)
    plant.add_argument("--traces-out", required=True, type=Path)
    for name, text in (("verbose", "a verbose teacher's training set and initial weights"),
                       ("neutral", "the gold solutions in neither teacher's notation")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--train", required=True, type=Path)
        sub.add_argument("--out", required=True, type=Path)
        if name == "verbose":
            sub.add_argument("--tokenizer", required=True, type=Path, help="the student's model dir")
            sub.add_argument("--seed", type=int, default=0)
            sub.add_argument("--model-out", required=True, type=Path)
    args = parser.parse_args(argv)

    source = args.test if args.command == "bench" else args.train
    try:
        rows = read_rows(source)
        if args.command == "bench":
            write_rows(args.out, bench_rows(rows))
        elif args.command == "planted":
            bench_problems = read_rows(args.bench)
            if not 0 < args.count <= len(bench_problems):
                parser.error(f"--count must be in 1..{len(bench_problems)}")
            kept = rows[:args.prompts]
            prompts, planted, ids = planted_prompts(kept, bench_problems, args.count, args.seed)
            kept_ids = {row["id"] for row in kept}
            write_rows(args.traces_out, (row for row in read_rows(args.traces) if row["id"] in kept_ids))
            for path, part in ((args.planted_out, planted), (args.map_out, ids)):
                write_rows(path, part)
                print(path)
            write_rows(args.out, prompts)
        elif args.command == "verbose":
            write_rows(args.out, [{**row, "solution": verbose_solution(row["problem"], row["solution"])}
                                  for row in rows])
            print(build_verbose_teacher(args.tokenizer, args.model_out, args.seed))
        else:
            write_rows(args.out, [{**row, "solution": neutral_solution(row["solution"])} for row in rows])
    except ValueError as err:
        parser.error(f"{source}: {err}")
    print(args.out)


if __name__ == "__main__":
    main()
