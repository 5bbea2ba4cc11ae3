"""Sampling graded completions for prompt rows: the loop `distill` and `eval --model` share.

    for trace in sample_traces(backend, rows, fields, params, system=None, chunk_prompts=64, done=set()):
        write({**trace.row, "completion": trace.completion.text, ...})

Rows are read lazily and generated a chunk at a time, so a killed run loses at most the chunk in flight, and a
bad input line stops the run only after everything before it was written.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator

from rtool.answers import grade
from rtool.fields import FieldMap, prompt_id
from rtool.records import Row

# What distill and eval ask a model for by default (the convention of DeepSeek-R1 and open-r1's math evals).
REASONING_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Trace:
    row: Row
    prompt_id: str
    sample: int
    completion: object  # rtool.generation.Completion
    gold: str | None
    pred: str | None
    correct: bool | None

    def record(self, teacher: str | None = None) -> dict:
        """The output row: the input row plus the trace's keys (an existing key of the same name is replaced)."""
        out = dict(self.row)
        out["id"] = self.prompt_id
        out.update(completion=self.completion.text, sample=self.sample)
        if teacher is not None:
            out["teacher"] = teacher
        out.update(pred=self.pred, correct=self.correct, finish_reason=self.completion.finish_reason,
                   completion_tokens=self.completion.completion_tokens)
        return out


def sample_traces(backend, rows: Iterable[Row], fields: FieldMap, params, *, system: str | None = None,
                  chunk_prompts: int = 64, done: set | None = None) -> Iterator[Trace]:
    """Generate params.n samples per row, grade each against the row's gold answer, skip (id, sample) pairs in
    `done`. Prompts are validated before their chunk is generated."""
    done = done if done is not None else set()
    iterator = iter(rows)
    while True:
        chunk = list(itertools.islice(iterator, chunk_prompts))
        if not chunk:
            return
        pending = []
        for row in chunk:
            messages = fields.messages(row, system)  # raises a UserError naming file:line for a bad prompt
            identifier = prompt_id(row, fields)
            missing = [s for s in range(params.n) if (identifier, s) not in done]
            if missing:
                pending.append((row, identifier, messages, fields.gold(row), missing))
        if not pending:
            continue
        completions = backend.generate([item[2] for item in pending], params)
        for (row, identifier, _messages, gold, missing), samples in zip(pending, completions):
            for sample_index in missing:
                completion = samples[sample_index]
                pred, correct = grade(gold, completion.text)
                yield Trace(row, identifier, sample_index, completion, gold, pred, correct)
                done.add((identifier, sample_index))


def check_sampling(n: int, temperature: float, top_p: float, max_new_tokens: int, batch_size: int) -> None:
    """Refuse sampling settings that cannot work, before any model loads."""
    from rtool.errors import UserError

    if n < 1:
        raise UserError(f"-n must be at least 1, got {n}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")


def choose_system_prompt(system: str | None, no_system: bool) -> str | None:
    """--system wins, --no-system sends none, else the reasoning prompt."""
    return None if no_system else (system or REASONING_SYSTEM_PROMPT)
