"""A training run's OUT dir across interruptions: what a run may start in (`prepare_out_dir`: a new or empty dir,
or its own earlier run with --resume or --overwrite; `rtool.train.outdir` says what a run owns), finding the last
checkpoint a kill did not cut short (`last_complete_checkpoint`), the settings a run started with
(OUT/run_settings.json: `check_run_settings` refuses a resume with others, inputs compared resolved and data by
content), and trimming OUT/metrics.jsonl back to the checkpoint a resumed run starts from, so it logs what an
uninterrupted run logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rtool.errors import UserError
from rtool.log import logger
from rtool.train import outdir
from rtool.train.inputs import describe_input, same_input
from rtool.train.outdir import METRICS_FILE, SETTINGS_FILE, STATE_FILE
from rtool.train.processes import is_main_process

# Files that show a run got somewhere (kept unless --resume or --overwrite says what to do with them).
_RESULTS = (METRICS_FILE, "config.json", "adapter_config.json")


@dataclass
class Start:
    """Where a run starts: `checkpoint` to resume from (None: the beginning); `finished_step`: --resume found a run
    that already ended (its model saved, OUT/trainer_state.json written) at that step: nothing is left to train."""

    checkpoint: str | None = None
    finished_step: int | None = None


def prepare_out_dir(out: Path, resume: bool, overwrite: bool = False, inputs: dict | None = None) -> Start:
    """Check `out` and say where the run starts.

    `out` must be new, empty, or an rtool run (`rtool.train.outdir`): any other dir with something in it is refused,
    naming a file, with or without --resume/--overwrite. Without `resume`, a run that got somewhere (metrics.jsonl, a
    model or checkpoint-N dirs) is refused, so a typo does not overwrite a finished model; with `overwrite` the
    earlier run's own entries are deleted (rank 0; `outdir.remove_run`: never `inputs`, a flag -> path, or the
    current directory) and nothing else. Every rank calls this.
    """
    from rtool.atomic import check_writable

    if out.exists() and not out.is_dir():
        raise UserError("--out exists and is not a directory", path=out)
    check_writable(out, kind="dir")  # a parent that is a file, no permission: refused before the model loads
    if not out.is_dir():
        return Start()
    names = sorted(os.listdir(out))
    if names and not outdir.is_run(out):
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise UserError(f"--out is not empty and holds no rtool training run (it holds {names[0]!r}{more}); rtool "
                        "never trains into a directory of other files, nor deletes them", path=out,
                        hint="choose a new or empty directory for --out")
    if resume:
        finished = finished_step(out)
        if finished is not None:
            return Start(finished_step=finished)
        checkpoint = last_complete_checkpoint(out)
        if checkpoint is None:
            logger.warning("--resume: no complete checkpoint-N in %s, starting from the beginning", out)
        return Start(checkpoint=checkpoint)
    checkpoint = last_checkpoint(out)
    found = [name for name in _RESULTS if (out / name).exists()]
    if checkpoint is not None:
        found.append(Path(checkpoint).name)
    if found and overwrite:
        if is_main_process():
            removed = outdir.remove_run(out, inputs=inputs, keep_settings=True)
            logger.warning("--overwrite: removed the earlier run in %s (%s); nothing else there was touched", out,
                           ", ".join(removed))
        return Start()
    if found:
        raise UserError(f"--out already holds a training run ({', '.join(found)})", path=out,
                        hint="pass --resume to continue it, --overwrite to replace it, or choose another --out")
    return Start()


def finished_step(out: Path) -> int | None:
    """The step at which the run in `out` finished, or None when it did not (or an rtool that wrote no
    OUT/trainer_state.json ran it): the state is written after the final model, so one that reads whole means the
    model was saved to the end."""
    path = Path(out) / STATE_FILE
    if not is_complete_checkpoint(Path(out)):
        return None
    return int(json.loads(path.read_text(encoding="utf-8")).get("global_step", 0))


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
_RUN_ONLY_SETTINGS = ("out", "config", "resume", "overwrite", "logging_steps", "save_steps", "keep_checkpoints",
                      "report_to", "gradient_checkpointing", "trust_remote_code", "allow_pickle", "merge_lora",
                      "watch_window", "collapse_fraction", "drop_fraction", "eval_steps")
# Flags that name a local file or dir (or a hub id): recorded resolved, so a resume from another directory, or with
# `./x` for `x`, is the same run. The data and a chat template file also by content: new bytes under the same name
# are another run. A model dir is not hashed (gigabytes): its path stands for it.
_PATH_SETTINGS = ("model", "prm")
_CONTENT_SETTINGS = ("data", "chat_template")


def run_settings(flags: dict) -> dict:
    """The training settings of a run, from its command's merged flags, as JSON values: what a resume must keep."""
    kept = {key: value for key, value in flags.items() if key not in _RUN_ONLY_SETTINGS}
    for key in _PATH_SETTINGS + _CONTENT_SETTINGS:
        if key in kept:
            kept[key] = describe_input(kept[key], content=key in _CONTENT_SETTINGS)
    return json.loads(json.dumps(kept, default=str, sort_keys=True))


def check_run_settings(out: Path, settings: dict, *, resuming: bool) -> None:
    """Refuse a resume whose training settings differ from those the run started with (OUT/run_settings.json),
    naming each: the rest would train another objective into the same model and metrics.jsonl. Inputs are compared
    as `rtool.train.inputs.same_input` does (resolved paths; the data by size and sha256). A run that starts (fresh,
    or --resume without a checkpoint) records its settings there (rank 0)."""
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
    differ = []
    for key in sorted(set(settings) | set(started)):
        was, now = started.get(key), settings.get(key)
        if key in _PATH_SETTINGS + _CONTENT_SETTINGS and same_input(was, now):
            continue
        if was != now:
            differ.append(_difference(key, was, now))
    if differ:
        raise UserError(f"--resume with other training settings than the run's: {', '.join(differ)}", path=path,
                        hint="resume with the same flags and data, or train into another --out")


def _difference(key: str, was, now) -> str:
    flag = "--" + key.replace("_", "-")
    if isinstance(was, dict) and isinstance(now, dict):  # the same kind of local input, other bytes
        return (f"{flag} {now['path']} changed since the run started ({was['bytes']} bytes, sha256 "
                f"{was['sha256'][:12]} -> {now['bytes']} bytes, sha256 {now['sha256'][:12]})")
    return f"{flag} {_shown(was)!r} -> {_shown(now)!r}"


def _shown(value):
    return value["path"] if isinstance(value, dict) else value


@contextlib.contextmanager
def removed_if_failed_early(out: Path):
    """Remove what a run wrote to `out` when it fails before leaving anything of use there: no checkpoint, no
    metrics row, no model (a bad row found late, a reward function of the wrong shape at step 1), and `out` itself
    when the run created it. A failed run then leaves nothing half-made behind, and `--out` stays free for the next
    try. Only the run's own entries are removed (`outdir.remove_run`); rank 0 removes them."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if is_main_process() and out.is_dir() and not _holds_results(out):
            with contextlib.suppress(OSError, UserError):
                outdir.remove_run(out)
                if not existed:
                    out.rmdir()  # only when empty: what else is there stays
        raise


def _holds_results(out: Path) -> bool:
    metrics = out / METRICS_FILE
    return (last_checkpoint(out) is not None or (metrics.exists() and metrics.stat().st_size > 0)
            or any((out / name).exists() for name in ("config.json", "adapter_config.json")))


def last_checkpoint(out: Path) -> str | None:
    """The OUT/checkpoint-N dir with the highest N, complete or not (transformers' get_last_checkpoint, without
    importing transformers: OUT is checked before anything heavy loads), or None."""
    found = [path for path in Path(out).glob("checkpoint-*") if path.is_dir() and _CHECKPOINT_DIR.fullmatch(path.name)]
    return str(max(found, key=checkpoint_step)) if found else None


_CHECKPOINT_DIR = re.compile(r"checkpoint-[0-9]+")


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

