"""Process reward models (PRMs): a score for every step of a completion, all from one forward pass.

    scorer = PRMScorer.load("Qwen/Qwen2.5-Math-PRM-7B", trust_remote_code=True)    # format="auto"
    step_scores = scorer.score([messages, "What is 1 + 1?"], [completion_a, completion_b])   # [[0.98, 0.41], [0.9]]
    final_score(step_scores[0], agg="min")                                          # 0.41
    scorer.rewards(prompts, completions, agg="min")                                 # one float each (a GRPO reward)

A prompt is the conversation the completion answered (a list of {role, content} messages ending with the user's
turn) or the question as a string. A completion is scored as given (a `<think>` block included: every paragraph of
it is a step; cut it off first to score only the answer). Its steps are its text split on `step_sep` (a blank
line by default, as Qwen's PRM card recommends), stripped of surrounding whitespace, empty ones dropped; a
completion without steps gets `[]` and no forward pass.

Conventions (`FORMATS`), as the public models' cards use them:

- qwen-prm (Qwen2.5-Math-PRM-7B/72B, Qwen2.5-Math-7B-PRM800K): the assistant turn is the steps, each followed by the
  separator token `<extra_0>`, in the chat template; a step's score is softmax over the 2 logits at its separator,
  index 1 (P(correct)). Loaded as a token-classification model with 2 labels; Qwen's checkpoints ship their own
  `Qwen2ForProcessRewardModel` (an MLP head: no built-in class loads it), which runs only with trust_remote_code.
- math-shepherd (peiyi9979/math-shepherd-mistral-7b-prm; UKPLab/Llama-3-8b-spare-prm-math reads the same way, its
  card puts an instruction before the question): a causal LM; no chat template: "question step1 ки\\nstep2 ки" (the
  question, a space, each step followed by " ки", steps joined by a newline), with the tokenizer's bos; a step's
  score is softmax over the logits of the '+' and '-' tokens (each encoded alone, last token) AT its tag position
  (the model predicts the label as the tag's next token), index 0 (P('+')).
- orm (sequence classification: TRL RewardTrainer models, Skywork-Reward): the chat template of the conversation and
  the whole completion, read at the last token; 1 label: sigmoid(logit) (monotone in the logit, so rankings are the
  Bradley-Terry model's, and on the same 0..1 scale as step scores), 2 labels: softmax index 1. One score per
  completion: its step scores are `[score]`.

Not served (their own code or layouts): Skywork-o1-Open-PRM (a value head from Skywork's package, "\\n" steps),
RLHFlow's Llama3.1-8B-PRM (one chat turn per step, '+' answered), Qwen2.5-Math-RM-72B (a remote-code ORM class),
TRL PRMTrainer models (2-label token classification without <extra_0>: refused as qwen-prm).

One forward pass scores every step of a completion: the logits at every separator/tag position come out of the
same pass (causal attention: the logits at step k see exactly the prefix up to step k). Batches are formed by
length and right-padded with an attention mask; real tokens keep their positions and never attend to padding, so
padding and batch composition do not change a score (beyond float rounding).

Fin-PRM (Zhou et al. 2025, arXiv:2508.15202) ranks a trajectory by combining step- and trajectory-level rewards;
its weighting is not public, so `final_score` takes the weight: score = lam * agg(step_scores) + (1 - lam) * trajectory,
where the trajectory score is an ORM's, or the last step's score when there is none.
"""

from __future__ import annotations

import bisect
import inspect
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from rtool.errors import UserError, one_of
from rtool.log import logger

FORMATS = ("auto", "qwen-prm", "math-shepherd", "orm")
AGGREGATIONS = ("min", "prod", "last", "mean")
DEFAULT_STEP_SEP = "\n\n"
QWEN_SEPARATOR = "<extra_0>"
SHEPHERD_TAG, SHEPHERD_GOOD, SHEPHERD_BAD = "ки", "+", "-"

# Which model classes each convention loads (the config's `architectures` names end with one of these).
_ARCH_SUFFIXES = {
    "qwen-prm": ("ForTokenClassification", "ForProcessRewardModel"),
    "math-shepherd": ("ForCausalLM", "LMHeadModel"),
    "orm": ("ForSequenceClassification",),
}


def split_steps(text: str, sep: str = DEFAULT_STEP_SEP) -> list[str]:
    """The completion's steps: `text` split on `sep`, each stripped, empty ones dropped."""
    if not sep:
        raise UserError("the step separator must not be empty", hint="e.g. --step-sep '\\n\\n'")
    return [step.strip() for step in text.split(sep) if step.strip()]


def aggregate(step_scores: Sequence[float], agg: str = "min") -> float:
    """One score from a completion's step scores: min (the weakest step; Qwen's choice), prod (every step correct,
    if independent: Lightman et al. 2023, "Let's Verify Step by Step", rank by the product), last (the final
    step's), mean. prod is exp(log_aggregate): below ~1e-308 (0.5 per step over ~1,100 steps) it is 0.0, so rank
    long traces by `log_aggregate`."""
    if agg == "prod":
        return math.exp(log_aggregate(step_scores, agg))
    one_of("--agg", agg, AGGREGATIONS)
    if not step_scores:
        raise ValueError("no step scores to aggregate")
    if agg == "min":
        return float(min(step_scores))
    if agg == "last":
        return float(step_scores[-1])
    return float(sum(step_scores) / len(step_scores))


def log_aggregate(step_scores: Sequence[float], agg: str = "min") -> float:
    """The natural log of `aggregate` (-inf for 0), computed in log space for prod (a sum of logs, which never
    underflows): what ranks traces whose products are all 0.0 in floats."""
    one_of("--agg", agg, AGGREGATIONS)
    if not step_scores:
        raise ValueError("no step scores to aggregate")
    if agg == "prod":
        if any(score <= 0.0 for score in step_scores):
            return -math.inf
        return math.fsum(math.log(score) for score in step_scores)
    value = aggregate(step_scores, agg)
    return math.log(value) if value > 0.0 else -math.inf


def check_lam(lam: float) -> float:
    if not 0.0 <= lam <= 1.0:  # also refuses NaN
        raise UserError(f"--lam must be in [0, 1], got {lam}",
                        hint="1: step aggregate only; 0: trajectory score only")
    return lam


def final_score(step_scores: Sequence[float], agg: str = "min", lam: float = 1.0,
                trajectory: float | None = None) -> float:
    """lam * agg(step_scores) + (1 - lam) * trajectory (Fin-PRM's combination; its weight is not public).
    `trajectory` is an ORM's score; None takes the last step's score."""
    check_lam(lam)
    step_agg = aggregate(step_scores, agg)
    if lam == 1.0:
        return step_agg
    traj = float(step_scores[-1]) if trajectory is None else float(trajectory)
    return lam * step_agg + (1.0 - lam) * traj


@dataclass
class Encoded:
    """One (prompt, completion) as the PRM reads it: token ids and the positions whose logits score each step
    (orm: the last token). `steps` is 0 for a completion without steps (no ids, nothing to run)."""

    ids: list[int]
    positions: list[int]
    steps: int


def detect_format(architectures: Sequence[str] | None, tokenizer, name: str = "the model") -> str:
    """The convention a model follows, from its config's architectures and its tokenizer; UserError when it fits
    none or it cannot tell."""
    arch = (list(architectures or []) or [None])[0]
    if arch is None:
        raise UserError(f"cannot tell the PRM convention of {name}: its config names no architecture",
                        hint="pass --format qwen-prm|math-shepherd|orm")
    for fmt in ("qwen-prm", "orm"):
        if arch.endswith(_ARCH_SUFFIXES[fmt]):
            return fmt
    if arch.endswith(_ARCH_SUFFIXES["math-shepherd"]):
        problem = _shepherd_token_problem(tokenizer)
        if problem is None:
            return "math-shepherd"
        raise UserError(f"{name} ({arch}) fits no PRM convention: a causal LM, but {problem}, so no Math-Shepherd "
                        "PRM", hint=f"a chat model is no reward model; {_EXPECTED}")
    raise UserError(f"{name} ({arch}) fits no PRM convention", hint=_EXPECTED)


_EXPECTED = ("pass a token-classification PRM (qwen-prm), a Math-Shepherd causal LM (math-shepherd) or a "
             "sequence-classification reward model (orm)")


def _shepherd_token_problem(tokenizer) -> str | None:
    """Why a tokenizer cannot carry the Math-Shepherd convention, or None when it can."""
    try:
        _shepherd_label_ids(tokenizer)
    except UserError as error:
        return error.message
    tag = tokenizer(f" {SHEPHERD_TAG}", add_special_tokens=False)["input_ids"]
    if not tag or tokenizer.decode(tag[-1:]).strip() != SHEPHERD_TAG:
        return f"its tokenizer has no single '{SHEPHERD_TAG}' step-tag token"
    return None


def _shepherd_label_ids(tokenizer) -> tuple[int, int]:
    # As the card: the last token of '+' and of '-' each encoded alone ('▁+' with a SentencePiece tokenizer).
    ids = []
    for token in (SHEPHERD_GOOD, SHEPHERD_BAD):
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        if not encoded or encoded[-1] == tokenizer.unk_token_id or tokenizer.decode(encoded[-1:]).strip() != token:
            raise UserError(f"its tokenizer has no '{token}' token")
        ids.append(encoded[-1])
    return ids[0], ids[1]


@dataclass
class PRMScorer:
    """A loaded reward model and the convention it is read with. Build it with `PRMScorer.load`."""

    model: object
    tokenizer: object
    format: str
    name: str
    step_sep: str = DEFAULT_STEP_SEP
    batch_size: int = 8
    max_length: int | None = None  # the model's max_position_embeddings, when its config has one
    too_long: int = 0  # sequences encoded longer than max_length
    _label_ids: tuple[int, int] | None = None  # math-shepherd: ('+', '-')
    _separator_id: int | None = None  # qwen-prm: <extra_0>
    _keep_logits: bool = False  # math-shepherd: the model takes logits_to_keep (no full-vocab logits for every token)
    _head_logits: list = field(default_factory=list)  # orm: per-token logits of the last forward (a hook fills it)

    @classmethod
    def load(cls, spec, *, format: str = "auto", step_sep: str = DEFAULT_STEP_SEP, batch_size: int = 8,
             dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
             allow_pickle: bool = False, chat_template: str | None = None) -> "PRMScorer":
        """Load `spec` (a local HF dir or hub id with *.safetensors) and decide its convention (`format="auto"`:
        from its config and tokenizer). Raises UserError for models that fit no convention. `chat_template` (a
        template's text) replaces the tokenizer's."""
        from rtool.io.models import load_tokenizer, localize, resolve_device, resolve_dtype, resolve_source

        one_of("--format", format, FORMATS)
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        split_steps("", step_sep)  # refuses an empty separator before anything loads
        name = str(spec)
        src = localize(resolve_source(spec, allow_pickle=allow_pickle), allow_pickle=allow_pickle)
        if src.kind in ("gguf", "peft"):
            raise UserError(f"a reward model must be an HF model dir or hub id, not a {src.kind} file", path=name,
                            hint="merge an adapter first (rtool's training commands write OUT/merged with "
                                 "--merge-lora)")
        config = _config_dict(src.path, name)
        tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                   padding_side="right", source=src, chat_template=chat_template)
        architectures = config.get("architectures") or []
        arch = architectures[0] if architectures else None
        fmt = detect_format(architectures, tokenizer, name) if format == "auto" else format
        if format != "auto" and arch is not None and not arch.endswith(_ARCH_SUFFIXES[fmt]):
            raise UserError(f"--format {fmt} reads a {' or '.join('*' + s for s in _ARCH_SUFFIXES[fmt])} model, "
                            f"but {name} is a {arch}", hint="its head would be random; pass the right --format")
        scorer = cls(model=None, tokenizer=tokenizer, format=fmt, name=name, step_sep=step_sep,
                     batch_size=batch_size, max_length=config.get("max_position_embeddings"))
        scorer._check_tokenizer()
        device = resolve_device(device)
        scorer.model = _load_weights(src, fmt, arch, resolve_dtype(dtype, device), device, trust_remote_code,
                                     allow_pickle, name)
        scorer._prepare_model()
        logger.info("reward model %s (%s) read as %s", name, arch or "no architecture named", fmt)
        return scorer

    def _check_tokenizer(self) -> None:
        tok = self.tokenizer
        if self.format == "qwen-prm":
            ids = tok(QWEN_SEPARATOR, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] == tok.unk_token_id:
                raise UserError(f"the tokenizer of {self.name} has no '{QWEN_SEPARATOR}' token, which qwen-prm "
                                "puts after each step", hint="not a Qwen2.5-Math-PRM-style model; check --format")
            self._separator_id = ids[0]
        elif self.format == "math-shepherd":
            problem = _shepherd_token_problem(tok)
            if problem is not None:
                raise UserError(f"math-shepherd: {problem} ({self.name})", hint="not a Math-Shepherd PRM")
            self._label_ids = _shepherd_label_ids(tok)
        if self.format in ("qwen-prm", "orm") and not getattr(tok, "chat_template", None):
            raise UserError(f"the tokenizer of {self.name} has no chat template; {self.format} renders the "
                            "conversation with it", hint="a PRM saved without its tokenizer files?")

    def _prepare_model(self) -> None:
        model = self.model
        labels = getattr(model.config, "num_labels", None)
        if self.format == "qwen-prm" and labels != 2:
            raise UserError(f"qwen-prm needs 2 labels per token (incorrect, correct); {self.name} has {labels}")
        if self.format == "orm":
            if labels not in (1, 2):
                raise UserError(f"orm needs 1 label (a reward) or 2 (incorrect, correct); {self.name} has {labels}")
            head = getattr(model, "score", None)
            if head is None or not hasattr(head, "register_forward_hook"):
                raise UserError(f"orm reads the per-token output of a decoder's `score` head; {self.name} "
                                f"({type(model).__name__}) has none")
            # The model pools the logits at its last non-pad token, found by comparing ids with pad_token_id: a
            # completion that ends with the pad token (pad == eos) would be pooled elsewhere. Take the head's
            # per-token logits and read each row's own last token instead.
            head.register_forward_hook(lambda module, args, output: self._head_logits.append(output))
        if self.format == "math-shepherd":
            self._keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    # Building the inputs

    def encode(self, prompt, completion: str) -> Encoded:
        """Token ids and score positions of one (prompt, completion); UserError (no file or line: the caller
        knows the row) when the convention cannot place its separators."""
        steps = split_steps(completion, self.step_sep)
        if not steps:
            return Encoded([], [], 0)
        messages = _messages(prompt)
        if self.format == "qwen-prm":
            ids, positions = self._encode_qwen(messages, steps)
        elif self.format == "math-shepherd":
            ids, positions = self._encode_shepherd(messages, steps)
        else:
            ids = self._chat_ids(messages, completion)
            positions = [len(ids) - 1]
        if self.max_length and len(ids) > self.max_length:
            # Scored anyway (rotary positions extend; one long trace should not stop a pipeline), but counted.
            if not self.too_long:
                logger.warning("%s: a sequence of %d tokens, longer than the %d positions the model was trained for "
                               "(max_position_embeddings): scored anyway, the scores may mean less", self.name,
                               len(ids), self.max_length)
            self.too_long += 1
        return Encoded(ids, positions, len(steps))

    def _chat_ids(self, messages: list[dict], content: str) -> list[int]:
        text, _ = self._render(messages, content)
        # The template writes any bos token itself.
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def _render(self, messages: list[dict], content: str) -> tuple[str, int]:
        """The conversation's text and where the assistant's content ends in it: the generation prompt, the content
        as written, the end of turn (`rtool.generate.core.render_turn`, as prm-train and sft tokenize: a template that
        drops a <think> block from assistant turns does not drop it here)."""
        from rtool.generate.core import render_turn

        prompt, body, end = render_turn(self.tokenizer, messages, content)
        return prompt + body + end, len(prompt) + len(body)

    def _encode_qwen(self, messages: list[dict], steps: list[str]) -> tuple[list[int], list[int]]:
        content = "".join(step + QWEN_SEPARATOR for step in steps)
        text, content_end = self._render(messages, content)
        # Counted from the content's end: only an opening <think> the generation prompt already wrote is cut off
        # its start.
        ends, at = [], content_end - len(content)
        for step in steps:
            at += len(step) + len(QWEN_SEPARATOR)
            ends.append(at)
        return self._tokenize_at(text, ends, False, lambda token: token == self._separator_id, QWEN_SEPARATOR)

    def _encode_shepherd(self, messages: list[dict], steps: list[str]) -> tuple[list[int], list[int]]:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text, ends = question, []
        for index, step in enumerate(steps):
            text += (" " if index == 0 else "\n") + f"{step} {SHEPHERD_TAG}"
            ends.append(len(text))
        return self._tokenize_at(text, ends, True, self._is_tag, SHEPHERD_TAG)

    def _is_tag(self, token: int) -> bool:
        return self.tokenizer.decode([token]).strip() == SHEPHERD_TAG

    def _tokenize_at(self, text: str, ends: list[int], special: bool, is_marker, marker: str):
        """Tokenize `text`; the score positions are the tokens that hold the character before each of `ends` (the
        last character of each inserted separator), checked to be the separator token."""
        tok = self.tokenizer
        try:
            encoding = tok(text, add_special_tokens=special, return_offsets_mapping=True, verbose=False)
        except NotImplementedError:  # a tokenizer without offsets: the last len(ends) marker tokens
            ids = tok(text, add_special_tokens=special, verbose=False)["input_ids"]
            found = [i for i, token in enumerate(ids) if is_marker(token)]
            if len(found) < len(ends):
                raise UserError(f"the '{marker}' separators do not survive tokenization") from None
            return ids, found[-len(ends):]
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        spans = [(s, e, i) for i, (s, e) in enumerate(offsets) if e > s]  # special tokens added: empty spans
        starts = [s for s, _, _ in spans]
        positions = []
        for end in ends:
            k = bisect.bisect_right(starts, end - 1) - 1
            if k < 0 or not spans[k][0] <= end - 1 < spans[k][1] or not is_marker(ids[spans[k][2]]):
                raise UserError(f"the tokenizer merges a '{marker}' separator with the text around it, so no "
                                "token carries its score", hint="check --step-sep and --format")
            positions.append(spans[k][2])
        return ids, positions

    # Running the model

    def score(self, prompts: Sequence, completions: Sequence[str], *, batch_size: int | None = None
              ) -> list[list[float]]:
        """Step scores of each completion (in input order): one float per step, [] for a completion without steps
        (orm: [score])."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        encoded = [self.encode(p, c) for p, c in zip(prompts, completions)]
        scores: list[list[float]] = [[] for _ in encoded]
        for batch in self.score_batches(encoded, batch_size=batch_size):
            for index, values in batch:
                scores[index] = values
        return scores

    def rewards(self, prompts: Sequence, completions: Sequence[str], *, agg: str = "min", lam: float = 1.0,
                orm: "PRMScorer | None" = None, empty: float = 0.0) -> list[float]:
        """One reward per completion (`final_score`; with `orm`, its score is the trajectory score); `empty` for a
        completion without steps. What a GRPO reward function returns."""
        check_lam(lam)
        step_scores = self.score(prompts, completions)
        trajectories = orm.score(prompts, completions) if orm is not None and lam < 1.0 else None
        out = []
        for index, steps in enumerate(step_scores):
            if not steps:
                out.append(empty)
                continue
            trajectory = trajectories[index][0] if trajectories and trajectories[index] else None
            out.append(final_score(steps, agg, lam, trajectory))
        return out

    def score_batches(self, encoded: Sequence[Encoded], *, batch_size: int | None = None
                      ) -> Iterator[list[tuple[int, list[float]]]]:
        """Run `encoded` in batches of similar length (longest first); yield each batch's (index, step scores)
        as it finishes. Completions without steps are yielded first, with [] and no forward pass."""
        size = batch_size or self.batch_size
        empty = [(i, []) for i, item in enumerate(encoded) if not item.steps]
        if empty:
            yield empty
        order = sorted((i for i, item in enumerate(encoded) if item.steps), key=lambda i: -len(encoded[i].ids))
        for start in range(0, len(order), size):
            indices = order[start:start + size]
            yield list(zip(indices, self._forward([encoded[i] for i in indices])))

    def _forward(self, batch: list[Encoded]) -> list[list[float]]:
        """One forward pass over right-padded `batch`; the scores at each item's positions."""
        import torch

        model, device = self.model, self.model.device
        width = max(len(item.ids) for item in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            ids[row, :len(item.ids)] = torch.tensor(item.ids, dtype=torch.long)
            mask[row, :len(item.ids)] = 1
        ids, mask = ids.to(device), mask.to(device)
        rows = [row for row, item in enumerate(batch) for _ in item.positions]
        columns = [p for item in batch for p in item.positions]
        with torch.inference_mode():
            if self.format == "math-shepherd":
                probs, columns = self._shepherd_probs(ids, mask, columns)
            elif self.format == "qwen-prm":
                logits = _logits(model(input_ids=ids, attention_mask=mask)).float()
                probs = logits.softmax(-1)[..., 1]
            else:
                self._head_logits.clear()
                model(input_ids=ids, attention_mask=mask)
                logits = self._head_logits.pop().float()
                probs = logits[..., 0].sigmoid() if logits.shape[-1] == 1 else logits.softmax(-1)[..., 1]
            picked = probs[torch.tensor(rows, device=probs.device), torch.tensor(columns, device=probs.device)]
        values = picked.cpu().tolist()  # one transfer for the whole batch
        out, at = [], 0
        for item in batch:
            out.append(values[at:at + len(item.positions)])
            at += len(item.positions)
        return out

    def _shepherd_probs(self, ids, mask, columns: list[int]):
        import torch

        good, bad = self._label_ids
        if self._keep_logits:
            # Only the tag positions go through the LM head: (batch, tags, vocab) instead of (batch, tokens, vocab).
            keep = sorted(set(columns))
            where = {p: i for i, p in enumerate(keep)}
            out = self.model(input_ids=ids, attention_mask=mask,
                             logits_to_keep=torch.tensor(keep, dtype=torch.long, device=ids.device))
            columns = [where[p] for p in columns]
        else:
            out = self.model(input_ids=ids, attention_mask=mask)
        pair = _logits(out)[..., [good, bad]].float()
        return pair.softmax(-1)[..., 0], columns


def _messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise TypeError(f"a prompt is a string or a list of messages, got {type(prompt).__name__}")


def _logits(output):
    # Remote-code models (Qwen2ForProcessRewardModel) may return a tuple: the first item is the logits (as the card).
    return output.logits if hasattr(output, "logits") else output[0]


def _config_dict(path: str, name: str) -> dict:
    """The raw config.json (no model code runs: a custom model_type needs no trust_remote_code to be read)."""
    from transformers import PretrainedConfig

    try:
        return PretrainedConfig.get_config_dict(path)[0]
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the model config: {str(error).splitlines()[0][:200]}", path=name) from error


def _load_weights(src, fmt: str, arch: str | None, dtype, device: str, trust_remote_code: bool,
                  allow_pickle: bool, name: str):
    import transformers

    if fmt == "qwen-prm" and arch and arch.endswith("ForProcessRewardModel"):
        if not trust_remote_code:
            raise UserError(f"{name} is a {arch}: model code shipped with the checkpoint (Qwen2.5-Math-PRM's "
                            "MLP head), which no built-in class loads", hint="pass --trust-remote-code to run it")
        auto = transformers.AutoModel
    else:
        auto = {"qwen-prm": transformers.AutoModelForTokenClassification,
                "math-shepherd": transformers.AutoModelForCausalLM,
                "orm": transformers.AutoModelForSequenceClassification}[fmt]
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code, "output_loading_info": True,
                    "use_safetensors": None if allow_pickle else True}
    if device != "cpu":
        kwargs["device_map"] = device  # straight onto the GPU, no CPU copy of the whole model
    try:
        model, info = auto.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load {name} as {fmt}: {str(error).splitlines()[0][:300]}", path=src.path) from error
    missing = [key for key in info.get("missing_keys", ()) if key]
    if missing:
        # from_pretrained fills missing weights randomly (a head the checkpoint lacks): every score would be noise.
        raise UserError(f"{name} lacks {len(missing)} weights that {fmt} needs (e.g. {sorted(missing)[0]}): they would "
                        "be random", hint="is it a reward model of this convention? check --format")
    return model.eval()



_STEP_SEP_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


def parse_step_sep(text: str) -> str:
    """A --step-sep as typed: the escapes \\n, \\r, \\t and \\\\ become their characters ('\\n\\n' is a blank line,
    '\\r\\n\\r\\n' a Windows one). Any other backslash escape is refused: kept as typed, it would silently never
    split."""
    import re

    def unescape(match: re.Match) -> str:
        escaped = match.group(1)
        if escaped not in _STEP_SEP_ESCAPES:
            shown = "a lone \\ at the end" if not escaped else f"\\{escaped}"
            raise UserError(f"--step-sep {text!r}: unknown escape {shown}",
                            hint="escapes: \\n (newline), \\r (carriage return), \\t (tab), \\\\ (a backslash)")
        return _STEP_SEP_ESCAPES[escaped]

    sep = re.sub(r"\\(.?)", unescape, text, flags=re.DOTALL)
    if not sep:
        raise UserError("--step-sep must not be empty", hint="e.g. --step-sep '\\n\\n' (a blank line)")
    return sep


# What prm-train trained a model with, saved beside its weights; prm-score reads a model the same way by default.
TRAINED_SETTINGS_FILE = "rtool_prm.json"
_TRAINED_KEYS = ("format", "system", "step_sep")


def write_trained_settings(out_dir, *, system: str | None, step_sep: str | None) -> None:
    """Save the conversation a PRM was trained in to `out_dir`/rtool_prm.json: its format (qwen-prm), the system
    prompt of rows that recorded no conversation (None: none), the separator its steps were split on (None: not
    known, e.g. TRL rows that come split)."""
    import json
    from pathlib import Path

    from rtool.io.records import atomic_write_text

    settings = {"format": "qwen-prm", "system": system, "step_sep": step_sep}
    atomic_write_text(Path(out_dir) / TRAINED_SETTINGS_FILE, json.dumps(settings, ensure_ascii=False, indent=1) + "\n")


def trained_settings(spec) -> dict:
    """The settings prm-train saved with the model `spec` (`write_trained_settings`), or {} when it has none (a
    hub id, a model rtool did not train). UserError naming the file when it cannot be read."""
    import json
    from pathlib import Path

    path = Path(str(spec)) / TRAINED_SETTINGS_FILE
    if not path.is_file():
        return {}
    hint = ("delete it to score with prm-score's own defaults, or pass --format, --step-sep and --system")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"cannot read prm-train's settings: {error}", path=path, hint=hint) from None
    if (not isinstance(settings, dict) or settings.get("format") not in FORMATS
            or not all(isinstance(settings.get(key), (str, type(None))) for key in _TRAINED_KEYS)
            or settings.get("step_sep") == ""):
        raise UserError("not prm-train's settings: expected {format, system, step_sep}", path=path, hint=hint)
    return {key: settings.get(key) for key in _TRAINED_KEYS}
