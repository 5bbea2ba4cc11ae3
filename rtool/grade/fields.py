"""Which field of a row holds the prompt, the gold answer and the completion.

Auto-detection covers the formats of the field: GSM8K (`question`, `answer` ending in `#### n`), MATH (`problem`,
`answer`, `solution` with `\\boxed{}`) and TRL (`prompt` as a string or a list of messages, `messages`,
`completion`). `--prompt-field` / `--answer-field` override it.

    fields = FieldMap(prompt_field=None, answer_field=None)
    fields.messages(row, system="Reason step by step.")   # chat messages ending with the user's turn
    fields.gold(row)                                       # "18", or None when the row has no gold answer
    fields.choices(row)                                    # {"A": "...", "B": "..."} for multiple choice, else None
    sample_grade(row)                                      # the row's `correct`: True, False or None (ungraded)

Multiple-choice rows (MedQA's format, which AlphaMed trains on: `question`, `options` {"A": ..., "E": ...} or a
list lettered A, B, ..., `answer` a letter or the option's text, maybe `answer_idx` the letter) show the model
their options (see `messages`) and are graded by option (`rtool.grade.answers.grade(..., choices=)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtool.grade.answers import gold_from_gsm8k, last_boxed
from rtool.io.records import Row

PROMPT_FIELDS = ("prompt", "messages", "question", "problem", "instruction", "input")
GOLD_FIELDS = ("answer", "gold", "final_answer", "solution", "answer_idx")
CHOICES_FIELD = "options"
COMPLETION_FIELDS = ("completion", "response", "output", "messages")


@dataclass(frozen=True)
class FieldMap:
    prompt_field: str | None = None
    answer_field: str | None = None

    def prompt_key(self, row: Row) -> str:
        if self.prompt_field:
            if self.prompt_field not in row:
                raise row.error(f"missing field {self.prompt_field!r}", field=self.prompt_field,
                                hint=f"found: {_keys(row)}")
            return self.prompt_field
        for key in PROMPT_FIELDS:
            if key in row and row[key] is not None:
                return key
        raise row.error("no prompt field", field="prompt",
                        hint=f"found: {_keys(row)}; expected one of {', '.join(PROMPT_FIELDS)} or pass --prompt-field")

    def messages(self, row: Row, system: str | None = None) -> list[dict]:
        """The conversation to send to a chat model: its last message is the user's turn.

        A multiple-choice row's options are appended to the user's turn, one per line after a blank line
        ("...question?\n\nA. Hypertension\nB. Heart failure"), since the model must see what it chooses from.
        """
        key = self.prompt_key(row)
        value = row[key]
        if isinstance(value, str):
            if not value.strip():
                raise row.error(f"field {key!r} is empty", field=key)
            messages = [{"role": "user", "content": value}]
        elif isinstance(value, list):
            messages = _checked_messages(row, key, value)
            if key == "messages":
                # TRL conversational rows carry the answer too: the prompt is everything before the last assistant turn.
                while messages and messages[-1]["role"] == "assistant":
                    messages = messages[:-1]
            if not messages:
                raise row.error(f"field {key!r} has no user message", field=key)
        else:
            raise row.error(f"field {key!r} must be a string or a list of messages, got {type(value).__name__}",
                            field=key)
        choices = self.choices(row)
        if choices:
            last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
            listing = "\n".join(f"{letter}. {text}" for letter, text in choices.items())
            messages = [*messages[:last], {**messages[last], "content": f"{messages[last]['content']}\n\n{listing}"},
                        *messages[last + 1:]]
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        return messages

    def choices(self, row: Row) -> dict[str, str] | None:
        """A multiple-choice row's options as {letter: text} in letter order, or None when it has none.

        `options` may map letters to texts ({"A": "...", "E": "..."}) or list the texts (lettered A, B, ...); up to
        10 options (A-J); numbers count as their text.
        """
        value = row.get(CHOICES_FIELD)
        if value is None or value == {} or value == []:
            return None
        expected = "a {letter: text} object or a list of texts"
        if isinstance(value, dict):
            items = [(str(letter).strip().upper(), text) for letter, text in value.items()]
            if any(len(letter) != 1 or not "A" <= letter <= "J" for letter, _ in items):
                raise row.error(f"field {CHOICES_FIELD!r} must have letters A-J as keys, got "
                                f"{', '.join(str(k) for k in list(value)[:12])}", field=CHOICES_FIELD)
            items.sort()
        elif isinstance(value, list):
            if len(value) > 10:
                raise row.error(f"field {CHOICES_FIELD!r} has {len(value)} options; at most 10 (A-J)",
                                field=CHOICES_FIELD)
            items = [(chr(ord("A") + i), text) for i, text in enumerate(value)]
        else:
            raise row.error(f"field {CHOICES_FIELD!r} must be {expected}, got {type(value).__name__}",
                            field=CHOICES_FIELD)
        for letter, text in items:
            if isinstance(text, bool) or not isinstance(text, (str, int, float)):
                raise row.error(f"option {letter} of field {CHOICES_FIELD!r} must be a string, got "
                                f"{type(text).__name__}", field=CHOICES_FIELD)
        return {letter: str(text).strip() for letter, text in items}

    def prompt_text(self, row: Row) -> str:
        """The user's question as plain text: for ids, n-gram checks and logs."""
        return "\n".join(m["content"] for m in self.messages(row) if m["role"] != "system")

    def gold(self, row: Row) -> str | None:
        """The gold final answer as a string, or None when the row has none (ungradable, not wrong)."""
        if self.answer_field:
            if self.answer_field not in row:
                raise row.error(f"missing field {self.answer_field!r}", field=self.answer_field,
                                hint=f"found: {_keys(row)}")
            return _gold_from_value(row, self.answer_field)
        for key in GOLD_FIELDS:
            if row.get(key) not in (None, ""):
                gold = _gold_from_value(row, key)
                if gold is not None:
                    return gold
        return None

    def completion(self, row: Row) -> str:
        """The model's answer text in a trace row (distill output, TRL prompt/completion or messages)."""
        for key in COMPLETION_FIELDS:
            if key not in row or row[key] is None:
                continue
            value = row[key]
            if isinstance(value, str):
                return value
            if isinstance(value, list):
                assistant = [m for m in _checked_messages(row, key, value) if m["role"] == "assistant"]
                if assistant:
                    return assistant[-1]["content"]
                if key == "messages":
                    continue
            raise row.error(f"field {key!r} must be a string or a list of messages, got {type(value).__name__}",
                            field=key)
        raise row.error("no completion field", field="completion",
                        hint=f"found: {_keys(row)}; expected one of {', '.join(COMPLETION_FIELDS)}")


def _gold_from_value(row: Row, key: str) -> str | None:
    value = row[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise row.error(f"field {key!r} must be a string or a number, got {type(value).__name__}", field=key)
    text = value.strip()
    if not text:
        return None
    if "####" in text:
        return gold_from_gsm8k(text)
    if key == "solution" or "\\boxed" in text:
        return last_boxed(text)
    return text


def _checked_messages(row: Row, key: str, value: list) -> list[dict]:
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise row.error(f"{key}[{index}] is not a message {{role, content}}", field=key)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _keys(row: dict) -> str:
    return ", ".join(list(row)[:12]) or "no fields"


def prompt_id(row: Row, fields: FieldMap) -> str:
    """The row's `id`, or a stable one made from the prompt text, so samples of one prompt group together
    across runs, files and resumes."""
    if row.get("id") not in (None, ""):
        return str(row["id"])
    import hashlib

    return "p" + hashlib.sha1(fields.prompt_text(row).encode("utf-8")).hexdigest()[:16]


def sample_grade(row: Row) -> bool | None:
    """A graded sample's `correct` (distill, eval --records): true, false, or None when it is null or absent
    (ungraded). Anything else (`"true"`, `"no"`, 1) is refused with file:line, never read as a guess: a string
    "no" is truthy, `is True` is false for "true"."""
    value = row.get("correct")
    if value is None or isinstance(value, bool):
        return value
    raise row.error(f"field 'correct' must be true, false or null, got {value!r}", field="correct")
