"""--report-to: the names, what reaches transformers, TensorBoard event files from a tiny sft run (offline), and
the one-line error when the tracker asked for is not installed."""

import glob
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import jsonl, run_in_process
from rtool.errors import UserError
from rtool.train.core import REPORT_TO, Hyperparams, report_to_names, trainer_args
from rtool.train.precision import precision

FAST = ["--max-steps", "2", "--lr", "1e-2", "--warmup-ratio", "0", "--batch-size", "4", "--logging-steps", "1",
        "--max-length", "256", "--save-steps", "0"]


@pytest.mark.parametrize("value, names", [
    ("none", []), ("", []), ("tensorboard", ["tensorboard"]), ("wandb", ["wandb"]),
    ("tensorboard, wandb", ["tensorboard", "wandb"]), ("wandb,wandb", ["wandb"]),
])
def test_report_to_names(value, names):
    assert report_to_names(value) == names


@pytest.mark.parametrize("value, message", [
    ("mlflow", r"unknown --report-to 'mlflow' \(valid: none, tensorboard, wandb\)"),
    ("none,wandb", "none cannot be combined"),
])
def test_report_to_refuses(value, message):
    with pytest.raises(UserError, match=message):
        report_to_names(value)


@pytest.mark.parametrize("value", REPORT_TO)
def test_trainer_args_pass_report_to_through(tmp_path, value):
    from trl import SFTConfig

    args = SFTConfig(**trainer_args(Hyperparams(out=tmp_path), precision("auto"), report_to=value))
    assert args.report_to == ([] if value == "none" else [value])


def test_a_command_without_the_flag_reports_to_none(tmp_path):
    from rtool.train.run import TrainRun

    flags = dict(model="m", data="d.jsonl", out=tmp_path, lr=None, epochs=1.0, max_steps=None, lr_scheduler="linear",
                 warmup_ratio=0.0, batch_size=8, grad_accum=1, seed=0, logging_steps=10, save_steps=500,
                 gradient_checkpointing=False, lora=False, lora_r=16, lora_alpha=32, lora_dropout=0.05,
                 lora_targets="all-linear", merge_lora=False, dtype="auto", resume=False, skip_bad=False,
                 trust_remote_code=False, allow_pickle=False)
    assert TrainRun.from_flags(SimpleNamespace(**flags), lr=1e-5).report_to == "none"
    with pytest.raises(UserError, match="unknown --report-to"):
        TrainRun.from_flags(SimpleNamespace(**flags, report_to="mlflow"), lr=1e-5)


def test_tensorboard_event_files_hold_the_logged_loss(tmp_path, tiny_model_dir, tiny_task_file):
    pytest.importorskip("tensorboard", reason="pip install 'rtool[tensorboard]' (in the dev extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = subprocess.run([str(Path(sys.executable).with_name("rtool")), "sft", "--model", str(tiny_model_dir),
                             "--data", str(tiny_task_file), "--out", str(out), *FAST, "--report-to", "tensorboard"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"{out}\n"
    event_files = glob.glob(str(out / "runs" / "*" / "events.out.tfevents.*"))
    assert len(event_files) == 1, sorted(p.relative_to(out) for p in out.rglob("*"))
    events = EventAccumulator(str(Path(event_files[0]).parent))
    events.Reload()
    logged = [(event.step, event.value) for event in events.Scalars("train/loss")]
    rows = jsonl((out / "metrics.jsonl").read_text())
    assert [step for step, _ in logged] == [row["step"] for row in rows] == [1, 2]
    for (_, value), row in zip(logged, rows):  # TensorBoard stores float32
        assert math.isclose(value, row["loss"], rel_tol=1e-6)
    assert "train/learning_rate" in events.Tags()["scalars"]
    assert (out / "curves.png").is_file()


# The tracker's modules cannot be imported in this process, as if the package were not installed (`import name`
# raises ImportError, find_spec returns None): the check runs with the flags, so no subprocess is needed.
@pytest.mark.parametrize("tracker, hidden", [
    ("tensorboard", ["tensorboard", "tensorboardX", "torch.utils.tensorboard"]),
    ("wandb", ["wandb"]),
])
def test_a_tracker_not_installed_is_one_line_naming_the_extra(tmp_path, capfd, monkeypatch, tiny_model_dir,
                                                               tiny_task_file, tracker, hidden):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "run"
    code, stdout, stderr = run_in_process(capfd, "sft", "--model", tiny_model_dir, "--data", tiny_task_file,
                                          "--out", out, *FAST, "--report-to", tracker)
    assert code == 2, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"rtool: error: --report-to {tracker}: {tracker} is not installed"), lines
    assert f"pip install 'rtool[{tracker}]'" in lines[-1]
    assert stdout == "" and not out.exists()  # refused with the flags, before data or model load
