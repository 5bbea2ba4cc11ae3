"""`rtool nll`'s scoring pass against sft's forward + backward on the same rows, on the CPU.

    python bench/nll.py    # writes the "nll" section of bench/RESULTS.md

A random Llama (hidden 128, 2 layers, character tokenizer) and 256 quickstart arithmetic traces (prompt: the problem,
completion: the solution), tokenized once by rtool.train.nll (as sft tokenizes them). nll: NLLScorer.score (batches
of 8 by length, inference_mode, float32 log-softmax on the completion positions). sft: the same batches, right-padded
the same way, the causal-LM loss on the completion tokens (labels -100 elsewhere) with its backward pass, as a
training step costs before the optimizer. tokens/s: all tokens of the rows (prompt + completion) over the best of 3
runs' seconds, torch on 1 thread.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models on shared cores: 1 thread is fastest (see "generation")

from common import machine, task_and_model, write_section  # noqa: E402

ROWS = 256
BATCH = 8
REPEATS = 3


def best_seconds(function) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def sft_pass(model, tokenizer, encoded) -> None:
    """Forward + backward over `encoded` in the scorer's batches: the loss sft minimises, without the optimizer."""
    import torch

    model.train()
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
    for start in range(0, len(order), BATCH):
        batch = [encoded[i] for i in order[start:start + BATCH]]
        width = max(len(item.ids) for item in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, item in enumerate(batch):
            ids[row, :len(item.ids)] = torch.tensor(item.ids)
            attention[row, :len(item.ids)] = 1
            labels[row, :len(item.ids)] = torch.where(torch.tensor(item.mask, dtype=torch.bool),
                                                      torch.tensor(item.ids), -100)
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)
    model.eval()


def main() -> None:
    import json

    import torch

    from rtool.generate.traces import REASONING_SYSTEM_PROMPT
    from rtool.grade.fields import FieldMap
    from rtool.io.models import load_model
    from rtool.io.records import read_records
    from rtool.train.nll import NLLScorer

    torch.set_num_threads(1)
    header = machine()
    with tempfile.TemporaryDirectory() as scratch:
        model_dir, task = task_and_model(Path(scratch), n=ROWS, ops=("add", "sub"), hidden_size=128)
        traces = Path(scratch) / "traces.jsonl"
        traces.write_text("".join(json.dumps({"id": row["id"], "prompt": row["problem"], "completion": row["solution"]})
                                  + "\n" for row in read_records(task)))
        model, tokenizer = load_model(model_dir, device="cpu", dtype="float32")
        scorer = NLLScorer(model, tokenizer, FieldMap(), REASONING_SYSTEM_PROMPT, batch_size=BATCH)
        encoded = [scorer.encode(row) for row in read_records(traces)]
        tokens = sum(len(item.ids) for item in encoded)
        nll_s = best_seconds(lambda: [batch for batch in scorer.score(encoded)])
        sft_s = best_seconds(lambda: sft_pass(model, tokenizer, encoded))
    rate_nll, rate_sft = tokens / nll_s, tokens / sft_s
    body = (f"`python bench/nll.py` on {header}: {ROWS} quickstart arithmetic traces ({tokens:,} tokens, "
            f"{tokens // ROWS} a row) on a random Llama (hidden 128, 2 layers, character tokenizer), batches of "
            f"{BATCH} by length, one torch thread, best of {REPEATS}.\n\n"
            "| pass | seconds | tokens/s |\n|---|---|---|\n"
            f"| rtool nll (NLLScorer.score: forward, inference_mode) | {nll_s:.2f} | {rate_nll:,.0f} |\n"
            f"| sft's forward + backward (same batches, completion-only loss) | {sft_s:.2f} | {rate_sft:,.0f} |\n\n"
            f"nll / sft tokens/s: **{rate_nll / rate_sft:.2f}x** (goal >= 2x: no backward). The machine is shared and "
            "loaded: compare the ratio, not the rates.")
    write_section("nll", body)
    print(body)


if __name__ == "__main__":
    main()
