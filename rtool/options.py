"""Flags shared by several commands, defined once so their names and help read the same everywhere.

    def distill_cmd(input: InputOpt = "-", out: OutOpt = "-", seed: SeedOpt = 0): ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# Sized for reasoning models, not for the CPU: DeepSeek-R1 and QwQ traces run to 16-32k tokens, and open-r1 generates
# and evaluates with 32768 new tokens (its lighteval math evals; its Mixture-of-Thoughts traces) and trains its
# distilled models at max_length 32768 (recipes/OpenR1-Distill-7B). A smaller budget cuts traces off: they end with
# finish_reason 'length', grade false and are silently dropped by sft. A run only costs what its traces use (the
# budget is a cap: the hf backend batches --batch-size rows whatever it is, and every backend clamps it to the
# model's context; bench/generation_budget.py); the examples pass their own small values all the same.
DEFAULT_MAX_NEW_TOKENS = 32768
DEFAULT_MAX_LENGTH = 32768

# Where rows come from (rtool.io.records.read_records): the help of every data flag names the same sources.
DATA_SOURCES = ("a .jsonl/.json/.parquet/.csv file (or .jsonl.gz ...), a saved HF dataset dir, a folder of data "
                "files as the hub lays them out (DIR/data/train-*.parquet, DIR/test.jsonl), a hub dataset id "
                "(org/name; offline from the local hub cache), a benchmark rtool ships (gsm8k, math500; MATH-500 too)")
InputOpt = Annotated[str, typer.Option("--input", "-i", help=f"Input rows: {DATA_SOURCES}, or '-' for stdin.")]
# Commands that merge several sources (difficulty, select): more inputs as arguments after --input.
FilesArg = Annotated[Optional[list[str]], typer.Argument(metavar="FILES", show_default=False, help="More input sources (read after --input when it is given), e.g. one file per teacher.")]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="Split of a dataset with several (e.g. test); required when it has more than one.")]
SubsetOpt = Annotated[Optional[str], typer.Option("--subset", help="Subset (datasets' config name) of a hub dataset or data folder, e.g. main for openai/gsm8k.")]
OutOpt = Annotated[str, typer.Option("--out", "--output", "-o", help="Output JSONL path (written row by row, flushed per row) or '-' for stdout.")]
WholeOutOpt = Annotated[str, typer.Option("--out", "--output", "-o", help="Output JSONL path, written whole when the run ends without an error (into a temporary file beside it, renamed over it at the end: a failed or killed run leaves no file, or the old one as it was), or '-' for stdout.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace --out when it already holds rows (default: refuse). The file is replaced when the run ends whole; a failed run leaves it as it was.")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip malformed input lines (counted on stderr) instead of stopping.")]
PromptFieldOpt = Annotated[Optional[str], typer.Option("--prompt-field", help="Field holding the prompt (default: auto: prompt, messages, question, problem).")]
AnswerFieldOpt = Annotated[Optional[str], typer.Option("--answer-field", help="Field holding the gold answer (default: auto: answer with '#### n', answer, gold, solution's last \\boxed{}).")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", help="System prompt added before each conversation.")]
NoSystemOpt = Annotated[bool, typer.Option("--no-system", help="No system prompt (distill, eval and sft default to asking for step-by-step reasoning and a \\boxed{} answer).")]

TrustRemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run model code shipped with the checkpoint (off by default: it executes arbitrary Python).")]
AllowPickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Load pickle (.bin/.pt) weights; refused by default since unpickling can execute code.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on GPUs that support it, fp32 on CPU) | float32 | bfloat16 | float16.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]

BackendOpt = Annotated[str, typer.Option("--backend", help="Generation backend: auto | hf | vllm | openai (auto: openai for http(s) URLs, vllm when installed with a GPU, else hf).")]
NumSamplesOpt = Annotated[int, typer.Option("--num-samples", "-n", help="Samples per prompt.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 is greedy.")]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Sample only among the k most likely tokens; 0 is off.")]
MinPOpt = Annotated[float, typer.Option("--min-p", help="Drop tokens less likely than min-p x the most likely one; 0 is off.")]
RepetitionPenaltyOpt = Annotated[float, typer.Option("--repetition-penalty", help="Divide (multiply, if negative) the logits of tokens already in the conversation by this; 1 is off.")]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Longest completion in tokens; longer ones stop with finish_reason 'length' (a warning names their share above 5%). The default, 32768, is open-r1's budget for reasoning traces (R1/QwQ run to 16-32k tokens). A cap, not a cost: batches keep --batch-size rows and each row stops at its end of turn; a budget past the model's context stops at the context (one warning).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (sampling, shuffling, init).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Sequences (prompt x sample) per generation batch (hf), or concurrent requests per endpoint (openai).")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (key from OPENAI_API_KEY).")]
ApiModelOpt = Annotated[Optional[str], typer.Option("--api-model", help="Model name sent to an OpenAI-compatible endpoint (default: the first from /v1/models).")]
RequestTimeoutOpt = Annotated[float, typer.Option("--request-timeout", help="Seconds per HTTP request to an endpoint (long: a non-streaming server answers only when a whole reasoning trace is done).")]
ChatTemplateOpt = Annotated[Optional[Path], typer.Option("--chat-template", help="A Jinja chat template file used in place of the tokenizer's (a base model has none; TRL's --chat_template_path). hf backend and training: set on the tokenizer (a trained OUT keeps it); vllm: LLM.chat's chat_template; openai: sent as the request's chat_template (vLLM's and SGLang's servers take it).")]
# vLLM engine options (--backend vllm only; unset: vLLM's defaults). rtool.generate.backends.vllm.engine_options.
TensorParallelSizeOpt = Annotated[Optional[int], typer.Option("--tensor-parallel-size", help="vllm backend: GPUs the model is split across (vLLM's tensor parallelism) [default: 1].", show_default=False)]
GpuMemoryUtilizationOpt = Annotated[Optional[float], typer.Option("--gpu-memory-utilization", help="vllm backend: share of each GPU's memory vLLM may take, in (0, 1] [default: vLLM's 0.9].", show_default=False)]
MaxModelLenOpt = Annotated[Optional[int], typer.Option("--max-model-len", help="vllm backend: longest prompt + completion in tokens the engine plans for (less KV-cache memory than the model's full context) [default: the model's].", show_default=False)]

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file of flag values (precedence: defaults < YAML < flags).")]

# Training commands (sft, redi, grpo). Defaults live in each command's signature: they differ between recipes.
# The second long name of a flag is TRL's (transformers' TrainingArguments, TRL's ModelConfig and ScriptArguments), so
# a TRL command line runs as it is; `--learning_rate` spellings are read as `--learning-rate` (rtool.cli).
TrainModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", "--model-name-or-path", help="Model to train: a local HF dir, a hub id, a .gguf file or a PEFT adapter dir.")]
TrainDataOpt = Annotated[Optional[str], typer.Option("--data", "-d", "--dataset-name", help=f"Training rows: {DATA_SOURCES}, or '-' for stdin (not under torchrun); not given, rows piped in are read.")]
OutDirOpt = Annotated[Optional[Path], typer.Option("--out", "-o", "--output-dir", help="Output directory, new or empty (a directory holding other files is refused): the final model (safetensors + tokenizer), its card README.md, metrics.jsonl, curves.png, run_settings.json, trainer_state.json, and checkpoint-N/ dirs while it trains.")]
EpochsOpt = Annotated[float, typer.Option("--epochs", "--num-train-epochs", help="Passes over the data (ignored when --max-steps is set).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps (overrides --epochs); -1, TRL's default, leaves it unset.")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", "--learning-rate", help="Peak learning rate (AdamW).")]
LrSchedulerOpt = Annotated[str, typer.Option("--lr-scheduler", "--lr-scheduler-type", help="linear | cosine | cosine_with_restarts | polynomial | constant | constant_with_warmup | inverse_sqrt | cosine_with_min_lr, cosine_warmup_with_min_lr (cosine down to 0.1 x --lr) | warmup_stable_decay (--lr held after the warmup, cosine decay to 0 over the last 10% of the steps). transformers' schedulers.")]
WarmupRatioOpt = Annotated[float, typer.Option("--warmup-ratio", help="Fraction of the steps spent warming the learning rate up from 0, in [0, 1).")]
TrainBatchSizeOpt = Annotated[int, typer.Option("--batch-size", "--per-device-train-batch-size", help="Sequences per device per step; the global batch is batch-size x grad-accum x processes.")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", "--gradient-accumulation-steps", help="Gradient accumulation steps per optimizer step.")]
LoggingStepsOpt = Annotated[int, typer.Option("--logging-steps", help="Write a metrics.jsonl row and a progress line every N optimizer steps, and at each checkpoint.")]
SaveStepsOpt = Annotated[int, typer.Option("--save-steps", help="Save a resumable checkpoint every N steps in OUT/checkpoint-N (the last 2 are kept; removed when the run finishes unless --keep-checkpoints); 0 saves none.")]
KeepCheckpointsOpt = Annotated[bool, typer.Option("--keep-checkpoints", help="Keep OUT/checkpoint-N when the run finishes (default: removed then, with their optimizer, scheduler and RNG pickles, twice the model's size or more; the final model is in OUT).")]
ResumeTrainOpt = Annotated[bool, typer.Option("--resume", "--resume-from-checkpoint", help="Continue from the last complete OUT/checkpoint-N (starts fresh, with a warning, when there is none; a run that finished has nothing left to train), with the settings the run started with: other flags are refused, and so is data whose bytes changed (compared by size and sha256; paths resolved, so another working directory or ./x for x is the same file; stdin and hub ids by name).")]
TrainOverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an earlier rtool run in OUT (one with run_settings.json or metrics.jsonl): before training starts, the files that run wrote (model, checkpoint-N/, metrics, card, ...) are deleted, nothing else; refused when that would delete an input (--model OUT/checkpoint-N) or the current directory.")]
GradientCheckpointingOpt = Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in the backward pass: less memory, about 20-30% slower. Default auto: on for full fine-tuning on a GPU (where activations of long traces fill the memory, as TRL and open-r1 do), off on the CPU and with --lora.", show_default=False)]
LoraOpt = Annotated[bool, typer.Option("--lora", "--use-peft", help="Train a LoRA adapter (PEFT) instead of all weights; OUT holds the adapter.")]
LoraROpt = Annotated[int, typer.Option("--lora-r", help="LoRA rank.")]
LoraAlphaOpt = Annotated[int, typer.Option("--lora-alpha", help="LoRA scaling alpha (the update is scaled by alpha / r).")]
LoraDropoutOpt = Annotated[float, typer.Option("--lora-dropout", help="Dropout on the LoRA branch.")]
LoraTargetsOpt = Annotated[str, typer.Option("--lora-targets", "--lora-target-modules", help="Comma-separated module names to adapt (e.g. q_proj,v_proj), or all-linear.")]
MergeLoraOpt = Annotated[bool, typer.Option("--merge-lora", help="With --lora, also write the base model with the adapter merged in, to OUT/merged.")]
# Training: the length and precision policies (rtool.train.data, rtool.train.core.precision).
TrainMaxLengthOpt = Annotated[int, typer.Option("--max-length", help="Longest tokenized row (prompt + completion); longer rows follow --truncation and are counted on stderr. The default, 32768, is open-r1's for long reasoning traces (a row is padded only to its batch's longest, so short data costs no more).")]
TruncationOpt = Annotated[str, typer.Option("--truncation", help="Rows longer than --max-length: drop (not trained on) | keep-start (train on their first max-length tokens: the final answer and end of turn are lost).")]
TrainDtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (CPU: float32; GPU: float32 master weights with bf16 autocast, bf16 base weights with --lora) | float32 | bfloat16 (bf16 weights, also for full fine-tuning) | float16 (fp16 autocast).")]
ReportToOpt = Annotated[str, typer.Option("--report-to", help="Also send training metrics to: none | tensorboard (event files under OUT/runs; pip install 'rtool[tensorboard]') | wandb (settings and key from WANDB_* environment variables; pip install 'rtool[wandb]'). OUT/metrics.jsonl and OUT/curves.png are written either way.")]

# Process rewards (prm-score; prm-label will split steps the same way).
StepSepOpt = Annotated[str, typer.Option("--step-sep", help="What separates a completion's steps; the escapes \\n \\r \\t \\\\ work ('\\n\\n', the default, is a blank line; '\\r\\n\\r\\n' a Windows one), others are refused. Steps are stripped, empty ones dropped.")]
