"""The student's negative log-likelihood of each trace, on the tokens sft would train on: the conversation and the
completion (its end of turn included) tokenized by `rtool.train.data` exactly as `SFTExamples` does, then one
forward pass per row, no backward (`torch.inference_mode`).

    scorer = NLLScorer(model, tokenizer, FieldMap(), system=REASONING_SYSTEM_PROMPT, batch_size=8)
    encoded = [scorer.encode(row) for row in rows]           # ids and completion mask; a bad row: UserError
    for index, nll, tokens in scorer.score(encoded): ...     # batches of similar length, longest first

`nll` is the mean over the completion tokens of -log p(token | the tokens before it), in nats: the per-token loss sft
minimises on that row, so a lower value is a trace the student already finds likely (DED's and "Not All Correct
Answers Are Equal"'s measure of how well a teacher's traces suit a student). Rows are right-padded with an attention
mask: real tokens keep their positions and never attend to padding, so batch size and composition do not change a
value beyond float rounding. The log-softmax is taken in float32 whatever the weights' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from rtool.grade.fields import FieldMap
from rtool.train.data import completion_text, prompt_messages, system_not_applied, tokenize_completion


@dataclass
class Encoded:
    ids: list[int]
    mask: list[int]  # 1 on the completion tokens (end of turn included), as sft's completion_mask

    @property
    def completion_tokens(self) -> int:
        return sum(self.mask)


class NLLScorer:
    def __init__(self, model, tokenizer, fields: FieldMap, system: str | None, batch_size: int = 8) -> None:
        self.model, self.tokenizer, self.fields, self.system = model, tokenizer, fields, system
        self.batch_size = batch_size
        self.recorded = 0  # rows scored on the conversation they carry (prompt_messages won over --system)

    def encode(self, row) -> Encoded:
        """The row as sft tokenizes it (`rtool.train.data`); UserError naming the row's file:line and field."""
        messages, recorded = prompt_messages(row, self.fields, self.system)
        ids, mask = tokenize_completion(self.tokenizer, messages, completion_text(row, self.fields))
        self.recorded += system_not_applied(messages, recorded, self.system)
        return Encoded(ids, mask)

    def score(self, encoded: Sequence[Encoded]) -> Iterator[list[tuple[int, float, int]]]:
        """Run `encoded` in batches of similar length (longest first); yield each batch's (index, mean nll, completion
        tokens) as it finishes."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            batch = [encoded[i] for i in indices]
            yield [(i, nll, item.completion_tokens) for i, nll, item in zip(indices, self._forward(batch), batch)]

    def _forward(self, batch: list[Encoded]) -> list[float]:
        """One forward pass over right-padded `batch`; each row's mean nll over its completion tokens."""
        import torch

        width = max(len(item.ids) for item in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, item in enumerate(batch):
            ids[row, :len(item.ids)] = torch.tensor(item.ids, dtype=torch.long)
            attention[row, :len(item.ids)] = 1
            targets[row, :len(item.mask)] = torch.tensor(item.mask, dtype=torch.bool)
        device = self.model.device
        ids, attention, targets = ids.to(device), attention.to(device), targets.to(device)
        # Token t is predicted by the logits at t - 1: the first token (never a completion token) has no prediction.
        targets[:, 0] = False
        rows, columns = targets.nonzero(as_tuple=True)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=attention).logits
            # Only the completion positions go through log-softmax, in float32: (tokens, vocab), not (batch, width, vocab).
            logits = hidden[rows, columns - 1].float()
            losses = torch.nn.functional.cross_entropy(logits, ids[rows, columns], reduction="none")
            sums = torch.zeros(len(batch), device=device).index_add_(0, rows, losses)
            counts = torch.zeros(len(batch), device=device).index_add_(0, rows, torch.ones_like(losses))
        return (sums / counts.clamp(min=1)).cpu().tolist()  # one transfer for the whole batch
