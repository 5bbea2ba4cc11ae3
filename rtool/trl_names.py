"""TRL's, transformers' and open-r1's names for training settings, as the training commands read them: keys of a
`--config` YAML (a TRL or open-r1 recipe) and flags of their command line (a `trl sft ...` line). A name is

- an rtool flag's own or second name (`learning_rate` is --lr: rtool.options), read as that flag (rtool.config);
- MAPPED to the rtool flag with its meaning: `torch_dtype`/`dtype` with `bf16`/`fp16` -> --dtype (`precision_dtype`),
  `save_strategy: "no"` -> --save-steps 0, `overwrite_output_dir` -> --overwrite, `dataset_config` -> --subset,
  `dataset_train_split` -> --split, `chat_template_path` -> --chat-template, open-r1's `system_prompt` and
  `dataset_prompt_column` -> --system and --prompt-field, `vllm_server_base_url` -> grpo's --vllm-server-url;
- PASSED to the TRL config rtool builds, where that config has the field (`PASSED`): `lr_scheduler_kwargs`,
  `gradient_checkpointing_kwargs`, `max_grad_norm`, `weight_decay`, grpo's `epsilon_high`, and `use_liger_kernel`
  where Liger's kernels can run (liger-kernel installed, a CUDA GPU);
- else IGNORED when a library knows it: a field of the installed transformers' TrainingArguments or TRL's SFTConfig,
  GRPOConfig, ModelConfig and ScriptArguments (read from the packages when a run meets such a name), of open-r1's
  own configs (`OPEN_R1`), or of an earlier release that recipes still write (`RETIRED`). The command warns once,
  listing every name it ignored;
- else an error, which suggests a name only when one is close (an unknown `overwrite_output_dir` once got
  "did you mean output_dir?").

    resolution = resolve("save_strategy", "no", command="sft", params={"save_steps", ...})
    resolution.param, resolution.value        # ("save_steps", 0)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# open-r1's own fields (src/open_r1/configs.py: ScriptArguments, SFTConfig, GRPOConfig, GRPOScriptArguments), which
# its recipes set beside TRL's. From huggingface/open-r1 at 1416fa0 (2026-04-02).
OPEN_R1 = frozenset({
    "dataset_mixture", "benchmarks", "callbacks", "chat_template", "hub_model_revision", "overwrite_hub_revision",
    "push_to_hub_revision", "system_prompt", "wandb_entity", "wandb_project", "wandb_run_group",
    "num_completions_to_print", "wandb_log_unique_prompts", "reward_funcs", "cosine_min_value_wrong",
    "cosine_max_value_wrong", "cosine_min_value_correct", "cosine_max_value_correct", "cosine_max_len",
    "repetition_n_grams", "repetition_max_penalty", "code_language", "code_eval_test_batch_size",
    "code_eval_scoring_mode", "parallel_code_exec_per_proc", "dataset_prompt_column", "e2b_router_url",
    "morph_router_url", "code_provider", "ioi_provider", "max_completion_len", "soft_punish_cache",
})
# Names of earlier releases that recipes still write (open-r1's were written for transformers 4 and TRL 0.x), with
# today's name where there is one.
RETIRED = {
    "torch_dtype": "dtype",  # TRL's ModelConfig before 0.20
    "max_seq_length": "max_length",  # TRL's SFTConfig before 0.20
    "use_liger": "use_liger_kernel",  # TRL's SFTConfig before 0.16
    "evaluation_strategy": "eval_strategy",  # transformers before 4.46
    "overwrite_output_dir": None,  # transformers' TrainingArguments before 5.0
    "max_prompt_length": None,  # TRL's GRPOConfig before 1.0
    "vllm_device": None,  # TRL's GRPOConfig before 0.16
}
# The rtool flag with the name's meaning (an rtool parameter name); a command without that flag ignores the name.
TO_FLAG = {
    "overwrite_output_dir": "overwrite",
    "dataset_config": "subset",
    "dataset_train_split": "split",
    "chat_template_path": "chat_template",
    "chat_template": "chat_template",  # open-r1's: the template's text (rtool's --chat-template takes that too)
    "system_prompt": "system",
    "dataset_prompt_column": "prompt_field",
    "vllm_server_base_url": "vllm_server_url",
}
# Passed to the TRL config rtool builds (rtool.train.core.trainer_args), with the type their value must have. They
# change what is trained, so a --resume keeps them (they are recorded in OUT/run_settings.json as `trl_args`).
PASSED = {"lr_scheduler_kwargs": dict, "gradient_checkpointing_kwargs": dict, "max_grad_norm": float,
          "weight_decay": float, "epsilon_high": float, "use_liger_kernel": bool}
# The precision group: the weights' dtype and TRL's mixed-precision switches, which make one --dtype together.
PRECISION = ("dtype", "bf16", "fp16")
# Strategies whose rtool meaning is its own flag: "no" saves nothing (--save-steps 0); "steps" is what rtool does.
STRATEGIES = {"save_strategy": {"no": ("save_steps", 0), "steps": None}, "logging_strategy": {"steps": None}}
# Configs whose fields are known names, and which command builds which (a field passes only to its own command's).
_CONFIGS = {"sft": "SFTConfig", "grpo": "GRPOConfig"}
_OTHER_CONFIGS = ("SFTConfig", "GRPOConfig", "ModelConfig", "ScriptArguments")
BOOLEAN_TEXT = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False,
                 "off": False}


@dataclass
class Resolution:
    """What a TRL name comes to: `param` (an rtool parameter) set to `value`; or `passed` (value to the TRL config);
    or `group` (a member of PRECISION, combined later); or `ignored` (with `why`, shown in the warning); or
    `same` (what rtool does anyway: nothing to set, nothing to warn about)."""

    key: str
    value: object = None
    param: str | None = None
    passed: bool = False
    group: bool = False
    ignored: bool = False
    same: bool = False
    why: str = ""


def resolve(key: str, value, *, command: str, params: set[str]) -> Resolution | None:
    """The resolution of the TRL/transformers/open-r1 name `key` (not an rtool flag name) set to `value`, for
    `command` (sft, grpo, ...) whose parameters are `params`; None when no library knows the name."""
    name = RETIRED.get(key) or key
    if name in PRECISION:
        return Resolution(name, value, group=True)
    if name != key and name in params:  # max_seq_length: today's max_length, an rtool flag
        return Resolution(key, value, param=name)
    if key in TO_FLAG or name in TO_FLAG:
        param = TO_FLAG.get(key) or TO_FLAG[name]
        if param in params:
            return Resolution(key, value, param=param)
        return Resolution(key, value, ignored=True)
    if name in STRATEGIES:
        meanings = STRATEGIES[name]
        if str(value) not in meanings:
            return Resolution(key, value, ignored=True, why=f"{value!r}: rtool's is every --{name[:-9]}-steps")
        meaning = meanings[str(value)]
        return Resolution(key, value, same=True) if meaning is None else \
            Resolution(key, meaning[1], param=meaning[0])
    if name in PASSED:
        return _passed(key, name, value, command)
    if key in RETIRED or key in OPEN_R1 or key in library_fields():
        return Resolution(key, value, ignored=True)
    return None


def _passed(key: str, name: str, value, command: str) -> Resolution:
    if name not in config_fields(command):
        return Resolution(key, value, ignored=True, why=f"{command} has no such setting")
    if name == "use_liger_kernel" and as_bool(value):
        unusable = liger_unusable()
        if unusable:
            return Resolution(key, value, ignored=True, why=unusable)
    return Resolution(name, value, passed=True)


def check_passed(name: str, value, where: str):
    """`value` of the passed-through `name` as its TRL field takes it (text from a command line converted: JSON for
    the kwargs, as TRL's own parser reads them); a ValueError says what is wrong."""
    kind = PASSED[name]
    if kind is dict:
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"{where}: expected a JSON object, e.g. '{{\"min_lr_rate\": 0.1}}'") from None
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if kind is bool:
        return as_bool(value, where)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {value!r}") from None


def as_bool(value, where: str = "") -> bool:
    """A YAML boolean, or a command line's `true`/`false` (TRL's parser takes yes/no, 1/0 too)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in BOOLEAN_TEXT:
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    return BOOLEAN_TEXT[text]


def precision_dtype(weights: str | None, bf16, fp16) -> str | None:
    """rtool's --dtype for TRL's weight dtype (ModelConfig's `dtype`, once `torch_dtype`) and its mixed-precision
    switches `bf16`/`fp16` (None: not set). rtool's --dtype names the same pair (rtool.train.precision):

    ==========================================  =============================================================
    TRL                                         rtool --dtype (what it does on a GPU)
    ==========================================  =============================================================
    dtype bfloat16 | float16 (any bf16/fp16)    bfloat16 | float16: as TRL, bf16 weights + bf16 autocast
    fp16: true                                  float16: float32 weights + fp16 autocast
    bf16: true (dtype float32, auto or unset)   auto: float32 master weights + bf16 autocast
    dtype float32 with bf16 false or unset      float32: no autocast
    bf16: false alone                           float32
    ==========================================  =============================================================
    """
    bf16 = None if bf16 is None else as_bool(bf16, "bf16")
    fp16 = None if fp16 is None else as_bool(fp16, "fp16")
    if weights in ("bfloat16", "float16"):
        return weights
    if fp16:
        return "float16"
    if bf16:
        return "auto"
    if weights == "float32" or bf16 is False:
        return "float32"
    return weights


def flag_kind(name: str) -> str:
    """How a command line gives the TRL flag `name` its value, as transformers' HfArgumentParser does: "bool" (bare,
    or followed by true/false), "list" (the words up to the next flag), else "value" (the next word)."""
    name = RETIRED.get(name) or name
    if name in PASSED:
        return "bool" if PASSED[name] is bool else "value"
    kind = library_field_types().get(name, "")
    if re.match(r"(typing\.)?(Optional\[)?bool\b", kind) or kind in ("bool | None", "bool"):
        return "bool"
    if re.match(r"(typing\.)?(Optional\[)?(list|List)\b", kind):
        return "list"
    return "bool" if name in ("overwrite_output_dir", "overwrite_hub_revision", "push_to_hub_revision",
                              "wandb_log_unique_prompts", "bf16", "fp16") else "value"


@functools.lru_cache(maxsize=None)
def library_field_types() -> dict[str, str]:
    """{field name: its annotation} over transformers' TrainingArguments and TRL's configs, as installed."""
    import dataclasses

    from transformers import TrainingArguments
    import trl

    types = {}
    for config in (TrainingArguments, *(getattr(trl, name) for name in _OTHER_CONFIGS)):
        for field in dataclasses.fields(config):
            types.setdefault(field.name, str(field.type))
    return types


def library_fields() -> frozenset[str]:
    return frozenset(library_field_types())


@functools.lru_cache(maxsize=None)
def config_fields(command: str) -> frozenset[str]:
    """The fields of the TRL config `command` builds (SFTConfig, GRPOConfig; the others: TrainingArguments)."""
    import dataclasses

    from transformers import TrainingArguments
    import trl

    config = getattr(trl, _CONFIGS[command]) if command in _CONFIGS else TrainingArguments
    return frozenset(field.name for field in dataclasses.fields(config))


def known_names() -> frozenset[str]:
    """Every name a library, open-r1 or an earlier release knows: the candidates for a suggestion."""
    return library_fields() | OPEN_R1 | set(RETIRED) | set(TO_FLAG) | set(PASSED) | set(PRECISION)


def liger_unusable() -> str:
    """Why Liger's kernels cannot run here ("" when they can): they are Triton kernels for CUDA GPUs."""
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed"
    import torch

    return "" if torch.cuda.is_available() else "Liger's kernels need a CUDA GPU"
