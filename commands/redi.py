"""redi: Reinforcement Distillation (arXiv 2505.24850), stage 2 after sft: learn from the teacher's correct AND
incorrect traces. Reads graded distill rows (or preference rows); writes a model directory.

    rtool distill --teacher T -n 4 < q.jsonl > traces.jsonl                        # negatives kept, graded
    rtool sft  --model S --data traces.jsonl --out runs/stage1                     # stage 1: the positives
    rtool redi --model runs/stage1 --data traces.jsonl --out runs/redi --alpha 0.8  # stage 2: the pairs
    torchrun --nproc_per_node 2 -m rtool.cli redi --model runs/stage1 --data traces.jsonl --out runs/redi

Loss, reference-free (one model in memory, as sft): L = E[-log π(y_w|x)/|y_w| + α·log π(y_l|x)/|y_l|], y_w a
correct and y_l an incorrect completion of x, |y| their completion tokens; --alpha 0 is SFT on the positives.
Pairs: rows grouped by `id`, `correct: true` against `correct: false` (null unused); --pairs first (the paper's:
per prompt, the first correct with the first incorrect sample by `sample` index), or all combinations, at most
--max-pairs-per-prompt. Rows with `prompt`, `chosen`, `rejected` (TRL's preference format) are pairs already. The
input order does not matter. Prompts and completions are tokenized as sft does (a row's recorded prompt_messages
wins over --system); a pair with a side over --max-length is dropped and counted. stderr: prompts read, pairs
built, prompts skipped for lack of a positive or a negative.
OUT receives the model (as sft: safetensors + tokenizer, or the LoRA adapter and OUT/merged), checkpoint-N dirs (as
sft: removed at the end unless --keep-checkpoints),
metrics.jsonl (per logging step: loss, chosen_logp, rejected_logp, margin, learning_rate, tokens_per_s) and
curves.png. A warning says when chosen_logp falls well below its start while rejected_logp falls (the collapse
the paper reports for alpha near 1). stdout gets the output directory, only that.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import KeepCheckpointsOpt
from rtool.options import DEFAULT_MAX_LENGTH
from rtool.options import ChatTemplateOpt
from rtool.options import (AllowPickleOpt, ConfigOpt, EpochsOpt, GradAccumOpt, GradientCheckpointingOpt,
                           LoggingStepsOpt, LoraAlphaOpt, LoraDropoutOpt, LoraOpt, LoraROpt, LoraTargetsOpt, LrOpt,
                           LrSchedulerOpt, MaxStepsOpt, MergeLoraOpt, NoSystemOpt, OutDirOpt, PromptFieldOpt,
                           ReportToOpt, ResumeTrainOpt, TrainOverwriteOpt, SaveStepsOpt, SeedOpt, SkipBadOpt, SystemOpt,
                           TrainDataOpt, TrainDtypeOpt, TrainMaxLengthOpt, TrainModelOpt, TruncationOpt,
                           TrustRemoteCodeOpt, WarmupRatioOpt)
from rtool.options import SplitOpt, SubsetOpt

# The paper's released recipe: lr 1e-6 (full fine-tuning; LoRA gets 10x, as sft's defaults), linear, warmup 0.1,
# 1 epoch, global batch 32 pairs = 4 pairs (8 sequences, sft's default per forward) x 8 accumulation steps.
FULL_LR, LORA_LR = 1e-6, 1e-5


def redi_cmd(
    ctx: typer.Context,
    model: TrainModelOpt = None,
    data: TrainDataOpt = None,
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutDirOpt = None,
    config: ConfigOpt = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the incorrect completion's term, in [0, 1]: 0 is SFT on the positives, 1 symmetric and unstable (the paper: 0.8).")] = 0.8,
    pairs: Annotated[str, typer.Option("--pairs", help="first: one pair per prompt, its first correct and first incorrect sample by `sample` index (the paper's) | all: every (correct, incorrect) combination.")] = "first",
    max_pairs_per_prompt: Annotated[Optional[int], typer.Option("--max-pairs-per-prompt", help="With --pairs all: at most K pairs per prompt, those of its earliest samples.")] = None,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    prompt_field: PromptFieldOpt = None,
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = None,
    lr_scheduler: LrSchedulerOpt = "linear",
    warmup_ratio: WarmupRatioOpt = 0.1,
    batch_size: Annotated[int, typer.Option("--batch-size", "--per-device-train-batch-size", help="Pairs per device per step (2x as many sequences per forward pass); the global batch is batch-size x grad-accum x processes.")] = 4,
    grad_accum: GradAccumOpt = 8,
    max_length: Annotated[int, typer.Option("--max-length", help="Longest tokenized side of a pair (prompt + completion); a pair with a longer side follows --truncation and is counted on stderr; the default is open-r1's for long reasoning traces.")] = DEFAULT_MAX_LENGTH,
    truncation: TruncationOpt = "drop",
    seed: SeedOpt = 0,
    logging_steps: LoggingStepsOpt = 1,
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
    """Train on (correct, incorrect) pairs with the REDI loss, no reference model; full weights or LoRA.

    Defaults follow the paper's released recipe for real models: --alpha 0.8, lr 1e-6 (1e-5 with --lora), linear
    schedule, warmup ratio 0.1, 1 epoch, 32 pairs per optimizer step (--batch-size 4 x --grad-accum 8 on one
    device). Tiny models need far larger rates (e.g. --lr 1e-3). --config run.yaml sets any flag (flags win).
    """
    from rtool.config import merge_config
    from rtool.grade.fields import FieldMap
    from rtool.train.recipes import redi_recipe
    from rtool.train.redi import RediPairs
    from rtool.generate.traces import choose_system_prompt
    from rtool.train.run import TrainRun, run_training

    o = merge_config(ctx, config)
    run = TrainRun.from_flags(o, lr=LORA_LR if o.lora else FULL_LR)
    examples = RediPairs(FieldMap(o.prompt_field, None), system=choose_system_prompt(o.system, o.no_system),
                         system_explicit=o.system is not None or o.no_system,
                         pairs=o.pairs, max_pairs_per_prompt=o.max_pairs_per_prompt, max_length=o.max_length,
                         truncation=o.truncation)
    written = run_training(redi_recipe(examples, alpha=o.alpha), run)
    if written is not None:
        typer.echo(str(written))
