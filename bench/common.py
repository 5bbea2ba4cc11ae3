"""Shared bits of the benchmarks: timing whole commands and writing a section of bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = RESULTS.parent.parent


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load {load:.2f} at start"


def run_measured(command: list[str], **kwargs) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a whole process, from /usr/bin/time -v."""
    seconds, _, peak = run_timed(command, **kwargs)
    return seconds, peak


def run_timed(command: list[str], **kwargs) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system: what a loaded machine's other jobs barely change) and peak RSS
    (KiB) of a whole process, from /usr/bin/time -v."""
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed: {result.stderr[-2000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", result.stderr).group(1))
              for kind in ("User", "System"))
    return seconds, cpu, peak


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")


def task_and_model(scratch: Path, *, n: int, ops: tuple[str, ...], hidden_size: int) -> tuple[Path, Path]:
    """`n` quickstart arithmetic problems (examples/quickstart/make_task.py) as scratch/task.jsonl, and a random
    2-layer Llama with a character tokenizer for them saved to scratch/model; (model dir, task file)."""
    import importlib.util
    import json
    import string

    spec = importlib.util.spec_from_file_location("make_task", REPO / "examples" / "quickstart" / "make_task.py")
    make_task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_task)
    rows = make_task.make_rows(n, seed=0, ops=ops)
    data = scratch / "task.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    tokenizer = char_tokenizer([string.printable] + [row["problem"] + row["solution"] for row in rows])
    model = tiny_llama(tokenizer, hidden_size=hidden_size, num_layers=2, num_heads=4, seed=0)
    return save_tiny(model, tokenizer, scratch / "model"), data
