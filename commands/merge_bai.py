"""merge-bai: Balanced Actor Initialization (arXiv 2509.00309), a two-stage weighted merge before RL.

Reads three HF model dirs (safetensors, one file or shards) or PEFT LoRA adapter dirs; writes one merged model
dir, or one per (w, v) point with --sweep, and prints each output dir on stdout:

    stage 1:  mid = w * reasoning + (1 - w) * instruct
    stage 2:  bai = v * mid + (1 - v) * pretrained

    rtool merge-bai -r ckpt/sft --instruct-model Qwen2.5-1.5B-Instruct -p Qwen2.5-1.5B --out ckpt/bai
    rtool merge-bai -r ckpt/sft --instruct-model I -p P --out ckpt/bai --sweep 0.3:0.5,0.5:0.5,0.7:0.5 \\
        | xargs -n1 -I{} rtool eval --model {} --bench math500.jsonl
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtool.errors import UserError, one_of

# w = v = 0.5 are rtool's defaults, not the paper's: its ratios were not found in the text we could read. Equal
# shares are the "balanced" middle of each stage: the result is 1/4 reasoning, 1/4 instruct, 1/2 pretrained.
DEFAULT_W = 0.5
DEFAULT_V = 0.5


def merge_bai_cmd(
    reasoning: Annotated[Path, typer.Option("--reasoning", "-r", help="Reasoning model dir (e.g. the SFT/distilled "
                                            "model) or a LoRA adapter dir.", show_default=False)],
    pretrained: Annotated[Path, typer.Option("--pretrained", "-p", help="Pretrained (base) model dir or LoRA "
                                             "adapter dir.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "--output", "-o", help="Output dir (with --sweep: the parent of "
                                      "one subdir per point). Must not exist unless --overwrite.",
                                      show_default=False)],
    # No -i: across rtool -i is --input. --instruct, the old name, stays as a hidden alias.
    instruct_model: Annotated[Optional[Path], typer.Option("--instruct-model", help="Instruct model dir or LoRA "
                                                           "adapter dir; config and tokenizer come from it "
                                                           "[required].", show_default=False)] = None,
    instruct_alias: Annotated[Optional[Path], typer.Option("--instruct", hidden=True)] = None,
    w: Annotated[float, typer.Option("--w", help="Stage 1: share of the reasoning model, in [0, 1] (rtool's "
                                     "default; the paper's ratio is not public here).")] = DEFAULT_W,
    v: Annotated[float, typer.Option("--v", help="Stage 2: share of the stage-1 model (the rest is the "
                                     "pretrained model), in [0, 1] (rtool's default).")] = DEFAULT_V,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Several merges in one pass, as W:V pairs: "
                                                 "'0.3:0.5,0.5:0.5' writes OUT/w0.3-v0.5 and OUT/w0.5-v0.5 "
                                                 "(--w/--v are then ignored).", show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help="linear (the paper's weighted average; equals mergekit "
                                        "linear) | task-arithmetic (deltas from the pretrained model) | slerp | "
                                        "ties | dare-ties | dare-linear (these four run mergekit, an optional "
                                        "extra).")] = "linear",
    dtype: Annotated[str, typer.Option("--dtype", help="Output dtype: auto (the instruct model's) | float32 | "
                                       "bfloat16 | float16. Arithmetic is always fp32.")] = "auto",
    max_shard_size: Annotated[str, typer.Option("--max-shard-size", help="Largest output file, e.g. 5GB, "
                                                "500MB, 2GiB.")] = "5GB",
    tokenizer_from: Annotated[Optional[Path], typer.Option("--tokenizer-from", help="Dir to copy config, "
                                                           "generation config and tokenizer files from "
                                                           "[default: the instruct model].",
                                                           show_default=False)] = None,
    lora_base: Annotated[Optional[Path], typer.Option("--lora-base", help="Base model of LoRA adapter inputs "
                                                      "[default: the adapter's base_model_name_or_path].",
                                                      show_default=False)] = None,
    save_intermediate: Annotated[bool, typer.Option("--save-intermediate", help="Also write the stage-1 model "
                                                    "to OUT/stage1 (with --sweep: in the first dir of each "
                                                    "w).")] = False,
    density: Annotated[float, typer.Option("--density", help="ties / dare only: share of each delta kept "
                                           "(rtool's default).")] = 0.5,
    threads: Annotated[int, typer.Option("--threads", help="Worker threads [default: CPUs, at most 8].",
                                         show_default=False)] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", "--force", help="Replace an earlier merge-bai output "
                                            "at --out (a dir holding anything else is refused, never deleted; "
                                            "--force is the old name).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the inputs and print the plan (tensors, "
                                          "bytes, output size) as JSON; write nothing.")] = False,
) -> None:
    """Merge reasoning, instruct and pretrained models into a Balanced Actor Initialization for RL.

    Streams tensor by tensor (memory holds a few MB per thread, never a model), both stages in one pass in fp32,
    bit-identical to two mergekit `linear` runs in fp32. The output appears atomically: a failed or interrupted
    run leaves no OUT. Prints the output dir(s) on stdout. Works offline: inputs are local dirs.
    """
    from rtool.merge import bai as merge
    from rtool.merge.arithmetic import METHODS
    from rtool.merge.sources import open_source

    instruct = _instruct_dir(instruct_model, instruct_alias)
    jobs = _jobs(w, v, sweep)
    one_of("method", method, (*METHODS, *merge.MERGEKIT_METHODS))
    one_of("dtype", dtype, ("auto", "float32", "bfloat16", "float16"))
    merge.check_weight("density", density)
    sources = [open_source(role, path, lora_base) for role, path in
               (("reasoning", reasoning), ("instruct", instruct), ("pretrained", pretrained))]
    plan = merge.plan_merge(*sources, jobs, method=method, dtype=dtype, max_shard_size=parse_size(max_shard_size),
                            save_intermediate=save_intermediate)
    if dry_run:
        typer.echo(json.dumps({**plan.summary(), "out": str(out)}, ensure_ascii=False))
        return
    _interrupt_on_sigterm()
    if method in merge.MERGEKIT_METHODS:
        dirs = merge.merge_with_mergekit(plan, out, force=overwrite, tokenizer_from=tokenizer_from, dtype=dtype,
                                         density=density)
    else:
        dirs = merge.merge_bai(plan, out, force=overwrite, tokenizer_from=tokenizer_from, dtype=dtype, threads=threads)
    for path in dirs:
        typer.echo(str(path))


def _instruct_dir(instruct_model: Path | None, instruct_alias: Path | None) -> Path:
    if instruct_model is not None and instruct_alias is not None:
        raise UserError("--instruct-model and --instruct name the same input", hint="pass one")
    if instruct_model is None and instruct_alias is None:
        raise UserError("missing --instruct-model DIR", hint="the instruct model (or LoRA adapter) dir to merge")
    return instruct_model if instruct_model is not None else instruct_alias


def _interrupt_on_sigterm() -> None:
    # `kill` should clean up like Ctrl-C does: the staging dir is removed and no OUT appears.
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _jobs(w: float, v: float, sweep: str | None) -> list:
    from rtool.merge.bai import MergeJob, check_weight, job_dirname, parse_sweep

    if sweep is None:
        return [MergeJob(check_weight("w", w), check_weight("v", v))]
    return [MergeJob(pw, pv, job_dirname(pw, pv)) for pw, pv in parse_sweep(sweep)]


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'5GB' -> 5_000_000_000, '2GiB' -> 2_147_483_648, '1000' -> 1000 bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS or float(match.group(1)) <= 0:
        raise UserError(f"bad size {text!r}", field="max-shard-size", hint="e.g. 5GB, 500MB, 2GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])
