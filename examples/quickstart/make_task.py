"""A small verifiable task for the quickstart: multi-digit arithmetic with digit-by-digit gold solutions.

Rows use the MATH layout, `{"id", "problem", "solution", "answer"}`, and every solution ends in `\\boxed{n}`:

    What is 347 + 158?
    7+8+0=15, write 5 carry 1
    4+5+1=10, write 0 carry 1
    3+1+1=5, write 5
    Answer: \\boxed{505}.

Each line works on one column, right to left, so a character-level model with a few layers can learn the
algorithm; the last line reads the written digits back from the left. (The answer line does not restate the
operands: copying them again was where sampled traces most often slipped while still boxing the right answer.)
Subtraction (`--ops add,sub`) works the same way with borrows and keeps a >= b. Operands are 3-digit by default
(`--low 100 --high 999`): every problem then has the same number of columns, which a tiny model learns faster
than a mix of widths.

    python make_task.py --out-dir data --train 1000 --test 200 --seed 0   # writes data/train.jsonl, data/test.jsonl

No problem appears in both splits. The functions `make_rows` and `write_splits` do the same from Python.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OPS = ("add", "sub")


def add_solution(a: int, b: int) -> str:
    """Column addition of a + b, one line per column from the right, ending in `\\boxed{a+b}`."""
    da, db = str(a)[::-1], str(b)[::-1]
    width = max(len(da), len(db))
    lines, carry = [], 0
    for i in range(width):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        if i == width - 1:
            # The last column writes its whole sum, so a final carry needs no extra line.
            lines.append(f"{x}+{y}+{carry}={s}, write {s}")
        else:
            lines.append(f"{x}+{y}+{carry}={s}, write {s % 10} carry {s // 10}")
            carry = s // 10
    lines.append(f"Answer: \\boxed{{{a + b}}}.")
    return "\n".join(lines)


def sub_solution(a: int, b: int) -> str:
    """Column subtraction of a - b (a >= b) with borrows, ending in `\\boxed{a-b}`."""
    assert a >= b
    da, db = str(a)[::-1], str(b)[::-1]
    lines, borrow = [], 0
    for i in range(len(da)):
        x = int(da[i])
        y = int(db[i]) if i < len(db) else 0
        d = x - y - borrow
        if d < 0:
            lines.append(f"1{x}-{y}-{borrow}={d + 10}, write {d + 10} borrow 1")
            borrow = 1
        else:
            lines.append(f"{x}-{y}-{borrow}={d}, write {d} borrow 0")
            borrow = 0
    # The written digits may start with zeros (105-98 writes 0,0,7); the boxed answer drops them.
    lines.append(f"Answer: \\boxed{{{a - b}}}.")
    return "\n".join(lines)


def make_row(op: str, a: int, b: int, row_id: str) -> dict:
    """One task row for `a op b`."""
    if op == "add":
        return {"id": row_id, "problem": f"What is {a} + {b}?", "solution": add_solution(a, b), "answer": str(a + b)}
    if op == "sub":
        return {"id": row_id, "problem": f"What is {a} - {b}?", "solution": sub_solution(a, b), "answer": str(a - b)}
    raise ValueError(f"unknown op {op!r}; valid: {', '.join(OPS)}")


def make_rows(n: int, seed: int = 0, ops=("add",), low: int = 100, high: int = 999) -> list[dict]:
    """`n` distinct problems with operands in [low, high] (3 digits by default), ids `q00000`, `q00001`, ..."""
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; valid: {', '.join(OPS)}")
    capacity = len(ops) * (high - low + 1) ** 2
    if n > capacity // 2:
        raise ValueError(f"{n} distinct problems asked from a space of {capacity}; widen low/high")
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n:
        op = rng.choice(list(ops))
        a, b = rng.randint(low, high), rng.randint(low, high)
        if op == "sub" and a < b:
            a, b = b, a
        if (op, a, b) in seen:
            continue
        seen.add((op, a, b))
        rows.append(make_row(op, a, b, f"q{len(rows):05d}"))
    return rows


def write_splits(
    out_dir, train: int, test: int, seed: int = 0, ops=("add",), low: int = 100, high: int = 999
) -> tuple[Path, Path]:
    """Write `out_dir/train.jsonl` and `out_dir/test.jsonl`, disjoint by construction; return both paths."""
    rows = make_rows(train + test, seed=seed, ops=ops, low=low, high=high)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "test.jsonl"
    for path, part in zip(paths, (rows[:train], rows[train:])):
        with path.open("w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--train", type=int, default=1000, help="train rows (default 1000)")
    parser.add_argument("--test", type=int, default=200, help="held-out test rows (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", default="add", help="comma-separated: add, sub (default add)")
    parser.add_argument("--low", type=int, default=100, help="smallest operand (default 100)")
    parser.add_argument("--high", type=int, default=999, help="largest operand (default 999)")
    args = parser.parse_args(argv)
    ops = tuple(op.strip() for op in args.ops.split(",") if op.strip())
    try:
        paths = write_splits(
            args.out_dir, args.train, args.test, seed=args.seed, ops=ops, low=args.low, high=args.high
        )
    except ValueError as err:
        parser.error(str(err))
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
