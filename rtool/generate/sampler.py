"""Token sampling as rtool defines it, the same on every local backend: pure tensor functions.

    probs = sampling_probs(logits, params, history=ids, history_mask=mask)  # penalty, temperature, top-k/p, min-p
    tokens = draw(probs, uniforms)                                            # inverse CDF, one uniform per row

Each row draws from its own stream of uniforms (`row_uniforms`: a generator seeded with the sample's seed), so a
sample does not depend on which other rows share its batch, and no global RNG is touched. Filters follow vLLM's and
transformers' definitions: repetition penalty (CTRL, Keskar et al. 2019: a seen token's positive logit is divided
by the penalty, a negative one multiplied), temperature, top-k (the k most likely), top-p (the smallest set whose
mass reaches p; the token that crosses it is kept), min-p (tokens below min_p x the top probability dropped).
"""

from __future__ import annotations


def row_uniforms(seeds: list[int], steps: int, device=None):
    """A (rows, steps) tensor of uniforms in (0, 1], row i drawn from a CPU generator seeded with seeds[i]."""
    import torch

    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        rows.append(1.0 - torch.rand(steps, generator=generator, dtype=torch.float64))  # (0, 1]: never 0
    return torch.stack(rows).to(device) if rows else torch.empty(0, steps, dtype=torch.float64, device=device)


def penalize_repeats(logits, history, history_mask, penalty: float):
    """CTRL's repetition penalty over the tokens in `history` where `history_mask` is true (padding is not text)."""
    import torch

    if penalty == 1.0:
        return logits
    seen = torch.zeros(logits.shape, dtype=torch.long, device=logits.device)
    seen.scatter_reduce_(1, history, history_mask.long(), reduce="amax")
    seen = seen.bool()
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def sampling_probs(logits, params, history=None, history_mask=None):
    """Probabilities (float32, rows sum to 1) after rtool's filters; `logits` is (rows, vocab)."""
    import torch

    logits = logits.float()
    if history is not None and params.repetition_penalty != 1.0:
        mask = history_mask if history_mask is not None else torch.ones_like(history, dtype=torch.bool)
        logits = penalize_repeats(logits, history, mask, params.repetition_penalty)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if params.top_k and params.top_k < probs.shape[-1]:
        kth = torch.topk(probs, params.top_k, dim=-1).values[:, -1:]
        keep &= probs >= kth
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        keep_sorted = mass_before < params.top_p
        keep &= torch.zeros_like(keep).scatter(1, order, keep_sorted)
    if params.min_p > 0:
        keep &= probs >= params.min_p * probs.max(dim=-1, keepdim=True).values
    probs = probs * keep
    return probs / probs.sum(dim=-1, keepdim=True)


def draw(probs, uniforms):
    """One token per row by inverse CDF: the first token whose cumulative mass reaches the row's uniform in (0, 1].
    A token of probability 0 is never drawn (the cumulative sum does not rise there)."""
    import torch

    cdf = torch.cumsum(probs.double(), dim=-1)
    target = uniforms.to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
    index = torch.searchsorted(cdf, target).squeeze(-1)
    return index.clamp_(max=probs.shape[-1] - 1)


def choose(logits, params, uniforms, history=None, history_mask=None):
    """The next token of each row: argmax at temperature 0 (after the repetition penalty), else a draw."""
    import torch

    if params.greedy:
        if history is not None and params.repetition_penalty != 1.0:
            mask = history_mask if history_mask is not None else torch.ones_like(history, dtype=torch.bool)
            logits = penalize_repeats(logits.float(), history, mask, params.repetition_penalty)
        return logits.argmax(dim=-1)
    return draw(sampling_probs(logits, params, history, history_mask), uniforms)
