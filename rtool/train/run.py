"""The one entry of every training command: flags -> a `TrainRun` and a `Recipe` -> `run_training`.

    run = TrainRun.from_flags(opts, lr=2e-5)           # opts: the command's merged flags (rtool.config.merge_config)
    recipe = Recipe("sft", examples=SFTExamples(...), features=SFTExamples.features, build_trainer=build)
    out = run_training(recipe, run)                    # the output dir on the main process, None on other ranks

A recipe says what a command trains on; `run_training` does the rest, the same for every objective: flag checks,
torchrun rules (no stdin), the output dir (new, empty, or its own earlier run with --resume or --overwrite:
`rtool.train.checkpoints`, `rtool.train.outdir`), precision (`rtool.train.precision`), the data read and turned into
examples before the model loads (a bad row fails in seconds), the model (a PEFT adapter as --model: trained further
with --lora, else merged in for full fine-tuning), the trainer, checkpoints (removed when the run finishes unless
--keep-checkpoints), metrics.jsonl (and --report-to's TensorBoard or W&B), the final model (`core.train_and_save`),
OUT/curves.png and the model card (`rtool.train.card`). A --resume of a run that finished trains nothing. Heavy
imports happen here, when it runs.

A recipe's `build_trainer` is called with keyword arguments model, tokenizer, dataset (a datasets.Dataset of the
recipe's examples), args (keyword arguments valid for any transformers TrainingArguments subclass, e.g.
`GRPOConfig(**args, beta=0.0)`), peft_config (a LoraConfig, or None) and callbacks (pass them to the trainer).
"""

from __future__ import annotations

import dataclasses
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rtool.atomic import check_outputs_distinct
from rtool.errors import UserError
from rtool.io.models import read_chat_template
from rtool.io.records import piped_stdin
from rtool.log import logger
from rtool.train import checkpoints, outdir, processes, sharding
from rtool.train import core as training
from rtool.train.card import base_model_name, write_model_card
from rtool.train.core import Hyperparams
from rtool.train.precision import LoraSettings, gradient_checkpointing, lora_user_error, precision


@dataclass
class Recipe:
    """What a training command trains on.

    examples(rows, tokenizer) yields the examples of the rows it keeps (a generator; UserError naming file:line for
    a bad row) and counts what it skips; features() is their `datasets.Features`; build_trainer(model=, tokenizer=,
    dataset=, args=, peft_config=, callbacks=) returns a transformers Trainer; report() logs the counts once the data
    is read; empty_hint() says why no example was kept. A causal LM is loaded unless `load_model` says otherwise.
    curve_marks(metrics rows) returns the `rtool.train.curves.Mark`s (events such as a collapse) to point at in
    OUT/curves.png.
    """

    name: str
    examples: Callable[[Iterable, Any], Iterator[dict]]
    features: Callable[[], Any]
    build_trainer: Callable[..., Any]
    report: Callable[[], None] = lambda: None
    empty_hint: Callable[[], str] = lambda: "the input has no rows"
    # Another model head (prm-train: token classification): a loader called like rtool.io.models.load_model, and
    # the PEFT task type of its LoRA adapter.
    load_model: Callable[..., tuple] | None = None
    lora_task: str = "CAUSAL_LM"
    curve_marks: Callable[[list[dict]], Iterable] | None = None
    # Which series OUT/curves.png draws, in order, from the metrics rows (None: every one logged).
    curve_metrics: Callable[[list[dict]], list[str]] | None = None


@dataclass
class TrainRun:
    """The flags every training command shares: what to train, on which rows, where to, how."""

    model: str
    data: str
    out: Path
    hp: Hyperparams
    lora: LoraSettings
    dtype: str = "auto"
    resume: bool = False
    overwrite: bool = False  # --overwrite: replace an earlier rtool run in OUT
    keep_checkpoints: bool = False  # --keep-checkpoints: a finished run keeps OUT/checkpoint-N
    skip_bad: bool = False
    split: str | None = None  # --split / --subset: the table of a dataset with several
    subset: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    report_to: str = "none"  # --report-to: none | tensorboard | wandb (comma-separated for several)
    chat_template: str | None = None  # --chat-template FILE's text: the tokenizer's template for this run and OUT
    # TRL settings passed through to the trainer's config (rtool.trl_names.PASSED: lr_scheduler_kwargs, ...).
    trl_args: dict = dataclasses.field(default_factory=dict)
    # What a --resume must keep (checkpoints.run_settings: every flag that changes what is trained); None: unchecked.
    settings: dict | None = None
    # The command's merged flags, for the model card's command line (rtool.train.card); None: none recorded.
    flags: dict | None = None

    @classmethod
    def from_flags(cls, opts, *, lr: float) -> "TrainRun":
        """From a command's merged flags, named as the shared training options (rtool.options) name them;
        `lr` is the recipe's default learning rate, used when --lr is not given. Checks every value."""
        if getattr(opts, "data", None) in (None, "") and processes.world_size() == 1 and piped_stdin():
            opts.data = "-"  # `cat traces.jsonl | rtool sft ...`: stdin, as every other reader takes it
            logger.info("--data not given: reading the rows from stdin")
        for name in ("model", "data", "out"):
            if getattr(opts, name) in (None, ""):
                extra = ", or pipe the rows in (-d - reads stdin)" if name == "data" else ""
                raise UserError(f"--{name} is required", hint=f"pass --{name} or set '{name}:' in --config{extra}")
        out = Path(opts.out)
        run = cls(
            model=str(opts.model), data=str(opts.data), out=out,
            hp=Hyperparams(out=out, lr=opts.lr if opts.lr is not None else lr, epochs=opts.epochs,
                           max_steps=opts.max_steps, lr_scheduler=opts.lr_scheduler, warmup_ratio=opts.warmup_ratio,
                           batch_size=opts.batch_size, grad_accum=opts.grad_accum, seed=opts.seed,
                           logging_steps=opts.logging_steps, save_steps=opts.save_steps,
                           gradient_checkpointing=opts.gradient_checkpointing),
            lora=LoraSettings(enabled=opts.lora, r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout,
                              targets=opts.lora_targets, merge=opts.merge_lora),
            dtype=opts.dtype, resume=opts.resume, overwrite=getattr(opts, "overwrite", False),
            keep_checkpoints=getattr(opts, "keep_checkpoints", False), skip_bad=opts.skip_bad,
            split=getattr(opts, "split", None), subset=getattr(opts, "subset", None),
            trust_remote_code=opts.trust_remote_code, allow_pickle=opts.allow_pickle,
            report_to=getattr(opts, "report_to", "none"),  # a command without the flag reports to none
            chat_template=read_chat_template(getattr(opts, "chat_template", None)),
            trl_args=dict(getattr(opts, "trl_args", None) or {}))
        run.settings = checkpoints.run_settings({**vars(opts), "lr": run.hp.lr})
        run.flags = {**vars(opts), "lr": run.hp.lr}
        run.check()
        return run

    def check(self) -> None:
        self.hp.check()
        self.lora.check()
        training.require_trackers(self.report_to)
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other", hint="continue the run or replace it")
        if self.data == "-" and processes.world_size() > 1:
            raise UserError("--data - (stdin) cannot be shared by several processes", hint="pass a file under torchrun")
        # OUT is written into (and with --overwrite replaced): the model or rows it reads may not be OUT or in it.
        check_outputs_distinct({"--out": self.out}, {"--model": self.model, "--data": self.data}, dirs=["--out"])

    def inputs(self) -> dict[str, str]:
        """The flags that name local files or dirs this run reads (--model, --data, ...) -> their paths: what
        --overwrite must never delete."""
        flags = {"model": self.model, "data": self.data, **(self.flags or {})}
        return {f"--{key.replace('_', '-')}": str(flags[key]) for key in _INPUT_FLAGS
                if flags.get(key) not in (None, "", "-") and os.path.exists(str(flags[key]))}  # (template text: no)


# Flags of the training commands that name an input file or dir (grpo's --prm: its reward model).
_INPUT_FLAGS = ("model", "data", "chat_template", "prm", "config")


def run_training(recipe: Recipe, run: TrainRun) -> Path | None:
    """Train `recipe` as `run` says and save the model to run.out; return run.out on the main process (the
    command writes it to stdout: only that), None on the other ranks."""
    run.check()
    processes.check_devices()
    sharding.check()
    processes.quiet_other_ranks()
    start = checkpoints.prepare_out_dir(run.out, run.resume, run.overwrite, inputs=run.inputs())
    training.quiet_libraries()  # (imports transformers: after OUT is checked, so a refusal comes at once)
    if start.finished_step is not None:
        if run.settings is not None:
            checkpoints.check_run_settings(run.out, run.settings, resuming=True)
        logger.info("--resume: the run in %s finished at step %d; nothing left to train", run.out,
                    start.finished_step)
        if processes.is_main_process() and not run.keep_checkpoints:
            outdir.remove_checkpoints(run.out)  # a run stopped while it removed them
        return run.out if processes.is_main_process() else None
    with checkpoints.removed_if_failed_early(run.out):
        if run.settings is not None:
            checkpoints.check_run_settings(run.out, run.settings, resuming=start.checkpoint is not None)
        rows = _train(recipe, run, start.checkpoint)
    if not processes.is_main_process():
        return None
    if not run.keep_checkpoints:
        outdir.remove_checkpoints(run.out)
    # After the other ranks are released: they need not wait for a picture.
    training.draw_curves(run.out, marks=recipe.curve_marks, metrics=recipe.curve_metrics)
    data = (run.settings or {}).get("data")
    card = write_model_card(run.out, base_model=base_model_name(run.model), data=run.data, rows=rows,
                            command=recipe.name, flags=run.flags or {},
                            data_sha256=data.get("sha256") if isinstance(data, dict) else None)
    if card is not None:
        logger.info("model card in %s", card)
    return run.out


def _train(recipe: Recipe, run: TrainRun, checkpoint: str | None) -> int:
    """Train and save; return how many rows were read from run.data."""
    from rtool.io.models import check_causal_lm, load_model, load_tokenizer
    from rtool.io.records import ReadStats, read_records
    from rtool.train.metrics_log import MetricsCallback

    if recipe.load_model is None:  # a causal LM is trained: a classifier given as --model is refused before the data
        check_causal_lm(run.model, allow_pickle=run.allow_pickle)
    prec = precision(run.dtype, lora=run.lora.enabled)
    if not run.lora.enabled and prec.load_dtype != "float32":
        logger.warning("full fine-tuning with %s weights: AdamW updates smaller than their resolution round away "
                       "(at lr 1e-6 most of them); --dtype auto keeps float32 master weights with bf16 autocast",
                       prec.load_dtype)
    hp = dataclasses.replace(run.hp, gradient_checkpointing=gradient_checkpointing(
        run.hp.gradient_checkpointing, prec, lora=run.lora.enabled))
    if hp.gradient_checkpointing and run.hp.gradient_checkpointing is None:
        logger.info("gradient checkpointing on (auto: full fine-tuning on a GPU); --no-gradient-checkpointing is "
                    "20-30%% faster when the memory allows")
    # The tokenizer loads first, alone: the examples are tokenized while the data is read, before the model loads.
    tokenizer = load_tokenizer(run.model, trust_remote_code=run.trust_remote_code, allow_pickle=run.allow_pickle,
                               padding_side="right", chat_template=run.chat_template)
    stats = ReadStats()

    def examples() -> Iterator[dict]:
        yield from recipe.examples(read_records(run.data, split=run.split, subset=run.subset,
                                                skip_bad=run.skip_bad, stats=stats), tokenizer)

    with training.temporary_dir(f"rtool-{recipe.name}-") as tmp:
        dataset = training.dataset_from_rows(examples, recipe.features(), tmp)
        if processes.is_main_process():  # every rank reads the same rows: one report
            if stats.skipped:
                logger.warning("skipped %d bad input lines (first: %s)", stats.skipped, stats.skipped_where[0])
            recipe.report()
        if dataset is None:
            raise UserError("no training rows", path=run.data if run.data != "-" else "<stdin>",
                            hint=recipe.empty_hint())

        args = training.trainer_args(hp, prec, report_to=run.report_to, passed=run.trl_args)
        # The trainer's arguments before the model: under ZeRO-3 or FSDP, no process holds a copy it does not need.
        with sharding.model_loading(args) as reads_weights:
            model, _ = (recipe.load_model or load_model)(run.model, dtype=prec.load_dtype, device=prec.load_device,
                                                          trust_remote_code=run.trust_remote_code,
                                                          allow_pickle=run.allow_pickle, for_training=True,
                                                          weights=reads_weights)
        model, peft_config = adapter_start(model, run.lora.peft_config(recipe.lora_task))
        callbacks = [MetricsCallback(run.out / checkpoints.METRICS_FILE)]
        try:
            with training.stdout_to_stderr():
                trainer = recipe.build_trainer(model=model, tokenizer=tokenizer, dataset=dataset, args=args,
                                               peft_config=peft_config, callbacks=callbacks)
        except ValueError as error:
            raise lora_user_error(error) or error
        training.fit_scheduler(trainer)
        training.train_and_save(trainer, run.out, checkpoint=checkpoint, resume=run.resume,
                                merge_lora=run.lora.merge, trust_remote_code=run.trust_remote_code,
                                allow_pickle=run.allow_pickle, loader=recipe.load_model)
        del trainer, model  # the DDP wrapper goes before the process group does (processes.end_distributed)
        gc.collect()
    processes.end_distributed()
    return stats.rows


def adapter_start(model, peft_config):
    """A PEFT adapter given as --model: continue training it with --lora (peft_config dropped: the adapter's own
    config holds), else merge it into its base for full fine-tuning (in the precision the base was loaded in, which
    for full fine-tuning is float32 or the --dtype asked for)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model, peft_config
    if peft_config is not None:
        return model, None
    return model.merge_and_unload(), None

