"""prm-train: train a process reward model on step-labelled traces, in the qwen-prm convention prm-score reads.
Reads rtool prm-label rows (or TRL stepwise-supervision rows); writes a model directory.

    rtool prm-label ... < traces.jsonl > steps.jsonl                               # steps + step_labels/values
    rtool prm-train --model S --data steps.jsonl --out ckpt/prm --eval-split 0.1   # a fresh 2-label head on S
    rtool prm-score --prm ckpt/prm < candidates.jsonl | rtool bon --method weighted | rtool eval
    torchrun --nproc_per_node 2 -m rtool.cli prm-train --model S --data steps.jsonl --out ckpt/prm

The model: a causal LM (the student, say) lends its backbone to a fresh 2-label token-classification head; a
token-classification model (an earlier prm-train output) is trained further. `<extra_0>` is added to the
tokenizer when missing. Each row is encoded as prm-score encodes it (rtool.prm.score.PRMScorer): the conversation (the
row's `prompt_messages`, else its prompt with the reasoning system prompt: --system, --no-system), the assistant
turn being the steps each followed by `<extra_0>`; the loss is read at the separators only. The model dir (and each
checkpoint, and OUT/merged) holds rtool_prm.json: the format, that system prompt and the step separator prm-label
split the rows on, which prm-score uses unless its flags say otherwise.
--labels hard: cross-entropy against `step_labels` (0/1; TRL rows: `labels`); --labels soft: cross-entropy against
(1 - v, v), v the row's `step_values` (the share of rollouts from the step that reached a correct answer).
--eval-split 0.1 holds out a tenth of the prompts (by id, chosen by --seed), scored every --eval-steps and at the
end: eval_loss, eval_accuracy (P(correct) > 0.5 against the 0/1 label) and eval_auc in metrics.jsonl.
Rows longer than --max-length are dropped (--truncation keep-start keeps their whole steps that fit).
OUT receives the model (safetensors + tokenizer; with --lora the adapter, and OUT/merged with --merge-lora, which
prm-score loads), checkpoint-N dirs (as sft), metrics.jsonl (loss, accuracy, learning rate, tokens/s, eval_*) and
curves.png. stdout gets the output directory, only that.
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
                           TrainBatchSizeOpt, TrainDataOpt, TrainDtypeOpt, TrainMaxLengthOpt, TrainModelOpt,
                           TruncationOpt, TrustRemoteCodeOpt, WarmupRatioOpt)
from rtool.options import SplitOpt, SubsetOpt

# rtool's defaults for real models (1.5B-7B): a fresh head on a pretrained backbone, full fine-tuning at 1e-5 (10x
# with --lora, as sft), linear decay after 5% warmup, one epoch, 32 traces per optimizer step.
FULL_LR, LORA_LR = 1e-5, 1e-4


def prm_train_cmd(
    ctx: typer.Context,
    model: TrainModelOpt = None,
    data: TrainDataOpt = None,
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutDirOpt = None,
    config: ConfigOpt = None,
    labels: Annotated[str, typer.Option("--labels", help="hard: cross-entropy against 0/1 step_labels (TRL rows: labels) | soft: cross-entropy against (1 - v, v), v the step_values (share of correct rollouts).")] = "hard",
    eval_split: Annotated[float, typer.Option("--eval-split", help="Hold out this share of the prompts (by id, chosen by --seed) and report eval_loss, eval_accuracy and eval_auc on their steps; 0: train on all.")] = 0.0,
    eval_steps: Annotated[Optional[int], typer.Option("--eval-steps", help="With --eval-split: evaluate every N optimizer steps (always at the end).")] = None,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    prompt_field: PromptFieldOpt = None,
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = None,
    lr_scheduler: LrSchedulerOpt = "linear",
    warmup_ratio: WarmupRatioOpt = 0.05,
    batch_size: TrainBatchSizeOpt = 4,
    grad_accum: GradAccumOpt = 8,
    max_length: TrainMaxLengthOpt = DEFAULT_MAX_LENGTH,
    truncation: TruncationOpt = "drop",
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
    """Train a token-classification PRM (qwen-prm: <extra_0> after each step) on step-labelled traces.

    Defaults, rtool's for real models: lr 1e-5 (1e-4 with --lora), linear schedule, warmup ratio 0.05, 1 epoch,
    32 traces per optimizer step (--batch-size 4 x --grad-accum 8 on one device). Tiny models need far larger rates
    (e.g. --lr 1e-3). --config run.yaml sets any flag (flags win).
    """
    from rtool.config import merge_config
    from rtool.grade.fields import FieldMap
    from rtool.prm.score import write_trained_settings
    from rtool.train.prm import PRMExamples
    from rtool.train.recipes import prm_recipe
    from rtool.generate.traces import choose_system_prompt
    from rtool.train.run import TrainRun, run_training

    o = merge_config(ctx, config)
    run = TrainRun.from_flags(o, lr=LORA_LR if o.lora else FULL_LR)
    examples = PRMExamples(FieldMap(o.prompt_field, None), system=choose_system_prompt(o.system, o.no_system),
                           system_explicit=o.system is not None or o.no_system,
                           labels=o.labels, max_length=o.max_length, truncation=o.truncation)
    recipe = prm_recipe(examples, eval_split=o.eval_split, eval_steps=o.eval_steps, seed=o.seed)
    written = run_training(recipe, run)
    if written is not None and o.lora and o.merge_lora:  # OUT/merged: what prm-score loads
        write_trained_settings(written / "merged", **examples.conversation())
    if written is not None:
        typer.echo(str(written))
