"""Training curves as a picture: metrics.jsonl rows -> a grid of small panels, one per metric, over steps.

    rows = read_metrics("runs/sft")                          # a run dir or its metrics.jsonl
    plot_curves({"sft": rows}, "runs/sft/curves.png")        # loss, learning_rate, then every other numeric series
    plot_curves({"sft": read_metrics("runs/sft"), "redi": read_metrics("runs/redi")}, "cmp.png",
                metrics=["loss", "chosen_logp"])             # one line per run in each panel
    plot_curves(runs, "grpo.png", marks=[Mark(120, "sequence length collapse", metric="completions/mean_length"),
                                         Mark(300, "reward hockey stick", metric="reward", end=340)])

Every training command writes OUT/curves.png when it ends (`write_curves`, called by `run.run_training`);
`rtool plot` overlays runs. matplotlib is imported only when a picture is drawn, through its object-oriented API
on the Agg canvas (no pyplot: no display, no global backend state), so `rtool --help` stays light. The PNG is
written to a temporary file beside the target and renamed over it: a reader never sees half a picture.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from rtool.atomic import open_temporary, output_errors, remove_stale_temporaries
from rtool.errors import UserError, one_of

METRICS_FILE = "metrics.jsonl"
# A transformers/TRL run's log (OUT/trainer_state.json, OUT/checkpoint-N/trainer_state.json), read where a run has no
# metrics.jsonl.
TRAINER_STATE_FILE = "trainer_state.json"
# rtool grpo's names before it kept TRL's (issue 18) -> TRL's: an older run's metrics.jsonl reads as a new one's.
OLD_GRPO_NAMES = {"completion_length": "completions/mean_length", "completion_length_min": "completions/min_length",
                  "completion_length_max": "completions/max_length", "truncated_share": "completions/clipped_ratio",
                  "terminated_length": "completions/mean_terminated_length", "clip_ratio": "clip_ratio/region_mean"}
CURVES_FILE = "curves.png"
# Drawn first, in this order, when logged; the rest follow in the order the run first logged them.
FIRST = ("loss", "learning_rate")
# Keys of a metrics row that are not series over steps.
NOT_SERIES = ("step", "epoch")

# Lines take matplotlib's default cycle less its red, which is kept for marks.
RUN_COLORS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9", "C7")
MARK_COLOR = "C3"

Runs = Mapping[str, Sequence[dict]]


@dataclass(frozen=True)
class Mark:
    """An event to point at: a dashed vertical line at `step` (a shaded span from `step` to `end` when `end` is
    given), labelled `label`, on the panel of `metric`, or on every panel when `metric` is None (the label then
    written once, on the first panel). A mark on a metric that is not drawn is left out."""

    step: float
    label: str
    metric: str | None = None
    end: float | None = None


def metrics_path(source: str | Path) -> Path:
    """The metrics file of `source`: a run dir (its metrics.jsonl, else its trainer_state.json) or the file itself."""
    path = Path(source)
    if path.is_file():
        return path
    if not (path / METRICS_FILE).is_file() and (path / TRAINER_STATE_FILE).is_file():
        return path / TRAINER_STATE_FILE
    return path / METRICS_FILE


def read_metrics(source: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (`source`: the run dir or the file). A line that does not parse (the
    half-written last line of a killed run) is skipped. A transformers/TRL trainer_state.json is read too
    (`read_trainer_state`). UserError when there is no such file or no row."""
    path = metrics_path(source)
    if not path.is_file():
        where = Path(source)
        raise UserError(f"no {METRICS_FILE} or {TRAINER_STATE_FILE} here" if where.is_dir()
                        else "no such run dir or metrics file", path=where,
                        hint="pass the --out dir of a training command (sft, redi, grpo)")
    if path.suffix == ".json":
        return read_trainer_state(path)
    rows = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                if not line.endswith(b"\n"):
                    continue  # a killed run's torn last line can end inside a character
                raise UserError(f"not UTF-8 text (byte {error.start})", path=path, line=number,
                                hint="is this a metrics.jsonl written by rtool or transformers?") from None
            try:
                row = json.loads(text)
            except ValueError:
                continue
            if isinstance(row, dict) and _number(row.get("step")) is not None:
                rows.append({OLD_GRPO_NAMES.get(key, key): value for key, value in row.items()})
    if not rows:
        raise UserError("no metrics rows (each line: a JSON object with a 'step')", path=path)
    return rows


def read_trainer_state(path: str | Path) -> list[dict]:
    """The training rows of a transformers/TRL trainer_state.json's `log_history` (not its eval rows or end-of-run
    summary), under TRL's names as rtool grpo's are, and, beside a `reward`, the `completions`
    the row averages: `train_batch_size` x the steps since the previous row. That is the per-device batch: with
    several processes or gradient accumulation a step holds more, so the failure curves' standard errors err large."""
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise UserError(f"not a trainer_state.json: {error}", path=path) from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise UserError("no log_history list: not a transformers trainer_state.json", path=path)
    batch = _number(state.get("train_batch_size"))
    rows, last_step = [], 0.0
    for entry in history:
        step = _number(entry.get("step")) if isinstance(entry, dict) else None
        if step is None or "train_runtime" in entry or any(key.startswith("eval_") for key in entry):
            continue
        row = dict(entry)
        if batch and "reward" in row and step > last_step:
            row["completions"] = batch * (step - last_step)
        rows.append(row)
        last_step = step
    if not rows:
        raise UserError("no training rows in its log_history", path=path)
    return rows


def series_names(rows: Iterable[dict]) -> list[str]:
    """The numeric series in `rows`: loss and learning_rate first (when logged), then the others in the order they
    first appear. Booleans, strings and the step/epoch counters are not series."""
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in NOT_SERIES and _number(value) is not None:
                seen.setdefault(key, None)
    return [name for name in FIRST if name in seen] + [name for name in seen if name not in FIRST]


def run_labels(paths: Sequence[str | Path]) -> list[str]:
    """Legend labels for run dirs: each dir's name, with as many parent dirs as it takes to tell them apart
    (runs/a/sft and runs/b/sft -> a/sft, b/sft). A metrics file given directly is named by its dir."""
    parts = []
    for path in paths:
        path = Path(os.path.abspath(path))
        parts.append((path.parent if path.is_file() else path).parts)
    labels = []
    for index, own in enumerate(parts):
        depth = 1
        while depth < len(own) and any(other[-depth:] == own[-depth:] for j, other in enumerate(parts)
                                       if j != index and other != own):
            depth += 1
        label = "/".join(own[-depth:])
        repeats = sum(1 for earlier in labels if earlier == label or earlier.startswith(label + " #"))
        labels.append(f"{label} #{repeats + 1}" if repeats else label)  # the same run twice: two lines
    return labels


def plot_curves(runs: Runs, out: str | Path, *, metrics: Sequence[str] | None = None, marks: Iterable[Mark] = (),
                title: str | None = None, columns: int = 3, dpi: int = 120) -> Path:
    """Draw `runs` ({legend label: metrics rows}) into the PNG `out`, one panel per metric and one line per run
    in each; return `out`.

    `metrics`: the series to draw, in order (default: every series of any run, `series_names`); a name no run
    logged is a UserError listing the valid ones. `marks`: events to point at (`Mark`). `title`: above the grid
    (default: the run's label, or "A vs B" for several).
    """
    if not runs:
        raise UserError("no runs to plot")
    available = series_names(row for rows in runs.values() for row in rows)
    metrics = available if metrics is None else list(dict.fromkeys(metrics))
    if not metrics:
        raise UserError("the metrics hold no numeric series to plot", hint="each row: {\"step\": N, \"loss\": x}")
    for name in metrics:
        one_of("metric", name, available)
    marks = list(marks)

    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    columns = max(1, min(columns, len(metrics)))
    rows_of_panels = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows_of_panels + 0.6), dpi=dpi, layout="constrained")
    axes = figure.subplots(rows_of_panels, columns, squeeze=False).ravel()
    colors = [RUN_COLORS[i % len(RUN_COLORS)] for i in range(len(runs))]
    for panel, (ax, name) in enumerate(zip(axes, metrics)):
        for (label, rows), color in zip(runs.items(), colors):
            steps, values = _series(rows, name)
            if steps:
                ax.plot(steps, values, color=color, label=label, linewidth=1.5,
                        marker="o" if len(steps) <= 30 else None, markersize=3)
        for mark in marks:
            if mark.metric in (None, name):
                _draw_mark(ax, mark, labelled=mark.metric == name or panel == 0)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    labels = list(runs)
    figure.suptitle(title if title is not None else " vs ".join(labels), fontsize=13)
    if len(labels) > 1:
        handles = [Line2D([], [], color=color, linewidth=2) for color in colors]
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), frameon=False,
                      fontsize=11)
    return _save_atomic(figure, Path(out), dpi=dpi)


def write_curves(run_dir: str | Path, *, marks: Iterable[Mark] | Callable[[list[dict]], Iterable[Mark]] = (),
                 metrics: Callable[[list[dict]], Sequence[str]] | None = None, title: str | None = None) -> Path:
    """Draw RUN_DIR/metrics.jsonl into RUN_DIR/curves.png (every series, or those `metrics(rows)` names, titled
    with the dir's name); return its path. `marks` may be a function of the rows (a recipe that finds its events in
    the metrics)."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if callable(marks):
        marks = marks(rows)
    return plot_curves({run_labels([run_dir])[0]: rows}, run_dir / CURVES_FILE, marks=marks, title=title,
                       metrics=metrics(rows) if metrics else None)


def _number(value) -> float | None:
    # bool is an int: True is not a metric value.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series(rows: Sequence[dict], name: str) -> tuple[list[float], list[float]]:
    points = {}
    for row in rows:
        step, value = _number(row.get("step")), _number(row.get(name))
        if step is not None and value is not None:
            points[step] = value  # a step logged twice (a resumed run): the later row holds
    steps = sorted(points)
    return steps, [points[step] for step in steps]


def _draw_mark(ax, mark: Mark, *, labelled: bool) -> None:
    color = MARK_COLOR
    if mark.end is not None:
        ax.axvspan(mark.step, mark.end, color=color, alpha=0.12, linewidth=0)
    ax.axvline(mark.step, color=color, linestyle="--", linewidth=1)
    if labelled:
        # x in data units, y in axes units: the label sits at the top of the panel whatever the values' scale.
        ax.annotate(mark.label, xy=(mark.step, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", ha="left", va="top", fontsize=8, color=color, rotation=90)


def _save_atomic(figure, out: Path, *, dpi: int) -> Path:
    """Write the PNG beside `out` and rename it over `out`; an OSError is a UserError naming `out`, never the
    temporary file."""
    with output_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        temporary, handle = open_temporary(out, "wb")
        try:
            with handle:
                figure.savefig(handle, format="png", dpi=dpi)
            os.replace(temporary, out)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return out
