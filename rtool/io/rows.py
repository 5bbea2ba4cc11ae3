"""A row as every reader yields it (`Row`: a dict that knows its file and line) and the counts a read keeps
(`ReadStats`). Its own module so that the readers (rtool.io.records for files and stdin, rtool.io.sources for what
`datasets` reads) share them while records -> sources stays the only import between the two.

    row = Row({"prompt": "2+2?"}, "traces.jsonl", 7)
    raise row.error("no completion field", field="completion")    # traces.jsonl:7: no completion field
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtool.errors import UserError


class Row(dict):
    """A record (a plain dict for json.dumps) that remembers its source file and line for error messages."""

    __slots__ = ("path", "line")

    def __init__(self, data=(), path: str = "<input>", line: int | None = None):
        super().__init__(data)
        self.path = path
        self.line = line

    def error(self, message: str, *, field: str | None = None, hint: str | None = None) -> UserError:
        return UserError(message, path=self.path, line=self.line, field=field, hint=hint)


@dataclass
class ReadStats:
    rows: int = 0
    skipped: int = 0
    first_skip: str | None = None
    skipped_where: list[str] = field(default_factory=list)
