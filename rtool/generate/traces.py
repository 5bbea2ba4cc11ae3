"""Sampling graded completions for prompt rows: the loop `distill` and `eval --model` share.

    for trace in sample_traces(backend, rows, fields, params, system=None, chunk_prompts=64, done=set()):
        write(trace.record(teacher=backend.name, sampling=sampling_record(backend, params, system)))

Rows are read lazily and generated a chunk at a time, so a killed run loses at most the chunk in flight, and a
bad input line stops the run only after everything before it was written. Sample k of prompt id P is drawn with
seed `sample_seed(params.seed, P, k)`: what it draws does not depend on the chunk, the batch or a resume.

A trace records what the teacher saw: `prompt_messages` is the conversation as sent (system prompt included), and
`sampling` the settings (backend, teacher, temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens,
seed, system: "" when none was sent; split and subset of the input, and the chat and prompt templates used, as
`sha256:HEX` of their text: "" for none). Training commands train on `prompt_messages` when a row has it, so the
student learns from the conversation the teacher answered. A trace whose prompt a --prompt-template rendered also
records `question_messages`, the question it answers (`PromptTemplate.question`), which training commands train on
in its place. `RowsProvenance` reads those fields back from graded rows (eval of a distill run's output).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from rtool.grade.answers import grade
from rtool.grade.fields import FieldMap, prompt_id
from rtool.io.records import Row

# What distill and eval ask a model for by default (the convention of DeepSeek-R1 and open-r1's math evals).
REASONING_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Trace:
    row: Row
    prompt_id: str
    sample: int
    completion: object  # rtool.generate.core.Completion
    gold: str | None
    pred: str | None
    correct: bool | None

    messages: list | None = None  # the conversation as sent
    question: list | None = None  # with a --prompt-template: the question's conversation, trained on

    def record(self, teacher: str | None = None, sampling: dict | None = None) -> dict:
        """The output row: the input row plus the trace's keys (an existing key of the same name is replaced)."""
        out = dict(self.row)
        out["id"] = self.prompt_id
        if self.messages is not None:
            out["prompt_messages"] = self.messages
        # An input row's question_messages (a templated run's output) would outrank this trace's prompt_messages.
        out.pop("question_messages", None)
        if self.question is not None:
            out["question_messages"] = self.question
        out.update(completion=self.completion.text, sample=self.sample)
        if teacher is not None:
            out["teacher"] = teacher
        if getattr(self.completion, "endpoint", None) is not None:  # a fleet: which endpoint drew this sample
            out["endpoint"] = self.completion.endpoint
        out.update(pred=self.pred, correct=self.correct, finish_reason=self.completion.finish_reason,
                   completion_tokens=self.completion.completion_tokens)
        if sampling is not None:
            out["sampling"] = sampling
        return out


def sample_traces(backend, rows: Iterable[Row], fields: FieldMap, params, *, system: str | None = None,
                  chunk_prompts: int = 64, done: set | None = None, template=None) -> Iterator[Trace]:
    """Generate params.n samples per row, grade each against the row's gold answer, skip (id, sample) pairs in
    `done`. Prompts are validated before their chunk is generated; only missing samples are generated. `template`
    (a `rtool.generate.templates.PromptTemplate`) renders the user's turn from the row's fields in place of its
    prompt field."""
    from rtool.generate.core import sample_seed

    done = done if done is not None else set()
    iterator = iter(rows)
    while True:
        chunk = list(itertools.islice(iterator, chunk_prompts))
        if not chunk:
            return
        pending = []
        for row in chunk:
            # Either raises a UserError naming file:line for a bad prompt (or a field the template needs).
            messages = template.messages(row, system) if template else fields.messages(row, system)
            question = template.question(row, fields, system, messages) if template else None
            identifier = prompt_id(row, fields)
            missing = [s for s in range(params.n) if (identifier, s) not in done]
            if missing:
                pending.append((row, identifier, messages, question, fields.gold(row), missing))
        if not pending:
            continue
        seeds = [[sample_seed(params.seed, item[1], s) for s in item[5]] for item in pending]
        completions = backend.generate([item[2] for item in pending], params, seeds=seeds)
        for (row, identifier, messages, question, gold, missing), samples in zip(pending, completions):
            for sample_index, completion in zip(missing, samples):
                pred, correct = grade(gold, completion.text, fields.choices(row))
                yield Trace(row, identifier, sample_index, completion, gold, pred, correct, messages, question)
                done.add((identifier, sample_index))


def sampling_record(backend, params, system: str | None, *, split: str | None = None, subset: str | None = None,
                    chat_template: str | None = None, prompt_template=None) -> dict:
    """The `sampling` object of a trace row: which backend and model drew it, with which settings, from which split
    and subset of the input, through which templates (`chat_template`: the text used in place of the model's;
    `prompt_template`: a PromptTemplate), so that `distill --resume` refuses a change of any. Every value keeps one
    type in every file (`system`, `split`, ... are "" when unset, never null): `datasets` takes a set of JSONL files'
    schema from the first, so a key null in one file and a string in another would not load together."""
    return {"backend": str(getattr(backend, "kind", "")), "teacher": str(backend.name), **params.record(),
            "system": system or "", "split": split or "", "subset": subset or "",
            "chat_template": text_digest(chat_template),
            "prompt_template": text_digest(prompt_template.text if prompt_template is not None else None)}


def text_digest(text: str | None) -> str:
    """"sha256:HEX" of a template's text ("" for none): a row records which template without carrying its text, and
    the same text read from another path is the same template."""
    return "" if text is None else "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# Keys `sampling` gained after files were first written with it: a file that lacks them is resumed without them.
LATER_SAMPLING_KEYS = ("split", "subset", "chat_template", "prompt_template")


def as_recorded(sampling: dict, recorded: dict | None, path) -> dict:
    """`sampling` in the shape of a resumed file's first record: without the LATER_SAMPLING_KEYS that an older
    rtool did not write (one warning naming them), so the file's rows keep one schema and the rest still compares."""
    missing = [key for key in LATER_SAMPLING_KEYS if recorded is not None and key not in recorded]
    if not missing:
        return sampling
    from rtool.log import logger

    logger.warning("%s was written by an older rtool whose `sampling` records no %s: --resume cannot check that "
                   "they are the same, and the new rows leave them out too", path, ", ".join(missing))
    return {key: value for key, value in sampling.items() if key not in missing}


@dataclass
class RowsProvenance:
    """What graded rows say produced them: the `teacher` label of each row, the model (`sampling.teacher`) and the
    `sampling` records, each in order of first appearance. `summary()` gives each as one value when the rows agree,
    a list of the distinct values when they do not (rows from two runs), and None when no row says."""

    teachers: dict = field(default_factory=dict)  # JSON text -> value: an ordered set of unhashable values
    samplings: dict = field(default_factory=dict)

    def add(self, row: dict) -> None:
        teacher, sampling = row.get("teacher"), row.get("sampling")
        if teacher is not None:
            self.teachers.setdefault(json.dumps(teacher, sort_keys=True), teacher)
        if isinstance(sampling, dict):
            self.samplings.setdefault(json.dumps(sampling, sort_keys=True), sampling)

    def summary(self) -> dict:
        models = {json.dumps(s.get("teacher")): s.get("teacher") for s in self.samplings.values() if "teacher" in s}
        return {"model": _one_or_all(models), "teacher": _one_or_all(self.teachers),
                "sampling": _one_or_all(self.samplings)}

    def mixed(self) -> list[str]:
        """The fields whose rows disagree: teacher, sampling."""
        return [name for name, values in (("teacher", self.teachers), ("sampling", self.samplings)) if len(values) > 1]


def _one_or_all(values: dict):
    values = list(values.values())
    return None if not values else values[0] if len(values) == 1 else values


def warn_identical_samples(params) -> None:
    """-n > 1 at temperature 0 draws n copies of one greedy answer: pass@k and maj@k then mean nothing."""
    if params.n > 1 and params.greedy:
        from rtool.log import logger

        logger.warning("-n %d at --temperature 0: every sample of a prompt is the same greedy answer, so pass@k "
                       "and maj@k equal pass@1; sample with --temperature > 0", params.n)


# Above this share of samples cut at --max-new-tokens, distill and eval warn: a few long outliers are normal, a
# budget too small for the model's reasoning is not (cut traces grade false, and sft skips them).
TRUNCATED_WARN_SHARE = 0.05


def warn_truncated(truncated: int, samples: int, max_new_tokens: int) -> None:
    """One warning when more than TRUNCATED_WARN_SHARE of `samples` ended at --max-new-tokens."""
    if samples and truncated / samples > TRUNCATED_WARN_SHARE:
        from rtool.log import logger

        logger.warning("%.0f%% of samples (%d of %d) ended at --max-new-tokens %d (finish_reason 'length': graded "
                       "false, skipped by sft): raise it", 100 * truncated / samples, truncated, samples,
                       max_new_tokens)


def choose_system_prompt(system: str | None, no_system: bool) -> str | None:
    """--system wins, --no-system sends none, else the reasoning prompt."""
    return None if no_system else (system or REASONING_SYSTEM_PROMPT)
