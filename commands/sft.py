"""sft: supervised fine-tuning on reasoning traces. Reads prompt/completion rows; writes a model directory.

    rtool distill --teacher T -n 4 < q.jsonl > traces.jsonl
    rtool sft --model S --data traces.jsonl --out runs/sft --epochs 2 --lr 2e-5 > model_dir.txt
    torchrun --nproc_per_node 2 -m rtool.cli sft --model S --data traces.jsonl --out runs/sft   # same flags

Rows: any prompt field (prompt, messages, question, problem) and a completion (completion, response, output, the
last assistant turn of messages; MATH rows with only `solution` train on the solution). The chat template is
applied and the loss covers completion tokens only. A row's `prompt_messages` (distill writes the conversation the
teacher was sent) is the prompt as recorded, so --system does not change it; a `distill --prompt-template` row (a
LiteCoT rewrite) trains on its `question_messages`, the question it answers, not the rewrite prompt it was sent
(--prompt-field prompt_messages: on that); other rows get the system prompt distill and eval send by default
(--system to change it, --no-system for none). Rows with `correct: false`
(distill's negatives) are skipped unless --include-incorrect. Rows longer than --max-length (2048 = distill's
default 1024 new tokens plus room for the prompt) are dropped and counted (--truncation keep-start cuts them).
OUT (new, empty or an earlier rtool run: a folder of other files is refused) receives the model (safetensors +
tokenizer; with --lora the adapter, and OUT/merged with --merge-lora), checkpoint-N dirs while it trains (removed at
the end unless --keep-checkpoints), metrics.jsonl, curves.png (`rtool plot` overlays runs) and the card README.md;
--report-to tensorboard|wandb also sends the metrics there. --overwrite deletes an earlier run's files, nothing
else. stdout gets the output directory, only that.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rtool.options import KeepCheckpointsOpt
from rtool.options import DEFAULT_MAX_LENGTH
from rtool.options import ChatTemplateOpt
from rtool.options import (AllowPickleOpt, ConfigOpt, EpochsOpt, GradAccumOpt, GradientCheckpointingOpt,
                           LoggingStepsOpt, LoraAlphaOpt, LoraDropoutOpt, LoraOpt, LoraROpt, LoraTargetsOpt, LrOpt,
                           LrSchedulerOpt, MaxStepsOpt, MergeLoraOpt, NoSystemOpt, OutDirOpt, PromptFieldOpt,
                           ReportToOpt, ResumeTrainOpt, TrainOverwriteOpt, SaveStepsOpt, SeedOpt, SkipBadOpt, SystemOpt,
                           TrainBatchSizeOpt, TrainDataOpt, TrainDtypeOpt, TrainMaxLengthOpt, TrainModelOpt,
                           TruncationOpt, TrustRemoteCodeOpt, WarmupRatioOpt)
from rtool.options import SplitOpt, SubsetOpt

FULL_LR, LORA_LR = 2e-5, 2e-4


def sft_cmd(
    ctx: typer.Context,
    model: TrainModelOpt = None,
    data: TrainDataOpt = None,
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutDirOpt = None,
    config: ConfigOpt = None,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
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
    max_length: TrainMaxLengthOpt = DEFAULT_MAX_LENGTH,
    truncation: TruncationOpt = "drop",
    packing: Annotated[bool, typer.Option("--packing", help="Pack several rows into each --max-length sequence (best-fit, no cross-row attention).")] = False,
    seed: SeedOpt = 0,
    logging_steps: LoggingStepsOpt = 10,
    save_steps: SaveStepsOpt = 500,
    keep_checkpoints: KeepCheckpointsOpt = False,
    report_to: ReportToOpt = "none",
    resume: ResumeTrainOpt = False,
    overwrite: TrainOverwriteOpt = False,
    gradient_checkpointing: GradientCheckpointingOpt = None,
    lora: LoraOpt = False,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    lora_dropout: LoraDropoutOpt = 0.05,
    lora_targets: LoraTargetsOpt = "all-linear",
    merge_lora: MergeLoraOpt = False,
    dtype: TrainDtypeOpt = "auto",
    skip_bad: SkipBadOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    chat_template: ChatTemplateOpt = None,
) -> None:
    """Fine-tune a model on prompt/completion rows, loss on the completion; full weights or LoRA.

    The learning rate defaults to 2e-5, or 2e-4 with --lora. --config run.yaml sets any flag (flags win).
    """
    from rtool.config import merge_config
    from rtool.grade.fields import FieldMap
    from rtool.train.recipes import sft_recipe
    from rtool.generate.traces import choose_system_prompt
    from rtool.train.data import SFTExamples
    from rtool.train.run import TrainRun, run_training

    o = merge_config(ctx, config)
    run = TrainRun.from_flags(o, lr=LORA_LR if o.lora else FULL_LR)
    examples = SFTExamples(FieldMap(o.prompt_field, None), system=choose_system_prompt(o.system, o.no_system),
                           system_explicit=o.system is not None or o.no_system,
                           include_incorrect=o.include_incorrect, max_length=o.max_length, truncation=o.truncation)
    written = run_training(sft_recipe(examples, packing=o.packing, mask_thought=o.mask_thought, seed=o.seed), run)
    if written is not None:
        typer.echo(str(written))
