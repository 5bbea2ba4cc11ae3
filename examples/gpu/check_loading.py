"""How much host memory each training process takes while a model loads for sharded training, measured: the check
`make check-loading` runs on a GPU node (see README.md, "Sharded loading").

    accelerate launch --config_file accelerate/fsdp-8gpu.yaml check_loading.py run DIR sft --model M --data D ...
    python check_loading.py report DIR --model M --sharded     # a table; exit 1 if a process held a whole copy

`run DIR ARGS` runs `rtool ARGS` in this process (as `-m rtool.cli` would) and writes DIR/rank-R.json: the process's
peak resident memory when the trainer starts training (the model loaded, nothing trained yet) and at the end, in
MiB. `report` prints them beside the model's size in float32 (the dtype rtool loads for full fine-tuning). With
`--sharded` (FSDP with cpu_ram_efficient_loading, or DeepSpeed ZeRO-3) it fails unless every process but rank 0
peaked, by the start of training, at least a quarter of that size below rank 0, the one that reads the checkpoint:
where every process loads the whole model, they all peak alike. Launch with MALLOC_MMAP_THRESHOLD_=65536 (the
Makefile does): glibc otherwise keeps freed layer-sized blocks (ZeRO-3 gathers and frees one per module as it
loads) in its heaps, and the peak counts them all.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path


def peak_mib() -> float:
    """This process's peak resident memory so far (Linux: VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run(out: Path, rtool_args: list[str]) -> None:
    from transformers import Trainer

    rank = int(os.environ.get("RANK", "0"))
    record: dict = {"rank": rank}
    train = Trainer.train

    def train_and_note(self, *args, **kwargs):  # every rtool trainer subclasses transformers' Trainer
        record["at_training_start_mib"] = round(peak_mib())
        return train(self, *args, **kwargs)

    Trainer.train = train_and_note
    sys.argv = ["rtool", *rtool_args]
    try:
        runpy.run_module("rtool.cli", run_name="__main__")
    finally:
        record["at_end_mib"] = round(peak_mib())
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank-{rank}.json").write_text(json.dumps(record) + "\n")


def float32_mib(model: str) -> float:
    """The model's parameters in float32, in MiB, from its safetensors headers (no weights read)."""
    from huggingface_hub import snapshot_download
    from safetensors import safe_open

    folder = Path(model) if Path(model).is_dir() else Path(snapshot_download(model, allow_patterns=["*.safetensors"]))
    count = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                count += _numel(handle, name)
    return count * 4 / 2**20


def _numel(handle, name: str) -> int:
    size = 1
    for dim in handle.get_slice(name).get_shape():
        size *= dim
    return size


def report(out: Path, model: str, sharded: bool) -> int:
    rows = sorted((json.loads(path.read_text()) for path in out.glob("rank-*.json")), key=lambda row: row["rank"])
    if not rows:
        print(f"no rank-*.json in {out}: did the run start?", file=sys.stderr)
        return 1
    size = float32_mib(model)
    print(f"model: {model}, {size:,.0f} MiB in float32")
    print("rank  peak MiB at training start  peak MiB at end")
    for row in rows:
        print(f"{row['rank']:>4}  {row.get('at_training_start_mib', '-'):>26}  {row['at_end_mib']:>15}")
    if not sharded or len(rows) < 2:
        return 0
    first = rows[0].get("at_training_start_mib")
    others = [row.get("at_training_start_mib") for row in rows[1:]]
    if first is None or None in others:
        print("a process did not reach training", file=sys.stderr)
        return 1
    if max(others) > first - size / 4:
        print(f"FAIL: a process other than rank 0 peaked at {max(others):,} MiB by the start of training, not a "
              f"quarter of the model ({size / 4:,.0f} MiB) below rank 0 ({first:,} MiB): it held a copy of the model",
              file=sys.stderr)
        return 1
    print(f"ok: every other process peaked at least {first - max(others):,} MiB below rank 0")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run_parser = sub.add_parser("run", help="run rtool ARGS in this process (under accelerate launch)")
    run_parser.add_argument("out", type=Path)
    run_parser.add_argument("rtool_args", nargs=argparse.REMAINDER)
    report_parser = sub.add_parser("report", help="the table, and the verdict with --sharded")
    report_parser.add_argument("out", type=Path)
    report_parser.add_argument("--model", required=True)
    report_parser.add_argument("--sharded", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "run":
        run(args.out, args.rtool_args)
        return 0
    return report(args.out, args.model, args.sharded)


if __name__ == "__main__":
    sys.exit(main())
