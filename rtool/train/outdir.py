"""What a training run owns in its OUT dir, so that nothing else there is ever trained into or deleted.

A run writes only entries of these names (`run_entries`): its model (config, safetensors, tokenizer files, a LoRA
adapter, merged/, prm-train's rtool_prm.json), checkpoint-N/, metrics.jsonl, run_settings.json, trainer_state.json,
training_args.json, curves.png, runs/ (TensorBoard) and its model card README.md, which is the run's only while its
front matter is rtool's card's. A dir is an rtool run when it holds run_settings.json or metrics.jsonl; a symlink is
never the run's. `rtool.train.checkpoints.prepare_out_dir` refuses any other non-empty dir.

    is_run(out)                                         # a dir that is not one and not empty is refused
    remove_run(out, inputs={"--model": model})          # --overwrite: the run's entries, nothing else
    remove_checkpoints(out)                             # a finished run: its checkpoint-N dirs (optimizer pickles)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rtool.errors import UserError
from rtool.log import logger

METRICS_FILE = "metrics.jsonl"
SETTINGS_FILE = "run_settings.json"
# A run that finished writes the trainer's state last, after its model (Trainer.save_state, as open-r1 does).
STATE_FILE = "trainer_state.json"
CARD_FILE = "README.md"
# The line of the card's front matter that says rtool wrote it (rtool.train.card writes `tags: [rtool, sft]`).
CARD_TAGS = "tags: [rtool, "

_RUN_FILES = frozenset({
    SETTINGS_FILE, METRICS_FILE, STATE_FILE, "curves.png", "training_args.json", "training_args.bin",
    "rtool_prm.json",  # prm-train: the conversation the PRM was trained in (rtool.prm.score)
    # The model as transformers and PEFT save it.
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "adapter_config.json", "adapter_model.safetensors",
    # The tokenizer (whichever files its kind saves) and its chat template.
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json",
})
_RUN_FILE_PATTERN = re.compile(r"model-\d+-of-\d+\.safetensors")
# merged/: --merge-lora's model; runs/: --report-to tensorboard's event files.
_RUN_DIRS = frozenset({"merged", "runs"})
_RUN_DIR_PATTERN = re.compile(r"checkpoint-\d+")
# Removed last, so that a removal cut short still reads as a run (and the next --overwrite finishes it).
_MARKERS = (METRICS_FILE, SETTINGS_FILE)


def is_run(out: Path) -> bool:
    """`out` holds an rtool training run (finished or not)."""
    return any(_is_file(Path(out) / name) for name in _MARKERS)


def is_run_entry(path: Path) -> bool:
    """`path`, an entry of an OUT dir, is one that a run writes."""
    if path.is_symlink():
        return False
    name = path.name
    if name == CARD_FILE:
        return is_rtool_card(path)
    if path.is_file():
        return name in _RUN_FILES or bool(_RUN_FILE_PATTERN.fullmatch(name))
    if path.is_dir():
        return name in _RUN_DIRS or bool(_RUN_DIR_PATTERN.fullmatch(name))
    return False


def run_entries(out: Path) -> list[Path]:
    """The entries of `out` that a run wrote, markers last."""
    entries = [path for path in Path(out).iterdir() if is_run_entry(path)]
    return sorted(entries, key=lambda path: (path.name in _MARKERS, path.name))


def is_rtool_card(path: Path) -> bool:
    """`path` is a model card rtool wrote: front matter with rtool's tags line, near its top."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    front = head.split("\n---", 1)[0] if head.startswith("---\n") else ""
    return f"\n{CARD_TAGS}" in front


def remove_run(out: Path, *, inputs: dict[str, str | Path] | None = None, keep_settings: bool = False) -> list[str]:
    """Delete the entries of an earlier run from `out` (--overwrite) and return their names; the dir and every
    other file in it stay. Nothing is deleted, and UserError says why, when an entry to delete is, holds or lies
    inside one of `inputs` (a flag -> its path: --model OUT/checkpoint-500, --data OUT/metrics.jsonl), or is the
    current directory or holds it. With `keep_settings`, run_settings.json stays (the new run rewrites it): other
    processes of the run, checking OUT meanwhile, still see a run there."""
    out = Path(out)
    entries = [path for path in run_entries(out) if not (keep_settings and path.name == SETTINGS_FILE)]
    cwd = Path.cwd().resolve()
    for entry in entries:
        real = entry.resolve()
        if real == cwd or real in cwd.parents:
            raise UserError(f"--overwrite would delete {entry}, the current directory or one holding it", path=out,
                            hint="run from another directory")
        for flag, value in (inputs or {}).items():
            target = Path(value).resolve()
            relation = ("which is" if real == target else "which holds" if real in target.parents
                        else "part of" if target in real.parents else None)
            if relation:
                raise UserError(f"--overwrite would delete {entry}, {relation} {flag} {value}", path=out,
                                hint="train into another --out, or move the input out of it first")
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return [entry.name for entry in entries]


def remove_checkpoints(out: Path) -> None:
    """Delete OUT/checkpoint-N when a run has finished: each holds the optimizer, scheduler and RNG states as
    torch pickles (twice the model's size in optimizer state alone), of use only to resume a run that has ended."""
    found = sorted((path for path in Path(out).glob("checkpoint-*") if is_run_entry(path)),
                   key=lambda path: int(path.name.rpartition("-")[2]))
    if not found:
        return
    size = sum(file.stat().st_size for path in found for file in path.rglob("*") if file.is_file())
    for path in found:
        shutil.rmtree(path)
    logger.info("removed %s (%.1f MB: what a resume needs, optimizer, scheduler and RNG pickles included; the final "
                "model is in %s); --keep-checkpoints keeps them", ", ".join(path.name for path in found), size / 1e6,
                out)


def _is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
