"""Rewards for RL with verifiable rewards (`rtool grpo`): pure functions, and the TRL reward functions built on them.

    specs = parse_reward_spec("accuracy=1,format=0.1,python:my_rewards:brevity=0.2")
    accuracy_rewards(["... \\boxed{505}"], golds=["505"])           # [1.0]
    format_rewards(["<think>x</think><answer>5</answer>"], tags=("think", "answer"))   # [1.0]
    length_penalties([90, 100, 120], max_length=100, buffer=20)   # [-0.5, -1.0, -1.0]
    funcs, weights = RewardSet(specs, max_completion_length=256).functions()   # for GRPOTrainer(reward_funcs=...)

The rewards (each in its own column of the metrics; the trainer adds them up with the weights):

- accuracy: 1.0 when rtool's grading (`rtool.grade.answers.grade`: the same extraction and math-verify equivalence as
  distill and eval, options by letter for multiple-choice rows) finds the completion's final answer equal to the
  row's gold answer, else 0.0; None (no opinion, left out of the sum) when the gold itself cannot be parsed.
- format: 1.0 when the completion states its answer in the required form, else 0.0. Without tags: a closed,
  non-empty `\\boxed{...}` after any `<think>` block (what the grading reads). With tags ("think", "answer"): the
  completion is `<think>...</think>` then `<answer>...</answer>`, each block exactly once, in that order, not nested,
  not blank, nothing but whitespace around them. Grading reads the last `<answer>` block (`extract_answer`), so the
  accuracy of a completion in this format is its answer block's. A chat template whose generation prompt opens the
  first tag itself (DeepSeek-R1-Distill's and QwQ's end with "<think>\\n") has the model start inside that block:
  the tag the prompt opened counts as the completion's (`opened_tag`), and a completion that opens it again nests it.
- length: DAPO's soft over-length penalty (rtool's choice of its form, arXiv 2503.14476 eq. 13). With L the
  completion's length in tokens, L_max = --max-completion-length and B = --length-buffer:
      0                          if L <= L_max - B
      (L_max - B - L) / B        if L_max - B < L <= L_max    (falls linearly from 0 to -1)
      -1                         if L > L_max
  Completions are cut at L_max, so a truncated one gets -1.
- prm: a process reward model's aggregate step score (`rtool.prm.score.PRMScorer.rewards`, --prm-agg), in [0, 1].
- python:MODULE:FUNCTION: any function with TRL's reward signature, `f(prompts, completions, completion_ids,
  **columns) -> list[float | None]` (columns: the dataset's, here `answer` and `options`, and TRL's
  `trainer_state`). MODULE is importable (the working directory is searched first) or a path to a .py file. Its
  output is checked on every call: one number (or None) per completion, else a UserError.

Completions arrive as TRL gives them: a string, or for chat prompts a list with one assistant message.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rtool.errors import UserError
from rtool.log import logger

REWARDS = ("accuracy", "format", "length", "prm", "python")
PYTHON_PREFIX = "python:"
# --length-buffer's default, as a share of --max-completion-length (DAPO: 4,096 of 20,480 tokens).
LENGTH_BUFFER_SHARE = 0.2


@dataclass(frozen=True)
class RewardSpec:
    """One `--reward` item: a reward's name, its weight, and for python rewards the `MODULE:FUNCTION` target."""

    name: str
    weight: float
    target: str | None = None

    @property
    def label(self) -> str:
        """The name its metrics are logged under: the reward's, or a python reward's function name."""
        return self.target.rsplit(":", 1)[1] if self.target else self.name


def parse_reward_spec(text: str) -> list[RewardSpec]:
    """`NAME=W,...` (W defaults to 1) -> RewardSpecs. Raises UserError for an unknown name, a weight that is not a
    finite number, a reward named twice, or an empty list."""
    specs: list[RewardSpec] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        name, _, weight_text = item.rpartition("=") if "=" in item else (item, "", "1")
        name = name.strip()
        try:
            weight = float(weight_text)
        except ValueError:
            raise UserError(f"--reward {item}: the weight {weight_text.strip()!r} is not a number",
                            hint="e.g. --reward accuracy=1,format=0.1") from None
        if not math.isfinite(weight):
            raise UserError(f"--reward {item}: the weight must be a finite number")
        if name.startswith(PYTHON_PREFIX):
            target = name[len(PYTHON_PREFIX):]
            module, _, function = target.rpartition(":")
            if not module or not function:
                raise UserError(f"--reward {item}: a python reward is python:MODULE:FUNCTION",
                                hint="e.g. python:my_rewards:brevity=0.2 (my_rewards.py in the working directory)")
            spec = RewardSpec("python", weight, target)
        elif name in REWARDS and name != "python":
            spec = RewardSpec(name, weight)
        else:
            raise UserError(f"--reward: unknown reward {name!r}",
                            hint="valid: accuracy, format, length, prm, python:MODULE:FUNCTION")
        if any(other.label == spec.label for other in specs):
            raise UserError(f"--reward names {spec.label!r} twice")
        specs.append(spec)
    if not specs:
        raise UserError("--reward is empty", hint="e.g. --reward accuracy=1,format=0.1")
    if all(spec.weight == 0 for spec in specs):
        raise UserError("--reward: every weight is 0, so every completion gets the same reward: nothing to learn")
    return specs


def completion_text(completion) -> str:
    """The text of a completion as TRL passes it: a string, or a list of messages (the assistant's)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict)
                       and m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion is a string or a list of messages, got {type(completion).__name__}")


def accuracy_rewards(completions: Sequence, golds: Sequence[str | None],
                     options: Sequence | None = None) -> list[float | None]:
    """1.0 / 0.0 per completion by rtool's grading against its gold answer (None: the gold cannot be parsed).
    `options`: each row's multiple-choice options (or None), as `rtool.grade.answers.grade` takes them."""
    from rtool.grade.answers import grade

    options = options if options is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, gold, choices in zip(completions, golds, options, strict=True):
        _, correct = grade(gold, completion_text(completion), choices or None)
        out.append(None if correct is None else float(correct))
    return out


def format_rewards(completions: Sequence, tags: Sequence[str] | None = None, opened: str | None = None) -> list[float]:
    """1.0 / 0.0 per completion: a closed \\boxed{} answer (no tags), or exactly the tagged blocks in order.
    `opened`: the tag the generation prompt opened (`opened_tag`), which counts as written before each completion."""
    from rtool.grade.answers import last_boxed

    if tags:
        pattern = format_pattern(tags)
        markers = [f"<{t}>" for t in tags] + [f"</{t}>" for t in tags]
        before = f"<{opened}>" if opened in tags else ""
        matches = (pattern.fullmatch(before + completion_text(c)) for c in completions)
        # A block holding a tag is a repeated or nested block ("<answer>5</answer><answer>6</answer>" matches with
        # the block "5</answer><answer>6"): each block appears exactly once.
        return [1.0 if m and all(block.strip() and not any(marker in block for marker in markers)
                                 for block in m.groups()) else 0.0 for m in matches]
    out = []
    for completion in completions:
        text = completion_text(completion)
        answer_part = text.rsplit("</think>", 1)[1] if "</think>" in text else text
        # An empty box states nothing (and `\\boxed{}` is literally in the default system prompt).
        out.append(1.0 if "<think>" not in answer_part and last_boxed(answer_part) else 0.0)
    return out


def format_pattern(tags: Sequence[str]) -> re.Pattern:
    """`\\s*<a>(.+?)</a>\\s*<b>(.+?)</b>\\s*` for tags (a, b); the format reward also wants each block not blank and
    free of tags."""
    blocks = [rf"<{re.escape(t)}>(.+?)</{re.escape(t)}>" for t in tags]
    return re.compile(r"\s*" + r"\s*".join(blocks) + r"\s*", re.DOTALL)


# A tag a rendered generation prompt ends with ("...<｜Assistant｜><think>\n"): not "<|im_start|>" or
# "<｜Assistant｜>", whose names are no tag names.
_OPENED_TAG_RE = re.compile(r"<([A-Za-z_][\w.-]*)>\s*$")


def opened_tag(generation_prompt: str | None) -> str | None:
    """The tag a chat template's generation prompt (`apply_chat_template(..., add_generation_prompt=True)`) leaves
    open at its end: "think" for DeepSeek-R1-Distill's "<｜Assistant｜><think>\\n" and QwQ's, None for ChatML's."""
    found = _OPENED_TAG_RE.search(generation_prompt or "")
    return found.group(1) if found else None


def parse_format_tags(text: str | None) -> tuple[str, ...] | None:
    """--format-tags "think,answer" -> ("think", "answer"); None or "" -> None (a boxed answer is the format)."""
    if not text or not text.strip():
        return None
    tags = tuple(t.strip().strip("<>/") for t in text.split(","))
    if any(not re.fullmatch(r"[A-Za-z_][\w.-]*", t) for t in tags):
        raise UserError(f"--format-tags {text!r}: tag names are letters, digits, '_', '-' or '.'",
                        hint="e.g. --format-tags think,answer")
    return tags


def length_penalties(lengths: Sequence[int], *, max_length: int, buffer: int) -> list[float]:
    """DAPO's soft over-length penalty per completion length (in tokens); see the module docstring."""
    check_length_buffer(buffer, max_length)
    safe = max_length - buffer
    return [0.0 if n <= safe else (-1.0 if n > max_length else (safe - n) / buffer) for n in lengths]


def check_length_buffer(buffer: int, max_length: int) -> None:
    if not 0 < buffer <= max_length:
        raise UserError(f"--length-buffer must be in [1, --max-completion-length {max_length}], got {buffer}")


def default_length_buffer(max_length: int) -> int:
    return max(1, round(LENGTH_BUFFER_SHARE * max_length))


def load_python_reward(target: str) -> Callable:
    """The function `MODULE:FUNCTION` names (MODULE a dotted name, searched in the working directory first, or a
    .py file path). UserError when it does not import or is not callable."""
    module_name, _, function_name = target.rpartition(":")
    where = f"python:{target}"
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"reward {where}: no file {module_name}")
            spec = importlib.util.spec_from_file_location(f"rtool_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # a console script does not search the working directory
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - a SyntaxError or a failing import in the user's module alike
        raise UserError(f"reward {where}: cannot import {module_name}: {type(error).__name__}: {error}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise UserError(f"reward {where}: {module_name} has no {function_name!r}")
    if not callable(function):
        raise UserError(f"reward {where}: {function_name} is a {type(function).__name__}, not a function")
    return function


def checked_rewards(label: str, values, expected: int) -> list[float | None]:
    """A reward function's output as a list of floats (None kept), or a UserError naming what is wrong with it."""
    where = f"reward {label!r}"
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise UserError(f"{where} returned a {type(values).__name__}; it must return a list of {expected} numbers "
                        "(one per completion, None for no opinion)")
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    if len(values) != expected:
        raise UserError(f"{where} returned {len(values)} values for {expected} completions; it must return one "
                        "number (or None) per completion")
    out: list[float | None] = []
    for index, value in enumerate(values):
        number = value.item() if hasattr(value, "item") else value  # numpy scalars, 0-d tensors
        if number is None:
            out.append(None)
        elif isinstance(number, (int, float)) and not isinstance(number, bool):
            out.append(float(number))
        else:
            raise UserError(f"{where} returned {type(value).__name__} {value!r:.40} at position {index}; rewards "
                            "are numbers (or None)")
    return out


@dataclass
class RewardSet:
    """The rewards a `--reward` list asks for, as TRL reward functions (each named by its label) and weights.

    prm_scorer: a loaded `rtool.prm.score.PRMScorer` (needed for `prm`); prm_agg: how its step scores aggregate.
    """

    specs: list[RewardSpec]
    max_completion_length: int = 512
    length_buffer: int | None = None
    format_tags: tuple[str, ...] | None = None
    prm_scorer: object | None = None
    prm_agg: str = "min"

    def __post_init__(self) -> None:
        if self.length_buffer is None:
            self.length_buffer = default_length_buffer(self.max_completion_length)
        else:  # a value given is checked even when no length reward reads it: -1 is a typo, not "unused"
            check_length_buffer(self.length_buffer, self.max_completion_length)
            if not self.uses("length"):
                logger.warning("--length-buffer %d is unused: --reward has no length=W", self.length_buffer)
        if self.uses("prm") and self.prm_scorer is None:
            raise UserError("the prm reward needs a process reward model", hint="pass --prm PATH (see rtool prm-score)")
        self._python = {}
        for spec in self.specs:
            if spec.name == "python":
                function = load_python_reward(spec.target)
                if not accepts_keywords(function):
                    raise UserError(f"reward python:{spec.target}: it must take **kwargs",
                                    hint="TRL's signature: f(prompts, completions, completion_ids, **kwargs); every "
                                         "dataset column (answer, options) and trainer_state come as keywords")
                self._python[spec.label] = function

    def uses(self, name: str) -> bool:
        return any(spec.name == name for spec in self.specs)

    def functions(self, generation_prompt: str | None = None) -> tuple[list[Callable], list[float]]:
        """(reward functions, weights) in --reward order, for GRPOTrainer(reward_funcs=..., args.reward_weights).
        `generation_prompt`: a prompt as the trainer renders it for generation; a format tag it leaves open (R1's
        "<think>\\n") counts as the start of every completion (see the module docstring)."""
        opened = opened_tag(generation_prompt)
        if self.uses("format") and self.format_tags and opened is not None:
            if opened in self.format_tags:
                logger.info("the chat template's generation prompt opens <%s>: the format reward counts it as the "
                            "start of each completion", opened)
            else:
                logger.warning("the chat template's generation prompt opens <%s>, which --format-tags %s does not "
                               "name: every completion starts inside it, so few if any will have the format",
                               opened, ",".join(self.format_tags))
        return [self._function(spec, opened) for spec in self.specs], [spec.weight for spec in self.specs]

    def _function(self, spec: RewardSpec, opened: str | None = None) -> Callable:
        if spec.name == "accuracy":
            def reward(prompts, completions, answer, options=None, **_):
                return accuracy_rewards(completions, answer, _decoded_options(options))
        elif spec.name == "format":
            def reward(prompts, completions, **_):
                return format_rewards(completions, self.format_tags, opened)
        elif spec.name == "length":
            def reward(prompts, completions, completion_ids, **_):
                return length_penalties([len(ids) for ids in completion_ids], max_length=self.max_completion_length,
                                        buffer=self.length_buffer)
        elif spec.name == "prm":
            def reward(prompts, completions, **_):
                return self.prm_scorer.rewards(prompts, [completion_text(c) for c in completions], agg=self.prm_agg)
        else:
            user_function = self._python[spec.label]

            def reward(prompts, completions, **kwargs):
                return checked_rewards(f"python:{spec.target}", user_function(prompts=prompts, completions=completions,
                                                                             **kwargs), len(completions))
        reward.__name__ = spec.label  # TRL logs each reward under its function's name
        return reward


def _decoded_options(options) -> list | None:
    """The dataset's `options` column (JSON text per row, "" for none) -> the options each row's grading takes."""
    import json

    if options is None:
        return None
    return [json.loads(text) if text else None for text in options]


def accepts_keywords(function: Callable) -> bool:
    """Whether `function` takes **kwargs (TRL passes every dataset column and trainer_state by keyword)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
