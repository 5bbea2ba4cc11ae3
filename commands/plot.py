"""plot: training curves of one or more runs in one picture. Reads RUN_DIR/metrics.jsonl; writes a PNG.

    rtool sft --model S --data traces.jsonl --out runs/sft
    rtool redi --model runs/sft --data traces.jsonl --out runs/redi
    rtool plot runs/sft runs/redi -o sft-vs-redi.png --metrics loss,learning_rate

One small panel per metric (loss and learning_rate first, then every other numeric series the runs logged, e.g.
redi's chosen_logp, rejected_logp and margin), one line per run, labelled with the run dir's name. A RUN_DIR may
also be a metrics.jsonl file, or a transformers/TRL run's trainer_state.json (or a dir holding one). Every training
command already draws its own OUT/curves.png; this overlays runs. stdout gets the written path, only that.

    rtool plot runs/grpo trl-out/checkpoint-500 --check

`-o FILE` (default curves.png) is written whole when the drawing is done (a temporary file beside it, renamed over
it); a FILE that exists is refused unless --overwrite, and so is a FILE that is one of the runs' metrics files.
An output that cannot be written (a parent that is a file, no permission) is one line naming it, before any run
is read.

`--check` draws nothing: it prints one JSON line per run, `{"run": RUN, "flags": [{"name": ..., "step": ...,
"message": ...}, ...]}`, BAI's failure curves found in its reward and completion length (rtool/train/failure_curves.py,
default thresholds: windows of 5 steps, whatever the logging interval; a change must pass its threshold and a z test
on the batch noise), and exits 0 whether or not any showed. On simulated noisy runs (16-64 completions a step) it
flags 0-0.5% of healthy runs and 96-100% of collapses and hockey sticks within 10 steps (README, bench/RESULTS.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def plot_cmd(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", show_default=False, help="Training output dirs (the --out of sft, redi, grpo) or their metrics.jsonl files; a transformers/TRL run's trainer_state.json (or its dir) too.")],
    out: Annotated[Path, typer.Option("--out", "--output", "-o", help="PNG file to write, whole when the drawing is done (an existing file only with --overwrite).")] = Path("curves.png"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out when it exists (default: refuse).")] = False,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="Comma-separated metric names to draw, in order (default: every numeric series in the runs' metrics.jsonl).")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Title above the panels (default: the run names).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Draw nothing: print each run's failure curves (reward drop or hockey stick, sequence length collapse) as a JSON line.")] = False,
) -> None:
    """Overlay the training curves of runs: one panel per metric, one line per run."""
    from rtool.train.curves import plot_curves, read_metrics, run_labels
    from rtool.errors import UserError

    if not check:
        _check_out(out, runs, overwrite)
    loaded = [read_metrics(run) for run in runs]  # a bad RUN_DIR fails before anything is drawn
    if check:
        from rtool.train.failure_curves import CurveWatch

        for run, rows in zip(runs, loaded):
            flags = [event.as_dict() for event in CurveWatch().events(rows)]
            typer.echo(json.dumps({"run": str(run), "flags": flags}, ensure_ascii=False))
        return
    names = None
    if metrics is not None:
        names = [name.strip() for name in metrics.split(",") if name.strip()]
        if not names:
            raise UserError("--metrics is empty", hint="e.g. --metrics loss,learning_rate")
    written = plot_curves(dict(zip(run_labels(runs), loaded)), out, metrics=names, title=title)
    typer.echo(str(written))


def _check_out(out: Path, runs: list[Path], overwrite: bool) -> None:
    """Before any run is read: `out` can be written, holds nothing that --overwrite did not allow, and is not a
    file the runs are read from."""
    import os

    from rtool.atomic import check_outputs_distinct, check_writable
    from rtool.errors import UserError
    from rtool.train.curves import metrics_path

    if out.is_dir():
        raise UserError("--out is a directory", path=out, hint="pass a file name, e.g. -o curves.png")
    check_writable(out, kind="file", renamed=True)
    check_outputs_distinct({"--out": out}, {"RUN_DIR": [metrics_path(run) for run in runs]})
    if os.path.lexists(out) and not overwrite:
        raise UserError("already exists", path=out, hint="pass --overwrite to replace it, or choose another -o")
