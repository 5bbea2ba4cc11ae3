"""sft: supervised fine-tuning on reasoning traces. Reads prompt/completion rows; writes a model directory.

    rtool distill --teacher T -n 4 < q.jsonl > traces.jsonl
    rtool sft --model S --data traces.jsonl --out runs/sft --epochs 2 --lr 2e-5 > model_dir.txt
    torchrun --nproc_per_node 2 -m rtool.cli sft --model S --data traces.jsonl --out runs/sft   # same flags

Rows: any prompt field (prompt, messages, question, problem) and a completion (completion, response, output, the
last assistant turn of messages; MATH rows with only `solution` train on the solution). The chat template is
applied and the loss covers completion tokens only. Rows with `correct: false` (distill's negatives) are skipped
unless --include-incorrect. OUT receives the model (safetensors + tokenizer; with --lora the adapter, and
OUT/merged with --merge-lora), checkpoint-N dirs and metrics.jsonl. stdout gets the output directory, only that.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable, Iterator

import typer

from rtool.errors import UserError
from rtool.fields import COMPLETION_FIELDS, FieldMap
from rtool.options import (AllowPickleOpt, ConfigOpt, DtypeOpt, EpochsOpt, GradAccumOpt, GradientCheckpointingOpt,
                           LoggingStepsOpt, LoraAlphaOpt, LoraDropoutOpt, LoraOpt, LoraROpt, LoraTargetsOpt, LrOpt,
                           LrSchedulerOpt, MaxLengthOpt, MaxStepsOpt, MergeLoraOpt, OutDirOpt, PromptFieldOpt,
                           ResumeTrainOpt, SaveStepsOpt, SeedOpt, SkipBadOpt, SystemOpt, TrainBatchSizeOpt,
                           TrainDataOpt, TrainModelOpt, TrustRemoteCodeOpt, WarmupRatioOpt)

FULL_LR, LORA_LR = 2e-5, 2e-4


def sft_cmd(
    ctx: typer.Context,
    model: TrainModelOpt = None,
    data: TrainDataOpt = None,
    out: OutDirOpt = None,
    config: ConfigOpt = None,
    system: SystemOpt = None,
    prompt_field: PromptFieldOpt = None,
    include_incorrect: Annotated[bool, typer.Option("--include-incorrect", help="Also train on rows marked correct: false (skipped by default).")] = False,
    mask_thought: Annotated[float, typer.Option("--mask-thought", help="Masked Thought: replace this fraction of completion input tokens with a mask (else pad) token, labels kept; e.g. 0.2. A regulariser for small data.")] = 0.0,
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = None,
    lr_scheduler: LrSchedulerOpt = "linear",
    warmup_ratio: WarmupRatioOpt = 0.03,
    batch_size: TrainBatchSizeOpt = 8,
    grad_accum: GradAccumOpt = 1,
    max_length: MaxLengthOpt = 1024,
    packing: Annotated[bool, typer.Option("--packing", help="Pack several rows into each --max-length sequence (best-fit, no cross-row attention).")] = False,
    seed: SeedOpt = 0,
    logging_steps: LoggingStepsOpt = 10,
    save_steps: SaveStepsOpt = 500,
    resume: ResumeTrainOpt = False,
    gradient_checkpointing: GradientCheckpointingOpt = False,
    lora: LoraOpt = False,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    lora_dropout: LoraDropoutOpt = 0.05,
    lora_targets: LoraTargetsOpt = "all-linear",
    merge_lora: MergeLoraOpt = False,
    dtype: DtypeOpt = "auto",
    skip_bad: SkipBadOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Fine-tune a model on prompt/completion rows, loss on the completion; full weights or LoRA.

    The learning rate defaults to 2e-5, or 2e-4 with --lora. --config run.yaml sets any flag (flags win).
    """
    from rtool.config import merge_config

    o = merge_config(ctx, config)
    for name in ("model", "data", "out"):
        if getattr(o, name) in (None, ""):
            raise UserError(f"--{name} is required", hint=f"pass --{name} or set '{name}:' in --config")
    if not 0 <= o.mask_thought < 1:
        raise UserError(f"--mask-thought must be in [0, 1), got {o.mask_thought}")
    if o.max_length < 1:
        raise UserError(f"--max-length must be at least 1, got {o.max_length}")

    from rtool import training
    from rtool.log import logger
    from rtool.records import ReadStats, read_records

    out = Path(o.out)
    lr = o.lr if o.lr is not None else (LORA_LR if o.lora else FULL_LR)
    hp = training.Hyperparams(
        out=out, lr=lr, epochs=o.epochs, max_steps=o.max_steps, lr_scheduler=o.lr_scheduler,
        warmup_ratio=o.warmup_ratio, batch_size=o.batch_size, grad_accum=o.grad_accum, seed=o.seed,
        logging_steps=o.logging_steps, save_steps=o.save_steps, gradient_checkpointing=o.gradient_checkpointing)
    hp.check()
    lora_settings = training.LoraSettings(enabled=o.lora, r=o.lora_r, alpha=o.lora_alpha, dropout=o.lora_dropout,
                                          targets=o.lora_targets, merge=o.merge_lora)
    lora_settings.check()
    if str(o.data) == "-" and training.world_size() > 1:
        raise UserError("--data - (stdin) cannot be shared by several processes", hint="pass a file under torchrun")
    training.quiet_other_ranks()
    training.quiet_libraries()
    checkpoint = training.prepare_out_dir(out, o.resume)
    prec = training.precision(o.dtype)

    fields = FieldMap(o.prompt_field, None)
    stats, counts = ReadStats(), Counts()

    def rows() -> Iterator[dict]:
        records = read_records(o.data, skip_bad=o.skip_bad, stats=stats)
        yield from sft_examples(records, fields, o.system, o.include_incorrect, counts)

    with training.temporary_dir("rtool-sft-") as tmp:
        # Read all data before the model loads, so a bad row fails in seconds.
        dataset = training.dataset_from_rows(rows, _features(), tmp)
        counts.report(logger, stats)
        if dataset is None:
            raise UserError("no training rows", path=o.data if o.data != "-" else "<stdin>",
                            hint=counts.empty_hint())

        from trl import SFTTrainer

        from rtool.models import load_model

        student, tokenizer = load_model(o.model, dtype=prec.load_dtype, device=prec.load_device,
                                        trust_remote_code=o.trust_remote_code, allow_pickle=o.allow_pickle,
                                        for_training=True)
        peft_config = lora_settings.peft_config()
        student, peft_config = _adapter_start(student, peft_config)
        args = sft_config(hp, prec, max_length=o.max_length, packing=o.packing)
        try:
            with training.stdout_to_stderr():
                trainer = SFTTrainer(student, args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=peft_config,
                                     callbacks=[training.MetricsCallback(out / training.METRICS_FILE)])
        except ValueError as error:
            raise training.lora_user_error(error) or error
        if len(trainer.train_dataset) == 0:
            raise UserError(f"no row has a completion token within --max-length {o.max_length}",
                            hint="raise --max-length")
        if o.mask_thought > 0:
            trainer.data_collator = training.MaskThoughtCollator(
                trainer.data_collator, o.mask_thought, training.mask_token_id(tokenizer), seed=o.seed)
        training.train_and_save(trainer, out, checkpoint=checkpoint, resume=o.resume, merge_lora=o.merge_lora)
    if training.is_main_process():
        sys.stdout.write(f"{out}\n")
        sys.stdout.flush()


@dataclass
class Counts:
    read: int = 0
    kept: int = 0
    incorrect: int = 0

    def report(self, logger, stats) -> None:
        if stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", stats.skipped, stats.skipped_where[0])
        note = f", skipped {self.incorrect} with correct == false (--include-incorrect keeps them)" \
            if self.incorrect else ""
        logger.info("sft: %d training rows of %d read%s", self.kept, self.read, note)

    def empty_hint(self) -> str:
        if self.incorrect:
            return f"all {self.incorrect} rows have correct == false; pass --include-incorrect to train on them"
        return "the input has no rows"


def sft_config(hp, prec, *, max_length: int, packing: bool):
    """TRL's SFTConfig for rtool sft: the shared trainer settings, loss on completion tokens only."""
    from trl import SFTConfig

    from rtool.training import trainer_args

    return SFTConfig(**trainer_args(hp, prec), max_length=max_length, packing=packing, completion_only_loss=True,
                     assistant_only_loss=False)


def sft_examples(rows: Iterable[dict], fields, system: str | None, include_incorrect: bool,
                 counts: Counts | None = None) -> Iterator[dict]:
    """TRL conversational prompt/completion examples from rows: prompt = the chat messages up to the user's turn,
    completion = one assistant message. Rows with `correct` false are dropped unless `include_incorrect`."""
    counts = counts if counts is not None else Counts()
    for row in rows:
        counts.read += 1
        if row.get("correct") is False and not include_incorrect:
            counts.incorrect += 1
            continue
        prompt = fields.messages(row, system)
        completion = completion_text(row, fields)
        counts.kept += 1
        yield {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}


def completion_text(row, fields) -> str:
    """The text to train on: the row's completion, or for MATH rows without one, the reference `solution`."""
    if all(row.get(key) is None for key in COMPLETION_FIELDS) and isinstance(row.get("solution"), str):
        text, key = row["solution"], "solution"
    else:
        text, key = fields.completion(row), "completion"
    if not text.strip():
        raise row.error("empty completion", field=key, hint="drop the row or fill it in")
    return text


def _features():
    from datasets import Features, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features({"prompt": [message], "completion": [message]})


def _adapter_start(model, peft_config):
    """A PEFT adapter given as --model: continue training it with --lora, else fine-tune the merged weights."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model, peft_config
    if peft_config is not None:
        return model, None
    return model.merge_and_unload(), None
