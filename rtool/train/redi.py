"""REDI, Reinforcement Distillation ("Harnessing Negative Signals", arXiv 2505.24850): learn from a teacher's correct AND incorrect
traces. The loss, the (correct, incorrect) pairs built from distill output, and the trainer.

    loss, chosen, rejected = redi_loss(chosen_logps, chosen_mask, rejected_logps, rejected_mask, alpha=0.8)
    pairs = build_pairs(rows, FieldMap(), system=None, pairs="first")      # [Pair], order of the rows irrelevant
    examples = RediPairs(FieldMap(), system=None, pairs="first", max_length=2048)
    for example in examples(rows, tokenizer): ...    # {"chosen_input_ids", "chosen_completion_mask", "rejected_..."}
    trainer = make_trainer(model=m, tokenizer=t, dataset=ds, args=trainer_args, peft_config=None, callbacks=[],
                           alpha=0.8)                # a transformers Trainer; logs chosen_logp, rejected_logp, margin
    collapse_warning(chosen_history, rejected_history)   # the warning line when the positives collapse, or None

The paper's objective, reference-free, so training holds one model in memory as SFT does:

    L(θ) = E[ −log π_θ(y_w|x) / |y_w|  +  α · log π_θ(y_l|x) / |y_l| ]

y_w a correct, y_l an incorrect completion of prompt x; |y| its completion tokens (end of turn included, as sft's
loss mask). α = 0 is SFT on the positives with per-sequence length normalisation; α = 1 is symmetric and unstable.

Pairs (rtool's rules, the paper's default): distill rows are grouped by prompt id (`rtool.grade.fields.prompt_id`);
`correct: true` rows are positives, `correct: false` negatives, `correct: null` or missing unused. Samples are
taken in `sample` order (rows without one: in the order they appear, after those with one). `first` makes one pair
per prompt, the first positive with the first negative; `all` every combination, ordered so that the first K
pairs combine the earliest samples ((1,1), (1,2), (2,1), (2,2), (1,3), ...), which `max_pairs_per_prompt` keeps.
Rows in TRL's preference format (`prompt`, `chosen`, `rejected`; text or messages; or an implicit prompt in the
chosen conversation) are one pair each. A pair trains both sides on the chosen row's conversation
(`rtool.train.data.prompt_messages`: a recorded `prompt_messages` or a conversational prompt is taken as it is;
a bare prompt gets the system prompt). Each side is tokenized and length-fitted as
sft does (`rtool.train.data`); a pair with either side too long is dropped and counted under --truncation drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
from transformers import Trainer

from rtool.errors import UserError, one_of
from rtool.grade.fields import PROMPT_FIELDS, FieldMap, prompt_id, sample_grade
from rtool.log import logger
from rtool.train.data import (CARRIED, RECORDED_PROMPT, TRUNCATIONS, fit_length, prompt_messages, tokenize_completion,
                              system_not_applied, warn_recorded_wins)

PAIRINGS = ("first", "all")
# The collapse watch: positives whose mean token log-prob fell this many nats below its first logged value
# (each token ~40% less likely) while the negatives' fell too.
COLLAPSE_DROP = 0.5


def check_alpha(alpha: float) -> float:
    if not 0 <= alpha <= 1:  # also refuses NaN
        raise UserError(f"--alpha must be in [0, 1], got {alpha}",
                        hint="the paper's recipe uses 0.8; 0 is SFT on the positives")
    return alpha


def sequence_logp(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean of the token log-probs where `mask` is set: log π(y|x) / |y|, shape [B]."""
    mask = mask.bool()
    total = torch.where(mask, logps, torch.zeros_like(logps)).sum(-1)
    return total / mask.sum(-1).clamp(min=1)


def redi_loss(chosen_logps: torch.Tensor, chosen_mask: torch.Tensor, rejected_logps: torch.Tensor,
              rejected_mask: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The REDI loss of a batch of pairs, from per-token log-probs [B, T] and completion masks [B, T]:
    (loss, chosen_logp, rejected_logp), all batch means, where chosen_logp / rejected_logp are the mean over pairs of
    each sequence's mean token log-prob. So loss == -chosen_logp + alpha * rejected_logp."""
    losses, chosen, rejected = pair_losses(chosen_logps, chosen_mask, rejected_logps, rejected_mask, alpha)
    return losses.mean(), chosen.mean(), rejected.mean()


def pair_losses(chosen_logps: torch.Tensor, chosen_mask: torch.Tensor, rejected_logps: torch.Tensor,
                rejected_mask: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`redi_loss` per pair: (loss, chosen_logp, rejected_logp), each [B]."""
    chosen = sequence_logp(chosen_logps, chosen_mask)
    rejected = sequence_logp(rejected_logps, rejected_mask)
    return -chosen + alpha * rejected, chosen, rejected


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per position, in float32: [B, T, V] x [B, T] -> [B, T]. One sequence at a time,
    so the softmax temporaries are [T, V], not the batch's."""
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        row_logits = row_logits.float()
        picked = row_logits.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows)


def collapse_warning(chosen: Sequence[float], rejected: Sequence[float], *, drop: float = COLLAPSE_DROP,
                     window: int = 3, min_points: int = 3) -> str | None:
    """The warning for logged chosen/rejected log-prob histories (one value per logging step), or None.

    Warns when the mean of the last `window` chosen values (the first excluded) is more than `drop` nats per token
    below the first chosen value while rejected has fallen below its first value too: the model pushes the
    negatives down by making everything less likely, the collapse REDI's paper reports for alpha near 1. Needs
    `min_points` values, so that one noisy step does not warn.
    """
    if len(chosen) < max(2, min_points) or len(rejected) < max(2, min_points):
        return None
    recent = slice(max(1, len(chosen) - window), None)
    chosen_now = sum(chosen[recent]) / len(chosen[recent])
    recent = slice(max(1, len(rejected) - window), None)
    rejected_now = sum(rejected[recent]) / len(rejected[recent])
    if chosen_now < chosen[0] - drop and rejected_now < rejected[0]:
        return (f"chosen_logp fell from {chosen[0]:.3f} to {chosen_now:.3f} per token while rejected_logp fell from "
                f"{rejected[0]:.3f} to {rejected_now:.3f}: the positives collapse with the negatives (REDI's "
                "instability near alpha 1); lower --alpha (the paper uses 0.8) or --lr")
    return None


def collapse_marks(rows: Iterable[dict]) -> list:
    """For OUT/curves.png: a `rtool.train.curves.Mark` on the chosen_logp panel at the first logged step where
    `collapse_warning` fires over metrics `rows`, or none."""
    from rtool.train.curves import Mark

    chosen, rejected = [], []
    for row in rows:
        if isinstance(row.get("chosen_logp"), (int, float)) and isinstance(row.get("rejected_logp"), (int, float)):
            chosen.append(row["chosen_logp"])
            rejected.append(row["rejected_logp"])
            if collapse_warning(chosen, rejected):
                return [Mark(row["step"], "positives collapse", metric="chosen_logp")]
    return []


@dataclass
class Pair:
    """A prompt's conversation, a correct and an incorrect completion of it."""

    prompt_id: str
    messages: list[dict]
    chosen: str
    rejected: str
    recorded: bool = False  # the conversation is the chosen row's own (prompt_messages, a conversational prompt)


@dataclass
class PairCounts:
    rows: int = 0  # rows read
    prompts: int = 0  # distinct prompt ids among graded and ungraded rows (not preference rows)
    ungraded: int = 0  # rows with correct null or missing: unused
    no_negative: int = 0  # prompts with a correct sample but no incorrect one
    no_positive: int = 0  # prompts with an incorrect sample but no correct one
    no_graded: int = 0  # prompts whose rows are all ungraded
    graded_pairs: int = 0  # pairs built from graded rows
    preference: int = 0  # pairs from TRL preference rows
    prompt_differs: int = 0  # pairs whose two rows hold different conversations (trained on the chosen row's)
    too_long: int = 0  # pairs with a side longer than max_length (dropped, or cut under keep-start)
    no_completion: int = 0  # keep-start: a side with no completion token left, dropped
    kept: int = 0  # pairs trained on
    recorded: int = 0  # kept pairs trained on the conversation their row carries, as it is
    overridden: int = 0  # of those, pairs whose own system turn is not what --system/--no-system asked

    @property
    def pairs(self) -> int:
        return self.graded_pairs + self.preference


@dataclass
class _Sample:
    order: tuple
    messages: list[dict]
    recorded: bool
    text: str


@dataclass
class _Group:
    positives: list = field(default_factory=list)
    negatives: list = field(default_factory=list)


def check_pairing(pairs: str, max_pairs_per_prompt: int | None) -> None:
    one_of("--pairs", pairs, PAIRINGS)
    if max_pairs_per_prompt is not None:
        if max_pairs_per_prompt < 1:
            raise UserError(f"--max-pairs-per-prompt must be at least 1, got {max_pairs_per_prompt}")
        if pairs == "first":
            raise UserError("--max-pairs-per-prompt needs --pairs all", hint="--pairs first makes one pair per prompt")


def build_pairs(rows: Iterable, fields: FieldMap, system: str | None, *, pairs: str = "first",
                max_pairs_per_prompt: int | None = None, counts: PairCounts | None = None) -> list[Pair]:
    """The training pairs of `rows` (see the module docstring for the rules), in an order that does not depend on
    the rows' order: graded pairs by prompt id, then preference pairs by (id, chosen, rejected). A bad row raises
    UserError naming its file, line and field."""
    check_pairing(pairs, max_pairs_per_prompt)
    counts = counts if counts is not None else PairCounts()
    keep = 1 if pairs == "first" else max_pairs_per_prompt  # samples per side worth keeping (None: all)
    groups: dict[str, _Group] = {}
    preference: list[tuple] = []
    for seq, row in enumerate(rows):
        counts.rows += 1
        if _is_preference(row):
            pair = _preference_pair(row, fields, system)
            preference.append(((pair.prompt_id, pair.chosen, pair.rejected), pair))
            continue
        correct = sample_grade(row)
        group = groups.setdefault(prompt_id(row, fields), _Group())
        if correct is None:
            counts.ungraded += 1
            continue
        messages, recorded = prompt_messages(row, fields, system)
        sample = _Sample((_sample_index(row), seq), messages, recorded, _completion(row, fields))
        side = group.positives if correct else group.negatives
        side.append(sample)
        if keep is not None and len(side) > 2 * keep:  # bounded memory: only the earliest `keep` can be paired
            side.sort(key=lambda s: s.order)
            del side[keep:]

    built: list[Pair] = []
    counts.prompts = len(groups)
    for pid in sorted(groups):
        group = groups[pid]
        positives = sorted(group.positives, key=lambda s: s.order)[:keep]
        negatives = sorted(group.negatives, key=lambda s: s.order)[:keep]
        if not positives or not negatives:
            if positives:
                counts.no_negative += 1
            elif negatives:
                counts.no_positive += 1
            else:
                counts.no_graded += 1
            continue
        combos = sorted(((i, j) for i in range(len(positives)) for j in range(len(negatives))),
                        key=lambda ij: (max(ij), ij))
        for i, j in combos[:keep]:
            chosen, rejected = positives[i], negatives[j]
            counts.prompt_differs += chosen.messages != rejected.messages
            built.append(Pair(pid, chosen.messages, chosen.text, rejected.text, chosen.recorded))
    counts.graded_pairs = len(built)
    counts.preference = len(preference)
    built.extend(pair for _, pair in sorted(preference, key=lambda item: item[0]))
    return built


def _sample_index(row) -> float:
    value = row.get("sample")
    if value is None:
        return math.inf  # no index: after the indexed samples, in the order of appearance
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not value.is_integer()):
        raise row.error(f"field 'sample' must be an integer, got {type(value).__name__} {value!r}", field="sample")
    return int(value)


def _completion(row, fields: FieldMap) -> str:
    text = fields.completion(row)
    if not text.strip():
        raise row.error("empty completion", field="completion", hint="drop the row or fill it in")
    return text


def _is_preference(row) -> bool:
    return row.get("chosen") is not None or row.get("rejected") is not None


def _preference_pair(row, fields: FieldMap, system: str | None) -> Pair:
    """A TRL preference row: `prompt` (text or messages) with `chosen` and `rejected` (text or assistant messages),
    or no prompt and full conversations in `chosen` / `rejected` (TRL's implicit prompt: the chosen one's)."""
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise row.error(f"a preference row needs both 'chosen' and 'rejected', missing {key!r}", field=key)
    explicit = fields.prompt_field or row.get(RECORDED_PROMPT) is not None or any(
        row.get(key) is not None for key in PROMPT_FIELDS)
    if explicit:
        messages, recorded = prompt_messages(row, fields, system)
    else:
        messages, recorded = _implicit_prompt(row), True  # a conversation: taken as it is
    pid = str(row["id"]) if row.get("id") not in (None, "") else ""
    return Pair(pid, messages, _side(row, "chosen"), _side(row, "rejected"), recorded)


def _side(row, key: str) -> str:
    value = row[key]
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        assistant = [m for m in _messages(row, key) if m["role"] == "assistant"]
        if not assistant:
            raise row.error(f"field {key!r} has no assistant message", field=key)
        text = assistant[-1]["content"]
    else:
        raise row.error(f"field {key!r} must be a string or a list of messages, got {type(value).__name__}",
                        field=key)
    if not text.strip():
        raise row.error("empty completion", field=key, hint="drop the row or fill it in")
    return text


def _implicit_prompt(row) -> list[dict]:
    value = row["chosen"]
    if not isinstance(value, list):
        raise row.error("no prompt field", field="prompt", hint="a preference row with text 'chosen' needs 'prompt'")
    messages = _messages(row, "chosen")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=0)
    prompt = messages[:last]
    if not prompt or prompt[-1]["role"] != "user":
        raise row.error("field 'chosen' has no user turn before its answer, and the row no prompt", field="chosen")
    return prompt


def _messages(row, key: str) -> list[dict]:
    value = row[key]
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise row.error(f"{key}[{index}] is not a message {{role, content}}", field=key)
    return [{"role": m["role"], "content": m["content"]} for m in value]


@dataclass
class RediPairs:
    """Rows -> tokenized pairs `{"chosen_input_ids", "chosen_completion_mask", "rejected_input_ids",
    "rejected_completion_mask"}`, counted; the `examples` of the redi training recipe: `examples(rows, tokenizer)`.
    The rows are read whole before the first pair is yielded (a prompt's samples may be anywhere in the file)."""

    fields: FieldMap = field(default_factory=FieldMap)
    system: str | None = None
    system_explicit: bool = False  # --system or --no-system was given: warn when recorded conversations win
    pairs: str = "first"
    max_pairs_per_prompt: int | None = None
    max_length: int = 2048
    truncation: str = "drop"
    name: str = "redi"
    counts: PairCounts = field(default_factory=PairCounts)

    def __post_init__(self) -> None:
        check_pairing(self.pairs, self.max_pairs_per_prompt)
        if self.max_length < 1:
            raise UserError(f"--max-length must be at least 1, got {self.max_length}")
        one_of("--truncation", self.truncation, TRUNCATIONS)

    def __call__(self, rows: Iterable, tokenizer) -> Iterator[dict]:
        counts = self.counts
        for pair in build_pairs(rows, self.fields, self.system, pairs=self.pairs,
                                max_pairs_per_prompt=self.max_pairs_per_prompt, counts=counts):
            sides, long = [], False
            for text in (pair.chosen, pair.rejected):
                ids, mask = tokenize_completion(tokenizer, pair.messages, text)
                long |= len(ids) > self.max_length
                sides.append(fit_length(ids, mask, self.max_length, self.truncation))
            counts.too_long += long
            if None in sides:
                counts.no_completion += self.truncation != "drop"
                continue
            counts.kept += 1
            counts.recorded += pair.recorded
            counts.overridden += system_not_applied(pair.messages, pair.recorded, self.system)
            (chosen_ids, chosen_mask), (rejected_ids, rejected_mask) = sides
            yield {"chosen_input_ids": chosen_ids, "chosen_completion_mask": chosen_mask,
                   "rejected_input_ids": rejected_ids, "rejected_completion_mask": rejected_mask}

    @staticmethod
    def features():
        """The examples' `datasets.Features`."""
        from datasets import Features, Value

        return Features({"chosen_input_ids": [Value("int32")], "chosen_completion_mask": [Value("int8")],
                         "rejected_input_ids": [Value("int32")], "rejected_completion_mask": [Value("int8")]})

    def report(self) -> None:
        """Log what was read, paired, skipped and kept (stderr)."""
        c, name = self.counts, self.name
        how = f"--pairs {self.pairs}" + (f", at most {self.max_pairs_per_prompt} per prompt"
                                         if self.max_pairs_per_prompt else "")
        logger.info("%s: %d rows read, %d prompts: %d pairs built (%s)%s", name, c.rows, c.prompts, c.graded_pairs,
                    how, f", plus {c.preference} from preference rows (prompt, chosen, rejected)" if c.preference
                    else "")
        skipped = [f"{n} {what}" for n, what in ((c.no_negative, "with no incorrect sample"),
                                                 (c.no_positive, "with no correct sample"),
                                                 (c.no_graded, "with no graded sample")) if n]
        if skipped:
            logger.info("%s: skipped prompts: %s", name, ", ".join(skipped))
        if c.ungraded:
            logger.info("%s: %d rows with correct null or missing unused", name, c.ungraded)
        if c.prompt_differs:
            logger.warning("%s: %d pairs join rows that hold different conversations for the same prompt id: both "
                           "sides train on the correct row's", name, c.prompt_differs)
        if c.too_long:
            limit = f"with a side longer than --max-length {self.max_length} tokens"
            if self.truncation == "drop":
                logger.warning("%s: dropped %d pairs %s, %.0f%% of the pairs (--truncation drop; raise --max-length "
                               "to train on them)", name, c.too_long, limit, 100 * c.too_long / (c.kept + c.too_long))
            else:
                logger.warning("%s: cut %d pairs %s to their first %d tokens%s", name, c.too_long, limit,
                               self.max_length, f"; {c.no_completion} had a side with no completion token left and "
                               "were dropped" if c.no_completion else "")
        if c.kept:
            system = f"the system prompt {self.system!r}" if self.system else "no system prompt"
            if c.recorded == c.kept:
                how = f"every pair trains on the conversation its correct row records ({CARRIED}), as it is"
            elif c.recorded:
                how = (f"{c.recorded} pairs train on the conversation their correct row records ({CARRIED}), "
                       f"{c.kept - c.recorded} bare prompts get {system}")
            else:
                how = f"no row records its conversation ({CARRIED}): all get {system}"
            logger.info("%s: training on %d pairs; %s", name, c.kept, how)
            if self.system_explicit:
                warn_recorded_wins(name, c.overridden, self.system, "pairs")

    def empty_hint(self) -> str:
        """Why no pair was kept."""
        c = self.counts
        if c.rows == 0:
            return "the input has no rows"
        if c.pairs and c.too_long:
            return (f"every pair has a side longer than --max-length {self.max_length} tokens; raise it"
                    + (" or pass --truncation keep-start" if self.truncation == "drop" else ""))
        if c.no_negative and not c.no_positive:
            return f"no pairs: {c.no_negative} prompts have correct samples but none has an incorrect one"
        if c.no_positive and not c.no_negative:
            return f"no pairs: {c.no_positive} prompts have incorrect samples but none has a correct one"
        if c.no_positive and c.no_negative:
            return (f"no pairs: {c.no_negative} prompts have only correct samples and {c.no_positive} only incorrect "
                    "ones; no prompt has both")
        return ("no pairs: no row is graded (correct: true/false); grade samples with rtool distill and a gold answer, "
                "or give preference rows (prompt, chosen, rejected)")


class PairCollator:
    """A batch of pairs -> one right-padded batch of 2B sequences, the B chosen first, then the B rejected:
    input_ids, attention_mask and completion_mask (1 on the completion tokens a side is scored on)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        sides = [(e["chosen_input_ids"], e["chosen_completion_mask"]) for e in examples]
        sides += [(e["rejected_input_ids"], e["rejected_completion_mask"]) for e in examples]
        length = max(len(ids) for ids, _ in sides)
        input_ids = torch.full((len(sides), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sides), length), dtype=torch.long)
        completion_mask = torch.zeros((len(sides), length), dtype=torch.long)
        for index, (ids, mask) in enumerate(sides):
            input_ids[index, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[index, :len(ids)] = 1
            completion_mask[index, :len(ids)] = torch.as_tensor(mask, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


class RediTrainer(Trainer):
    """transformers' Trainer with the REDI loss: one forward pass over a batch's chosen and rejected sequences, no
    reference model. An optimizer step's loss is the mean over its pairs, all micro-batches and processes together
    (a short last micro-batch weighs each of its pairs as much as a full one's). Logs, per logging step,
    `chosen_logp`, `rejected_logp` and `margin` (their difference) next to the Trainer's `loss`, averaged as the
    Trainer averages the loss (so loss == -chosen_logp + alpha * rejected_logp), and the cumulative `num_tokens` of
    every process (MetricsCallback turns it into tokens/s). Warns once when `collapse_warning` fires."""

    # compute_loss returns its micro-batch's share of the step's per-pair mean (num_items_in_batch: the step's pairs,
    # `get_batch_samples`), so the Trainer must not divide it by the accumulation steps again (transformers >= 5.2x
    # reads this attribute; earlier ones decide from model_accepts_loss_kwargs, set True below).
    loss_is_scaled_for_ga = True

    def __init__(self, *args, alpha: float = 0.8, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = check_alpha(alpha)
        self.model_accepts_loss_kwargs = True
        self._sums = torch.zeros(3, dtype=torch.float64)  # loss, chosen_logp, rejected_logp: per-pair step means
        self._weight = 0.0  # optimizer steps those sums cover
        self._tokens = 0
        self._warned = False

    def get_batch_samples(self, epoch_iterator, num_batches, *args, **kwargs):
        """The micro-batches of an optimizer step, and as num_items_in_batch their number of pairs, all processes."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, *args, **kwargs)
        pairs = torch.tensor([float(sum(len(batch["input_ids"]) // 2 for batch in batches))], device=self.args.device)
        if self.accelerator.num_processes > 1:
            pairs = self.accelerator.gather(pairs)
        return batches, pairs.sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        # Position t predicts token t + 1: the completion mask of the predicted tokens scores them.
        logps = token_logps(outputs.logits[:, :-1], input_ids[:, 1:])
        mask = inputs["completion_mask"][:, 1:]
        half = input_ids.shape[0] // 2
        losses, chosen, rejected = pair_losses(logps[:half], mask[:half], logps[half:], mask[half:], self.alpha)
        if num_items_in_batch is None:  # evaluation: this batch's mean
            loss = losses.mean()
        else:  # this micro-batch's share of the step's per-pair mean; DDP averages the processes' gradients
            loss = losses.sum() * self.accelerator.num_processes / num_items_in_batch
        if model.training and num_items_in_batch is not None:
            self._record(losses, chosen, rejected, attention_mask, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _record(self, losses, chosen, rejected, attention_mask, step_pairs) -> None:
        local = torch.stack([losses.detach().float().sum(), chosen.detach().float().sum(),
                             rejected.detach().float().sum(), torch.tensor(float(len(losses)), device=losses.device),
                             attention_mask.sum().float()])
        gathered = self.accelerator.gather(local.unsqueeze(0)).double().cpu().sum(0)  # over processes
        step_pairs = float(step_pairs)
        self._sums += gathered[:3] / step_pairs  # this micro-batch's share of the step's per-pair means
        self._weight += gathered[3].item() / step_pairs  # the step's micro-batches add up to 1
        self._tokens += int(gathered[4].item())

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self._weight > 0:
            _, chosen, rejected = (self._sums / self._weight).tolist()
            logs.update(chosen_logp=chosen, rejected_logp=rejected, margin=chosen - rejected,
                        num_tokens=self._tokens)
            self._sums.zero_()
            self._weight = 0.0
        super().log(logs, start_time)
        if not self._warned and self.is_world_process_zero():
            history = [entry for entry in self.state.log_history if "chosen_logp" in entry]  # resumed runs too
            message = collapse_warning([e["chosen_logp"] for e in history], [e["rejected_logp"] for e in history])
            if message:
                logger.warning("redi: step %d: %s", self.state.global_step, message)
                self._warned = True


def make_trainer(*, model, tokenizer, dataset, args: dict, peft_config, callbacks, alpha: float) -> RediTrainer:
    """A RediTrainer from the shared trainer arguments (`core.trainer_args`); a LoRA adapter is added when
    `peft_config` is given."""
    from transformers import TrainingArguments

    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
        # The Trainer does not make the inputs require grad for a PEFT model under checkpointing (as TRL notes).
        if args.get("activation_checkpointing", args.get("gradient_checkpointing")):
            model.enable_input_require_grads()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return RediTrainer(model=model, args=TrainingArguments(**args, remove_unused_columns=False), alpha=alpha,
                       train_dataset=dataset, processing_class=tokenizer, data_collator=PairCollator(pad),
                       callbacks=callbacks)
