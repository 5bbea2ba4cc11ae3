"""Training plumbing shared by the training commands (sft, redi, grpo) around TRL/transformers trainers.
Commands do not call it piece by piece: `rtool.train_run.run_training` puts it together for every recipe.

It imports transformers at the top: command modules import it inside their command function.

    hp = Hyperparams(out=Path("runs/sft"), lr=2e-5, epochs=1)
    hp.check()
    prec = precision("auto", lora=False)              # CPU: fp32; CUDA: fp32 master weights + bf16 autocast
    checkpoint = prepare_out_dir(hp.out, resume)      # refuses to overwrite a run unless --resume
    model, tok = load_model(spec, dtype=prec.load_dtype, device=prec.load_device, for_training=True)
    args = SFTConfig(**trainer_args(hp, prec, report_to="tensorboard"), max_length=2048)
    trainer = SFTTrainer(model, args, train_dataset=ds, processing_class=tok, peft_config=lora.peft_config(),
                         callbacks=[MetricsCallback(hp.out / "metrics.jsonl")])
    out = train_and_save(trainer, hp.out, checkpoint=checkpoint, resume=resume, merge_lora=lora.merge)

What it settles for every trainer: TRL's defaults (bf16=True, gradient checkpointing on) are replaced by CPU-safe
ones; the precision policy (`precision`: float32 master weights for full fine-tuning); progress goes to the `rtool`
logger and OUT/metrics.jsonl instead of tqdm and print(), and, with --report-to, to transformers' TensorBoard (event
files under OUT/runs) or Weights & Biases callbacks (`require_trackers` checks they are installed before anything
loads); checkpoints are OUT/checkpoint-N; only rank 0 writes; the final model is safetensors with its tokenizer
(a LoRA run: the adapter, plus OUT/merged with --merge-lora, in the base model's dtype); at the end OUT/curves.png
is drawn from OUT/metrics.jsonl (`draw_curves`, `rtool.curves`). The same command line runs under `torchrun` /
`accelerate launch`. --resume continues from the last complete checkpoint (`last_complete_checkpoint`: one cut
short by a kill mid-save is skipped) with the settings the run started with (OUT/run_settings.json,
`check_run_settings`: other ones are refused), and ends with the weights an uninterrupted run ends with. Also here: `dataset_from_rows` (rows ->
datasets.Dataset) and Masked Thought (`mask_thought`, `apply_mask_thought`), usable by any trainer whose batches
carry labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from transformers import TrainerCallback

from rtool.errors import UserError, one_of
from rtool.log import logger

METRICS_FILE = "metrics.jsonl"
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")
# The documented defaults of the schedulers that need more than a warmup and a length (--lr-scheduler's help):
# the min_lr cosines end at MIN_LR_RATE x --lr; warmup_stable_decay holds --lr after the warmup, then decays it
# (cosine, to 0) over the last DECAY_SHARE of the steps.
MIN_LR_RATE = 0.1
DECAY_SHARE = 0.1
# --report-to: experiment trackers, passed to transformers (which reads their settings, e.g. WANDB_*, from the env).
REPORT_TO = ("none", "tensorboard", "wandb")
# Files that mark a directory as holding an earlier run (overwritten only with --resume).
_RUN_MARKERS = (METRICS_FILE, "config.json", "adapter_config.json")


@dataclass
class Hyperparams:
    """The optimisation flags every training command shares."""

    out: Path
    lr: float = 2e-5
    epochs: float = 1.0
    max_steps: int | None = None
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 500
    gradient_checkpointing: bool = False

    def check(self) -> None:
        """Raise UserError for a value the trainer would reject later (or silently misread)."""
        if self.epochs <= 0:
            raise UserError(f"--epochs must be > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max-steps must be at least 1, got {self.max_steps}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        one_of("--lr-scheduler", self.lr_scheduler, SCHEDULERS)
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        for name, value, least in (("--batch-size", self.batch_size, 1), ("--grad-accum", self.grad_accum, 1),
                                   ("--logging-steps", self.logging_steps, 1), ("--save-steps", self.save_steps, 0)):
            if value < least:
                raise UserError(f"{name} must be at least {least}, got {value}")


@dataclass
class LoraSettings:
    """`--lora*` flags. `targets` is "all-linear" or comma-separated module names."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = "all-linear"
    merge: bool = False

    def check(self) -> None:
        if self.merge and not self.enabled:
            raise UserError("--merge-lora needs --lora")
        if self.r < 1:
            raise UserError(f"--lora-r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            raise UserError(f"--lora-alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules():
            raise UserError("--lora-targets is empty", hint="e.g. q_proj,v_proj or all-linear")

    def target_modules(self) -> str | list[str]:
        text = self.targets.strip()
        return text if text == "all-linear" else [name.strip() for name in text.split(",") if name.strip()]

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        """A peft.LoraConfig for a model of `task_type` (PEFT's TaskType: CAUSAL_LM, TOKEN_CLS, ...), or None when
        LoRA is off."""
        if not self.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules())


def lora_user_error(error: Exception) -> UserError | None:
    """The UserError for PEFT's "target modules not found" ValueError (a flag problem), else None."""
    text = str(error)
    if "Target modules" in text and "not found" in text:
        return UserError(f"--lora-targets: {text.splitlines()[0][:300]}",
                         hint="pass module names of this model (e.g. q_proj,v_proj) or all-linear")
    return None


@dataclass
class Precision:
    """How to load and run the model: `load_dtype`/`load_device` for `load_model`, `args` for the trainer."""

    device: str
    load_dtype: str
    load_device: str
    args: dict = field(default_factory=dict)


def precision(dtype: str = "auto", *, lora: bool = False, cuda_available: bool | None = None,
              bf16_supported: bool | None = None) -> Precision:
    """The weights dtype and mixed precision for training; a pure function of its arguments (the two hardware
    flags are detected when None), so tests on any machine can compute what a GPU run does.

    ==========================  ========================================  ========================================
    device, --dtype              full fine-tuning                          --lora (base weights frozen)
    ==========================  ========================================  ========================================
    CPU, auto | float32          float32 weights, no autocast              float32 weights, no autocast
    CPU, bfloat16                bfloat16 weights, no autocast             bfloat16 weights, no autocast
    CUDA with bf16, auto         float32 weights + bf16 autocast           bfloat16 weights + bf16 autocast
    CUDA, bfloat16               bfloat16 weights + bf16 autocast          bfloat16 weights + bf16 autocast
    CUDA without bf16, auto      float32 weights + fp16 autocast           float32 weights + fp16 autocast
    CUDA, float16                float32 weights + fp16 autocast           float32 weights + fp16 autocast
    CUDA, float32                float32 weights, no autocast              float32 weights, no autocast
    ==========================  ========================================  ========================================

    Why: AdamW on bf16 weights rounds away every update below bf16's resolution (one step at lr 2e-5 left ~70% of
    a model's weights unchanged; at REDI's 1e-6 nearly all), so full fine-tuning keeps float32 master weights and
    runs the forward/backward in bf16 autocast. LoRA trains float32 adapter weights (PEFT upcasts them) on a frozen
    base, which can stay bf16 and halve the memory. fp16 weights do not train with AdamW, so fp16 is autocast only.
    --dtype float16 on the CPU and bfloat16 on a GPU without it are errors. `use_cpu` on the CPU lets gloo run
    several processes. The model loads on the CPU and the trainer moves it to its (each rank's) device: a
    device_map would pin every rank to GPU 0 and make the trainer treat the model as model-parallel.
    """
    from rtool.models import DTYPES

    one_of("dtype", dtype, DTYPES)
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available and bf16_supported is None:
        import torch

        bf16_supported = torch.cuda.is_bf16_supported()
    if not cuda_available:
        if dtype == "float16":
            raise UserError("--dtype float16 training needs a GPU", hint="use --dtype auto (float32 on CPU)")
        return Precision("cpu", "float32" if dtype == "auto" else dtype, "cpu",
                         {"bf16": False, "fp16": False, "use_cpu": True})
    if dtype == "auto":
        if not bf16_supported:
            dtype = "float16"
        elif lora:
            dtype = "bfloat16"
        else:  # float32 master weights, bf16 autocast
            return Precision("cuda", "float32", "cpu", {"bf16": True, "fp16": False})
    if dtype == "bfloat16":
        if not bf16_supported:
            raise UserError("this GPU does not support bfloat16", hint="use --dtype auto (fp16 mixed precision)")
        return Precision("cuda", "bfloat16", "cpu", {"bf16": True, "fp16": False})
    if dtype == "float16":
        return Precision("cuda", "float32", "cpu", {"bf16": False, "fp16": True})
    return Precision("cuda", "float32", "cpu", {"bf16": False, "fp16": False})


def trainer_args(hp: Hyperparams, prec: Precision, *, report_to: str = "none") -> dict:
    """Keyword arguments valid for any `transformers.TrainingArguments` subclass (SFTConfig, GRPOConfig, ...).
    `report_to` is the --report-to value (`report_to_names`)."""
    return dict(
        output_dir=str(hp.out),
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps or -1,
        learning_rate=hp.lr,
        lr_scheduler_type=hp.lr_scheduler,
        lr_scheduler_kwargs=scheduler_kwargs(hp.lr_scheduler),
        # transformers 5 folded warmup_ratio into warmup_steps: a value below 1 is a fraction of the total steps.
        warmup_steps=hp.warmup_ratio,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        seed=hp.seed,
        data_seed=hp.seed,
        logging_steps=hp.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if hp.save_steps else "no",
        save_steps=hp.save_steps or 500,
        save_total_limit=2,
        **_checkpointing_arg(hp.gradient_checkpointing),
        # transformers' own trackers (TensorBoardCallback, WandbCallback) log on rank 0 only; [] adds none.
        report_to=report_to_names(report_to),
        # No tqdm; transformers then adds PrinterCallback, which print()s to stdout: train_and_save removes it.
        disable_tqdm=True,
        **prec.args,
    )


def scheduler_kwargs(name: str) -> dict:
    """transformers' `lr_scheduler_kwargs` for --lr-scheduler `name`: the min_lr cosines cannot be built without a
    floor (transformers has no default). warmup_stable_decay's length in steps is set by `fit_scheduler`."""
    return {"min_lr_rate": MIN_LR_RATE} if name.endswith("_with_min_lr") else {}


def fit_scheduler(trainer) -> None:
    """Give warmup_stable_decay its decay length, DECAY_SHARE of the optimizer steps, when the trainer builds the
    scheduler: only then are the steps known (--epochs: from the data, batch size and processes)."""
    if trainer.args.lr_scheduler_type != "warmup_stable_decay":
        return
    create = trainer.create_scheduler

    def create_scheduler(num_training_steps: int, optimizer=None):
        warmup = trainer.args.get_warmup_steps(num_training_steps)
        decay = max(1, min(round(DECAY_SHARE * num_training_steps), num_training_steps - warmup))
        trainer.args.lr_scheduler_kwargs = {**(trainer.args.lr_scheduler_kwargs or {}), "num_decay_steps": decay}
        return create(num_training_steps, optimizer)

    trainer.create_scheduler = create_scheduler


def report_to_names(value: str) -> list[str]:
    """`--report-to` as transformers' `report_to`: [] for none, else the trackers named (comma-separated)."""
    names = [name.strip() for name in str(value).split(",") if name.strip()] or ["none"]
    for name in names:
        one_of("--report-to", name, REPORT_TO)
    if "none" in names:
        if len(names) > 1:
            raise UserError(f"--report-to {value}: none cannot be combined with a tracker")
        return []
    return list(dict.fromkeys(names))


def require_trackers(value: str) -> None:
    """Raise UserError, naming what to install, when a tracker --report-to asks for cannot be imported: checked
    with the flags, before data or model load, rather than as a traceback from inside the trainer."""
    names = report_to_names(value)
    if "tensorboard" in names:
        try:  # what transformers' TensorBoardCallback imports, torch's writer first, then tensorboardX
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as error:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                raise UserError(f"--report-to tensorboard: tensorboard is not installed ({error})",
                                hint="pip install 'rtool[tensorboard]'") from None
    if "wandb" in names:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise UserError("--report-to wandb: wandb is not installed",
                            hint="pip install 'rtool[wandb]'; it reads WANDB_API_KEY, WANDB_PROJECT, ... from the "
                                 "environment")


def _checkpointing_arg(enabled: bool) -> dict:
    # transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns); TRL's
    # default for the old name is True, so the new one must be set explicitly to turn it off without a warning.
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: enabled}


def quiet_libraries() -> None:
    """No tqdm bars from transformers (weight loading, shard writing) or datasets: progress is logged per step."""
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # Libraries calling each other's renamed APIs (PEFT -> is_gradient_checkpointing): nothing the user can act on.
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def device_shortage(processes: int, gpus: int) -> str | None:
    """Why `processes` training processes on this machine cannot each have one of its `gpus` CUDA devices, or None
    (no GPU: they share the CPU)."""
    if gpus == 0 or processes <= gpus:
        return None
    return (f"{processes} training processes on this machine but {gpus} CUDA GPU(s) visible: each process takes "
            f"its own GPU")


def check_devices() -> None:
    """UserError when torchrun/accelerate started more processes on this machine than it has GPUs (CUDA would fail
    each extra one with "invalid device ordinal" and a traceback)."""
    import torch

    problem = device_shortage(local_world_size(), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if problem:
        raise UserError(problem, hint="start at most that many (torchrun --nproc_per_node N), or hide the GPUs "
                                      "(CUDA_VISIBLE_DEVICES=) to train on the CPU")


def quiet_other_ranks() -> None:
    """Under torchrun, only rank 0 logs progress; the others keep warnings and errors."""
    import logging

    if not is_main_process():
        logger.setLevel(logging.WARNING)


def prepare_out_dir(out: Path, resume: bool) -> str | None:
    """Check `out` and return the checkpoint to resume from (None: start fresh).

    Without `resume`, a directory that already holds a run (metrics.jsonl, a model or checkpoint-N dirs) is refused,
    so a typo does not overwrite a finished model. Nothing is written here: every rank calls it.
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
    if found:
        raise UserError(f"--out already holds a training run ({', '.join(found)})", path=out,
                        hint="pass --resume to continue it, or choose another --out")
    return None


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
_RUN_ONLY_SETTINGS = ("out", "config", "resume", "logging_steps", "save_steps", "report_to", "gradient_checkpointing",
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

    def on_step_end(self, args, state, control, **kwargs):
        # A checkpoint step is a logging step too: each logging window then starts at a checkpoint, so a run resumed
        # from one logs the rows the uninterrupted run logs (else its first row would average part of a window).
        if control.should_save:
            control.should_log = True
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        self._time = time.perf_counter()
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
        logger.info("step %d/%d  loss %s  lr %.3g  %s tok/s%s", state.global_step, state.max_steps,
                    _fmt(row.get("loss")), row.get("learning_rate", 0.0), _fmt(row.get("tokens_per_s"), ".0f"),
                    extra)


_PROGRESS_EXTRAS = (("reward", "reward"), ("accuracy", "accuracy"), ("completion_length", "length"))


def _fmt(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


@contextlib.contextmanager
def stdout_to_stderr():
    """Send Python-level print()s of libraries to stderr while training: stdout carries the command's result only."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def train_and_save(trainer, out: Path, *, checkpoint: str | None, resume: bool, merge_lora: bool = False,
                   trust_remote_code: bool = False, allow_pickle: bool = False, loader=None) -> Path:
    """Train (from `checkpoint` when given), save the final model and tokenizer to `out`, optionally merge LoRA
    into OUT/merged (`merge_adapter`: in the base model's stored dtype).

    Every rank calls this; the trainer saves on rank 0 only, and the merged copy is written by rank 0. The caller
    then releases the trainer and calls `end_distributed` (in that order: see there), and rank 0 draws the curves
    (`draw_curves`).
    A full fine-tune is saved as trained: float32 master weights stay float32 (a bf16 copy would round away the
    small updates the master weights were kept for).
    """
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if resume and is_main_process():
        trim_metrics(out / METRICS_FILE, checkpoint_step(checkpoint))
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    with stdout_to_stderr():
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(out))
    if merge_lora and trainer.is_world_process_zero():
        merge_adapter(out, out / "merged", trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                      loader=loader)
    return out


def draw_curves(out: Path, *, marks: Callable[[list[dict]], Iterable] | None = None,
                metrics: Callable[[list[dict]], Sequence[str]] | None = None) -> Path | None:
    """Write OUT/curves.png from OUT/metrics.jsonl (`rtool.curves.write_curves`); return its path, or None when
    it could not be drawn: a warning, never a failed run, since the model is already saved."""
    try:
        from rtool.curves import write_curves

        path = write_curves(out, marks=marks or (), metrics=metrics)
    except Exception as error:  # noqa: BLE001 - a missing font or a full disk must not fail a finished training
        logger.warning("could not draw %s: %s: %s", Path(out) / "curves.png", type(error).__name__, error)
        return None
    logger.info("training curves in %s", path)
    return path


def merge_adapter(adapter_dir: Path, out_dir: Path, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                  loader=None) -> Path:
    """Write the LoRA adapter in `adapter_dir` merged into its base model to `out_dir`, in the base's stored dtype.

    The base is loaded again, on the CPU, in that dtype, rather than merged in the trainer's copy: on a GPU a LoRA
    run loads the base in bf16, and merging there would round every tensor of a float32 base. So the merged model
    has the base's dtype, and only the adapted tensors differ from the base's. `loader` loads the adapter merged
    into its base, called like `rtool.models.load_model` (the default: a causal LM).
    """
    from rtool.models import load_model, save_model

    dtype = stored_dtype(adapter_dir, trust_remote_code=trust_remote_code)
    merged, tokenizer = (loader or load_model)(adapter_dir, dtype=dtype, device="cpu",
                                               trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    save_model(merged, tokenizer, out_dir)
    logger.info("merged LoRA model (%s) in %s", dtype, out_dir)
    return Path(out_dir)


def stored_dtype(spec, *, trust_remote_code: bool = False) -> str:
    """The dtype a checkpoint stores its weights in, as named in `--dtype`: its config's dtype (for a PEFT adapter,
    its base model's), float32 when the config names none (as transformers then loads it) and for GGUF files (a
    dequantized model's values fit float32 exactly, not bf16)."""
    from rtool.models import DTYPES, localize, resolve_source

    src = localize(resolve_source(spec, allow_pickle=True), allow_pickle=True)
    if src.kind == "gguf":
        return "float32"
    if src.kind == "peft":
        return stored_dtype(_adapter_base_of(Path(src.path)), trust_remote_code=trust_remote_code)
    config_file = Path(src.path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    else:  # a hub id: the config comes through the hub cache
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code).to_dict()
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    return name if name in DTYPES and name != "auto" else "float32"


def _adapter_base_of(adapter_dir: Path) -> str:
    # As rtool.models resolves it: a relative base path is tried relative to the adapter dir too.
    base = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UserError("adapter_config.json has no base_model_name_or_path", path=adapter_dir)
    if not Path(os.path.expanduser(base)).exists() and (adapter_dir / base).exists():
        return str(adapter_dir / base)
    return base


def end_distributed() -> None:
    """Leave the process group (without this torch warns about a group never destroyed). Call it only once the
    trainer and its DDP-wrapped model are released: freeing DDP's reducer after the group is destroyed hung a rank
    on a gloo futex at exit now and then (seen with 2 CPU processes under load)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def dataset_from_rows(make_rows: Callable[[], Iterator[dict]], features, cache_dir: str | Path):
    """A `datasets.Dataset` streamed from a generator function into Arrow files under `cache_dir`, or None when the
    generator yields nothing.

    `cache_dir` should be a fresh temporary dir: datasets' cache is keyed by the generator, not the file contents,
    so a shared cache could serve stale rows. A UserError raised while reading surfaces unchanged.
    """
    import uuid

    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    produced = 0

    def counted():
        nonlocal produced
        for row in make_rows():
            produced += 1
            yield row

    try:
        return Dataset.from_generator(counted, features=features, cache_dir=str(cache_dir),
                                      fingerprint=uuid.uuid4().hex)
    except DatasetGenerationError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, UserError):
            raise cause from None
        raise
    except ValueError:
        if produced == 0:  # datasets refuses to build an empty split
            return None
        raise


def temporary_dir(prefix: str = "rtool-"):
    """A TemporaryDirectory (honours TMPDIR) for dataset Arrow files that live as long as the run."""
    return tempfile.TemporaryDirectory(prefix=prefix)


def mask_token_id(tokenizer) -> int:
    """The token Masked Thought writes: the tokenizer's mask token, else pad, else unk, else eos (rtool's choice:
    no new token, so the embedding matrix keeps its size)."""
    for token_id in (tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise UserError("the tokenizer has no mask, pad, unk or eos token for --mask-thought")


def mask_thought(input_ids, labels, p: float, mask_id: int, generator=None):
    """Masked Thought (Chen et al. 2024, "Masked Thought: Simply Masking Partial Reasoning Steps Can Improve
    Mathematical Reasoning Learning of Language Models"): replace each completion input token (label != -100) with
    `mask_id` with probability `p`. Labels are untouched, so the model still predicts every original token, from a
    partly masked context. Returns a new tensor; prompt and padding positions never change.
    """
    import torch

    if p <= 0:
        return input_ids
    noise = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)  # a CPU generator: any device
    chosen = (labels != -100) & (noise < p)
    return input_ids.masked_fill(chosen, mask_id)


def apply_mask_thought(trainer, p: float, mask_id: int, seed: int = 0) -> None:
    """Masked Thought (`mask_thought`) on every training micro-batch of `trainer` (one whose batches carry labels),
    in its training_step. Each micro-batch's noise comes from (seed, process, optimizer step, micro-batch index), not
    from a running generator: a resumed run then masks as the uninterrupted run did, with no state to save (a
    collator's generator runs ahead of the steps, since the dataloader prefetches, so its state at a checkpoint is
    not the state the next step needs)."""
    import hashlib

    import torch

    train_step = trainer.training_step
    position = {"step": -1, "micro": 0}

    def training_step(model, inputs, *args, **kwargs):
        step = trainer.state.global_step
        if step != position["step"]:
            position.update(step=step, micro=0)
        key = f"mask-thought:{seed}:{rank()}:{step}:{position['micro']}".encode()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        position["micro"] += 1
        inputs = {**inputs, "input_ids": mask_thought(inputs["input_ids"], inputs["labels"], p, mask_id, generator)}
        return train_step(model, inputs, *args, **kwargs)

    trainer.training_step = training_step
