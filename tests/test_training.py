"""Shared training plumbing: YAML config precedence, flag checks, the precision policy (CPU and CUDA cases, as pure
functions), TRL arguments, output dirs, metrics rows, checkpoint dtypes."""

import hashlib
import json
from pathlib import Path
from typing import Annotated, Optional

import pytest
import typer

from rtool.config import merge_config
from rtool.errors import UserError
from rtool.options import ConfigOpt, LoraTargetsOpt
from rtool.train.checkpoints import (Start, check_run_settings, checkpoint_step, prepare_out_dir, run_settings,
                                     trim_metrics)
from rtool.train.card import base_model_name
from rtool.train.outdir import is_rtool_card, remove_run
from rtool.train.core import Hyperparams, trainer_args
from rtool.train.metrics_log import MetricsCallback
from rtool.train.precision import LoraSettings, precision, stored_dtype
from rtool.train.processes import device_shortage


def run_command(args):
    """Parse `args` with a small typer command that uses merge_config; return the merged values."""
    merged = {}
    app = typer.Typer()

    @app.command()
    def command(ctx: typer.Context,
                lr: Annotated[float, typer.Option("--lr")] = 0.1,
                max_steps: Annotated[Optional[int], typer.Option("--max-steps")] = None,
                lora_targets: LoraTargetsOpt = "all-linear",
                lora: Annotated[bool, typer.Option("--lora")] = False,
                config: ConfigOpt = None):
        merged.update(vars(merge_config(ctx, config)))

    app(args=list(map(str, args)), standalone_mode=False)
    return merged


@pytest.fixture
def yaml_file(tmp_path):
    def write(text):
        path = tmp_path / "run.yaml"
        path.write_text(text)
        return path
    return write


def test_config_precedence_defaults_yaml_flags(yaml_file):
    config = yaml_file("lr: 0.5\nmax-steps: 7\nlora_targets: [q_proj, v_proj]\nlora: true\n")
    assert run_command([]) == {"lr": 0.1, "max_steps": None, "lora_targets": "all-linear", "lora": False,
                               "config": None}
    merged = run_command(["--config", config])
    assert (merged["lr"], merged["max_steps"], merged["lora_targets"], merged["lora"]) == (0.5, 7, "q_proj,v_proj",
                                                                                           True)
    # A flag given on the command line wins even when it equals the default.
    merged = run_command(["--config", config, "--lr", "0.1", "--max-steps", "9"])
    assert (merged["lr"], merged["max_steps"]) == (0.1, 9)


@pytest.mark.parametrize("text, message", [
    # A key no library knows (learning_rate, TrainingArguments' name, would be ignored here with a warning).
    ("lr: 0.5\nfrobnicate: 1\n", "run.yaml:2: unknown key 'frobnicate' (valid: lora, lora-targets, lr, max-steps)"),
    ("max_steps: many\n", "run.yaml:1: bad value for 'max_steps'"),
    ("- lr\n", "expected a mapping"),
    ("lr: [\n", "malformed YAML"),
])
def test_config_errors_name_file_and_line(yaml_file, text, message):
    with pytest.raises(UserError) as error:
        run_command(["--config", yaml_file(text)])
    assert message in error.value.render()


def test_config_missing_and_empty(tmp_path, yaml_file):
    with pytest.raises(UserError, match="no such config file"):
        run_command(["--config", tmp_path / "nope.yaml"])
    assert run_command(["--config", yaml_file("")])["lr"] == 0.1


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "--epochs"),
    ({"max_steps": 0}, "--max-steps"),
    ({"lr": 0.0}, "--lr"),
    ({"lr_scheduler": "cosine-ish"}, "valid: linear, cosine"),
    ({"warmup_ratio": 1.0}, "--warmup-ratio"),
    ({"batch_size": 0}, "--batch-size"),
    ({"grad_accum": 0}, "--grad-accum"),
    ({"save_steps": -1}, "--save-steps"),
])
def test_hyperparams_check(tmp_path, changes, message):
    Hyperparams(out=tmp_path).check()
    with pytest.raises(UserError, match=message):
        Hyperparams(out=tmp_path, **changes).check()


def test_lora_settings():
    assert LoraSettings().peft_config() is None
    config = LoraSettings(enabled=True, r=4, alpha=8, targets="q_proj, v_proj").peft_config()
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8, {"q_proj", "v_proj"})
    assert LoraSettings(enabled=True).peft_config().target_modules == "all-linear"
    for bad, message in [(dict(merge=True), "--merge-lora needs --lora"), (dict(enabled=True, r=0), "--lora-r"),
                         (dict(enabled=True, dropout=1.0), "--lora-dropout"),
                         (dict(enabled=True, targets=" , "), "--lora-targets")]:
        with pytest.raises(UserError, match=message):
            LoraSettings(**bad).check()


def test_cpu_precision_and_trl_arguments(tmp_path):
    import torch
    from trl import SFTConfig

    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    prec = precision("auto")
    assert (prec.device, prec.load_dtype, prec.load_device) == ("cpu", "float32", "cpu")
    with pytest.raises(UserError, match="float16"):
        precision("float16")
    args = SFTConfig(**trainer_args(Hyperparams(out=tmp_path, warmup_ratio=0.1, max_steps=5, save_steps=0), prec))
    # TRL's own defaults are bf16=True and gradient checkpointing on: both must be off on CPU.
    assert args.bf16 is False and args.fp16 is False and args.use_cpu is True
    assert args.gradient_checkpointing is False
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    assert args.disable_tqdm is True and args.save_strategy == "no"
    assert args.max_steps == 5 and args.get_warmup_steps(100) == 10
    with_steps = SFTConfig(**trainer_args(Hyperparams(out=tmp_path, save_steps=3, gradient_checkpointing=True),
                                          prec))
    assert with_steps.save_strategy == "steps" and with_steps.save_steps == 3
    assert with_steps.gradient_checkpointing is True


CPU = dict(cuda_available=False, bf16_supported=False)
BF16_GPU = dict(cuda_available=True, bf16_supported=True)
OLD_GPU = dict(cuda_available=True, bf16_supported=False)  # V100, T4: no bf16


@pytest.mark.parametrize("dtype, lora, hardware, device, weights, autocast", [
    ("auto", False, CPU, "cpu", "float32", None),
    ("auto", True, CPU, "cpu", "float32", None),
    ("bfloat16", False, CPU, "cpu", "bfloat16", None),
    ("float32", True, CPU, "cpu", "float32", None),
    # Full fine-tuning keeps float32 master weights: AdamW updates on bf16 weights round away.
    ("auto", False, BF16_GPU, "cuda", "float32", "bf16"),
    ("auto", True, BF16_GPU, "cuda", "bfloat16", "bf16"),  # the frozen base may be bf16
    ("bfloat16", False, BF16_GPU, "cuda", "bfloat16", "bf16"),  # asked for explicitly
    ("bfloat16", True, BF16_GPU, "cuda", "bfloat16", "bf16"),
    ("float32", False, BF16_GPU, "cuda", "float32", None),
    ("float16", False, BF16_GPU, "cuda", "float32", "fp16"),  # fp16 weights do not train with AdamW
    ("float16", True, BF16_GPU, "cuda", "float32", "fp16"),
    ("auto", False, OLD_GPU, "cuda", "float32", "fp16"),
    ("auto", True, OLD_GPU, "cuda", "float32", "fp16"),
])
def test_precision_policy(dtype, lora, hardware, device, weights, autocast):
    prec = precision(dtype, lora=lora, **hardware)
    assert (prec.device, prec.load_dtype, prec.load_device) == (device, weights, "cpu")
    assert prec.args["bf16"] == (autocast == "bf16") and prec.args["fp16"] == (autocast == "fp16")
    assert prec.args.get("use_cpu", False) == (device == "cpu")


@pytest.mark.parametrize("dtype, hardware, message", [
    ("float16", CPU, "--dtype float16 training needs a GPU"),
    ("bfloat16", OLD_GPU, "this GPU does not support bfloat16"),
    ("float64", CPU, "unknown dtype 'float64'"),
])
def test_precision_refuses(dtype, hardware, message):
    for lora in (False, True):
        with pytest.raises(UserError, match=message):
            precision(dtype, lora=lora, **hardware)


@pytest.mark.parametrize("asked, cuda, lora, expected", [
    (None, True, False, True),    # auto: full fine-tuning on a GPU, where long traces' activations fill the memory
    (None, True, True, False),    # auto: LoRA's frozen base keeps no optimizer state
    (None, False, False, False),  # auto: the CPU
    (True, False, True, True),    # asked wins
    (False, True, False, False),
])
def test_gradient_checkpointing_auto(asked, cuda, lora, expected):
    from rtool.train.precision import gradient_checkpointing

    prec = precision("auto", lora=lora, cuda_available=cuda, bf16_supported=True)
    assert gradient_checkpointing(asked, prec, lora=lora) is expected


def test_stored_dtype_of_dirs_adapters_and_missing_configs(tmp_path):
    def model_dir(name, config):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        (path / "model.safetensors").write_bytes(b"")
        return path

    assert stored_dtype(model_dir("bf16", {"dtype": "bfloat16"})) == "bfloat16"
    assert stored_dtype(model_dir("old", {"torch_dtype": "float16"})) == "float16"  # transformers 4 configs
    assert stored_dtype(model_dir("none", {})) == "float32"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../bf16"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    assert stored_dtype(adapter) == "bfloat16"  # the base's, found relative to the adapter


def test_prepare_out_dir_refuses_an_earlier_run_unless_resuming(tmp_path):
    out = tmp_path / "run"
    assert prepare_out_dir(out, resume=False) == Start()
    out.mkdir()
    (out / "run_settings.json").write_text("{}")
    assert prepare_out_dir(out, resume=False) == Start()  # settings alone: a run that failed before it began
    for step in (2, 10, 12):
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    with pytest.raises(UserError, match="already holds a training run"):
        prepare_out_dir(out, resume=False)
    (out / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')  # a kill -9 while it was written
    assert prepare_out_dir(out, resume=True).checkpoint.endswith("checkpoint-10")
    (out / "checkpoint-10" / "model.safetensors").unlink()
    assert prepare_out_dir(out, resume=True).checkpoint.endswith("checkpoint-2")
    assert checkpoint_step(str(out / "checkpoint-10")) == 10 and checkpoint_step(None) == 0
    # A run that ended wrote its model, then OUT/trainer_state.json: nothing to resume, whatever checkpoints remain.
    (out / "model.safetensors").write_bytes(b"")
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    assert prepare_out_dir(out, resume=True) == Start(finished_step=12)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a directory"):
        prepare_out_dir(tmp_path / "file", resume=False)


@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}])
def test_prepare_out_dir_refuses_a_dir_of_other_files_naming_one(tmp_path, flags):
    """Issue 24: `--out d` where d holds notes.txt trained into it, and --overwrite then deleted d."""
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("{}")  # a model dir someone typed as --out
    with pytest.raises(UserError) as error:
        prepare_out_dir(out, resume=flags.get("resume", False), overwrite=flags.get("overwrite", False))
    assert error.value.render() == (f"{out}: --out is not empty and holds no rtool training run (it holds "
                                    "'config.json' and 1 more); rtool never trains into a directory of other files, "
                                    "nor deletes them (choose a new or empty directory for --out)")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]


CARD = "---\nbase_model: \"m\"\nlibrary_name: transformers\ntags: [rtool, sft]\n---\n\n# run\n"


def write_finished_run(out, card=CARD):
    """The entries a LoRA run with checkpoints, --merge-lora and TensorBoard leaves (as test_sft lists them)."""
    out.mkdir(exist_ok=True)
    for name in ("run_settings.json", "metrics.jsonl", "trainer_state.json", "training_args.json", "curves.png",
                 "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "model-00001-of-00002.safetensors"):
        (out / name).write_text("{}")
    (out / "README.md").write_text(card)
    for folder in ("checkpoint-2", "checkpoint-3", "merged", "runs/Dec07_vm"):
        (out / folder).mkdir(parents=True)
        (out / folder / "model.safetensors").write_text("")


def test_overwrite_removes_only_what_the_run_wrote(tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_finished_run(out)
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()  # the user's results, next to the run's
    (out / "checkpoint-x").mkdir()  # not a name a run writes
    (out / "link.json").symlink_to(tmp_path / "elsewhere.json")
    assert prepare_out_dir(out, resume=False, overwrite=True) == Start()
    # run_settings.json stays for the new run to rewrite: other processes still see a run there meanwhile.
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-x", "eval", "link.json", "notes.txt",
                                                     "run_settings.json"]
    mine = "---\ntitle: my notes\n---\n"
    write_finished_run(out, card=mine)  # a README.md that is not rtool's card is the user's
    remove_run(out)
    assert (out / "README.md").read_text() == mine
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoint-x", "eval", "link.json", "notes.txt"]


def test_overwrite_never_deletes_an_input_or_the_current_directory(tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_finished_run(out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    cases = [({"--model": out / "checkpoint-3"}, "checkpoint-3, which is --model"),
             ({"--model": out / "checkpoint-3" / "model.safetensors"}, "checkpoint-3, which holds --model"),
             ({"--data": out / "metrics.jsonl"}, "metrics.jsonl, which is --data"),
             ({"--model": out}, "part of --model"),  # training further from OUT into OUT
             ({"--data": tmp_path}, "part of --data")]
    for inputs, message in cases:
        with pytest.raises(UserError, match=message):
            prepare_out_dir(out, resume=False, overwrite=True, inputs=inputs)
    monkeypatch.chdir(out / "runs" / "Dec07_vm")
    with pytest.raises(UserError, match="runs, the current directory or one holding it"):
        prepare_out_dir(out, resume=False, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing deleted
    monkeypatch.chdir(out)  # OUT itself may be the current directory: the dir stays, the run's entries go
    (out / "traces.jsonl").write_text("")
    prepare_out_dir(Path("."), resume=False, overwrite=True, inputs={"--data": "traces.jsonl"})
    assert sorted(p.name for p in out.iterdir()) == ["run_settings.json", "traces.jsonl"]


def test_card_recognised_only_by_its_front_matter(tmp_path):
    card = tmp_path / "README.md"
    for text, ours in ((CARD, True), ("# tags: [rtool, sft]\n", False), ("---\ntags: [other]\n---\n", False),
                       ("---\ntitle: x\n---\ntags: [rtool, sft]\n", False)):
        card.write_text(text)
        assert is_rtool_card(card) is ours, text


def test_card_base_model_is_a_hub_id_or_a_folder_name(tmp_path, monkeypatch):
    """Issue 24 item 11: the card's base_model was the model's absolute local path."""
    cached = tmp_path / "hub" / "models--Qwen--Qwen2.5-1.5B" / "snapshots" / "8faed761d45a263340a0528343f099c05c9a4323"
    cached.mkdir(parents=True)
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path / "my-model")
    assert base_model_name(str(cached)) == "Qwen/Qwen2.5-1.5B"  # from the hub's cache: the id it came as
    assert base_model_name(str(tmp_path / "my-model")) == base_model_name(".") == "my-model"
    assert base_model_name("Qwen/Qwen2.5-1.5B") == "Qwen/Qwen2.5-1.5B"  # a hub id, as given


def test_settings_compare_inputs_resolved_and_data_by_content(tmp_path, monkeypatch):
    """Issue 24: a resume from another directory or with ./x for x was refused, and changed data accepted."""
    (tmp_path / "tpl").mkdir()
    data = tmp_path / "tpl" / "traces.jsonl"
    data.write_text('{"prompt": "1+1", "completion": "2"}\n')
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    flags = {"model": "tpl", "data": "tpl/traces.jsonl", "lr": 0.1, "out": "run", "split": None}
    settings = run_settings(flags)
    assert settings["data"] == {"path": str(data), "bytes": data.stat().st_size,
                                "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    assert settings["model"] == str(tmp_path / "tpl") and "out" not in settings
    check_run_settings(out, settings, resuming=False)
    monkeypatch.chdir(tmp_path / "tpl")
    for typed in ("traces.jsonl", "./traces.jsonl", str(data)):
        check_run_settings(out, run_settings({**flags, "model": ".", "data": typed}), resuming=True)
    data.write_text('{"prompt": "1+1", "completion": "3"}\n')  # same name, same size, other bytes
    with pytest.raises(UserError, match=r"--data \S+traces.jsonl changed since the run started \(37 bytes, sha256 "):
        check_run_settings(out, run_settings({**flags, "model": ".", "data": "traces.jsonl"}), resuming=True)
    with pytest.raises(UserError, match="--lr 0.1 -> 0.2"):
        check_run_settings(out, run_settings({**flags, "lr": 0.2, "model": ".", "data": "-"}), resuming=True)
    # What cannot be hashed up front is compared by name: stdin, a hub id, a benchmark.
    assert run_settings({"data": "-"})["data"] == "-" and run_settings({"data": "org/set"})["data"] == "org/set"


def test_settings_of_an_older_rtool_with_paths_as_typed_still_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("traces.jsonl").write_text("{}\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_settings.json").write_text(json.dumps({"data": "traces.jsonl", "model": "m", "lr": 0.1}))
    check_run_settings(out, run_settings({"data": "./traces.jsonl", "model": "m", "lr": 0.1}), resuming=True)


def test_trim_metrics_drops_rows_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    trim_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    trim_metrics(path, 0)
    assert path.read_text() == ""


def test_metrics_callback_rows(tmp_path):
    from transformers import TrainerControl, TrainerState

    path = tmp_path / "out" / "metrics.jsonl"
    callback = MetricsCallback(path)
    state = TrainerState(max_steps=10)
    state.is_world_process_zero = True
    callback.on_train_begin(None, state, TrainerControl())
    for step in (1, 2):
        state.global_step, state.epoch = step, step / 10
        callback.on_log(None, state, TrainerControl(), logs={"loss": 2.0 / step, "learning_rate": 1e-3,
                                                             "num_tokens": 100.0 * step, "grad_norm": 0.5,
                                                             "total_flos": 1})
    callback.on_log(None, state, TrainerControl(), logs={"train_runtime": 1.0, "train_loss": 1.5})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [list(row)[:5] for row in rows] == [["step", "loss", "learning_rate", "tokens_per_s", "epoch"]] * 2
    assert [row["step"] for row in rows] == [1, 2] and rows[1]["loss"] == 1.0 and rows[1]["grad_norm"] == 0.5
    assert all(row["tokens_per_s"] > 0 and "total_flos" not in row for row in rows)

    state.is_world_process_zero = False  # other ranks write nothing
    callback.on_log(None, state, TrainerControl(), logs={"loss": 1.0})
    assert len(path.read_text().splitlines()) == 2


def test_more_processes_than_gpus_is_named():
    assert device_shortage(2, 0) is None  # no GPU: the processes share the CPU
    assert device_shortage(2, 2) is None and device_shortage(1, 8) is None
    assert device_shortage(2, 1) == ("2 training processes on this machine but 1 CUDA GPU(s) visible: each process "
                                     "takes its own GPU")


LISTED_SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                     "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay"]


def test_help_names_every_scheduler_the_flag_accepts():
    import re

    from rtool.options import LrSchedulerOpt
    from rtool.train.core import SCHEDULERS

    help_text = LrSchedulerOpt.__metadata__[0].help
    assert sorted(set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b|\b(?:linear|cosine|polynomial|constant)\b", help_text))) \
        == sorted(SCHEDULERS) == sorted(LISTED_SCHEDULERS)


@pytest.fixture(scope="module")
def few_traces(tiny_task_rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("sched") / "traces.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:4]), encoding="utf-8")
    return path


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", LISTED_SCHEDULERS)
def test_every_listed_scheduler_trains(capfd, tmp_path, tiny_model_dir, few_traces, name):
    from helpers import run_in_process

    out = tmp_path / "run"
    code, _, stderr = run_in_process(capfd, "sft", "--model", tiny_model_dir, "--data", few_traces, "--out", out,
                                     "--lr-scheduler", name, "--max-steps", "2", "--lr", "1e-2", "--warmup-ratio",
                                     "0", "--batch-size", "2", "--logging-steps", "1", "--save-steps", "0",
                                     "--max-length", "128", "--no-system")
    assert code == 0, stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    if name.endswith("min_lr"):  # the documented floor: 0.1 x --lr, reached at the end of the cosine
        assert min(row["learning_rate"] for row in rows) >= 1e-3 * (1 - 1e-9)


def test_an_unknown_scheduler_is_refused_before_anything_loads(capfd, tmp_path, few_traces):
    from helpers import run_in_process

    code, _, stderr = run_in_process(capfd, "sft", "--model", tmp_path / "no-such-model", "--data", few_traces,
                                     "--out", tmp_path / "run", "--lr-scheduler", "cosine_min")
    assert code == 2
    assert "--lr-scheduler" in stderr and "cosine_with_min_lr" in stderr and "warmup_stable_decay" in stderr
    assert "no-such-model" not in stderr and not (tmp_path / "run").exists()
