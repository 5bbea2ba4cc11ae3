"""The `hf` backend: transformers `generate` on a local model (CPU or GPU). Open it through
`rtool.generation.open_backend`, or wrap an already loaded model: `HFBackend(model, tokenizer, name="policy")`."""

from __future__ import annotations

from rtool.errors import UserError
from rtool.generation import Backend, Completion, SamplingParams, render_prompts


class HFBackend(Backend):
    """transformers `generate`, batched with left padding, KV cache on.

    Rows (prompt x sample) are sorted by prompt length so a batch pads little; a batch holds at most `batch_size`
    rows and `max_batch_tokens` padded tokens (prompt + new), so long prompts get smaller batches.
    """

    def __init__(self, model, tokenizer, *, name: str, batch_size: int = 16, max_batch_tokens: int | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or batch_size * 2048
        tokenizer.padding_side = "left"
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
             allow_pickle=False, max_batch_tokens=None) -> "HFBackend":
        from rtool.models import load_model

        model, tokenizer = load_model(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                      allow_pickle=allow_pickle)
        return cls(model, tokenizer, name=str(spec), batch_size=batch_size, max_batch_tokens=max_batch_tokens)

    def generate(self, conversations, params):
        import torch

        params.check()
        if not conversations:
            return []
        prompts = render_prompts(self.tokenizer, conversations)
        rows = [(i, k) for i in range(len(prompts)) for k in range(params.n)]
        # Longest first: similar lengths share a batch, and an out-of-memory error shows up in the first batch.
        rows.sort(key=lambda row: -len(prompts[row[0]]))
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        torch.manual_seed(params.seed)
        with torch.inference_mode():
            for batch in self._batches(rows, prompts, params.max_new_tokens):
                outs = self._generate_batch([prompts[i] for i, _ in batch], params)
                for (i, k), completion in zip(batch, outs):
                    results[i][k] = completion
        return results

    def _batches(self, rows, prompts, max_new_tokens):
        batch: list = []
        for row in rows:
            # Sorted longest first, so the batch's first row sets its padded width.
            width = len(prompts[(batch or [row])[0][0]]) + max_new_tokens
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * width > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(row)
        if batch:
            yield batch

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
        sampling = {"do_sample": False} if params.temperature == 0 else {
            "do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        device = self.model.device
        out = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            use_cache=True, **sampling,
        )
        new = out[:, width:].tolist()
        return [self._completion(tokens) for tokens in new]

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
