"""Training a process reward model (prm-train) in the qwen-prm convention that `rtool.prm.score.PRMScorer` reads: the
loss, step-labelled rows -> examples, the held-out split and its AUC, the collator, the trainer, the model loader.

    loss, p_correct, targets = separator_loss(logits, targets)   # cross-entropy at the separator positions only
    steps, targets, labels = row_steps(row, "soft")               # a row's steps, training targets, 0/1 labels
    examples = PRMExamples(FieldMap(), system=None, labels="hard", max_length=2048)
    for example in examples(rows, tokenizer): ...   # {"input_ids", "positions", "targets", "labels", "prompt_id"}
    held = held_out_ids(prompt_ids, share=0.1, seed=0)            # the prompts evaluated, not trained on
    auc(scores, labels)                                           # area under the ROC curve, None with one class
    model, tokenizer = load_prm(spec, dtype="float32", device="cpu", for_training=True)
    trainer = make_trainer(model=m, tokenizer=t, dataset=ds, args=trainer_args, peft_config=None, callbacks=[],
                           eval_split=0.1, eval_steps=None, seed=0)

The model: a `*ForTokenClassification` with 2 labels (0 incorrect, 1 correct). A causal LM (the student, say) lends
its backbone to a fresh head; a token classifier (an earlier prm-train output) is trained further
(`rtool.io.models.load_token_classifier`). The tokenizer gets the `<extra_0>` separator when it lacks it (the
embeddings grow when they have no spare row).

The input, as `PRMScorer.encode` builds it (its own qwen-prm encoding is called, so training and scoring read the
same tokens and positions): the conversation through the chat template, the assistant turn being the steps, each
followed by `<extra_0>`. The loss is read at the separators only (Qwen2.5-Math-PRM's recipe): per step,
-((1 - v) log p(incorrect) + v log p(correct)), averaged over the batch's steps, where v is the step's label (0/1,
`--labels hard`: the usual cross-entropy) or the share of rollouts from it that reached a correct answer
(`--labels soft`, Math-Shepherd's soft estimate; Wang et al. 2024, arXiv:2312.08935).

Rows: rtool prm-label's (a trace plus `steps`, `step_labels` 0/1 and/or `step_values` in [0, 1]; a null label, a
step whose every rollout was truncated, is not trained on), or TRL's
stepwise supervision (`prompt`, `completions`: the steps, `labels`: booleans), so PRM800K and Math-Shepherd in TRL's
form train as they are. Accuracy and AUC are read against 0/1 labels: `step_labels` (or `labels`) when the row
has them, else v >= 0.5.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
from transformers import Trainer, TrainerCallback

from rtool.errors import UserError, one_of
from rtool.grade.fields import FieldMap
from rtool.log import logger
from rtool.grade.metrics import auc
from rtool.prm.score import QWEN_SEPARATOR, PRMScorer, write_trained_settings
from rtool.train.data import CARRIED, TRUNCATIONS, prompt_messages, system_not_applied, warn_recorded_wins
from rtool.train.metrics_log import MetricsCallback

LABELS = ("hard", "soft")
IGNORE = -100  # targets and labels of tokens that are not a step's separator
CURVE_PANELS = ("loss", "accuracy", "eval_loss", "eval_accuracy", "eval_auc", "learning_rate", "grad_norm")


def separator_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PRM loss of a batch: logits [B, T, 2] (index 1: correct), targets [B, T] holding each separator's target
    v = P(step correct) (0/1, or a share of correct rollouts) and IGNORE at every other token. Per step
    -((1 - v) log p0 + v log p1), in float32, averaged over the batch's steps. Returns (loss, P(correct) at each
    step [N], v at each step [N]), the steps in row-major order."""
    at = targets != IGNORE
    logp = logits[at].float().log_softmax(-1)
    v = targets[at].float()
    per_step = -((1 - v) * logp[:, 0] + v * logp[:, 1])
    loss = per_step.mean() if per_step.numel() else logits.sum() * 0.0  # no step: no gradient, no NaN
    return loss, logp[:, 1].detach().exp(), v


def held_out_ids(prompt_ids: Iterable[str], share: float, seed: int) -> set[str]:
    """The prompts held out for evaluation: round(share x prompts) of them (at least 1, at most all but 1), those
    first in the order of sha256(seed, id). Deterministic, and independent of the order of the rows."""
    ids = sorted(set(prompt_ids))
    if share <= 0:
        return set()
    if len(ids) < 2:
        raise UserError(f"--eval-split {share:g} needs at least 2 prompts to hold one out; the data has {len(ids)}",
                        hint="pass --eval-split 0 to train on all of it")
    count = min(max(round(share * len(ids)), 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda pid: hashlib.sha256(f"{seed}\0{pid}".encode("utf-8")).hexdigest())
    return set(ranked[:count])


def check_eval(eval_split: float, eval_steps: int | None) -> None:
    if not 0 <= eval_split < 1:  # also refuses NaN
        raise UserError(f"--eval-split must be in [0, 1), got {eval_split}", hint="e.g. 0.1: a tenth of the prompts")
    if eval_steps is not None:
        if eval_steps < 1:
            raise UserError(f"--eval-steps must be at least 1, got {eval_steps}")
        if eval_split == 0:
            raise UserError("--eval-steps needs --eval-split", hint="e.g. --eval-split 0.1")


# Rows

def row_steps(row, labels: str = "hard") -> tuple[list[str], list[float], list[int]]:
    """A row's steps (stripped), the training target of each (0/1 under "hard", the share of correct rollouts under
    "soft") and its 0/1 label for accuracy and AUC. UserError naming the row's file, line and field."""
    if row.get("steps") is not None:
        steps_key, hard_key, soft_key = "steps", "step_labels", "step_values"
    elif row.get("completions") is not None:
        steps_key, hard_key, soft_key = "completions", "labels", None  # TRL's stepwise supervision
    else:
        raise row.error("no steps", field="steps",
                        hint="expected 'steps' with 'step_labels' or 'step_values' (rtool prm-label's output), or "
                             f"TRL's 'completions' with 'labels'; found: {', '.join(list(row)[:12]) or 'no fields'}")
    steps = _steps(row, steps_key)
    hard = _hard_labels(row, hard_key, len(steps)) if row.get(hard_key) is not None else None
    soft = _soft_values(row, soft_key, len(steps)) if soft_key and row.get(soft_key) is not None else None
    if labels == "hard":
        if hard is None:
            hint = ("it has step_values: pass --labels soft" if soft is not None
                    else "label each step 0/1 (rtool prm-label), or drop the row")
            raise row.error(f"no field {hard_key!r} for its {len(steps)} steps (--labels hard)", field=hard_key,
                            hint=hint)
        return steps, [float(label) for label in hard], hard
    if soft is None:
        if soft_key is None:
            raise row.error(f"TRL stepwise rows have 0/1 {hard_key!r} only, no step values (--labels soft)",
                            field=hard_key, hint="pass --labels hard")
        hint = ("it has step_labels: pass --labels hard" if hard is not None
                else "estimate them with rtool prm-label, or drop the row")
        raise row.error(f"no field {soft_key!r} for its {len(steps)} steps (--labels soft)", field=soft_key,
                        hint=hint)
    return steps, soft, hard if hard is not None else [IGNORE if value == IGNORE else int(value >= 0.5)
                                                       for value in soft]


def _steps(row, key: str) -> list[str]:
    value = row[key]
    if not isinstance(value, list) or not value:
        raise row.error(f"field {key!r} must be a non-empty list of step texts, got "
                        f"{'an empty list' if value == [] else type(value).__name__}", field=key)
    steps = []
    for index, step in enumerate(value):
        if not isinstance(step, str):
            raise row.error(f"{key}[{index}] must be a string, got {type(step).__name__}", field=key)
        if not step.strip():
            raise row.error(f"{key}[{index}] is empty", field=key, hint="every step needs text (and its label)")
        if QWEN_SEPARATOR in step:
            raise row.error(f"{key}[{index}] contains the separator token {QWEN_SEPARATOR!r}", field=key)
        steps.append(step.strip())  # as PRMScorer splits a completion into steps: stripped
    return steps


def _label_list(row, key: str, count: int) -> list:
    value = row[key]
    if not isinstance(value, list):
        raise row.error(f"field {key!r} must be a list, one entry per step, got {type(value).__name__}", field=key)
    if len(value) != count:
        raise row.error(f"field {key!r} has {len(value)} entries for {count} steps", field=key,
                        hint="one label per step, in order")
    return value


def _hard_labels(row, key: str, count: int) -> list[int]:
    out = []
    for index, label in enumerate(_label_list(row, key, count)):
        if label is None:
            out.append(IGNORE)  # prm-label's unknown label (every rollout truncated): the step is not trained on
        elif isinstance(label, bool) or (isinstance(label, (int, float)) and label in (0, 1)):
            out.append(int(label))
        else:
            raise row.error(f"{key}[{index}] must be 0 or 1 (or false/true), got {label!r}", field=key,
                            hint="shares of correct rollouts belong in step_values, read with --labels soft")
    return out


def _soft_values(row, key: str, count: int) -> list[float]:
    out = []
    for index, value in enumerate(_label_list(row, key, count)):
        if value is None:
            value = IGNORE  # an unknown value (see _hard_labels)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise row.error(f"{key}[{index}] must be a number in [0, 1], got {value!r}", field=key)
        out.append(float(value))
    return out


def _prompt_key(row, messages: list[dict]) -> str:
    # The row's id (distill's, per prompt), else a hash of the conversation's non-system text, as rtool.grade.fields does.
    if row.get("id") not in (None, ""):
        return str(row["id"])
    text = "\n".join(m["content"] for m in messages if m["role"] != "system")
    return "p" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def add_separator(tokenizer) -> bool:
    """Add qwen-prm's `<extra_0>` to `tokenizer` when it lacks it; True when added."""
    if QWEN_SEPARATOR in tokenizer.get_vocab():
        return False
    tokenizer.add_tokens([QWEN_SEPARATOR])
    return True


def step_encoder(tokenizer) -> PRMScorer:
    """A model-less PRMScorer: the qwen-prm encoding prm-score applies, for training inputs."""
    scorer = PRMScorer(model=None, tokenizer=tokenizer, format="qwen-prm", name="the model")
    scorer._check_tokenizer()  # the separator's id; a chat template
    return scorer


def encode_steps(scorer: PRMScorer, messages: list[dict], steps: list[str]) -> tuple[list[int], list[int]]:
    """Token ids and separator positions of a conversation and its steps, exactly as `PRMScorer.encode` computes
    them for the completion whose steps these are."""
    return scorer._encode_qwen(messages, steps)


def fit_steps(ids: list[int], positions: list[int], max_length: int, truncation: str):
    """(ids, positions) within `max_length` tokens, or None when the row is not trained on: too long under "drop";
    under "keep-start" cut just after the last separator that fits (a step is kept only whole, with its separator;
    the text after it goes), None when not even the first step fits."""
    if len(ids) <= max_length:
        return ids, positions
    if truncation == "drop":
        return None
    kept = [p for p in positions if p < max_length]
    if not kept:
        return None
    return ids[:kept[-1] + 1], kept


@dataclass
class StepCounts:
    read: int = 0
    kept: int = 0  # rows trained on (or held out)
    trl: int = 0  # kept rows in TRL's stepwise format
    recorded: int = 0  # kept rows trained on the conversation they carry (prompt_messages, a conversational prompt)
    overridden: int = 0  # of those, rows whose own system turn is not what --system/--no-system asked
    steps: int = 0  # steps kept
    correct: int = 0  # of them labelled 1
    too_long: int = 0  # rows longer than max_length (dropped, or cut under keep-start)
    no_step_left: int = 0  # keep-start: not even the first step fits
    step_seps: set = field(default_factory=set)  # the --step-sep each kept prm-label row was split on
    cut_steps: int = 0  # keep-start: steps cut off


@dataclass
class PRMExamples:
    """Step-labelled rows -> `{"input_ids", "positions", "targets", "labels", "prompt_id"}`, counted; the
    `examples` of the prm-train recipe: `examples(rows, tokenizer)` (which adds `<extra_0>` to the tokenizer)."""

    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    system_explicit: bool = False  # --system or --no-system was given: warn when recorded conversations win
    labels: str = "hard"
    max_length: int = 2048
    truncation: str = "drop"
    name: str = "prm-train"
    counts: StepCounts = field(default_factory=StepCounts)

    def __post_init__(self) -> None:
        one_of("--labels", self.labels, LABELS)
        if self.max_length < 1:
            raise UserError(f"--max-length must be at least 1, got {self.max_length}")
        one_of("--truncation", self.truncation, TRUNCATIONS)

    def __call__(self, rows: Iterable, tokenizer) -> Iterator[dict]:
        add_separator(tokenizer)
        scorer = step_encoder(tokenizer)
        c = self.counts
        for row in rows:
            c.read += 1
            steps, targets, labels = row_steps(row, self.labels)
            messages, recorded = prompt_messages(row, self.fields, self.system)
            try:
                ids, positions = encode_steps(scorer, messages, steps)
            except UserError as error:
                raise row.error(error.message, hint=error.hint) from None
            fitted = fit_steps(ids, positions, self.max_length, self.truncation)
            c.too_long += len(ids) > self.max_length
            if fitted is None:
                c.no_step_left += self.truncation != "drop"
                continue
            ids, positions = fitted
            kept = len(positions)
            c.kept += 1
            c.trl += row.get("steps") is None
            labeling = row.get("prm_labeling")
            if isinstance(labeling, dict) and isinstance(labeling.get("step_sep"), str):
                c.step_seps.add(labeling["step_sep"])
            c.recorded += recorded
            c.overridden += system_not_applied(messages, recorded, self.system)
            c.steps += kept
            c.correct += sum(label == 1 for label in labels[:kept])
            c.cut_steps += len(steps) - kept
            yield {"input_ids": ids, "positions": positions, "targets": targets[:kept], "labels": labels[:kept],
                   "prompt_id": _prompt_key(row, messages)}

    def conversation(self) -> dict:
        """What the model is trained in, saved with it for prm-score (`rtool.prm.score.write_trained_settings`): the
        system prompt of rows without a recorded conversation, and the step separator prm-label split the rows on
        (None when they do not say, or say several)."""
        seps = self.counts.step_seps
        return {"system": self.system, "step_sep": next(iter(seps)) if len(seps) == 1 else None}

    @staticmethod
    def features():
        """The examples' `datasets.Features`."""
        from datasets import Features, Value

        return Features({"input_ids": [Value("int32")], "positions": [Value("int32")], "targets": [Value("float32")],
                         "labels": [Value("int8")], "prompt_id": Value("string")})

    def report(self) -> None:
        """Log what was read and kept (stderr)."""
        c, name = self.counts, self.name
        share = f" ({c.correct / c.steps:.1%} labelled correct)" if c.steps else ""
        trl = f", {c.trl} of them TRL stepwise rows" if c.trl else ""
        logger.info("%s: %d rows read: %d traces, %d steps%s%s; --labels %s", name, c.read, c.kept, c.steps, share,
                    trl, self.labels)
        if c.kept and c.recorded < c.kept:
            system = f"the system prompt {self.system!r}" if self.system else "no system prompt"
            logger.info("%s: %d rows record no conversation (%s): they get %s", name, c.kept - c.recorded, CARRIED,
                        system)
        if self.system_explicit:
            warn_recorded_wins(name, c.overridden, self.system)
        if len(c.step_seps) > 1:
            logger.warning("%s: the rows were split on different step separators (%s): prm-score needs --step-sep "
                           "for this model", name, ", ".join(sorted(map(repr, c.step_seps))))
        if c.too_long:
            limit = f"longer than --max-length {self.max_length} tokens"
            if self.truncation == "drop":
                logger.warning("%s: dropped %d rows %s, %.0f%% of the rows (--truncation drop; raise --max-length, "
                               "or --truncation keep-start to train on the steps that fit)", name, c.too_long, limit,
                               100 * c.too_long / (c.kept + c.too_long))
            else:
                logger.warning("%s: cut %d rows %s after their last whole step: %d steps not trained on%s", name,
                               c.too_long, limit, c.cut_steps,
                               f"; {c.no_step_left} rows had no whole step and were dropped" if c.no_step_left else "")

    def empty_hint(self) -> str:
        c = self.counts
        if c.too_long and c.too_long == c.read:
            return (f"every row is longer than --max-length {self.max_length} tokens; raise it"
                    + (" or pass --truncation keep-start" if self.truncation == "drop" else ""))
        return "the input has no rows"


# Training

class StepCollator:
    """Examples -> a right-padded batch: input_ids, attention_mask, step_targets (float: each separator's target,
    IGNORE elsewhere) and step_labels (long: each separator's 0/1 label, IGNORE elsewhere)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        targets = torch.full((len(examples), width), float(IGNORE), dtype=torch.float32)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        for row, e in enumerate(examples):
            input_ids[row, :len(e["input_ids"])] = torch.as_tensor(e["input_ids"], dtype=torch.long)
            attention_mask[row, :len(e["input_ids"])] = 1
            positions = torch.as_tensor(e["positions"], dtype=torch.long)
            targets[row, positions] = torch.as_tensor(e["targets"], dtype=torch.float32)
            labels[row, positions] = torch.as_tensor(e["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "step_targets": targets,
                "step_labels": labels}


class PRMTrainer(Trainer):
    """transformers' Trainer with `separator_loss`. Logs, per logging step, `accuracy` (the share of the steps
    trained on whose P(correct) > 0.5 agrees with their 0/1 label, over the step's micro-batches and processes) and
    the cumulative `num_tokens`. `evaluate` scores the held-out examples and logs eval_loss (the loss per held-out
    step), eval_accuracy and eval_auc (left out when the held-out steps have one label only)."""

    # compute_loss returns the micro-batch mean: the Trainer divides it by the accumulation steps (see RediTrainer).
    loss_is_scaled_for_ga = False
    # The conversation settings saved with every model and checkpoint (`rtool.prm.score.write_trained_settings`).
    conversation: dict | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._agree = 0
        self._steps = 0
        self._tokens = 0
        self._warned_auc = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        targets = inputs["step_targets"]
        loss, p_correct, _ = separator_loss(outputs.logits, targets)
        if model.training:
            labels = inputs["step_labels"][targets != IGNORE]
            local = torch.stack([((p_correct > 0.5) == (labels == 1)).sum().float(),
                                 torch.tensor(float(labels.numel()), device=labels.device),
                                 inputs["attention_mask"].sum().float()])
            totals = self.accelerator.gather(local.unsqueeze(0)).sum(0).cpu().tolist()
            self._agree += int(totals[0])
            self._steps += int(totals[1])
            self._tokens += int(totals[2])
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.conversation is not None:  # in the same save as the weights: a dir with them has the settings
            write_trained_settings(output_dir or self.args.output_dir, **self.conversation)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self._steps:
            logs.update(accuracy=self._agree / self._steps, num_tokens=self._tokens)
            self._agree = self._steps = 0
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        import torch.distributed as dist

        from rtool.train.processes import rank, world_size

        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        model, was_training = self.model, self.model.training
        model.eval()
        size = self.args.per_device_eval_batch_size
        mine = list(range(rank(), len(dataset), world_size()))  # each process its share, no example twice
        scores, targets, labels = [], [], []
        with torch.no_grad():
            for start in range(0, len(mine), size):
                batch = self.data_collator([dataset[i] for i in mine[start:start + size]])
                batch = {key: value.to(self.args.device) for key, value in batch.items()}
                with self.compute_loss_context_manager():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                _, p_correct, v = separator_loss(logits, batch["step_targets"])
                scores += p_correct.cpu().tolist()
                targets += v.cpu().tolist()
                labels += batch["step_labels"][batch["step_targets"] != IGNORE].cpu().tolist()
        model.train(was_training)
        if dist.is_available() and dist.is_initialized() and world_size() > 1:
            gathered = [None] * world_size()
            dist.all_gather_object(gathered, (scores, targets, labels))
            scores, targets, labels = ([x for part in gathered for x in part[k]] for k in range(3))
        metrics = eval_metrics(scores, targets, labels, prefix=metric_key_prefix)
        if f"{metric_key_prefix}_auc" not in metrics and not self._warned_auc and self.is_world_process_zero():
            logger.warning("prm-train: no %s_auc: the held-out steps all have one label", metric_key_prefix)
            self._warned_auc = True
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def eval_metrics(scores: Sequence[float], targets: Sequence[float], labels: Sequence[int],
                 prefix: str = "eval") -> dict:
    """{prefix_loss, prefix_accuracy, prefix_auc} of held-out steps: P(correct) `scores`, training `targets` and 0/1
    `labels`. The loss is `separator_loss`'s per step, averaged over the steps; auc is left out when undefined."""
    eps = 1e-12
    losses = [-((1 - v) * math.log(max(1 - p, eps)) + v * math.log(max(p, eps))) for p, v in zip(scores, targets)]
    out = {f"{prefix}_loss": sum(losses) / len(losses) if losses else float("nan"),
           f"{prefix}_accuracy": (sum((p > 0.5) == (label == 1) for p, label in zip(scores, labels)) / len(labels)
                                  if labels else float("nan"))}
    area = auc(scores, labels)
    if area is not None:
        out[f"{prefix}_auc"] = area
    return out


class _EvalAtEnd(TrainerCallback):
    """Evaluate after the last optimizer step too (besides every --eval-steps)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_evaluate = True


class _Metrics(MetricsCallback):
    """rtool's MetricsCallback, with evaluation logs written as their own metrics rows (step, epoch, eval_*) and
    their own progress line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" in logs or not any(key.startswith("eval_") for key in logs):
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch, 4) if state.epoch is not None else None,
               **{key: value for key, value in logs.items() if key.startswith("eval_")}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        auc_text = f"  auc {row['eval_auc']:.3f}" if "eval_auc" in row else ""
        logger.info("step %d/%d  held-out loss %.4g  accuracy %.3f%s", state.global_step, state.max_steps,
                    row["eval_loss"], row["eval_accuracy"], auc_text)


def curve_panels(rows: list[dict]) -> list[str]:
    """The series OUT/curves.png draws for a prm-train run's metrics rows."""
    logged = {key for row in rows for key, value in row.items() if isinstance(value, (int, float))}
    return [name for name in CURVE_PANELS if name in logged]


def split_dataset(dataset, eval_split: float, seed: int):
    """(train, held-out or None): the examples of `held_out_ids` prompts held out; logs what was held out."""
    if eval_split <= 0:
        return dataset, None
    held = held_out_ids(dataset["prompt_id"], eval_split, seed)
    train = dataset.filter(lambda e: e["prompt_id"] not in held)
    evaluation = dataset.filter(lambda e: e["prompt_id"] in held)
    labels = [label for row in evaluation["labels"] for label in row]
    prompts = len(set(dataset["prompt_id"]))
    logger.info("prm-train: held out %d of %d prompts (--eval-split %g, --seed %d): %d traces, %d steps (%.1f%% "
                "labelled correct)", len(held), prompts, eval_split, seed, len(evaluation), len(labels),
                100 * sum(labels) / max(len(labels), 1))
    return train, evaluation


def make_trainer(*, model, tokenizer, dataset, args: dict, peft_config, callbacks, eval_split: float = 0.0,
                 eval_steps: int | None = None, seed: int = 0, conversation: dict | None = None) -> PRMTrainer:
    """A PRMTrainer from the shared trainer arguments (`core.trainer_args`), with a LoRA adapter (PEFT task
    TOKEN_CLS: the head is trained and saved whole) when `peft_config` is given, and `eval_split` of the prompts
    held out and evaluated every `eval_steps` steps and at the end. `conversation` ({system, step_sep}) is saved
    with every model it writes (`PRMExamples.conversation`)."""
    from transformers import TrainingArguments

    train, evaluation = split_dataset(dataset, eval_split, seed)
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer), "the loader sizes the embeddings"
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
        if args.get("activation_checkpointing", args.get("gradient_checkpointing")):
            model.enable_input_require_grads()
    callbacks = [_Metrics(c.path) if type(c) is MetricsCallback else c for c in callbacks]
    evaluating = {}
    if evaluation is not None:
        callbacks.append(_EvalAtEnd())
        evaluating = {"per_device_eval_batch_size": args["per_device_train_batch_size"]}
        if eval_steps:
            evaluating.update(eval_strategy="steps", eval_steps=eval_steps)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    trainer = PRMTrainer(model=model, args=TrainingArguments(**args, remove_unused_columns=False, label_names=[],
                                                             **evaluating),
                         train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
                         data_collator=StepCollator(pad), callbacks=callbacks)
    trainer.conversation = conversation
    return trainer


def load_prm(spec, *, seed: int = 0, **kwargs):
    """(model, tokenizer) for prm-train, called like `rtool.io.models.load_model`: a 2-label token classifier with
    `<extra_0>` in its tokenizer (`rtool.io.models.load_token_classifier`); a fresh head is initialised from `seed`."""
    from rtool.io.models import load_token_classifier

    torch.manual_seed(seed)
    return load_token_classifier(spec, num_labels=2, new_tokens=(QWEN_SEPARATOR,), **kwargs)
