"""grpo: RL with verifiable rewards (GRPO, through TRL's GRPOTrainer). Reads prompts with gold answers; writes a model
directory.

    rtool merge-bai -r ckpt/sft --instruct-model I -p P --out ckpt/bai
    rtool grpo --model ckpt/bai --data prompts.jsonl --out ckpt/grpo --reward accuracy=1,format=0.1
    rtool grpo --model ckpt/sft --data prompts.jsonl --out ckpt/grpo --reward accuracy=1,prm=0.5 --prm ckpt/prm
    torchrun --nproc_per_node 2 -m rtool.cli grpo --model ckpt/sft --data prompts.jsonl --out ckpt/grpo

For each prompt, --num-generations completions are sampled (--temperature, --top-p, --top-k, at most
--max-completion-length tokens), scored by the --reward functions (weighted sum; rtool/train/rewards.py has each formula:
accuracy by rtool's grader against the row's gold answer, format, DAPO's soft length penalty, a PRM's aggregate step
score, or any python:MODULE:FUNCTION with TRL's reward signature), and the policy moves toward the completions that
beat their group's mean (TRL's --loss-type, --epsilon clipping, --beta KL to the starting model).
Rows: any prompt field (prompt, messages, question, problem; a row's recorded prompt_messages wins, as in sft) and,
for the accuracy reward, a gold answer (answer, gold, a solution's last \\boxed{}); one example per prompt id, so a
distill traces file works too. --batch-size counts completions (TRL's per-device batch): batch-size x grad-accum x
processes must hold whole groups of --num-generations.
OUT receives the model (as sft), checkpoint-N dirs, metrics.jsonl (per logging step, TRL's metrics under TRL's names:
reward, reward_std, rewards/NAME/mean and /std per function, completions/mean_length, /min_length, /max_length,
completions/clipped_ratio, frac_reward_zero_std, kl when --beta > 0, entropy, clip_ratio/region_mean, learning_rate;
and rtool's: accuracy, completion_length_median, completion_length_std, zero_std_share, tokens_per_s,
completion_tokens_per_s) and curves.png.
BAI's failure curves are watched live (rtool/train/failure_curves.py): a Sequence Length Collapse (completion length below
--collapse-fraction of its first step's) or a Reward Hockey Stick (reward down by --drop-fraction of its scale, then
back), each also past a z test on the batch noise (windows of --watch-window steps), is a warning on stderr, a `flags` entry in the metrics rows from then on, and a mark on curves.png.
stdout gets the output directory, only that.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtool.options import KeepCheckpointsOpt
from rtool.options import ChatTemplateOpt
from rtool.options import (AllowPickleOpt, AnswerFieldOpt, ConfigOpt, EpochsOpt, GradAccumOpt,
                           GradientCheckpointingOpt, LoggingStepsOpt, LoraAlphaOpt, LoraDropoutOpt, LoraOpt, LoraROpt,
                           LoraTargetsOpt, LrOpt, LrSchedulerOpt, MaxStepsOpt, MergeLoraOpt, NoSystemOpt, OutDirOpt,
                           PromptFieldOpt, ReportToOpt, ResumeTrainOpt, TrainOverwriteOpt, SaveStepsOpt, SeedOpt, SkipBadOpt, StepSepOpt,
                           SystemOpt, TopKOpt, TopPOpt, TrainDataOpt, TrainDtypeOpt, TrainModelOpt, TrustRemoteCodeOpt,
                           WarmupRatioOpt)
from rtool.options import SplitOpt, SubsetOpt

# TRL's GRPO default for full fine-tuning (DeepSeek-R1-style runs use 1e-6 to 3e-6); LoRA gets 10x, as sft and redi.
FULL_LR, LORA_LR = 1e-6, 1e-5


def grpo_cmd(
    ctx: typer.Context,
    model: TrainModelOpt = None,
    data: TrainDataOpt = None,
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutDirOpt = None,
    config: ConfigOpt = None,
    reward: Annotated[str, typer.Option("--reward", help="Rewards and weights, NAME=W,...: accuracy (1 if the graded answer equals the gold, else 0) | format (a \\boxed{} answer, or the --format-tags blocks) | length (DAPO's soft over-length penalty, 0 to -1) | prm (--prm's aggregate step score) | python:MODULE:FUNCTION (TRL's reward signature).")] = "accuracy=1",
    format_tags: Annotated[Optional[str], typer.Option("--format-tags", help="The format reward asks for these blocks in order, e.g. think,answer: <think>...</think><answer>...</answer> (a tag the chat template's generation prompt opens, as R1-Distill's <think>, counts as written); default: a \\boxed{} answer.")] = None,
    length_buffer: Annotated[Optional[int], typer.Option("--length-buffer", help="The length reward's buffer B in tokens: 0 up to max-completion-length - B, then falling linearly to -1 at max-completion-length (default: 20% of it).")] = None,
    prm: Annotated[Optional[str], typer.Option("--prm", help="Process reward model for the prm reward (a local HF dir or hub id; see rtool prm-score).")] = None,
    prm_agg: Annotated[str, typer.Option("--prm-agg", help="The prm reward's step aggregate: min | prod | last | mean.")] = "min",
    step_sep: StepSepOpt = "\\n\\n",
    num_generations: Annotated[int, typer.Option("--num-generations", "-G", "-n", help="Completions sampled per prompt (a group); at least 2.")] = 8,
    max_completion_length: Annotated[int, typer.Option("--max-completion-length", help="Longest completion in tokens; longer ones are cut (completions/clipped_ratio in the metrics).")] = 1024,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature of the groups (> 0).")] = 1.0,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    beta: Annotated[float, typer.Option("--beta", help="KL penalty to the starting model; 0 loads no reference model (TRL's default; DeepSeek-R1 used 0.001).")] = 0.0,
    epsilon: Annotated[float, typer.Option("--epsilon", help="Clipping of the policy ratio to [1 - epsilon, 1 + epsilon].")] = 0.2,
    loss_type: Annotated[str, typer.Option("--loss-type", help="TRL's loss: dapo (token-level, normalised over the global batch) | grpo (per-sequence mean) | dr_grpo | bnpo | cispo | sapo.")] = "dapo",
    scale_rewards: Annotated[str, typer.Option("--scale-rewards", help="Advantage scaling: group (divide by the group's std) | batch | none (Dr. GRPO).")] = "group",
    num_iterations: Annotated[int, typer.Option("--num-iterations", help="Optimizer passes over each generated batch (mu).")] = 1,
    mask_truncated: Annotated[bool, typer.Option("--mask-truncated", help="Leave completions cut at --max-completion-length out of the loss (DAPO).")] = False,
    use_vllm: Annotated[bool, typer.Option("--use-vllm", help="Generate with vLLM (--vllm-mode: in the training process, or a `trl vllm-serve` server); needs vllm and a CUDA GPU.")] = False,
    vllm_mode: Annotated[Optional[str], typer.Option("--vllm-mode", help="With --use-vllm: colocate (vLLM inside the training processes, the default) | server (TRL's `trl vllm-serve --model M` on other GPUs, at --vllm-server-url; weights are synced to it each step).", show_default=False)] = None,
    vllm_server_url: Annotated[Optional[str], typer.Option("--vllm-server-url", help="--vllm-mode server: the URL `trl vllm-serve` listens at [default: TRL's, http://0.0.0.0:8000].", show_default=False)] = None,
    collapse_fraction: Annotated[float, typer.Option("--collapse-fraction", help="Sequence Length Collapse: mean completion length below this share of its first logged step's (and beyond batch noise).")] = 0.5,
    drop_fraction: Annotated[float, typer.Option("--drop-fraction", help="Reward Hockey Stick: mean reward falls this share of its scale below its first steps' mean, and beyond batch noise (then climbs back).")] = 0.3,
    watch_window: Annotated[int, typer.Option("--watch-window", help="Steps (not logged rows) averaged for the failure curves' current value; the reward's start averages twice as many.")] = 5,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    prompt_field: PromptFieldOpt = None,
    answer_field: AnswerFieldOpt = None,
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = None,
    lr_scheduler: LrSchedulerOpt = "linear",
    warmup_ratio: WarmupRatioOpt = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size", "--per-device-train-batch-size", help="Completions per device per forward pass (TRL's per-device batch); batch-size x grad-accum x processes completions, whole groups, make one optimizer step.")] = 8,
    grad_accum: GradAccumOpt = 4,
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
    """Train with GRPO on verifiable rewards; BAI's failure curves watched and drawn. Full weights or LoRA.

    Defaults: --reward accuracy=1, 8 completions per prompt, 4 prompts (32 completions) per optimizer step on one
    device, lr 1e-6 (1e-5 with --lora), TRL's dapo loss, epsilon 0.2, no KL. Tiny models need far larger rates.
    --config run.yaml sets any flag (flags win).
    """
    from rtool.config import merge_config
    from rtool.errors import UserError, one_of
    from rtool.train.failure_curves import CurveWatch
    from rtool.grade.fields import FieldMap
    from rtool.train.grpo import GRPOPrompts, GRPOSettings
    from rtool.prm.score import AGGREGATIONS
    from rtool.train.recipes import grpo_recipe
    from rtool.train.rewards import RewardSet, parse_format_tags, parse_reward_spec
    from rtool.generate.traces import choose_system_prompt
    from rtool.train.run import TrainRun, run_training
    from rtool.train.processes import world_size

    o = merge_config(ctx, config)
    run = TrainRun.from_flags(o, lr=LORA_LR if o.lora else FULL_LR)
    specs = parse_reward_spec(o.reward)
    settings = GRPOSettings(num_generations=o.num_generations, max_completion_length=o.max_completion_length,
                            temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, beta=o.beta, epsilon=o.epsilon,
                            loss_type=o.loss_type, scale_rewards=o.scale_rewards, num_iterations=o.num_iterations,
                            mask_truncated=o.mask_truncated, use_vllm=o.use_vllm,
                            vllm_mode=o.vllm_mode, vllm_server_url=o.vllm_server_url,
                            watch=CurveWatch(o.collapse_fraction, o.drop_fraction, o.watch_window))
    settings.check(batch_size=o.batch_size, grad_accum=o.grad_accum, processes=world_size())
    one_of("--prm-agg", o.prm_agg, AGGREGATIONS)
    uses_prm = any(spec.name == "prm" for spec in specs)
    if o.prm is not None and not uses_prm:
        raise UserError("--prm is given but --reward has no prm=W", hint="e.g. --reward accuracy=1,prm=0.5")
    rewards = RewardSet(specs, max_completion_length=o.max_completion_length, length_buffer=o.length_buffer,
                        format_tags=parse_format_tags(o.format_tags), prm_scorer=_load_prm(o) if uses_prm else None,
                        prm_agg=o.prm_agg)
    prompts = GRPOPrompts(FieldMap(o.prompt_field, o.answer_field), system=choose_system_prompt(o.system, o.no_system),
                          needs_gold=rewards.uses("accuracy"))
    written = run_training(grpo_recipe(prompts, rewards=rewards, settings=settings), run)
    if written is not None:
        typer.echo(str(written))


def _load_prm(o):
    """The PRM for the prm reward, on the device the policy trains on (rtool.prm.score.PRMScorer)."""
    from rtool.errors import UserError
    from rtool.prm.score import PRMScorer, parse_step_sep

    if o.prm is None:
        raise UserError("the prm reward needs a process reward model", hint="pass --prm PATH (see rtool prm-score)")
    return PRMScorer.load(o.prm, step_sep=parse_step_sep(o.step_sep), trust_remote_code=o.trust_remote_code,
                          allow_pickle=o.allow_pickle)
