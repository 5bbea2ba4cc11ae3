"""How much a model can generate: its context length, the KV cache one token takes and the memory free for it (a
local model), and what a server says of its context (an endpoint). The backends clamp a completion budget to the
context with these, and the hf backend sizes its batches.

    context_length(model.config)                              # 32768; None when the config states no limit
    kv_cache_bytes_per_token(model.config, torch.bfloat16)    # layers x kv heads x head dim x 2 (K, V) x 2 bytes
    free_memory_bytes(model.device)                           # CUDA: free + torch's unused cache; CPU: MemAvailable
    rows_that_fit(16, tokens_per_row=33000, bytes_per_token=57344, free=40 << 30)   # all 16 fit
    listed_context(models_answer, "Qwen/QwQ-32B")             # /v1/models' max_model_len (vLLM, SGLang), or None
    ContextRefusal.parse("This model's maximum context length is 4096 tokens ...")  # a 400's numbers, or None
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The share of free memory a batch's KV cache may take at its longest: the rest is for activations, the allocator's
# fragmentation and whatever else runs on the machine.
KV_CACHE_SHARE = 0.8


def _text_config(config):
    # A multimodal model keeps its language model's settings in a sub-config.
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def context_length(config) -> int | None:
    """The most tokens (prompt + completion) a model attends over: `max_position_embeddings`, or what a RoPE scaling
    stretches it to where the config keeps the original length there (linear, dynamic NTK and YaRN scaling: the
    original length x factor, as Qwen2.5's card extends 32768 to 131072); Llama 3.1's "llama3" and Phi-3's
    "longrope" configs state the stretched length itself. None when the config has no such field (a state-space
    model has no fixed limit)."""
    text = _text_config(config)
    limit = getattr(text, "max_position_embeddings", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return None
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None)
    if not isinstance(rope, dict):
        return limit
    # transformers 5 keeps one set of RoPE parameters per attention type (Gemma 3's full and sliding layers).
    sets = [rope] if not all(isinstance(value, dict) for value in rope.values()) else list(rope.values())
    for params in sets:
        kind, factor = params.get("rope_type", params.get("type")), params.get("factor")
        if kind in STRETCHING_ROPE and isinstance(factor, (int, float)) and factor > 1:
            original = params.get("original_max_position_embeddings") or limit
            limit = max(limit, int(original * factor))
    return limit


# RoPE scalings whose config keeps the original length in max_position_embeddings.
STRETCHING_ROPE = ("linear", "dynamic", "yarn")


def kv_cache_bytes_per_token(config, dtype) -> int | None:
    """Bytes one token adds to a transformers KV cache: a key and a value of `head_dim` per KV head, in every layer,
    in the model's dtype. An upper bound where layers keep less (sliding windows, linear attention); None when the
    config lacks the sizes."""
    text = _text_config(config)
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None)
    hidden = getattr(text, "hidden_size", None)
    if not head_dim and isinstance(hidden, int) and isinstance(heads, int) and heads:
        head_dim = hidden // heads
    sizes = (layers, kv_heads, head_dim)
    if not all(isinstance(size, int) and size > 0 for size in sizes):
        return None
    return layers * kv_heads * head_dim * 2 * dtype.itemsize


def free_memory_bytes(device) -> int | None:
    """Memory a new allocation on `device` can take now: on CUDA the device's free memory plus what torch's caching
    allocator holds unused; on the CPU the kernel's MemAvailable (Linux). None where neither can be read."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def rows_that_fit(rows: int, *, tokens_per_row: int, bytes_per_token: int, free: int) -> int:
    """How many of `rows` rows of `tokens_per_row` tokens (prompt + completion budget) fit in KV_CACHE_SHARE of `free`
    bytes if every row ran to the end of its budget: `rows` when all do, never less than 1."""
    worst_row = tokens_per_row * bytes_per_token
    return max(1, min(rows, int(free * KV_CACHE_SHARE) // max(worst_row, 1)))


def gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


# The fields of a /v1/models entry that state the model's context: vLLM's and SGLang's, LM Studio's, OpenRouter's.
CONTEXT_FIELDS = ("max_model_len", "max_context_length", "context_length")


def listed_context(models_answer, model: str) -> int | None:
    """The context length /v1/models states for `model` (the entry with its id), or None where it states none."""
    entries = models_answer.get("data") if isinstance(models_answer, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("id") == model:
            for name in CONTEXT_FIELDS:
                value = entry.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return None


# What servers answer (HTTP 400) when prompt + max_tokens pass the context:
#   vLLM:   "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096
#            tokens and your request has 2778 input tokens (8000 > 4096 - 2778)."
#   vLLM before 0.10, OpenAI: "This model's maximum context length is 4096 tokens. However, you requested 10778 tokens
#            (2778 in the messages, 8000 in the completion). Please reduce the length of the messages or completion."
#   SGLang: "... maximum context length of 4096 tokens. You requested a total of 5000 tokens: 1000 tokens from the
#            input messages and 4000 tokens for the completion. ..."
#   OpenAI, a cap on completions alone: "max_tokens is too large: 32768. This model supports at most 16384
#            completion tokens, whereas you provided 32768."
_CONTEXT = re.compile(r"maximum context length (?:is |of )?(\d+)", re.I)
_PROMPT = (re.compile(r"(\d+) input tokens", re.I), re.compile(r"(\d+) (?:tokens )?in the messages", re.I),
           re.compile(r"(\d+) tokens from the input", re.I), re.compile(r"messages resulted in (\d+) tokens", re.I))
_COMPLETION_CAP = re.compile(r"at most (\d+) completion tokens", re.I)


@dataclass
class ContextRefusal:
    """A server's refusal of a request that does not fit the model: its context and the prompt's tokens, or a cap
    on completion tokens, each None where the message does not say."""

    message: str
    context: int | None = None
    prompt_tokens: int | None = None
    completion_cap: int | None = None

    @classmethod
    def parse(cls, message: str) -> "ContextRefusal | None":
        """The refusal `message` states, or None when it is about something else."""
        cap = _COMPLETION_CAP.search(message)
        if "context length" not in message.lower() and cap is None:
            return None
        context = _CONTEXT.search(message)
        prompt = next((found for pattern in _PROMPT if (found := pattern.search(message))), None)
        return cls(message, *(int(found.group(1)) if found else None for found in (context, prompt, cap)))
