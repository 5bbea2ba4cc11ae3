"""Training plumbing shared by the training commands (sft, redi, grpo, prm-train) around TRL/transformers trainers.
Commands do not call it piece by piece: `rtool.train.run.run_training` puts it together for every recipe, with the
precision/LoRA policy (`rtool.train.precision`), the OUT dir and resume rules (`rtool.train.checkpoints`) and the
process checks (`rtool.train.processes`).

It imports transformers and TRL only inside its functions, so a training command checks its flags and OUT in a
fraction of a second before anything heavy loads (OUT/metrics.jsonl's writer is `rtool.train.metrics_log`).

    hp = Hyperparams(out=Path("runs/sft"), lr=2e-5, epochs=1)
    hp.check()
    args = SFTConfig(**trainer_args(hp, prec, report_to="tensorboard"), max_length=2048)
    trainer = SFTTrainer(model, args, train_dataset=ds, processing_class=tok, peft_config=lora.peft_config(),
                         callbacks=[MetricsCallback(hp.out / "metrics.jsonl")])   # rtool.train.metrics_log
    out = train_and_save(trainer, hp.out, checkpoint=checkpoint, resume=resume, merge_lora=lora.merge)

What it settles for every trainer: TRL's defaults (bf16=True, gradient checkpointing on) are replaced by CPU-safe
ones; progress goes to the `rtool` logger and OUT/metrics.jsonl instead of tqdm and print() (a checkpoint step is a
logging step too, so a resumed run logs what an uninterrupted one does), and, with --report-to, to transformers'
TensorBoard (event files under OUT/runs) or Weights & Biases callbacks (`require_trackers` checks they are installed
before anything loads); checkpoints are OUT/checkpoint-N (the last 2 kept while training; rtool.train.run removes them
when the run finishes unless --keep-checkpoints); only rank 0 writes; the final model is safetensors with its
tokenizer (a LoRA run: the adapter, plus OUT/merged with --merge-lora, in the base model's dtype), then
OUT/trainer_state.json; at the end OUT/curves.png is drawn from OUT/metrics.jsonl (`draw_curves`,
`rtool.train.curves`). The same command line runs under `torchrun` / `accelerate launch`. Also here:
`dataset_from_rows` (rows -> datasets.Dataset) and Masked Thought (`mask_thought`, `apply_mask_thought`), usable by
any trainer whose batches carry labels.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from rtool.errors import UserError, one_of
from rtool.io.models import record_absolute_base
from rtool.log import logger
from rtool.train.checkpoints import METRICS_FILE, checkpoint_step, trim_metrics
from rtool.train.precision import Precision, merge_adapter
from rtool.train.processes import is_main_process, rank

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")
# The documented defaults of the schedulers that need more than a warmup and a length (--lr-scheduler's help):
# the min_lr cosines end at MIN_LR_RATE x --lr; warmup_stable_decay holds --lr after the warmup, then decays it
# (cosine, to 0) over the last DECAY_SHARE of the steps.
MIN_LR_RATE = 0.1
DECAY_SHARE = 0.1
# --report-to: experiment trackers, passed to transformers (which reads their settings, e.g. WANDB_*, from the env).
REPORT_TO = ("none", "tensorboard", "wandb")


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
    gradient_checkpointing: bool | None = None  # None: auto (rtool.train.precision.gradient_checkpointing)

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


def trainer_args(hp: Hyperparams, prec: Precision, *, report_to: str = "none", passed: dict | None = None) -> dict:
    """Keyword arguments valid for any `transformers.TrainingArguments` subclass (SFTConfig, GRPOConfig, ...).
    `report_to` is the --report-to value (`report_to_names`). `passed` are a recipe's TRL settings passed through
    (rtool.trl_names.PASSED), which rtool.config gives only to the command whose config has them (grpo's
    epsilon_high): its lr_scheduler_kwargs add to (and override) rtool's."""
    passed = dict(passed or {})
    scheduler = {**scheduler_kwargs(hp.lr_scheduler), **passed.pop("lr_scheduler_kwargs", {})}
    if "gradient_checkpointing_kwargs" in passed:
        passed[_checkpointing_name() + "_kwargs"] = passed.pop("gradient_checkpointing_kwargs")
    return dict(
        output_dir=str(hp.out),
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps or -1,
        learning_rate=hp.lr,
        lr_scheduler_type=hp.lr_scheduler,
        lr_scheduler_kwargs=scheduler,
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
        **_checkpointing_arg(bool(hp.gradient_checkpointing)),
        # transformers' own trackers (TensorBoardCallback, WandbCallback) log on rank 0 only; [] adds none.
        report_to=report_to_names(report_to),
        # No tqdm; transformers then adds PrinterCallback, which print()s to stdout: train_and_save removes it.
        disable_tqdm=True,
        **prec.args,
        **passed,
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
    return {_checkpointing_name(): enabled}


def _checkpointing_name() -> str:
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def quiet_libraries() -> None:
    """No tqdm bars from transformers (weight loading, shard writing) or datasets: progress is logged per step."""
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # Libraries calling each other's renamed APIs (PEFT -> is_gradient_checkpointing): nothing the user can act on.
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)


@contextlib.contextmanager
def stdout_to_stderr():
    """Send Python-level print()s of libraries to stderr while training: stdout carries the command's result only."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def train_and_save(trainer, out: Path, *, checkpoint: str | None, resume: bool, merge_lora: bool = False,
                   trust_remote_code: bool = False, allow_pickle: bool = False, loader=None) -> Path:
    """Train (from `checkpoint` when given), save the final model and tokenizer to `out`, optionally merge LoRA
    into OUT/merged (`merge_adapter`: in the base model's stored dtype), then the trainer's state
    (OUT/trainer_state.json, the mark of a finished run).

    Every rank calls this; the trainer saves on rank 0 only, and the merged copy is written by rank 0. The caller
    then releases the trainer and calls `end_distributed` (in that order: see there), and rank 0 draws the curves
    (`draw_curves`).
    A full fine-tune is saved as trained: float32 master weights stay float32 (a bf16 copy would round away the
    small updates the master weights were kept for).
    """
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    save_arguments_as_json(trainer)
    # TRL writes a README.md into OUT at each checkpoint, naming the base "None" when it was given a model object:
    # rtool writes its own card when the run ends (rtool.train.card).
    trainer.create_model_card = lambda *args, **kwargs: None
    if resume and is_main_process():
        trim_metrics(out / METRICS_FILE, checkpoint_step(checkpoint))
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    with stdout_to_stderr():
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        record_absolute_base(out)  # a LoRA run's adapter: usable from any directory
    if merge_lora and trainer.is_world_process_zero():
        merge_adapter(out, out / "merged", trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                      loader=loader)
    # Last, after every model file: OUT/trainer_state.json says the run finished (rtool.train.checkpoints), so a
    # --resume of it has nothing to train and its checkpoints need not be kept.
    trainer.save_state()
    return out


def save_arguments_as_json(trainer) -> None:
    """Make the trainer write its arguments as training_args.json where transformers torch.save()s them to
    training_args.bin (in OUT and in each checkpoint): a pickle, which rtool does not write (unpickling runs code).
    Nothing reads the .bin back: a resume restores the model, optimizer, scheduler, RNG and trainer_state.json."""
    save = trainer._save

    def _save(output_dir=None, state_dict=None):
        save(output_dir, state_dict=state_dict)
        folder = Path(output_dir if output_dir is not None else trainer.args.output_dir)
        pickled = folder / "training_args.bin"
        if pickled.exists():  # the process that writes (rank 0) wrote it
            pickled.unlink()
            (folder / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")

    trainer._save = _save


def draw_curves(out: Path, *, marks: Callable[[list[dict]], Iterable] | None = None,
                metrics: Callable[[list[dict]], Sequence[str]] | None = None) -> Path | None:
    """Write OUT/curves.png from OUT/metrics.jsonl (`rtool.train.curves.write_curves`); return its path, or None when
    it could not be drawn: a warning, never a failed run, since the model is already saved."""
    try:
        from rtool.train.curves import write_curves

        path = write_curves(out, marks=marks or (), metrics=metrics)
    except Exception as error:  # noqa: BLE001 - a missing font or a full disk must not fail a finished training
        logger.warning("could not draw %s: %s: %s", Path(out) / "curves.png", type(error).__name__, error)
        return None
    logger.info("training curves in %s", path)
    return path


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
