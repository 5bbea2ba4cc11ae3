"""OUT/README.md, the model card every training run writes when it ends, checkpoint or not: what was trained from
what, on which data (files with their row counts and sha256), by which command, to which final metrics, with the
curves. Its front matter is the Hugging Face hub's (`base_model`, `library_name`, `tags`), so an uploaded OUT shows
its lineage. A README.md in OUT that is not rtool's card (`rtool.train.outdir.is_rtool_card`) is never written over.

    write_model_card(out, base_model="Qwen/Qwen2.5-1.5B", data="traces.jsonl", rows=7500, command="sft",
                     flags={"lr": 2e-5, ...})
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from rtool.log import logger
from rtool.train.inputs import digest
from rtool.train.outdir import CARD_FILE, CARD_TAGS, METRICS_FILE, is_rtool_card

# Flags the card's command line leaves out: how the run was started, not what it trained.
_NOT_IN_COMMAND = ("config", "resume", "overwrite")
# A model in the hub's local cache: HF_HOME/hub/models--ORG--NAME/snapshots/REVISION.
_HUB_CACHE = re.compile(r"models--(?P<id>[^/]+)/snapshots/[^/]+$")


def write_model_card(out: Path, *, base_model: str, data: str, rows: int, command: str, flags: dict,
                     data_sha256: str | None = None) -> Path | None:
    """Write OUT/README.md; return its path (None, with a warning, when OUT holds a README.md of someone else's:
    it is kept). `rows` is how many rows were read from `data`; `data_sha256` its hash as the run recorded it when
    it started (None: hashed now); `flags` the command's merged flags (defaults < YAML < command line), written back
    as the command line that repeats the run."""
    from rtool import __version__

    out = Path(out)
    path = out / CARD_FILE
    if path.exists() and not is_rtool_card(path):
        logger.warning("%s is not an rtool model card: kept as it is, no card written", path)
        return None
    metrics = _last_metrics(out / METRICS_FILE)
    lines = ["---", f"base_model: {json.dumps(base_model)}", "library_name: transformers",
             f"{CARD_TAGS}{command}]", "---", "",
             f"# {out.resolve().name}", "",
             f"`rtool {command}` (rtool {__version__}) trained this model from `{base_model}`.", "",
             "## Data", "", "| input | rows read | sha256 |", "| --- | ---: | --- |",
             f"| `{data}` | {rows} | {data_sha256 or _digest(data)} |", "",
             "## Command", "", "The flags as the run used them (YAML included):", "", "```",
             command_line(command, flags), "```", ""]
    if metrics:
        lines += ["## Final metrics", "", f"At step {metrics.get('step')}:", "", "| metric | value |",
                  "| --- | ---: |"]
        lines += [f"| {key} | {value:.6g} |" for key, value in metrics.items()
                  if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)]
        lines.append("")
    if (out / "curves.png").exists():
        lines += ["## Curves", "", "![training curves](curves.png)", "",
                  f"Every logged step is in [{METRICS_FILE}]({METRICS_FILE}).", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def base_model_name(model: str) -> str:
    """The card's `base_model`: a hub id as given; a local model by its folder's (or file's) name, or, from the hub's
    local cache, by the hub id it was downloaded as. Never an absolute local path: the card travels with OUT."""
    path = Path(model)
    if not path.exists():
        return model
    resolved = path.resolve()
    cached = _HUB_CACHE.search(resolved.as_posix())
    return cached.group("id").replace("--", "/", 1) if cached else resolved.name


def command_line(command: str, flags: dict) -> str:
    """`rtool COMMAND --flag value ...` from merged flags: None and False left out (a flag at its off default),
    True as the bare flag, except a tri-state's False, written as its --no- form."""
    words = ["rtool", command]
    for key, value in flags.items():
        if key in _NOT_IN_COMMAND or value is None:
            continue
        if key == "trl_args":  # TRL settings passed through (rtool.trl_names), under TRL's names
            for name, item in value.items():
                words += [f"--{name}", json.dumps(item) if isinstance(item, dict) else str(item)]
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            if key == "gradient_checkpointing":  # auto, on or off: off must be said
                words.append("--no-gradient-checkpointing")
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _digest(data: str) -> str:
    """sha256 of a data file (of a saved dataset dir: of its files' names and bytes, in order); what else it is
    when there is no file to hash."""
    if data == "-":
        return "stdin: not hashed"
    if not Path(data).exists():
        return "not a local file: not hashed"
    return digest(data)[1]


def _last_metrics(path: Path) -> dict:
    """The last row of metrics.jsonl that holds a loss (the end-of-run state), or {}."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return {}
    with_loss = [row for row in rows if "loss" in row]
    return (with_loss or rows or [{}])[-1]
