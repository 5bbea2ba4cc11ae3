"""A training run's OUT dir across interruptions: refusing to overwrite another run (`prepare_out_dir`), finding the
last checkpoint a kill did not cut short (`last_complete_checkpoint`), the settings a run started with
(OUT/run_settings.json: `check_run_settings` refuses a resume with others), and trimming OUT/metrics.jsonl back to the
checkpoint a resumed run starts from, so it logs what an uninterrupted run logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

from rtool.errors import UserError
from rtool.log import logger
from rtool.train.processes import is_main_process

METRICS_FILE = "metrics.jsonl"

# Files that mark a directory as holding an earlier run (overwritten only with --resume).
_RUN_MARKERS = (METRICS_FILE, "config.json", "adapter_config.json")


def prepare_out_dir(out: Path, resume: bool, overwrite: bool = False) -> str | None:
    """Check `out` and return the checkpoint to resume from (None: start fresh).

    Without `resume`, a directory that already holds a run (metrics.jsonl, a model or checkpoint-N dirs) is refused,
    so a typo does not overwrite a finished model; with `overwrite` an earlier rtool run there is removed (rank 0;
    `replace_run_dir`). Nothing else is written here: every rank calls it.
    """
    from transformers.trainer_utils import get_last_checkpoint

    from rtool.atomic import check_writable

    if out.exists() and not out.is_dir():
        raise UserError("--out exists and is not a directory", path=out)
    check_writable(out, kind="dir")  # a parent that is a file, no permission: refused before the model loads
    if not out.is_dir():
        return None
    if resume:
        checkpoint = last_complete_checkpoint(out)
        if checkpoint is None:
            logger.warning("--resume: no complete checkpoint-N in %s, starting from the beginning", out)
        return checkpoint
    checkpoint = get_last_checkpoint(str(out))
    found = [name for name in _RUN_MARKERS if (out / name).exists()]
    if checkpoint is not None:
        found.append(Path(checkpoint).name)
    if found and overwrite:
        if is_main_process():
            replace_run_dir(out)
        return None
    if found:
        raise UserError(f"--out already holds a training run ({', '.join(found)})", path=out,
                        hint="pass --resume to continue it, --overwrite to replace it, or choose another --out")
    return None


def replace_run_dir(out: Path) -> None:
    """Remove an earlier rtool run from `out` for --overwrite: renamed aside first (one atomic step: OUT holds the
    old run or none, never half of one), then deleted. Only a dir rtool wrote (its run_settings.json or
    metrics.jsonl) is removed: --overwrite with a typo in --out must not delete a model or a home directory."""
    if not any((out / name).is_file() for name in (SETTINGS_FILE, METRICS_FILE)):
        raise UserError("--overwrite: --out does not look like an rtool training run (no run_settings.json or "
                        "metrics.jsonl); not deleting it", path=out, hint="remove it yourself or choose another --out")
    aside = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    out.rename(aside)
    logger.warning("--overwrite: removed the earlier run in %s", out)
    shutil.rmtree(aside, ignore_errors=True)


# A checkpoint's weights, one of these (full model, sharded, LoRA adapter).
_CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def is_complete_checkpoint(path: Path) -> bool:
    """transformers writes a checkpoint's trainer_state.json last, after its weights, optimizer, scheduler and RNG
    states: a checkpoint whose trainer_state.json reads whole and that has its weights was saved to the end. One
    cut short by a kill -9 mid-save lacks it (or holds half of it)."""
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any((path / name).exists() for name in _CHECKPOINT_WEIGHTS)


def last_complete_checkpoint(out: Path) -> str | None:
    """The complete OUT/checkpoint-N with the highest N, or None; each higher, incomplete one is named in a
    warning (transformers' get_last_checkpoint takes the highest, complete or not, and the resume then fails)."""
    found = sorted((path for path in Path(out).glob("checkpoint-*") if path.is_dir() and checkpoint_step(path)),
                   key=checkpoint_step, reverse=True)
    for path in found:
        if is_complete_checkpoint(path):
            return str(path)
        if is_main_process():
            logger.warning("--resume: skipping %s: incomplete (no readable trainer_state.json or no weights: its "
                           "save was cut short)", path)
    return None


# Flags that change how a run is watched or stored, not what it trains: a resume may change them (grpo's failure-curve
# watch and prm-train's evaluation among them).
_RUN_ONLY_SETTINGS = ("out", "config", "resume", "overwrite", "logging_steps", "save_steps", "report_to", "gradient_checkpointing",
                      "trust_remote_code", "allow_pickle", "merge_lora", "watch_window", "collapse_fraction",
                      "drop_fraction", "eval_steps")


SETTINGS_FILE = "run_settings.json"


def run_settings(flags: dict) -> dict:
    """The training settings of a run, from its command's merged flags, as JSON values: what a resume must keep."""
    kept = {key: value for key, value in flags.items() if key not in _RUN_ONLY_SETTINGS}
    return json.loads(json.dumps(kept, default=str, sort_keys=True))


def check_run_settings(out: Path, settings: dict, *, resuming: bool) -> None:
    """Refuse a resume whose training settings differ from those the run started with (OUT/run_settings.json),
    naming each: the rest would train another objective into the same model and metrics.jsonl. A run that starts
    (fresh, or --resume without a checkpoint) records its settings there (rank 0)."""
    path = Path(out) / SETTINGS_FILE
    if not resuming:
        if is_main_process():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # a run from an rtool that did not record its settings
    except (OSError, ValueError) as error:
        raise UserError(f"unreadable training settings: {error}", path=path) from None
    differ = [key for key in sorted(set(settings) | set(started)) if settings.get(key) != started.get(key)]
    if differ:
        shown = ", ".join(f"--{key.replace('_', '-')} {started.get(key)!r} -> {settings.get(key)!r}"
                          for key in differ)
        raise UserError(f"--resume with other training settings than the run's: {shown}", path=path,
                        hint="resume with the same flags, or train into another --out")


@contextlib.contextmanager
def removed_if_failed_early(out: Path):
    """Remove `out` when the run that created it fails before leaving anything of use in it: no checkpoint, no
    metrics row, no model (a bad row found late, a reward function of the wrong shape at step 1). A failed run then
    leaves nothing half-made behind, and `--out` stays free for the next try. Rank 0 removes it."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and is_main_process() and out.is_dir() and not _holds_results(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _holds_results(out: Path) -> bool:
    from transformers.trainer_utils import get_last_checkpoint

    metrics = out / METRICS_FILE
    return (get_last_checkpoint(str(out)) is not None or (metrics.exists() and metrics.stat().st_size > 0)
            or any((out / name).exists() for name in ("config.json", "adapter_config.json")))


def checkpoint_step(checkpoint: str | None) -> int:
    match = re.search(r"checkpoint-(\d+)$", str(checkpoint or ""))
    return int(match.group(1)) if match else 0


def trim_metrics(path: Path, max_step: int) -> None:
    """Drop metrics rows past `max_step`: after a resume from checkpoint-N they are logged again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line + "\n")
        except ValueError:
            continue  # a half-written last line from a killed run
    path.write_text("".join(kept), encoding="utf-8")

