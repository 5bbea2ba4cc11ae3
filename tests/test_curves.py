"""Training curves: metrics.jsonl -> PNG (rtool.train.curves), OUT/curves.png after a training run, and `rtool plot`
overlaying runs, with its bad-input errors."""

import json
import logging
import math
import struct
import subprocess
import sys

import pytest

from helpers import RTOOL, last_error_line, run_rtool
from rtool.train.curves import Mark, plot_curves, read_metrics, run_labels, series_names, write_curves
from rtool.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TAB_RED = (0xD6, 0x27, 0x28)  # the colour of a Mark


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; fails unless the file starts as a PNG does."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def red_pixels(path):
    from PIL import Image

    image = Image.open(path).convert("RGB")
    return sum(1 for pixel in image.getdata() if all(abs(a - b) <= 30 for a, b in zip(pixel, TAB_RED)))


def write_run(directory, rows):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return directory


def sft_like(steps=12):
    return [{"step": s, "loss": 2.0 * math.exp(-s / 5), "learning_rate": 1e-5 * (1 - s / steps),
             "tokens_per_s": 900.0 + s, "epoch": s / steps, "grad_norm": 1.0 / s} for s in range(1, steps + 1)]


def redi_like(steps=12):
    return [{**row, "chosen_logp": -1 - s / 50, "rejected_logp": -1 - s / 10, "margin": s / 10 - s / 50}
            for s, row in enumerate(sft_like(steps), start=1)]


@pytest.mark.parametrize("rows, names", [
    ([{"step": 1, "grad_norm": 1.0, "loss": 2.0, "epoch": 0.1, "learning_rate": 1e-5}],
     ["loss", "learning_rate", "grad_norm"]),  # loss and learning_rate first, step and epoch are no series
    ([{"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.7, "completion_length": 31}],
     ["reward", "completion_length"]),  # first-seen order; a series may start late
    ([{"step": 1, "loss": 1.0, "done": True, "note": "x", "lr": None, "bad": float("nan")}], ["loss"]),
    ([{"step": 1}], []),
])
def test_series_names(rows, names):
    assert series_names(rows) == names


@pytest.mark.parametrize("paths, labels", [
    (["runs/sft", "runs/redi"], ["sft", "redi"]),
    (["a/x/out", "b/x/out"], ["a/x/out", "b/x/out"]),  # as many parents as it takes
    (["a/out", "b/out", "c/other"], ["a/out", "b/out", "other"]),
    (["runs/sft", "runs/sft"], ["sft", "sft #2"]),  # the same run twice: still two lines
])
def test_run_labels(paths, labels):
    assert run_labels(paths) == labels


def test_read_metrics_skips_a_half_written_line_and_refuses_missing_or_empty(tmp_path):
    run = write_run(tmp_path / "run", sft_like(3))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "lo')  # a run killed mid-write
    assert [row["step"] for row in read_metrics(run)] == [1, 2, 3]
    assert read_metrics(run / "metrics.jsonl") == read_metrics(run)
    with pytest.raises(UserError, match="no metrics.jsonl"):
        read_metrics(tmp_path)
    with pytest.raises(UserError, match="no such run dir"):
        read_metrics(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no metrics rows"):
        read_metrics(tmp_path / "empty")


def test_plot_is_a_png_with_one_panel_per_metric_and_no_temporary_left(tmp_path):
    runs = {"sft": sft_like(), "redi": redi_like()}
    # 7 series (loss, learning_rate, tokens_per_s, grad_norm, chosen_logp, rejected_logp, margin): 3 x 3 panels.
    every = plot_curves(runs, tmp_path / "all.png")
    two = plot_curves(runs, tmp_path / "two.png", metrics=["loss", "margin"])
    one = plot_curves({"sft": sft_like()}, tmp_path / "one.png", metrics=["loss"])
    (all_w, all_h), (two_w, two_h), (one_w, one_h) = png_size(every), png_size(two), png_size(one)
    assert (all_w, two_w, one_w) == (3 * 504, 2 * 504, 504)  # 4.2 inches a column at 120 dpi
    assert all_h > 2.5 * two_h and two_h == one_h
    assert every.stat().st_size > 30_000  # lines and text, not an empty canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.png", "one.png", "two.png"]
    with pytest.raises(UserError, match=r"unknown metric 'bogus' \(valid: loss, learning_rate, tokens_per_s"):
        plot_curves(runs, tmp_path / "bad.png", metrics=["loss", "bogus"])
    assert not (tmp_path / "bad.png").exists()


def test_marks_are_drawn_on_their_metric_only(tmp_path):
    runs = {f"run{i}": sft_like() for i in range(5)}  # more runs than colours before red in the default cycle
    plain = plot_curves(runs, tmp_path / "plain.png", metrics=["loss"])
    marked = plot_curves(runs, tmp_path / "marked.png", metrics=["loss"],
                         marks=[Mark(4, "reward hockey stick", metric="loss", end=6)])
    elsewhere = plot_curves(runs, tmp_path / "elsewhere.png", metrics=["loss"],
                            marks=[Mark(4, "sequence length collapse", metric="completions/mean_length")])
    assert red_pixels(plain) == 0
    assert red_pixels(marked) > 200  # a dashed line the height of the panel, a shaded span and its label
    assert red_pixels(elsewhere) == 0
    # write_curves takes marks as a function of the rows (a recipe that finds its events in the metrics).
    run = write_run(tmp_path / "run", sft_like())
    path = write_curves(run, marks=lambda rows: [Mark(rows[-1]["step"], "end")])
    assert path == run / "curves.png" and red_pixels(path) > 0


def test_a_failed_drawing_is_a_warning_not_a_failed_run(tmp_path, caplog):
    from rtool.log import logger
    from rtool.train.core import draw_curves

    logger.addHandler(caplog.handler)  # the rtool logger does not propagate once the CLI has set it up
    try:
        with caplog.at_level(logging.WARNING, logger="rtool"):
            assert draw_curves(tmp_path) is None  # no metrics.jsonl
    finally:
        logger.removeHandler(caplog.handler)
    assert "could not draw" in caplog.text and "metrics.jsonl" in caplog.text
    assert not (tmp_path / "curves.png").exists()


def test_sft_run_ends_with_curves_png(tmp_path, tiny_model_dir, tiny_task_file):
    out = tmp_path / "run"
    result = run_rtool("sft", "--model", tiny_model_dir, "--data", tiny_task_file, "--out", out, "--max-steps", 2,
                       "--lr", "1e-2", "--batch-size", 4, "--logging-steps", 1, "--max-length", 256,
                       "--save-steps", 0, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode() == f"{out}\n"
    width, height = png_size(out / "curves.png")
    assert width >= 1000 and height >= 300 and (out / "curves.png").stat().st_size > 20_000
    assert f"trainingcurvesin{out / 'curves.png'}" in "".join(result.stderr.decode().split())  # rich wraps lines


def test_plot_cli_overlays_runs_and_selects_metrics(tmp_path):
    sft, redi = write_run(tmp_path / "sft", sft_like()), write_run(tmp_path / "redi", redi_like())
    out = tmp_path / "figs" / "cmp.png"
    result = run_rtool("plot", sft, redi, "-o", out)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"{out}\n"
    assert png_size(out)[0] == 3 * 504
    again = ["plot", sft, redi / "metrics.jsonl", "-o", out, "--metrics", "loss, chosen_logp", "--title", "sft vs redi"]
    result = run_rtool(*again)  # an existing picture is replaced only with --overwrite
    assert result.returncode == 2
    assert last_error_line(result) == (f"rtool: error: {out}: already exists (pass --overwrite to replace it, or "
                                       "choose another -o)")
    assert png_size(out)[0] == 3 * 504
    result = run_rtool(*again, "--overwrite")
    assert result.returncode == 0, result.stderr.decode()
    assert png_size(out)[0] == 2 * 504


@pytest.mark.parametrize("args, message", [
    (["{empty}"], "rtool: error: {empty}: no metrics.jsonl or trainer_state.json here (pass the --out dir of a "
                  "training command"),
    (["{sft}", "{tmp}/nope"], "rtool: error: {tmp}/nope: no such run dir or metrics file"),
    (["{sft}", "--metrics", "loss,bogus"],
     "rtool: error: unknown metric 'bogus' (valid: loss, learning_rate, tokens_per_s, grad_norm)"),
    (["{sft}", "--metrics", " , "], "rtool: error: --metrics is empty"),
    (["{sft}", "-o", "{tmp}"], "rtool: error: {tmp}: --out is a directory"),
    # Once a raw FileExistsError and a PermissionError naming the temporary file, exit 1.
    (["{sft}", "-o", "{tmp}/afile/c.png"], "rtool: error: {tmp}/afile/c.png: cannot be created: {tmp}/afile is not a "
                                           "directory"),
    (["{sft}", "-o", "/sys/x.png"], "rtool: error: /sys/x.png: cannot "),
    (["{sft}", "-o", "{sft}/metrics.jsonl", "--overwrite"],
     "rtool: error: {sft}/metrics.jsonl: --out would replace an input: it is RUN_DIR {sft}/metrics.jsonl"),
])
def test_plot_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    places = dict(tmp=tmp_path, sft=write_run(tmp_path / "sft", sft_like()), empty=tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    default_out = [] if "-o" in args else ["-o", tmp_path / "out.png"]
    result = run_rtool("plot", *[arg.format(**places) for arg in args], *default_out)
    assert result.returncode == 2
    assert last_error_line(result).startswith(message.format(**places)), result.stderr.decode()
    assert result.stdout == b"" and not (tmp_path / "out.png").exists()


def trl_state(rewards, lengths, batch=16, logging_steps=2):
    """A TRL GRPOTrainer's trainer_state.json as transformers writes it: a row per logging window under TRL's names,
    an eval row and the end-of-run summary."""
    history = [{"step": logging_steps * (i + 1), "epoch": 0.01 * (i + 1), "loss": 0.01, "learning_rate": 1e-6,
                "reward": r, "reward_std": 0.45, "rewards/accuracy/mean": r, "completions/mean_length": n,
                "frac_reward_zero_std": 0.1} for i, (r, n) in enumerate(zip(rewards, lengths))]
    history.insert(3, {"step": history[2]["step"], "eval_loss": 9.0})
    history.append({"step": history[-1]["step"], "train_runtime": 100.0, "train_loss": 0.01})
    return {"global_step": history[-1]["step"], "logging_steps": logging_steps, "train_batch_size": batch,
            "log_history": history}


def test_plot_check_prints_each_runs_failure_curves_as_json(tmp_path, capfd):
    from helpers import run_in_process

    healthy = tmp_path / "trl-healthy" / "checkpoint-60"
    healthy.mkdir(parents=True)
    (healthy / "trainer_state.json").write_text(json.dumps(trl_state([0.5, 0.45, 0.55] * 10, [400.0] * 30)))
    # 32 completions a row (16 a step, 2 steps): the reward falls from 0.5 to 0.1 at row 11 (step 22), flagged when
    # the mean of the rows covering the last 5 steps (3 rows) is 0.15 below the first 10 steps' and past the noise
    # (step 24: 0.5, 0.1, 0.1); the length from 400 to 150 at row 21 (step 42), flagged when that mean is below half
    # (step 46).
    failing = tmp_path / "trl-failing.json"
    failing.write_text(json.dumps(trl_state([0.5] * 10 + [0.1] * 20, [400.0] * 20 + [150.0] * 10)))
    sft = write_run(tmp_path / "sft", sft_like())
    code, stdout, stderr = run_in_process(capfd, "plot", healthy, failing, sft, "--check")
    assert code == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["run"] for line in lines] == [str(healthy), str(failing), str(sft)]
    assert lines[0]["flags"] == [] and lines[2]["flags"] == []
    assert [(f["name"], f["step"]) for f in lines[1]["flags"]] == [("reward_drop", 24),
                                                                   ("sequence_length_collapse", 46)]
    assert lines[1]["flags"][1]["message"].startswith("sequence length collapse: mean completion length 150.0")
    assert not (tmp_path / "curves.png").exists() and not list(tmp_path.rglob("*.png"))
    # The same trainer_state.json plots as rtool's metrics do: rtool grpo logs TRL's names.
    code, stdout, stderr = run_in_process(capfd, "plot", healthy, "-o", tmp_path / "trl.png",
                                          "--metrics", "reward,completions/mean_length")
    assert (code, stdout) == (0, f"{tmp_path / 'trl.png'}\n"), stderr


def test_trainer_state_rows_count_the_completions_they_average(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps(trl_state([0.5, 0.6, 0.7, 0.8], [10.0] * 4, batch=8, logging_steps=5)))
    rows = read_metrics(tmp_path)
    assert [(row["step"], row["completions"], row["completions/mean_length"]) for row in rows] == [
        (5, 40, 10.0), (10, 40, 10.0), (15, 40, 10.0), (20, 40, 10.0)]  # no eval row, no summary
    path.write_text('{"log_history": 3}')
    with pytest.raises(UserError, match="no log_history list"):
        read_metrics(path)


def test_an_older_grpo_runs_names_read_as_trls(tmp_path):
    old = {"step": 1, "reward": 0.5, "completion_length": 31.0, "truncated_share": 0.1, "zero_std_share": 0.2}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(old) + "\n")
    assert read_metrics(tmp_path) == [{"step": 1, "reward": 0.5, "completions/mean_length": 31.0,
                                       "completions/clipped_ratio": 0.1, "zero_std_share": 0.2}]


def test_plot_needs_a_run_dir():
    result = subprocess.run([RTOOL, "plot"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Missing argument 'RUN_DIR'" in result.stderr


def test_import_of_the_curves_module_does_not_import_matplotlib():
    code = "import sys, rtool.train.curves, rtool.commands.plot; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
