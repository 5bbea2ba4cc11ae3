"""What a prm-score output file already holds, for `--resume`: its rows keyed as distill keys samples, and the
settings it was scored with.

    written = read_scored(Path("scored.jsonl"), fields)      # rtool.io.records.Written
    skip = written.counts.copy()                             # (id, sample) -> rows already scored
    if skip[scored_key(row, fields)] > 0: ...                # scored before the kill: not again

A row's key is (id, sample): its `id` (a row without one: the id made from its prompt, rtool.grade.fields.prompt_id)
and its `sample` as written (null when it has none). A key may repeat in an input that has no `sample` (several
completions of one prompt): a resume skips as many rows of a key as the file holds, so each is scored once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rtool.errors import UserError
from rtool.io.records import Row, Written, read_written

SETTINGS_FIELD = "prm_scoring"
# Settings that name a model: the same model typed another way (./P for P, an absolute path) is no change.
_MODEL_SETTINGS = ("prm", "orm")


def scored_key(row, fields) -> tuple[str, str]:
    """The row's (id, sample) key; UserError naming its file:line when it has no id and no prompt."""
    from rtool.grade.fields import prompt_id

    return prompt_id(row, fields), json.dumps(row.get("sample"), sort_keys=True)


def read_scored(out_path: Path, fields) -> Written:
    """The keys of the rows `out_path` already holds and its first `prm_scoring` record. A line that is no
    prm-score output (no step_scores, no id or prompt) is a UserError naming it."""
    def key(row):
        if not isinstance(row["step_scores"], list):
            raise TypeError("step_scores is not a list")
        try:
            return scored_key(Row(row), fields)
        except UserError:
            raise KeyError("no id and no prompt") from None

    return read_written(out_path, key=key, settings_field=SETTINGS_FIELD, command="prm-score",
                        needs="step_scores, and an id or a prompt")


def as_recorded(settings: dict, recorded: dict | None) -> dict:
    """`settings` with each model named as the file records it when both name the same local model (`./P` and
    `P`, or a path resolved from another directory), so that a resume compares models, not spellings."""
    if not recorded:
        return settings
    same = {key: recorded[key] for key in _MODEL_SETTINGS
            if key in settings and key in recorded and _same_model(settings[key], recorded[key])}
    return {**settings, **same}


def _same_model(given, recorded) -> bool:
    if given == recorded:
        return True
    if not isinstance(given, str) or not isinstance(recorded, str):
        return False
    try:
        return os.path.samefile(given, recorded)
    except OSError:  # either is not here (a hub id): the names decide
        return False
