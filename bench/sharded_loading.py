"""Host memory of the model load for sharded training (issue 24 item 14), as far as CPUs show it.

    python bench/sharded_loading.py    # writes the "sharded loading" section of bench/RESULTS.md

A random Llama of 113M parameters (hidden 768, 12 layers: 432 MiB in float32) saved in bfloat16, as hub
checkpoints are, and loaded in float32, as rtool loads it for full fine-tuning:

1. the loader alone, in a fresh process each: what rank 0 does (`load_model`) and what every other rank does under
   FSDP with cpu_ram_efficient_loading (`load_model(weights=False)`); peak RSS growth over the load.
2. `rtool sft` (2 steps) under `accelerate launch` with 2 CPU processes: DDP, and DeepSpeed ZeRO-3 when deepspeed
   is importable; each process's peak RSS when training starts (the model loaded and the trainer built) and at the
   end (examples/gpu/check_loading.py). FSDP does not run on CPUs (accelerate trains them with DDP), so its
   2-process numbers need a GPU node: `make -C examples/gpu check-loading`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, machine, task_and_model, write_section

CHECK = REPO / "examples" / "gpu" / "check_loading.py"
# glibc serves allocations below its mmap threshold from heaps it rarely gives back, and raises that threshold up
# to 32 MiB as large blocks are freed: the layer-sized blocks ZeRO-3 gathers and frees while it loads then stay in
# RSS and its peak counts them all. A fixed threshold returns every block of 64 KiB or more when freed, so the peak
# is what the process held at once.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}
HIDDEN, LAYERS = 768, 12
# The same ZeRO-3 run on 750708e (rtool loaded the model before the trainer's arguments existed), measured once as
# this script measures it: rank 0 and rank 1 alike (MiB at training start).
BEFORE_ZERO3 = (1116, 1117)

LOAD = """
import json, sys
from pathlib import Path
from rtool.io.models import load_model

def mib(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":"))
    return int(line.split()[1]) / 1024

load_model(sys.argv[2], dtype="float32", device="cpu", for_training=True)  # imports and caches warm
Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
before = mib("VmRSS")
model, _ = load_model(sys.argv[1], dtype="float32", device="cpu", for_training=True, weights=sys.argv[3] == "1")
print(json.dumps({"growth_mib": round(mib("VmHWM") - before)}))
"""

DDP = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_processes: 2
num_machines: 1
machine_rank: 0
main_process_port: 0
gpu_ids: all
mixed_precision: "no"
use_cpu: true
"""

ZERO3 = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: true
  zero3_save_16bit_model: true
  offload_optimizer_device: none
  offload_param_device: none
num_processes: 2
num_machines: 1
machine_rank: 0
main_process_port: 0
mixed_precision: "no"
use_cpu: false
"""


def make_model(scratch: Path) -> tuple[Path, Path, Path]:
    """(the 113M model dir, a 2-layer tiny one with the same tokenizer, the task rows)."""
    import torch
    from transformers import AutoTokenizer

    from rtool.tiny import save_tiny, tiny_llama

    tiny, data = task_and_model(scratch, n=64, ops=("add", "sub"), hidden_size=32)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = tiny_llama(tokenizer, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=8, seed=0).to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    return save_tiny(model, tokenizer, scratch / "big"), tiny, data


def loader_growth(model: Path, tiny: Path, weights: bool) -> int:
    result = subprocess.run([sys.executable, "-c", LOAD, str(model), str(tiny), "1" if weights else "0"],
                            capture_output=True, text=True, env={**os.environ, **MALLOC, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.splitlines()[-1])["growth_mib"]


def launched(scratch: Path, name: str, config: str, model: Path, data: Path) -> list[dict]:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    (scratch / f"{name}.yaml").write_text(config)
    out = scratch / f"rss-{name}"
    command = [accelerate, "launch", "--config_file", str(scratch / f"{name}.yaml"), str(CHECK), "run", str(out),
               "-q", "sft", "--model", str(model), "--data", str(data), "--out", str(scratch / f"out-{name}"),
               "--max-steps", "2", "--batch-size", "2", "--save-steps", "0", "--no-system"]
    env = {**os.environ, **MALLOC, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: {result.stderr[-3000:]}")
    return sorted((json.loads(path.read_text()) for path in out.glob("rank-*.json")), key=lambda row: row["rank"])


def main() -> None:
    header = machine()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        model, tiny, data = make_model(scratch)
        loads = [("rank 0 (reads the weights): `load_model`", loader_growth(model, tiny, True)),
                 ("another rank under FSDP: `load_model(weights=False)`", loader_growth(model, tiny, False))]
        runs = [("DDP", launched(scratch, "ddp", DDP, model, data))]
        if importlib.util.find_spec("deepspeed") is not None:
            runs.append(("DeepSpeed ZeRO-3", launched(scratch, "zero3", ZERO3, model, data)))
    table_loads = [f"| {name} | {growth:,} |" for name, growth in loads]
    table_runs = [f"| {name} | {row['rank']} | {row['at_training_start_mib']:,} | {row['at_end_mib']:,} |"
                  for name, rows in runs for row in rows]
    zero3 = "" if len(runs) > 1 else " (deepspeed was not importable: no ZeRO-3 rows)"
    body = "\n".join([
        f"`python bench/sharded_loading.py` on {header}: a random Llama of 113M parameters (hidden {HIDDEN}, "
        f"{LAYERS} layers) saved in bfloat16, loaded in float32 (432 MiB), as rtool loads a model for full "
        "fine-tuning. Run with MALLOC_MMAP_THRESHOLD_=65536, so that a peak counts what a process held at once "
        "(see the script).", "",
        "The loader alone, peak RSS growth over the load (MiB), in a fresh process after a warm-up load:", "",
        "| process | growth MiB |", "|---|---|", *table_loads, "",
        f"`rtool sft` (2 steps) under `accelerate launch` with 2 CPU processes{zero3}; peak RSS of each process "
        "(MiB) when training starts (model loaded, trainer built) and at the end:", "",
        "| launch | rank | at training start | at end |", "|---|---|---|---|", *table_runs, "",
        f"On 750708e, which loaded the model before the trainer's arguments existed, the ZeRO-3 run peaked at "
        f"{BEFORE_ZERO3[0]:,} / {BEFORE_ZERO3[1]:,} MiB (rank 0 / rank 1) at training start: every process held "
        "the whole float32 model. Training itself (DeepSpeed's buffers, AdamW state) dominates the end column on "
        "CPUs; on GPUs it lives in GPU memory, so the training-start column is what a node's host memory must "
        "hold. FSDP needs GPUs (accelerate trains CPU processes with DDP): `make -C examples/gpu check-loading` "
        "measures it on a node."])
    write_section("sharded loading", body)
    print(body)


if __name__ == "__main__":
    main()
