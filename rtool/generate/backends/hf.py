"""The `hf` backend: transformers `generate` on a local model (CPU or GPU). Open it through
`rtool.generate.backends.open_backend`, or wrap an already loaded model: `HFBackend(model, tokenizer, name="policy")`.

How it generates (`HFBackend(generation=...)`, else the RTOOL_HF_GENERATION environment variable, else `loop`):

    loop        transformers `generate` with its dynamic KV cache, batches of `batch_size` rows (the default).
    static      the same `generate` and the same sampler, with a static (preallocated) KV cache; on CUDA transformers
                then compiles the decode step (torch.compile, CUDA graphs), and the backend pads a batch's row count
                to a power of two so few shapes get compiled. Samples keep every guarantee of `loop`.
    continuous  transformers' continuous batching (`model.generate_batch`, paged attention): up to `batch_size`
                rows at once, a finished row's place taken by the next. It samples with transformers' own sampler
                (temperature, top-k, top-p, min-p; no repetition penalty), seeded once per call from
                SamplingParams.seed: greedy output is the same as `loop`'s, but a sampled row is NOT reproducible
                from its own seed (it depends on the other rows and on scheduling). Opt in for throughput only.
"""

from __future__ import annotations

import contextlib
import logging
import os

from rtool.errors import UserError
from rtool.generate.backends.limits import (context_length, free_memory_bytes, gib, kv_cache_bytes_per_token,
                                            rows_that_fit)
from rtool.generate.core import Backend, Completion, SamplingParams, render_prompts, request_seeds
from rtool.log import logger

GENERATION_ENV = "RTOOL_HF_GENERATION"
GENERATION_MODES = ("loop", "static", "continuous")


def generation_mode(mode: str | None = None) -> str:
    """`mode`, else $RTOOL_HF_GENERATION, else "loop"; an unknown name is a UserError listing the valid ones."""
    if mode is None:
        mode = os.environ.get(GENERATION_ENV, "").strip() or "loop"
    if mode not in GENERATION_MODES:
        raise UserError(f"unknown hf generation mode {mode!r} ({GENERATION_ENV} or generation=)",
                        hint="valid: " + ", ".join(GENERATION_MODES))
    return mode


class HFBackend(Backend):
    """transformers `generate`, batched with left padding, KV cache on; tokens chosen by `rtool.generate.sampler`.

    Rows (prompt x seed) are sorted by prompt length, so a batch pads little, and go `batch_size` at a time; a row
    stops at its end of turn, and a batch when its last row does, so a large budget costs nothing while completions
    are short. The budget is params.max_new_tokens, less where a batch's longest prompt and its completion would run
    past the model's context (`limits.context_length`): one warning per backend, and a cut row ends "length" as
    usual. A prompt that fills the context alone gets an empty completion ("length").

    Memory: a batch's KV cache grows with what its rows generate. Where `batch_size` rows that all ran to the end of
    the budget would not fit in the free memory (`limits`: KV bytes per token from the config, the device's free
    memory, or `free_memory` bytes when given), batches take the rows that would, said once in the log. A batch that
    still runs out of CUDA memory is split in two and generated again, and later batches keep the smaller size.
    `max_batch_tokens` caps a batch's padded tokens (rows x (longest prompt + budget)) too, when given.

    What is sampled depends on rtool's settings alone: the checkpoint's generation_config (top_k, temperature,
    repetition_penalty, ...) is set aside during the call, and each row draws from its own seeded stream, so no
    global RNG is used and a row's sample does not depend on its batch. The caller's model keeps its train/eval mode
    and its tokenizer its padding side.

    `generation` picks loop, static or continuous (see the module docstring); None reads RTOOL_HF_GENERATION.
    """

    kind = "hf"

    def __init__(self, model, tokenizer, *, name: str, batch_size: int = 16, max_batch_tokens: int | None = None,
                 generation: str | None = None, free_memory: int | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.generation = generation_mode(generation)
        if self.generation == "continuous" and not callable(getattr(model, "generate_batch", None)):
            import transformers

            raise UserError(f"transformers {transformers.__version__} has no continuous batching for "
                            f"{type(model).__name__} (model.generate_batch)",
                            hint=f"set {GENERATION_ENV}=static or loop")
        # Static mode pads a batch's rows to a power of two where the decode step gets compiled (CUDA), so a
        # smaller last batch reuses a compiled shape instead of compiling a new one.
        self.pad_rows = self.generation == "static" and model.device.type == "cuda"
        self.batch_size, self.max_batch_tokens, self.free_memory = batch_size, max_batch_tokens, free_memory
        self.context = context_length(model.config)
        self.kv_bytes_per_token = kv_cache_bytes_per_token(model.config, model.dtype)
        self._rows_after_oom: int | None = None  # the batch size a CUDA out-of-memory error brought it down to
        self._said: set[str] = set()  # the notes and warnings already given: each once per backend
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        if not eos:
            raise UserError(f"model {name} has no eos token: generation could never stop")
        self.eos_ids = sorted(eos)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    @classmethod
    def load(cls, spec, *, batch_size=16, dtype="auto", device="auto", trust_remote_code=False,
             allow_pickle=False, max_batch_tokens=None, generation=None, chat_template=None) -> "HFBackend":
        from rtool.io.models import load_model

        generation = generation_mode(generation)  # a bad RTOOL_HF_GENERATION fails before the model loads
        model, tokenizer = load_model(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                      allow_pickle=allow_pickle, chat_template=chat_template)
        return cls(model, tokenizer, name=str(spec), batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                   generation=generation)

    def generate(self, conversations, params, seeds=None):
        import torch

        params.check()
        if not conversations:
            return []
        seeds = request_seeds(conversations, params, seeds)
        if self.generation == "continuous" and params.repetition_penalty != 1.0:
            raise UserError("--repetition-penalty is not supported by continuous batching "
                            f"({GENERATION_ENV}=continuous)", hint=f"set {GENERATION_ENV}=static or loop")
        prompts = render_prompts(self.tokenizer, conversations)
        results: list[list[Completion | None]] = [[None] * len(row_seeds) for row_seeds in seeds]
        rows = []
        for i, prompt in enumerate(prompts):
            if self._room(len(prompt)) >= 1:
                rows += [(i, k) for k in range(len(seeds[i]))]
            else:  # nothing can follow a prompt that fills the context
                self._once("full", logging.WARNING, "%s: a prompt of %d tokens fills the model's context (%d tokens) "
                           "on its own: its completions, and those of any other such prompt, are empty "
                           "(finish_reason 'length')", self.name, len(prompt), self.context)
                results[i] = [Completion("", "length", 0) for _ in seeds[i]]
        if not rows:
            return results
        if self.generation == "continuous":
            self._generate_continuous(prompts, rows, seeds, params, results)
            return results
        # Longest first: similar lengths share a batch, and an out-of-memory error shows up in the first batch.
        rows.sort(key=lambda row: -len(prompts[row[0]]))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), _checkpoint_defaults_set_aside(self.model):
                for batch, budget, size in self._batches(rows, prompts, params.max_new_tokens):
                    self._generate_rows(batch, budget, size, prompts, seeds, params, results)
        finally:
            self.model.train(was_training)
        return results

    def _room(self, prompt_tokens: int) -> float:
        """How many tokens the model's context leaves after a prompt (unbounded when its config states no limit)."""
        return float("inf") if self.context is None else self.context - prompt_tokens

    def _budget(self, longest: int, max_new_tokens: int) -> int:
        """max_new_tokens, or what the context leaves after the longest prompt of a batch (warned once)."""
        room = self._room(longest)
        if max_new_tokens <= room:
            return max_new_tokens
        self._once("context", logging.WARNING, "--max-new-tokens %d runs past the context of %s (%d tokens of prompt "
                   "and completion): completions stop where they reach it (finish_reason 'length')", max_new_tokens,
                   self.name, self.context)
        return int(room)

    def _batches(self, rows, prompts, max_new_tokens):
        """(rows, budget, planned size) per batch: `batch_size` rows, or as many as memory holds at worst."""
        start = 0
        while start < len(rows):
            longest = len(prompts[rows[start][0]])  # sorted longest first: the first row sets the padded width
            budget = self._budget(longest, max_new_tokens)
            size = self._rows_per_batch(longest + budget)
            yield rows[start:start + size], budget, size
            start += size

    def _rows_per_batch(self, tokens_per_row: int) -> int:
        size = min(self.batch_size, self._rows_after_oom or self.batch_size)
        if self.max_batch_tokens:
            size = max(1, min(size, self.max_batch_tokens // tokens_per_row))
        if size == 1 or self.kv_bytes_per_token is None:
            return size
        free = self.free_memory if self.free_memory is not None else free_memory_bytes(self.model.device)
        if free is None:
            return size
        fit = rows_that_fit(size, tokens_per_row=tokens_per_row, bytes_per_token=self.kv_bytes_per_token, free=free)
        if fit < size:
            self._once("memory", logging.INFO, "batches of %d rows, not %d: %d rows that all ran to their %d tokens "
                       "(prompt + --max-new-tokens) would need %s of KV cache, and %s is free on %s; a smaller "
                       "--max-new-tokens allows larger batches", fit, size, size, tokens_per_row,
                       gib(size * tokens_per_row * self.kv_bytes_per_token), gib(free), self.model.device)
        return fit

    def _generate_rows(self, batch, budget: int, size: int, prompts, seeds, params, results) -> None:
        """Generate `batch` into `results`; on a CUDA out-of-memory error, in two halves (and smaller batches after)."""
        import torch

        try:
            completions = self._generate_batch([prompts[i] for i, _ in batch], [seeds[i][k] for i, k in batch],
                                               params, budget, size)
        except torch.OutOfMemoryError:
            completions = None  # split below, once the exception has let go of the failed batch's tensors
        if completions is None:
            if len(batch) == 1:
                raise UserError(f"out of memory on {self.model.device} generating one row of "
                                f"{len(prompts[batch[0][0]])} prompt tokens and up to {budget} new ones",
                                hint="lower --max-new-tokens, or free the device")
            half = (len(batch) + 1) // 2
            self._rows_after_oom = half
            logger.warning("out of memory on %s with %d rows in a batch: generating them again, and later batches, %d "
                           "at a time (each row draws from its own seed: the same samples)", self.model.device,
                           len(batch), half)
            if self.model.device.type == "cuda":
                torch.cuda.empty_cache()
            for part in (batch[:half], batch[half:]):
                self._generate_rows(part, budget, half, prompts, seeds, params, results)
            return
        for (i, k), completion in zip(batch, completions):
            results[i][k] = completion

    def _generate_batch(self, prompts: list[list[int]], seeds: list[int], params: SamplingParams, budget: int,
                        size: int) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        real = len(prompts)
        extra = {}
        if self.generation == "static":
            extra["cache_implementation"] = "static"  # preallocated for prompt + budget
            if self.pad_rows:
                # Filler rows (copies of the last one) bring the row count to a compiled shape; dropped below.
                filler = min(1 << (real - 1).bit_length(), max(real, size)) - real
                prompts, seeds = prompts + [prompts[-1]] * filler, seeds + [seeds[-1]] * filler
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
        device = self.model.device
        chooser = _RowSampler(params, seeds, [width - len(p) for p in prompts], width, budget, device)
        out = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            max_new_tokens=budget, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            use_cache=True, do_sample=False, num_beams=1, logits_processor=LogitsProcessorList([chooser]), **extra,
        )
        new = out[:real, width:].tolist()
        return [self._completion(tokens) for tokens in new]

    def _generate_continuous(self, prompts, rows, seeds, params: SamplingParams, results) -> None:
        """All rows through transformers' continuous batching at once; transformers samples (see the module doc).
        One budget for the call: what the context leaves after its longest prompt, if less than max_new_tokens."""
        import torch
        from transformers import GenerationConfig

        inputs = [prompts[i] for i, _ in rows]
        budget = self._budget(max(map(len, inputs)), params.max_new_tokens)
        sampling = {} if params.greedy else {
            "temperature": params.temperature, "top_k": params.top_k or None,
            "top_p": params.top_p if params.top_p < 1.0 else None, "min_p": params.min_p or None}
        saved = self.model.generation_config
        config = GenerationConfig(
            max_new_tokens=budget, do_sample=not params.greedy, eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id, bos_token_id=saved.bos_token_id, **sampling)
        device = self.model.device
        was_training = self.model.training
        try:
            # transformers samples from the global generator: seed it for this call and put it back afterwards.
            cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda), _checkpoint_defaults_set_aside(self.model):
                torch.manual_seed(params.seed)
                outputs = self.model.generate_batch(
                    inputs, generation_config=config, max_new_tokens=budget, progress_bar=False,
                    continuous_batching_config=self._continuous_config(inputs, budget))
        finally:
            self.model.train(was_training)
        outputs = list(outputs.values())  # in request order, which is input order
        failed = [out for out in outputs if getattr(out, "error", None)]
        if len(outputs) != len(inputs) or failed:
            detail = f": {failed[0].error}" if failed else ""
            raise RuntimeError(f"continuous batching returned {len(outputs) - len(failed)} of {len(inputs)} "
                               f"completions{detail}")
        for (i, k), prompt, out in zip(rows, inputs, outputs):
            if list(out.prompt_ids) != list(prompt):
                raise RuntimeError("continuous batching returned completions out of order")
            results[i][k] = self._completion(list(out.generated_tokens)[:budget])

    def _continuous_config(self, inputs, budget: int):
        """A ContinuousBatchingConfig sized for this call: `batch_size` rows at once (fewer where memory holds fewer
        at worst, as in the loop mode), KV pages for each of them (transformers would otherwise size its cache from
        free memory, slow to set up on a CPU). Only the fields this transformers has are set (their names moved
        between releases)."""
        import dataclasses
        import math

        from transformers import ContinuousBatchingConfig

        fields = {f.name: f for f in dataclasses.fields(ContinuousBatchingConfig)}
        page = next((fields[name].default for name in ("page_size", "block_size")
                     if name in fields and isinstance(fields[name].default, int)), 256)
        longest = max(len(p) for p in inputs)
        rows = min(len(inputs), self._rows_per_batch(longest + budget))
        pages_per_row = math.ceil((longest + budget + 1) / page)
        wanted = {"num_blocks": rows * pages_per_row + 1, "max_requests_per_batch": rows}
        if self.model.device.type != "cuda":
            wanted["max_batch_tokens"] = max(256, rows)
        return ContinuousBatchingConfig(**{key: value for key, value in wanted.items() if key in fields})

    def _once(self, key: str, level: int, message: str, *args) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.log(level, message, *args)

    def _completion(self, tokens: list[int]) -> Completion:
        eos = set(self.eos_ids)
        end = next((j for j, tok in enumerate(tokens) if tok in eos), None)
        if end is None:
            # No end of turn: the row ran to max_new_tokens (rows that ended earlier were padded after their eos).
            body, reason, count = tokens, "length", len(tokens)
        else:
            body, reason, count = tokens[:end], "stop", end + 1
        body = [tok for tok in body if tok != self.pad_id]
        return Completion(self.tokenizer.decode(body, skip_special_tokens=False), reason, count)


class _RowSampler:
    """A logits processor that picks each row's next token itself (rtool.generate.sampler) and leaves only that token
    possible, so transformers' greedy step takes it. transformers' own warpers never run."""

    def __init__(self, params: SamplingParams, seeds: list[int], starts: list[int], width: int, steps: int, device):
        import torch

        from rtool.generate.sampler import row_uniforms

        self.params, self.width = params, width
        # A row's uniforms are the first `steps` of its seed's stream: the same ones whatever the budget.
        self.uniforms = None if params.greedy else row_uniforms(seeds, steps, device)
        self.starts = torch.tensor(starts, device=device).unsqueeze(1)  # where each row's text begins

    def __call__(self, input_ids, scores):
        import torch

        from rtool.generate.sampler import choose

        step = input_ids.shape[1] - self.width
        history_mask = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0) >= self.starts
        uniforms = None if self.uniforms is None else self.uniforms[:, step]
        tokens = choose(scores, self.params, uniforms, input_ids, history_mask)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, tokens.unsqueeze(1), 0.0)


@contextlib.contextmanager
def _checkpoint_defaults_set_aside(model):
    """Generate with transformers' neutral defaults instead of the checkpoint's generation_config (which would fill
    in every setting the call leaves unset: top_k, repetition_penalty, no_repeat_ngram_size, ...)."""
    from transformers import GenerationConfig

    saved = model.generation_config
    neutral = GenerationConfig(bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id,
                               pad_token_id=saved.pad_token_id, decoder_start_token_id=saved.decoder_start_token_id)
    model.generation_config = neutral
    try:
        yield
    finally:
        model.generation_config = saved
