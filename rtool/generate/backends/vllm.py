"""The `vllm` backend: vLLM's offline engine. Imported only when selected; vllm itself is imported on open.

vLLM stops a completion where prompt + completion reach the engine's max_model_len (finish_reason "length"), whatever
max_tokens says; the backend asks for no more than that, and warns once when a completion stopped there before
--max-new-tokens, as the hf and openai backends do. A prompt that fills the context alone is refused by vLLM for the
whole call: one error line naming the limit.
"""

from __future__ import annotations

import importlib.util

from rtool.errors import UserError, one_of
from rtool.generate.core import Backend, Completion, continues, request_seeds
from rtool.log import logger


def engine_options(tensor_parallel_size: int | None = None, gpu_memory_utilization: float | None = None,
                   max_model_len: int | None = None) -> dict:
    """vLLM `LLM(...)` keyword arguments from the --tensor-parallel-size, --gpu-memory-utilization and
    --max-model-len flags: only those given (vLLM's own defaults otherwise: 1 GPU, 0.9 of its memory, the model's
    context length), each checked here so a bad value fails before vLLM starts."""
    options: dict = {}
    if tensor_parallel_size is not None:
        if tensor_parallel_size < 1:
            raise UserError(f"--tensor-parallel-size must be at least 1, got {tensor_parallel_size}")
        options["tensor_parallel_size"] = tensor_parallel_size
    if gpu_memory_utilization is not None:
        if not 0 < gpu_memory_utilization <= 1:
            raise UserError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}",
                            hint="the share of each GPU's memory vLLM may take, e.g. 0.9")
        options["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len is not None:
        if max_model_len < 1:
            raise UserError(f"--max-model-len must be at least 1, got {max_model_len}")
        options["max_model_len"] = max_model_len
    return options


def engine_flags(options: dict) -> str:
    """The flags that set `options` (engine_options' keys), for messages."""
    return ", ".join("--" + key.replace("_", "-") for key in options)


class VLLMBackend(Backend):
    """vLLM's offline engine (`LLM.chat`): needs the vllm package and a CUDA GPU. A PEFT adapter dir is served as
    a LoRA on its base model; a .gguf file is passed to vLLM with its own tokenizer. `engine_kwargs` go to
    `vllm.LLM` (`engine_options` builds them from the flags); `chat_template` (a template's text) goes to every
    `LLM.chat` call in place of the tokenizer's."""

    kind = "vllm"

    def __init__(self, spec, *, dtype: str = "auto", trust_remote_code: bool = False, allow_pickle: bool = False,
                 chat_template: str | None = None, **engine_kwargs):
        from rtool.io.models import DTYPES, adapter_base_source, localize, require_causal_lm, resolve_source

        if importlib.util.find_spec("vllm") is None:
            raise UserError("the vllm backend needs the vllm package", hint="pip install 'rtool[vllm]', or use --backend hf")
        import torch

        if not torch.cuda.is_available():
            raise UserError("the vllm backend needs a CUDA GPU, and none is visible", hint="use --backend hf")
        one_of("dtype", dtype, DTYPES)
        import vllm

        src = localize(resolve_source(spec, allow_pickle=allow_pickle), allow_pickle=allow_pickle)
        require_causal_lm(src, spec)  # a PRM would be served as a pooling model, or its head dropped
        self.name, self.lora, self.chat_template = str(spec), None, chat_template
        model = src.gguf_file or src.path
        if src.kind == "peft":
            from pathlib import Path

            from vllm.lora.request import LoRARequest

            model = adapter_base_source(Path(src.path), allow_pickle=allow_pickle).path
            engine_kwargs.setdefault("enable_lora", True)
            self.lora = LoRARequest("adapter", 1, src.path)
        if not allow_pickle and src.kind != "gguf":
            engine_kwargs.setdefault("load_format", "safetensors")
        # "vllm": vLLM's neutral defaults, never the checkpoint's generation_config (every setting is sent anyway).
        engine_kwargs.setdefault("generation_config", "vllm")
        self.llm = vllm.LLM(model=model, dtype=dtype, trust_remote_code=trust_remote_code, **engine_kwargs)
        self._vllm = vllm
        self.context = _engine_context(self.llm)
        self._warned_context = False

    def generate(self, conversations, params, seeds=None):
        params.check()
        if not conversations:
            return []
        seeds = request_seeds(conversations, params, seeds)
        # One request per sample, each with its own seed: vLLM seeds a request, not each of its n samples, and
        # prefix caching shares the prompt's work between them.
        flat = [(i, seed) for i, row_seeds in enumerate(seeds) for seed in row_seeds]
        max_tokens = min(params.max_new_tokens, self.context or params.max_new_tokens)
        sampling = [
            self._vllm.SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p,
                                      top_k=params.top_k if params.top_k > 0 else -1, min_p=params.min_p,
                                      repetition_penalty=params.repetition_penalty,
                                      max_tokens=max_tokens, seed=seed)
            for _, seed in flat
        ]
        results: list[list[Completion]] = [[] for _ in conversations]
        # LLM.chat takes continue_final_message for a whole call: conversations that end with a partial assistant
        # message (continued from its end) go in a call of their own.
        for continued in (False, True):
            part = [j for j, (i, _) in enumerate(flat) if continues(conversations[i]) == continued]
            if not part:
                continue
            try:
                outs = self.llm.chat([conversations[flat[j][0]] for j in part], [sampling[j] for j in part],
                                     use_tqdm=False, add_generation_prompt=not continued,
                                     continue_final_message=continued, lora_request=self.lora,
                                     chat_template=self.chat_template)
            except ValueError as error:
                if "maximum model length" not in str(error) and "max_model_len" not in str(error):
                    raise
                raise UserError(f"a prompt does not fit the context of {self.name} ({self.context} tokens): {error}",
                                hint="serve a longer context (--max-model-len), or shorten the prompt") from None
            for j, out in zip(part, outs):
                o = out.outputs[0]
                results[flat[j][0]].append(
                    Completion(o.text, "length" if o.finish_reason == "length" else "stop", len(o.token_ids)))
                self._note_context_stop(out, params.max_new_tokens)
        return results

    def _note_context_stop(self, out, budget: int) -> None:
        """Warn once when a completion stopped at the context before the budget (vLLM says only "length")."""
        o = out.outputs[0]
        used = len(getattr(out, "prompt_token_ids", None) or []) + len(o.token_ids)
        if self._warned_context or not self.context or o.finish_reason != "length" or len(o.token_ids) >= budget \
                or used < self.context:
            return
        self._warned_context = True
        logger.warning("--max-new-tokens %d runs past the context of %s (%d tokens of prompt and completion, vLLM's "
                       "max_model_len): completions stop where they reach it (finish_reason 'length')", budget,
                       self.name, self.context)

    def close(self) -> None:
        self.llm = None  # drop the engine so its GPU memory can be freed


def _engine_context(llm) -> int | None:
    """The engine's max_model_len (prompt + completion tokens), where this vLLM exposes it."""
    for owner in (llm, getattr(llm, "llm_engine", None)):
        limit = getattr(getattr(owner, "model_config", None), "max_model_len", None)
        if isinstance(limit, int) and limit > 0:
            return limit
    return None
