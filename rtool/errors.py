"""The one error type for problems the user can fix, and how it is rendered.

    raise UserError("missing field 'prompt'", path="traces.jsonl", line=7,
                    hint="found: question, answer; pass --prompt-field question")

renders as `traces.jsonl:7: missing field 'prompt' (found: question, answer; pass --prompt-field question)`.
The CLI prints it as `rtool: error: <that>` and exits 2; library callers catch it like any exception.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, flags or files: exit code 2, one line, no traceback."""

    exit_code = 2

    def __init__(self, message: str, *, path: object = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        text = f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        # One line, always: a newline inside a message would break `rtool: error:` parsing by scripts.
        return " ".join(text.split("\n"))


def one_of(name: str, value: str, valid: list[str] | tuple[str, ...]) -> str:
    """Return `value` if it is in `valid`, else raise a UserError that lists the valid names."""
    if value not in valid:
        raise UserError(f"unknown {name} {value!r}", hint="valid: " + ", ".join(valid))
    return value
