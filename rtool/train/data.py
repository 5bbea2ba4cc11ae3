"""Training rows -> examples: the conversation a row was answered in, its completion, and the token ids a trainer
sees. Shared by every training command (sft now; redi, grpo, prm-train build on the same pieces).

    messages, recorded = prompt_messages(row, fields, system)    # the conversation before the completion
    text = completion_text(row, fields)                          # the completion (or a MATH row's solution)
    ids, mask = tokenize_completion(tokenizer, messages, text)   # mask: 1 on completion tokens (end of turn too)
    fitted = fit_length(ids, mask, max_length, "drop")           # None: the row does not fit and is not trained on

    examples = SFTExamples(FieldMap(), system=REASONING_SYSTEM_PROMPT, max_length=2048)
    for example in examples(rows, tokenizer): ...                # {"input_ids", "completion_mask"}; counted
    examples.report(); examples.empty_hint()                     # counts on stderr; why nothing was kept

Which conversation a row trains on (rtool's rule): a row's `prompt_messages` (distill writes it: the conversation
exactly as sent to the teacher, system prompt included) wins, so the student learns from what the teacher answered
whatever `system` says. A row whose prompt a `distill --prompt-template` rendered (a LiteCoT rewrite: the question
and its long trace in the user turn) records the question it answers apart, as `question_messages`, and trains on
that: the student learns to answer the question, not to rewrite a trace. Rows without it (older files, untemplated
runs) train on `prompt_messages` as before. A row whose prompt is already a conversation (a list of messages: TRL's
conversational `prompt` or `messages`) is trained as it is too, with its own system turn or none. Only a bare prompt
(a string, which rtool renders as the user's turn) gets `system` before it. When --system or --no-system was given,
`warn_recorded_wins` says for how many rows it did not apply. An explicit `--prompt-field` (FieldMap.prompt_field)
names the prompt and wins over both (`--prompt-field prompt_messages`: the rendering).

Length (rtool's rule): a row whose prompt + completion tokens exceed `max_length` is dropped by default
("drop"): cutting it would train on a trace without its final answer and end-of-turn token. "keep-start" keeps its
first `max_length` tokens (TRL's behaviour). Either way such rows are counted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from rtool.errors import UserError, one_of
from rtool.grade.fields import COMPLETION_FIELDS, FieldMap, sample_grade
from rtool.log import logger

RECORDED_PROMPT = "prompt_messages"
# The question a --prompt-template row answers, recorded apart from the rendering the teacher was sent: trained on.
QUESTION_PROMPT = "question_messages"
# How the logs name the conversations rows carry, which get no system prompt added.
CARRIED = "prompt_messages or a conversational prompt"
TRUNCATIONS = ("drop", "keep-start")


def prompt_messages(row, fields: FieldMap, system: str | None) -> tuple[list[dict], bool]:
    """(messages ending with the user's turn, whether the row carries them: its recorded `question_messages` or
    `prompt_messages`, or a prompt that is a list of messages, taken as it is). `system` goes before a bare (string)
    prompt only."""
    if not fields.prompt_field:
        for key in (QUESTION_PROMPT, RECORDED_PROMPT):
            if row.get(key) is not None:
                return recorded_messages(row, key), True
    carried = not isinstance(row[fields.prompt_key(row)], str)
    return fields.messages(row, None if carried else system), carried


def system_not_applied(messages: list[dict], recorded: bool, system: str | None) -> bool:
    """Whether a row's own conversation (`recorded`) keeps another system turn than --system `system` (None:
    --no-system) asks for. A recorded conversation that already has what was asked (no system turn under
    --no-system, the same text under --system) is not counted."""
    if not recorded:
        return False
    own = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
    return own != system


def warn_recorded_wins(name: str, count: int, system: str | None, what: str = "rows") -> None:
    """Warn, once per run, that an explicit --system (`system`) or --no-system (None) was not applied to `count`
    rows (`system_not_applied`): their recorded `prompt_messages` (the conversation the teacher answered) won, as
    rtool's rule says. Silent when `count` is 0."""
    if not count:
        return
    asked = f"--system {system!r}" if system is not None else "--no-system"
    logger.warning("%s: %s was not applied to %d %s: they keep the conversation they record (prompt_messages or a "
                   "conversational prompt, with its own system turn or none); pass --prompt-field to build their "
                   "prompt from a text field with %s instead", name, asked, count, what, asked)


def recorded_messages(row, key: str = RECORDED_PROMPT) -> list[dict]:
    """The row's `prompt_messages` (or `key`: `question_messages`), checked and taken as they are: nothing added (no
    system prompt, no options listing: the recorded user turn already shows what the teacher was shown)."""
    value = row[key]
    if not isinstance(value, list) or not value:
        raise row.error(f"field {key!r} must be a non-empty list of messages, got "
                        f"{type(value).__name__ if value != [] else 'an empty list'}", field=key)
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise row.error(f"{key}[{index}] is not a message {{role, content}}", field=key)
    if value[-1]["role"] != "user":
        raise row.error(f"{key} must end with the user's turn, got {value[-1]['role']!r}", field=key)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def completion_text(row, fields: FieldMap) -> str:
    """The text to train on: the row's completion, or for MATH rows without one, the reference `solution`."""
    if all(row.get(key) is None for key in COMPLETION_FIELDS) and isinstance(row.get("solution"), str):
        text, key = row["solution"], "solution"
    else:
        text, key = fields.completion(row), "completion"
    if not text.strip():
        raise row.error("empty completion", field=key, hint="drop the row or fill it in")
    return text


def tokenize_completion(tokenizer, messages: list[dict], completion: str) -> tuple[list[int], list[int]]:
    """Token ids of `messages` + the assistant's `completion` and the completion mask (1 from the first completion
    token through the end of its turn): the prompt as a generation backend sends it for `messages`
    (`rtool.generate.core.render_prompts`, what the teacher was given), then the completion exactly as written, then
    the template's end of turn (`rtool.generate.core.render_turn`: a template that drops the reasoning from assistant
    turns, as DeepSeek-R1-Distill's and QwQ's do, does not drop it here).
    """
    from rtool.generate.core import render_turn

    prompt, body, end = render_turn(tokenizer, messages, completion)
    # The template writes any bos token itself; verbose=False: no warning for rows longer than model_max_length,
    # which the length policy reports. The whole text is tokenized at once (a SentencePiece tokenizer marks a word
    # start differently in a text alone), unless a token then spans the boundary ("\n" + "\n..."): the prompt
    # stays the one the model is given.
    prompt_ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    ids = tokenizer(prompt + body + end, add_special_tokens=False, verbose=False)["input_ids"]
    if ids[:len(prompt_ids)] != prompt_ids:
        ids = prompt_ids + tokenizer(body + end, add_special_tokens=False, verbose=False)["input_ids"]
    return ids, [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))


def fit_length(ids: list[int], mask: list[int], max_length: int, truncation: str):
    """(ids, mask) within `max_length` tokens, or None when the row is not trained on: too long under "drop", or
    (under "keep-start") no completion token left in its first `max_length` tokens."""
    if len(ids) <= max_length:
        return ids, mask
    if truncation == "drop":
        return None
    ids, mask = ids[:max_length], mask[:max_length]
    return (ids, mask) if any(mask) else None


@dataclass
class ExampleCounts:
    read: int = 0
    kept: int = 0
    incorrect: int = 0  # skipped: correct == false
    recorded: int = 0  # kept rows trained on the conversation they carry (prompt_messages, a conversational prompt)
    question: int = 0  # of those, --prompt-template rows trained on their question_messages, not the rendering
    overridden: int = 0  # of those, rows whose own system turn is not what --system/--no-system asked
    too_long: int = 0  # rows longer than max_length (dropped, or cut under keep-start)
    no_completion: int = 0  # keep-start: the prompt alone fills max_length, dropped


@dataclass
class SFTExamples:
    """Rows -> `{"input_ids", "completion_mask"}` examples for the causal-LM loss on completion tokens, counted.

    Rows with `correct: false` (distill's negatives) are skipped unless `include_incorrect`. Call it as the
    `examples` of a training recipe: `examples(rows, tokenizer)`.
    """

    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    system_explicit: bool = False  # --system or --no-system was given: warn when recorded conversations win
    include_incorrect: bool = False
    max_length: int = 2048
    truncation: str = "drop"
    name: str = "sft"
    counts: ExampleCounts = field(default_factory=ExampleCounts)

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise UserError(f"--max-length must be at least 1, got {self.max_length}")
        one_of("--truncation", self.truncation, TRUNCATIONS)

    def __call__(self, rows: Iterable, tokenizer) -> Iterator[dict]:
        counts = self.counts
        for row in rows:
            counts.read += 1
            if not self.include_incorrect and sample_grade(row) is False:  # a string "no" is refused, not kept
                counts.incorrect += 1
                continue
            messages, recorded = prompt_messages(row, self.fields, self.system)
            ids, mask = tokenize_completion(tokenizer, messages, completion_text(row, self.fields))
            fitted = fit_length(ids, mask, self.max_length, self.truncation)
            if len(ids) > self.max_length:
                counts.too_long += 1
                if fitted is None and self.truncation != "drop":
                    counts.no_completion += 1
            if fitted is None:
                continue
            counts.kept += 1
            counts.recorded += recorded
            counts.question += not self.fields.prompt_field and row.get(QUESTION_PROMPT) is not None
            counts.overridden += system_not_applied(messages, recorded, self.system)
            yield {"input_ids": fitted[0], "completion_mask": fitted[1]}

    @staticmethod
    def features():
        """The examples' `datasets.Features`."""
        from datasets import Features, Value

        return Features({"input_ids": [Value("int32")], "completion_mask": [Value("int8")]})

    def report(self) -> None:
        """Log what was read and kept (stderr)."""
        c, name = self.counts, self.name
        note = f", skipped {c.incorrect} with correct == false (--include-incorrect keeps them)" if c.incorrect else ""
        logger.info("%s: %d training rows of %d read%s", name, c.kept, c.read, note)
        system = f"the system prompt {self.system!r}" if self.system else "no system prompt"
        if c.kept and c.recorded == c.kept:
            logger.info("%s: every row trains on the conversation it records (%s), as it is", name, CARRIED)
        elif c.recorded:
            logger.info("%s: %d rows train on the conversation they record (%s), %d bare prompts get %s", name,
                        c.recorded, CARRIED, c.kept - c.recorded, system)
        elif c.kept:
            logger.info("%s: no row records its conversation (%s): all get %s", name, CARRIED, system)
        if c.question:
            logger.info("%s: %d rows train on the question they answer (%s), not the --prompt-template rendering the "
                        "teacher was sent (%s; --prompt-field %s trains on it)", name, c.question, QUESTION_PROMPT,
                        RECORDED_PROMPT, RECORDED_PROMPT)
        if self.system_explicit:
            warn_recorded_wins(name, c.overridden, self.system)
        if c.too_long:
            limit = f"longer than --max-length {self.max_length} tokens"
            if self.truncation == "drop":
                logger.warning("%s: dropped %d rows %s, %.0f%% of the rows (--truncation drop; raise --max-length to "
                               "train on them, or --truncation keep-start to train on their first %d tokens)", name,
                               c.too_long, limit, 100 * c.too_long / (c.kept + c.too_long), self.max_length)
            else:
                logger.warning("%s: cut %d rows %s to their first %d tokens: their ends (final answer, end of turn) "
                               "are not trained on%s", name, c.too_long, limit, self.max_length,
                               f"; {c.no_completion} had no completion token left and were dropped"
                               if c.no_completion else "")

    def empty_hint(self) -> str:
        c = self.counts
        if c.too_long and c.too_long + c.incorrect == c.read:
            return (f"every row is longer than --max-length {self.max_length} tokens; raise it"
                    + (" or pass --truncation keep-start" if self.truncation == "drop" else ""))
        if c.incorrect and c.incorrect == c.read:
            return f"all {c.incorrect} rows have correct == false; pass --include-incorrect to train on them"
        return "the input has no rows"
