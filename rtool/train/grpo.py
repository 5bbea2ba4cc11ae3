"""grpo: Group Relative Policy Optimization with verifiable rewards, through TRL's GRPOTrainer.

    prompts = GRPOPrompts(FieldMap(), system=REASONING_SYSTEM_PROMPT, needs_gold=True)   # rows -> prompt examples
    trainer = make_trainer(model=..., tokenizer=..., dataset=..., args=trainer_args, peft_config=None,
                           callbacks=[...], rewards=RewardSet(specs), settings=GRPOSettings(num_generations=8))

For each prompt the trainer samples `num_generations` completions, scores them with the rewards (rtool.train.rewards,
weighted and summed) and pushes up those above their group's mean (advantage = (r - mean) / std within the group),
with TRL's loss types, clipping (epsilon) and KL (beta) to the starting model. rtool adds:

- the prompts as distill sent them: a row's recorded `prompt_messages`, else its prompt field after the system
  prompt (rtool.train.data's rule), one example per prompt id (a traces file with n samples per prompt is read as
  its prompts), the gold answer and multiple-choice options beside it for the accuracy reward;
- TRL's metrics under TRL's names, so TRL dashboards read rtool runs (reward, reward_std, rewards/NAME/mean and
  /std, completions/mean_length, completions/clipped_ratio, frac_reward_zero_std, kl, entropy, clip_ratio/...;
  completions/min_length and /max_length are the logging window's extremes, not the mean of each step's), and
  rtool's additions under rtool's names: accuracy (rewards/accuracy/mean again), completions (how many the row
  averages, every process's), completion_length_median and completion_length_std (over every process's),
  zero_std_share (groups whose completions all got one reward: no signal; counted per group whatever
  --scale-rewards is, where TRL's frac_reward_zero_std is the whole batch's under --scale-rewards batch),
  completion_tokens_per_s (from the first step: setup is not generation); num_tokens counts this process run's
  tokens (a resumed run's from its checkpoint, as sft's), so tokens_per_s is this run's;
- BAI's failure curves watched live (rtool.train.failure_curves): a warning when one shows, and from then on a `flags`
  list in every metrics row (so in the final one).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from rtool.errors import UserError, one_of
from rtool.train.failure_curves import MEAN_LENGTH, CurveWatch
from rtool.grade.fields import FieldMap, prompt_id
from rtool.log import logger
from rtool.train.data import CARRIED, prompt_messages

LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")  # TRL's vllm_mode

# TRL's name of the share of completions cut at --max-completion-length (the mean length's: failure_curves).
TRUNCATED = "completions/clipped_ratio"
# Window extremes: TRL's log averages each step's minimum (maximum); the window's is the minimum of them.
WINDOW_EXTREMES = {"completions/min_length": min, "completions/max_length": max,
                   "completions/min_terminated_length": min, "completions/max_terminated_length": max}


@dataclass
class GRPOSettings:
    """GRPO's own flags (the optimisation ones are the shared `core.Hyperparams`)."""

    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.0
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    mask_truncated: bool = False
    use_vllm: bool = False
    # --vllm-mode: colocate (vLLM inside the training processes) | server (TRL's `trl vllm-serve`, at
    # --vllm-server-url: TRL's default http://0.0.0.0:8000 when unset). Both need --use-vllm.
    vllm_mode: str | None = None
    vllm_server_url: str | None = None
    watch: CurveWatch = field(default_factory=CurveWatch)

    def check(self, *, batch_size: int, grad_accum: int, processes: int) -> None:
        """UserError for values TRL would refuse later (or take silently)."""
        if self.num_generations < 2:
            raise UserError(f"--num-generations must be at least 2 (advantages compare a group's completions), "
                            f"got {self.num_generations}")
        if self.max_completion_length < 1:
            raise UserError(f"--max-completion-length must be at least 1, got {self.max_completion_length}")
        if not self.temperature > 0:
            raise UserError(f"--temperature must be > 0 (GRPO samples its groups), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0 is off), got {self.top_k}")
        if self.beta < 0 or not math.isfinite(self.beta):
            raise UserError(f"--beta must be >= 0, got {self.beta}")
        if not 0 < self.epsilon < 1:
            raise UserError(f"--epsilon must be in (0, 1), got {self.epsilon}")
        if self.num_iterations < 1:
            raise UserError(f"--num-iterations must be at least 1, got {self.num_iterations}")
        one_of("--loss-type", self.loss_type, LOSS_TYPES)
        one_of("--scale-rewards", self.scale_rewards, SCALE_REWARDS)
        self.watch.check()
        per_step = batch_size * grad_accum * processes
        if per_step % self.num_generations:
            raise UserError(f"--batch-size {batch_size} x --grad-accum {grad_accum} x {processes} process(es) = "
                            f"{per_step} completions per step, not a multiple of --num-generations "
                            f"{self.num_generations}", hint="each step must hold whole groups of completions")
        self._check_vllm_mode()
        if self.use_vllm:
            from rtool.generate.backends import vllm_usable

            if not vllm_usable():
                raise UserError("--use-vllm needs vllm installed and a CUDA GPU",
                                hint="pip install 'rtool[vllm]' on a GPU machine, or drop --use-vllm (generation "
                                     "then runs through transformers)")

    def _check_vllm_mode(self) -> None:
        given = [flag for flag, value in (("--vllm-mode", self.vllm_mode), ("--vllm-server-url", self.vllm_server_url))
                 if value is not None]
        if given and not self.use_vllm:
            raise UserError(f"{' and '.join(given)} without --use-vllm", hint="add --use-vllm, or drop them")
        if self.vllm_mode is not None:
            one_of("--vllm-mode", self.vllm_mode, VLLM_MODES)
        if self.vllm_server_url is not None:
            if self.vllm_mode == "colocate":
                raise UserError("--vllm-server-url is for --vllm-mode server; colocate starts vLLM in this process")
            if not self.vllm_server_url.startswith(("http://", "https://")):
                raise UserError(f"--vllm-server-url must be an http(s) URL, got {self.vllm_server_url!r}",
                                hint="e.g. http://localhost:8000, where `trl vllm-serve --model M` listens")

    def resolved_vllm_mode(self) -> str:
        """colocate, unless server was asked for (or a server URL given)."""
        return self.vllm_mode or ("server" if self.vllm_server_url else "colocate")

    def config_args(self) -> dict:
        """GRPOConfig keyword arguments for these settings."""
        args = dict(num_generations=self.num_generations, max_completion_length=self.max_completion_length,
                    temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, beta=self.beta,
                    epsilon=self.epsilon, loss_type=self.loss_type, scale_rewards=self.scale_rewards,
                    num_iterations=self.num_iterations, mask_truncated_completions=self.mask_truncated,
                    use_vllm=self.use_vllm)
        if self.use_vllm:
            args["vllm_mode"] = self.resolved_vllm_mode()
            if self.vllm_server_url is not None:
                args["vllm_server_base_url"] = self.vllm_server_url.rstrip("/")
        return args


@dataclass
class PromptCounts:
    read: int = 0
    kept: int = 0
    repeated: int = 0  # rows whose prompt id was already kept
    no_gold: int = 0
    recorded: int = 0  # prompts taken from a row's prompt_messages


@dataclass
class GRPOPrompts:
    """Rows -> GRPO examples {"prompt": messages, "answer": gold or "", "options": JSON text or ""}, one per
    prompt id. `needs_gold` (the accuracy reward): a row without a gold answer is a UserError naming it."""

    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    needs_gold: bool = False
    name: str = "grpo"
    counts: PromptCounts = field(default_factory=PromptCounts)

    def __call__(self, rows: Iterable, tokenizer=None) -> Iterator[dict]:
        counts, seen = self.counts, set()
        for row in rows:
            counts.read += 1
            key = prompt_id(row, self.fields)
            if key in seen:
                counts.repeated += 1
                continue
            seen.add(key)
            messages, recorded = prompt_messages(row, self.fields, self.system)
            gold = self.fields.gold(row)
            if gold is None:
                if self.needs_gold:
                    raise row.error("no gold answer; the accuracy reward compares each completion with it",
                                    field=self.fields.answer_field or "answer",
                                    hint="add one (answer, gold, or a solution ending in \\boxed{}), pass "
                                         "--answer-field, or train with other rewards only")
                counts.no_gold += 1
            options = self.fields.choices(row)
            counts.kept += 1
            counts.recorded += recorded
            yield {"prompt": messages, "answer": gold or "",
                   "options": json.dumps(options, ensure_ascii=False) if options else ""}

    @staticmethod
    def features():
        from datasets import Features, Value

        return Features({"prompt": [{"role": Value("string"), "content": Value("string")}],
                         "answer": Value("string"), "options": Value("string")})

    def report(self) -> None:
        c = self.counts
        logger.info("%s: %d prompts of %d rows read%s", self.name, c.kept, c.read,
                    f" ({c.repeated} rows repeat a prompt id already read: one example per prompt)"
                    if c.repeated else "")
        if c.recorded:
            logger.info("%s: %d prompts as their rows record them (%s), %d bare prompts get %s", self.name,
                        c.recorded, CARRIED, c.kept - c.recorded,
                        f"the system prompt {self.system!r}" if self.system else "no system prompt")
        if c.no_gold:
            logger.info("%s: %d prompts without a gold answer", self.name, c.no_gold)

    def empty_hint(self) -> str:
        return "the input has no rows"


def window_metrics(metrics: dict, reward_labels: Iterable[str]) -> defaultdict:
    """TRL's per-step metric lists of a logging window, under TRL's names, with `accuracy` (rtool's: a copy of
    rewards/accuracy/mean) and the window's extremes of the min and max lengths (WINDOW_EXTREMES)."""
    out: defaultdict = defaultdict(list, {key: list(values) for key, values in metrics.items()})
    if "accuracy" in set(reward_labels) and "rewards/accuracy/mean" in out:
        out["accuracy"] = list(out["rewards/accuracy/mean"])
    for key, extreme in WINDOW_EXTREMES.items():
        if out.get(key):
            out[key] = [extreme(out[key])]
    return out


def no_signal_share(rewards_per_func, weights, group_size: int) -> float:
    """The share of groups (`group_size` consecutive completions, one prompt) whose weighted reward sums are all
    equal, or that no reward scored: their advantages are all 0 (TRL's per-group zero-std rule, whatever
    --scale-rewards is)."""
    import torch

    rewards = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    unscored = torch.isnan(rewards_per_func).all(dim=1)
    groups = rewards.view(-1, group_size)
    unscored = unscored.view(-1, group_size)
    high = torch.where(unscored, -torch.inf, groups).max(dim=1).values
    low = torch.where(unscored, torch.inf, groups).min(dim=1).values
    return (~(high - low > 1e-8)).float().mean().item()


def _nan_mean(values) -> float | None:
    valid = [v for v in values if v is not None and not math.isnan(v)]
    return sum(valid) / len(valid) if valid else None


def trainer_class():
    """rtool's GRPOTrainer subclass (imports trl: called when a run starts)."""
    from trl import GRPOTrainer

    class RtoolGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer adding rtool's metrics (the median completion length, completion tokens/s, ...) and
        watching BAI's failure curves (warning once per curve, `flags` in every row from then on)."""

        def __init__(self, *args, watch: CurveWatch, reward_labels: list[str], **kwargs):
            super().__init__(*args, **kwargs)
            self.watch = watch
            self.reward_labels = reward_labels
            self._lengths: list[int] = []  # every process's completion lengths since the last log
            self._no_signal: list[float] = []  # each generation batch's share of groups with one reward
            self._history: list[dict] | None = None  # the logged rows the watch reads (a resumed run's too)
            self._seen: set[str] = set()
            # The throughput clocks and token count start at this process run's first step, not at setup (model
            # load, dataset), and a resumed run counts from its checkpoint's tokens, not step 0's.
            self._last_log: float | None = None
            self._tokens_before: float | None = None

        def training_step(self, *args, **kwargs):
            if self._last_log is None:
                self._last_log, self._tokens_before = time.perf_counter(), self.state.num_input_tokens_seen
            return super().training_step(*args, **kwargs)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            from accelerate.utils import gather_object

            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            if self.model.training:
                # Every process's lengths (gather_object is collective: each rank calls it here), for the median.
                self._lengths.extend(gather_object([len(ids) for ids in completion_ids_list]))
                self._no_signal.append(no_signal_share(rewards_per_func, self.reward_weights, self.num_generations))
            return rewards_per_func

        def log(self, logs: dict, start_time: float | None = None) -> None:
            mode = "train" if self.model.training else "eval"
            if mode == "train" and self._metrics[mode]:
                metrics = window_metrics(self._metrics[mode], self.reward_labels)
                if self._no_signal:  # TRL's frac_reward_zero_std is the whole batch's under --scale-rewards batch
                    metrics["zero_std_share"] = [sum(self._no_signal) / len(self._no_signal)]
                if self._lengths:
                    metrics["completions"] = [len(self._lengths)]
                    metrics["completion_length_median"] = [float(statistics.median(self._lengths))]
                    if len(self._lengths) > 1:
                        metrics["completion_length_std"] = [statistics.stdev(self._lengths)]
                now = time.perf_counter()
                if self._lengths and self._last_log is not None and now > self._last_log:
                    metrics["completion_tokens_per_s"] = [round(sum(self._lengths) / (now - self._last_log), 1)]
                if self._tokens_before is not None and "num_tokens" in metrics:
                    metrics["num_tokens"] = [self.state.num_input_tokens_seen - self._tokens_before]
                self._last_log, self._lengths, self._no_signal = now, [], []
                self._metrics[mode] = metrics
                flags = self._watch_step(metrics)
                if flags:
                    logs["flags"] = flags
            super().log(logs, start_time)

        def _watch_step(self, metrics: dict) -> list[str]:
            if self._history is None:
                self._history = _earlier_rows(Path(self.args.output_dir), self.state.global_step)
            row = {"step": self.state.global_step}
            for key in ("reward", "reward_std", MEAN_LENGTH, "completion_length_std", "completions"):
                value = _nan_mean(metrics.get(key, []))
                if value is not None:
                    row[key] = value
            self._history.append(row)
            events = self.watch.events(self._history)
            for event in events:
                if event.name not in self._seen and self.is_world_process_zero():
                    logger.warning("grpo: step %d: %s", self.state.global_step, event.message)
                self._seen.add(event.name)
            return [event.name for event in events]

    return RtoolGRPOTrainer


def _earlier_rows(out: Path, before_step: int) -> list[dict]:
    """A resumed run's logged rows before `before_step` (metrics.jsonl is trimmed to the checkpoint already)."""
    from rtool.train.curves import METRICS_FILE, read_metrics

    if not (out / METRICS_FILE).is_file():
        return []
    try:
        rows = read_metrics(out)
    except UserError:  # a file without a row yet
        return []
    return [row for row in rows if row["step"] < before_step]


def grpo_config(args: dict, settings: GRPOSettings, reward_weights: list[float]):
    """TRL's GRPOConfig from the shared trainer arguments (`core.trainer_args`) and the GRPO settings."""
    from trl import GRPOConfig

    # Each metrics row averages its whole logging window: a first row of step 1 alone would weigh one batch as much
    # as a window in the failure-curve watch's starting values.
    return GRPOConfig(**{**args, "logging_first_step": False}, **settings.config_args(), reward_weights=reward_weights,
                      remove_unused_columns=False, log_completions=False)


def generation_prompt(tokenizer) -> str | None:
    """A prompt rendered as TRL renders each one for generation (the chat template, add_generation_prompt): its end
    is what the model continues from, e.g. DeepSeek-R1-Distill's "<｜Assistant｜><think>\\n", which opens the
    reasoning block for it. None without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    return tokenizer.apply_chat_template([{"role": "user", "content": "What is 1 + 1?"}], tokenize=False,
                                         add_generation_prompt=True)


def make_trainer(*, model, tokenizer, dataset, args: dict, peft_config, callbacks, rewards, settings: GRPOSettings):
    """rtool's GRPOTrainer from the shared trainer arguments (`core.trainer_args`), a `rtool.train.rewards.RewardSet`
    and the GRPO settings. With `peft_config`, TRL adds the LoRA adapter (and needs no reference model copy: the
    adapter off is the reference)."""
    functions, weights = rewards.functions(generation_prompt=generation_prompt(tokenizer))
    config = grpo_config(args, settings, weights)
    return trainer_class()(model=model, reward_funcs=functions, args=config, train_dataset=dataset,
                           processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
                           watch=settings.watch, reward_labels=[spec.label for spec in rewards.specs])


# OUT/curves.png's panels, in order, where logged: what a GRPO run is watched by first (reward/NAME only when there
# are several rewards: with one it repeats `reward`).
CURVE_PANELS = ("reward", "accuracy", MEAN_LENGTH, "completion_length_median", TRUNCATED, "zero_std_share", "kl",
                "entropy", "loss", "grad_norm", "learning_rate", "completion_tokens_per_s")


def curve_panels(rows: list[dict]) -> list[str]:
    """The series OUT/curves.png draws for a GRPO run's metrics rows."""
    logged = {key for row in rows for key, value in row.items() if isinstance(value, (int, float))}
    per_reward = sorted(key for key in logged if key.startswith("rewards/") and key.endswith("/mean"))
    panels = [name for name in CURVE_PANELS if name in logged]
    if all(row.get("accuracy") == row.get("reward") for row in rows):  # accuracy=1 alone: the same curve twice
        panels = [name for name in panels if name != "accuracy"]
    if len(per_reward) > 1:
        panels[1:1] = per_reward
    return panels


def curve_marks(watch: CurveWatch):
    """OUT/curves.png's marks for a finished run's metrics rows (the same events the run warned about)."""
    from rtool.train.failure_curves import event_marks

    return lambda rows: event_marks(watch.events(rows))
