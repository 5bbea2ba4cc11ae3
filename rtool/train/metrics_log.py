"""OUT/metrics.jsonl and the progress lines of a training run: `MetricsCallback`, a transformers TrainerCallback
that every training command hands its trainer (rtool.train.run). It imports transformers at the top: a command
imports it only once the flags and OUT are checked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from rtool.log import logger
from rtool.progress import format_duration


class MetricsCallback(TrainerCallback):
    """Append one JSON row per logging step (and checkpoint step) to `path` and log a progress line (rank 0 only).

    A row holds step, loss, learning_rate, tokens_per_s (from the trainer's cumulative `num_tokens`, all ranks),
    epoch, then whatever else the trainer logged (grad_norm, mean_token_accuracy, rewards, ...), and `flags` (a list
    of names) when the trainer logged some.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._time = 0.0
        self._tokens: float | None = None
        self._began = 0.0  # when this process started training, and at which step (a resumed run starts late)
        self._first_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        # A checkpoint step is a logging step too: each logging window then starts at a checkpoint, so a run resumed
        # from one logs the rows the uninterrupted run logs (else its first row would average part of a window).
        if control.should_save:
            control.should_log = True
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        self._time = self._began = time.perf_counter()
        self._first_step = state.global_step  # the trainer restores a checkpoint's step before this call
        # TRL trainers count tokens from zero in each process run, resumed or not.
        self._tokens = 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs:  # the end-of-training summary, not a step
            logger.info("trained %d steps in %.1f s (mean loss %.4g)", state.global_step, logs["train_runtime"],
                        logs.get("train_loss", float("nan")))
            return
        now = time.perf_counter()
        row: dict = {"step": state.global_step}
        for key in ("loss", "learning_rate"):
            if key in logs:
                row[key] = logs[key]
        tokens = logs.get("num_tokens")
        if tokens is not None and self._tokens is not None and tokens >= self._tokens and now > self._time:
            row["tokens_per_s"] = round((tokens - self._tokens) / (now - self._time), 1)
        self._tokens, self._time = tokens, now
        row["epoch"] = round(state.epoch, 4) if state.epoch is not None else None
        for key, value in logs.items():
            if key not in row and key != "total_flos" and isinstance(value, (int, float)):
                row[key] = value
        if logs.get("flags"):  # failure curves seen so far (grpo): names, in the order they showed
            row["flags"] = list(logs["flags"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        # RL runs are watched by their reward, not their loss: those values join the line when logged.
        extra = "".join(f"  {label} {_fmt(row[key])}" for key, label in _PROGRESS_EXTRAS if key in row)
        logger.info("step %d/%d  loss %s  lr %.3g  %s tok/s%s  %s", state.global_step, state.max_steps,
                    _fmt(row.get("loss")), row.get("learning_rate", 0.0), _fmt(row.get("tokens_per_s"), ".0f"),
                    extra, self._timing(state.global_step, state.max_steps, now))

    def _timing(self, step: int, max_steps: int, now: float) -> str:
        """`elapsed 1m05s  ETA 3m10s`: the mean time per step of this process run times the steps left."""
        elapsed = now - self._began
        steps = step - self._first_step
        eta = format_duration((max_steps - step) * elapsed / steps) if steps > 0 and max_steps else "?"
        return f"elapsed {format_duration(elapsed)}  ETA {eta}"


_PROGRESS_EXTRAS = (("reward", "reward"), ("accuracy", "accuracy"), ("completions/mean_length", "length"))


def _fmt(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)
