"""Math-Shepherd step labels without annotators (Wang et al. 2024, "Math-Shepherd", arXiv:2312.08935): a step is
as good as the answers a policy reaches when it writes on from the end of that step.

    steps, prefixes = step_prefixes(completion, "\\n\\n")       # prefixes[i]: the completion through step i
    labeling = Labeling(steps, prefixes, final_correct=True, label_all=False)
    while not labeling.done:
        for step in labeling.pending():                          # the steps that need rollouts now
            labeling.record(step, [True, False, ...], truncated=1)   # verdicts of the rollouts that count, and
                                                                 # how many were cut by max_new_tokens
    labels, values, rollouts = labeling.result()

For step i of a trace, k rollouts continue the assistant turn holding steps 1..i (as they appeared, separators
included) and each `prefix + rollout` is graded against the gold answer. Labels (Math-Shepherd section 3.3):
hard estimation (HE) `step_labels[i]` = 1 if any rollout is correct, else 0; soft estimation (SE)
`step_values[i]` = the share of correct rollouts. The last step needs no rollouts: the completion is already whole,
so its label and value are the trace's own correctness. Early stop (the default): once a step is labelled 0, the
steps after it are 0 (the last one too) without rollouts: a step after a step from which no rollout recovers is
taken to be no better (labels then read 1..1 0..0). `label_all` rolls out every step instead.

Truncated rollouts (finish_reason "length": cut by max_new_tokens before they finished) decide no label by default:
a cut rollout rarely states an answer, so grading it would call a good step wrong because the policy ran out of
room. A step's label and value come from its other rollouts; a step whose every rollout was cut has label and
value None (unknown: no early stop after it; prm-train does not train on it). `count_truncated` grades them as
they are instead (Math-Shepherd's rule). `step_truncated` records how many were cut per step.

`label_chunk` runs this for many traces at once: one `Backend.generate` call per round holds the pending step
prefixes of every trace (with label_all, every prefix in one round), and rollout r of step i of trace (id, sample)
is drawn with seed `sample_seed(seed, "id\\0sample\\0i", r)`: it does not depend on the chunk, the round, the
batch or where a resumed run started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from rtool.errors import UserError
from rtool.prm.score import split_steps
from rtool.io.records import Written, read_written


def step_prefixes(text: str, sep: str) -> tuple[list[str], list[str]]:
    """(steps, prefixes): `split_steps(text, sep)`, and for each step the text from the completion's start through
    the end of that step, exactly as it appeared (separators and spacing between steps kept, none after it)."""
    steps, prefixes = [], []
    position = 0
    for piece in text.split(sep):
        stripped = piece.strip()
        if stripped:
            end = position + (len(piece) - len(piece.lstrip())) + len(stripped)
            steps.append(stripped)
            prefixes.append(text[:end])
        position += len(piece) + len(sep)
    assert steps == split_steps(text, sep)
    return steps, prefixes


def hard_label(verdicts: Sequence[bool | None]) -> int | None:
    """Math-Shepherd's hard estimation: 1 when any rollout reached the gold answer; None without rollouts that
    count (all truncated)."""
    return int(any(v is True for v in verdicts)) if verdicts else None


def soft_value(verdicts: Sequence[bool | None]) -> float | None:
    """Math-Shepherd's soft estimation: the share of rollouts that reached the gold answer; None without rollouts
    that count."""
    return sum(v is True for v in verdicts) / len(verdicts) if verdicts else None


def label_steps(verdicts: Sequence[Sequence[bool | None] | None], final_correct: bool,
                label_all: bool = False) -> tuple[list[int | None], list[float | None], list[int]]:
    """(step_labels, step_values, step_rollouts) of a trace with len(verdicts) + 1 steps.

    verdicts[i]: the verdicts of step i's rollouts that count, or None for a step that was not rolled out (allowed
    only after a step labelled 0, without label_all). A rolled-out step with no verdict that counts (every rollout
    truncated) is labelled None, and stops nothing. The last step's label is `final_correct`, 0 after an early
    stop. step_rollouts counts the rollouts behind each value (0: the value was not measured but follows from the
    rules, or is None).
    """
    labels: list[int] = []
    values: list[float] = []
    rollouts: list[int] = []
    stopped = False
    for step, step_verdicts in enumerate(verdicts):
        if step_verdicts is None:
            if not stopped or label_all:
                raise ValueError(f"step {step} has no rollouts but needs them")
            labels.append(0)
            values.append(0.0)
            rollouts.append(0)
            continue
        labels.append(hard_label(step_verdicts))
        values.append(soft_value(step_verdicts))
        rollouts.append(len(step_verdicts))
        stopped = stopped or labels[-1] == 0
    last = 0 if stopped and not label_all else int(bool(final_correct))
    labels.append(last)
    values.append(float(last))
    rollouts.append(0)
    return labels, values, rollouts


@dataclass
class Labeling:
    """The labels of one trace as its rollouts come in: `pending()` names the steps to roll out now."""

    steps: list[str]
    prefixes: list[str]
    final_correct: bool
    label_all: bool = False
    count_truncated: bool = False
    verdicts: list = field(default_factory=list)  # per rolled-out step (all but the last): verdicts or None
    truncated: list = field(default_factory=list)  # per step: rollouts cut by max_new_tokens

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a trace without steps")
        self.verdicts = [None] * (len(self.steps) - 1)
        self.truncated = [0] * len(self.steps)
        self._asked: set[int] = set()

    def pending(self) -> list[int]:
        """Steps to roll out now: with label_all every step but the last, at once; else the first step not yet
        rolled out, while every step before it is labelled 1."""
        if self.label_all:
            wanted = range(len(self.verdicts))
        else:
            wanted = []
            for step, step_verdicts in enumerate(self.verdicts):
                if step_verdicts is None:
                    wanted = [step]
                    break
                if hard_label(step_verdicts) == 0:
                    break
        steps = [step for step in wanted if step not in self._asked]
        self._asked.update(steps)
        return steps

    def record(self, step: int, verdicts: list[bool | None], truncated: int = 0) -> None:
        """Step `step`'s verdicts of the rollouts that count (see count_truncated), and how many were cut."""
        self.verdicts[step] = list(verdicts)
        self.truncated[step] = truncated

    @property
    def done(self) -> bool:
        for step_verdicts in self.verdicts:
            if step_verdicts is None:
                return False
            if not self.label_all and hard_label(step_verdicts) == 0:
                return True  # early stop: the steps after it are 0 without rollouts
        return True

    def result(self) -> tuple[list[int], list[float], list[int]]:
        return label_steps(self.verdicts, self.final_correct, self.label_all)


@dataclass
class Job:
    """One trace to label: its row, key (id, sample), conversation, gold answer and options, and its Labeling."""

    row: dict
    key: tuple[str, int]
    messages: list[dict]
    gold: str
    choices: dict | None
    labeling: Labeling


def rollout_seeds(seed: int, key: tuple[str, int], step: int, k: int) -> list[int]:
    """The seeds of step `step`'s k rollouts of trace `key` (id, sample)."""
    from rtool.generate.core import sample_seed

    trace_id, sample = key
    return [sample_seed(seed, f"{trace_id}\x00{sample}\x00{step}", r) for r in range(k)]


def label_chunk(backend, jobs: list[Job], params, *, on_rollouts=None) -> Iterator[Job]:
    """Roll out and label `jobs`, one generate call per round across all of them; yields each job, in input order,
    as soon as it and the jobs before it are done. `on_rollouts(count)` is told how many rollouts each call drew.
    A rollout with finish_reason "length" is graded only with the labeling's count_truncated."""
    from rtool.grade.answers import grade

    next_out = 0
    while True:
        asks = [(job, step) for job in jobs for step in job.labeling.pending()]
        if asks:
            conversations = [[*job.messages, {"role": "assistant", "content": job.labeling.prefixes[step]}]
                             for job, step in asks]
            seeds = [rollout_seeds(params.seed, job.key, step, params.n) for job, step in asks]
            outs = backend.generate(conversations, params, seeds=seeds)
            if on_rollouts is not None:
                on_rollouts(sum(len(row) for row in outs))
            for (job, step), completions in zip(asks, outs):
                prefix, labeling = job.labeling.prefixes[step], job.labeling
                counted = [c for c in completions if labeling.count_truncated or c.finish_reason != "length"]
                cut = sum(c.finish_reason == "length" for c in completions)
                labeling.record(step, [grade(job.gold, prefix + c.text, job.choices)[1] for c in counted], cut)
        while next_out < len(jobs) and jobs[next_out].labeling.done:
            yield jobs[next_out]
            next_out += 1
        if next_out == len(jobs):
            return
        if not asks:
            raise AssertionError("jobs left undone with nothing to roll out")


def labeling_record(backend, params, step_sep: str, label_all: bool, system: str | None,
                    count_truncated: bool = False) -> dict:
    """The `prm_labeling` object of an output row: who rolled out, how, and how labels were made."""
    return {"backend": getattr(backend, "kind", None), "policy": backend.name, "k": params.n, **params.record(),
            "step_sep": step_sep, "label_all": label_all, "count_truncated": count_truncated, "system": system}


def output_row(job: Job, settings: dict) -> dict:
    labels, values, rollouts = job.labeling.result()
    return {**job.row, "steps": job.labeling.steps, "step_labels": labels, "step_values": values,
            "step_rollouts": rollouts, "step_truncated": job.labeling.truncated, "prm_labeling": settings}


def read_existing(out_path: Path, fields) -> Written:
    """The (id, sample) keys already labelled in `out_path` and its first `prm_labeling` record (for --resume).
    A row's id is keyed as the run keys it (rtool.grade.fields.prompt_id: its `id`, else one made from its prompt under
    `fields`), so rows without an id resume too."""
    from rtool.grade.fields import prompt_id
    from rtool.io.records import Row

    def key(row):
        if not isinstance(row["step_labels"], list):
            raise TypeError("step_labels is not a list")
        try:
            trace_id = prompt_id(Row(row), fields)
        except UserError:
            raise KeyError("no id and no prompt") from None
        return trace_key_of(trace_id, row.get("sample", 0))

    return read_written(out_path, key=key, settings_field="prm_labeling", command="prm-label",
                        needs="step_labels, and an id or a prompt")


def trace_key_of(trace_id, sample) -> tuple[str, int]:
    """(id, sample) as a trace's key; raises TypeError/ValueError for a sample that is no whole number."""
    if isinstance(sample, bool) or not isinstance(sample, int):
        if isinstance(sample, float) and sample.is_integer():
            sample = int(sample)
        else:
            raise TypeError(f"sample {sample!r} is not a whole number")
    return str(trace_id), sample
