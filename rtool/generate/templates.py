"""Prompt templates: a Jinja template over a row's fields renders the user's turn (`rtool distill --prompt-template`).

    template = PromptTemplate.load("concise.j2")
    messages = template.messages(row, system)    # [system?] + the rendered user turn; UserError naming the row
    question = template.question(row, fields, system, messages)   # the conversation training commands train on

The template sees every field of the row by name (`{{ problem }}`, `{% if difficulty == "hard" %}`) and the whole
row as `row` (for names that are not identifiers: `{{ row["my-field"] }}`). It runs in Jinja's sandbox (no access
to Python internals: a template file is input, not code) with StrictUndefined: a field the row lacks is an error
naming the row's file:line and the field, never an empty string in the prompt. A single trailing newline of the
file is dropped (Jinja's default), so the file may end with one. The rendering is the whole user turn: a
multiple-choice row's options are not appended (the template shows them as it likes). Whatever goes wrong while a
row renders (`{{ 1 / 0 }}`, an unsafe attribute, a missing field) is one UserError naming the row's file:line and
the template's file:line: the template is input, and its errors are the user's to fix.

A rendering can hold more than the question: LiteCoT's rewrite prompt carries the question and its long trace. So a
templated trace records the question apart (`question`, written as `question_messages`), and training commands
train on it (rtool.train.data): the student learns to answer the question, not to rewrite a trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rtool.errors import UserError

_UNDEFINED = re.compile(r"'([^']+)' is undefined")


@dataclass
class PromptTemplate:
    path: str
    template: object  # jinja2.Template
    text: str = ""  # the file's text: distill records its digest (traces.sampling_record)

    @classmethod
    def load(cls, path) -> "PromptTemplate":
        """The template in file `path`; UserError for a file that cannot be read or is not valid Jinja."""
        from jinja2 import StrictUndefined, TemplateSyntaxError
        from jinja2.sandbox import SandboxedEnvironment

        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"the prompt template is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                            f"offset {error.start})", path=str(path), hint="save it as UTF-8") from None
        except OSError as error:
            raise UserError(f"cannot read the prompt template: {error.strerror or error}", path=str(path)) from None
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        try:
            # Compiled under its own path, so the frames of an error while a row renders name the template's line.
            code = environment.compile(text, name=str(path), filename=str(path))
            return cls(str(path), environment.template_class.from_code(environment, code,
                                                                       environment.make_globals(None)), text)
        except TemplateSyntaxError as error:
            raise UserError(f"not a valid Jinja template: {error.message}", path=str(path), line=error.lineno,
                            hint="see https://jinja.palletsprojects.com/en/stable/templates/") from None

    def render(self, row) -> str:
        """The user's turn for `row`; UserError naming the row's file:line, the template's file:line and what went
        wrong (the missing field, the exception the template raised)."""
        from jinja2 import TemplateError, UndefinedError

        try:
            text = self.template.render({**row, "row": row})
        except UndefinedError as error:
            missing = _UNDEFINED.search(str(error))
            name = missing.group(1) if missing else None
            problem = f"field {name!r} is missing" if name else str(error)
            raise row.error(f"--prompt-template {self._where(error)}: {problem}", field=name,
                            hint="add the field to the rows or guard it with {% if NAME is defined %}") from None
        except TemplateError as error:
            raise row.error(f"--prompt-template {self._where(error)}: {error}") from None
        except Exception as error:  # the template's own code failed for this row: `{{ 1 / 0 }}`, `{{ "a" + 1 }}`
            raise row.error(f"--prompt-template {self._where(error)}: {type(error).__name__}: {error}") from None
        if not text.strip():
            raise row.error(f"--prompt-template {self.path} renders an empty prompt for this row")
        return text

    def _where(self, error: Exception) -> str:
        """`PATH:LINE` of the template line that raised `error` (the innermost frame in the template; Jinja maps
        its frames to template lines), or PATH when none is."""
        line, frame = None, error.__traceback__
        while frame is not None:
            if frame.tb_frame.f_code.co_filename == self.path:
                line = frame.tb_lineno
            frame = frame.tb_next
        return self.path if line is None else f"{self.path}:{line}"

    def messages(self, row, system: str | None) -> list[dict]:
        """The conversation to send: `system` (when given), then the rendered user turn."""
        user = {"role": "user", "content": self.render(row)}
        return [{"role": "system", "content": system}, user] if system else [user]

    @staticmethod
    def question(row, fields, system: str | None, rendered: list[dict]) -> list[dict]:
        """The conversation of the question `row` poses, which a trainer trains the teacher's answer on: an explicit
        --prompt-field (`fields`) names it; else the row's own `question_messages` (a rewrite of a rewrite), else
        its recorded `prompt_messages` (the conversation its earlier trace answered, as distill recorded it: the
        input of a LiteCoT rewrite), else its prompt field after `system` (what distill sends without a template).
        A row with none of these (the template builds the question from other fields) poses its `rendered` one."""
        from rtool.grade.fields import PROMPT_FIELDS

        if not fields.prompt_field:
            for key in ("question_messages", "prompt_messages"):
                if isinstance(row.get(key), list) and row[key]:
                    return row[key]
            if all(row.get(key) is None for key in PROMPT_FIELDS):
                return rendered
        return fields.messages(row, system)
