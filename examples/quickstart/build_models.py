"""Build the quickstart's randomly initialised teacher and student: tiny Llamas sharing one character tokenizer.

    python build_models.py --data data/train.jsonl data/test.jsonl --teacher-out runs/teacher-init \\
        --student-out runs/student-init

The tokenizer gets one token per character seen in the task files' problems and solutions, plus ASCII letters,
digits, punctuation and the default system prompt, so prompts with or without a system turn never hit `<|unk|>`.
Both directories load with AutoTokenizer / AutoModelForCausalLM. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path

# Same text as rtool distill/eval's default system prompt; its characters must be in the vocabulary.
DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
BASE_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"


def task_texts(paths) -> list[str]:
    """Every problem and solution string in the given JSONL files."""
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    texts += [str(row.get("problem", "")), str(row.get("solution", ""))]
    return texts


def build(data_paths, teacher_out, student_out, teacher_hidden=64, teacher_layers=2, student_hidden=64,
          student_layers=2, num_heads=4, seed=0) -> tuple[Path, Path]:
    """Write the teacher and student initialisations; return their directories."""
    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    tokenizer = char_tokenizer([BASE_CHARS, DEFAULT_SYSTEM, *task_texts(data_paths)])
    teacher = tiny_llama(tokenizer, hidden_size=teacher_hidden, num_layers=teacher_layers, num_heads=num_heads,
                         seed=seed)
    # A different seed, so the student shares nothing with the teacher but the tokenizer.
    student = tiny_llama(tokenizer, hidden_size=student_hidden, num_layers=student_layers, num_heads=num_heads,
                         seed=seed + 1)
    return save_tiny(teacher, tokenizer, teacher_out), save_tiny(student, tokenizer, student_out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, type=Path, help="task JSONL files (train, test)")
    parser.add_argument("--teacher-out", required=True, type=Path)
    parser.add_argument("--student-out", required=True, type=Path)
    parser.add_argument("--teacher-hidden", type=int, default=64)
    parser.add_argument("--teacher-layers", type=int, default=2)
    parser.add_argument("--student-hidden", type=int, default=64)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in args.data:
        if not path.is_file():
            parser.error(f"no such file: {path}")
    dirs = build(args.data, args.teacher_out, args.student_out, args.teacher_hidden, args.teacher_layers,
                 args.student_hidden, args.student_layers, args.heads, args.seed)
    for path in dirs:
        print(path)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
