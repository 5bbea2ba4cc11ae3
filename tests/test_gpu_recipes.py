"""examples/gpu, as far as a CPU can check it: the accelerate configs parse (YAML and accelerate's own loader) and
resolve to the launch their names promise (1 GPU, 8-GPU DDP, DeepSpeed ZeRO-3, two nodes); `make -n all` lists the
stages in order, and every rtool command it prints parses with that command's own typer/click parameters and its
accelerate prefix with accelerate's launch parser; and the Makefile's sft recipe runs for real under
`accelerate launch` with the 2-process CPU config on a tiny model.

What needs a GPU (bf16, NCCL, vLLM) or DeepSpeed at run time is not run here; the DeepSpeed config is checked as
accelerate builds it, and as transformers fills its "auto" values when deepspeed is installed.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rtool.io.sources import shipped_benchmark

REPO = Path(__file__).resolve().parent.parent
GPU = REPO / "examples" / "gpu"
CONFIGS = GPU / "accelerate"
BENCH = "math500"  # the MATH-500 rtool ships, by name
TWO_NODES = ["--num_machines", "2", "--num_processes", "16", "--machine_rank", "1",
             "--main_process_ip", "10.0.0.1", "--main_process_port", "29500"]

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

# What each config's name promises.
EXPECTED = {
    "1gpu.yaml": dict(distributed_type="NO", num_processes=1, mixed_precision="bf16", use_cpu=False),
    "ddp-8gpu.yaml": dict(distributed_type="MULTI_GPU", num_processes=8, num_machines=1, mixed_precision="bf16",
                          use_cpu=False),
    "zero3-8gpu.yaml": dict(distributed_type="DEEPSPEED", num_processes=8, num_machines=1, mixed_precision="bf16",
                            use_cpu=False),
    "fsdp-8gpu.yaml": dict(distributed_type="FSDP", num_processes=8, num_machines=1, mixed_precision="bf16",
                           use_cpu=False),
    "ddp-2cpu.yaml": dict(distributed_type="MULTI_GPU", num_processes=2, num_machines=1, mixed_precision="no",
                          use_cpu=True),
}


def test_every_config_is_tested():
    assert sorted(path.name for path in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_and_has_what_its_name_promises(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    raw = yaml.safe_load((CONFIGS / name).read_text())
    for key, value in EXPECTED[name].items():
        assert raw[key] == value, key  # "NO" and "no" quoted: unquoted, YAML reads them as False
    config = load_config_from_file(str(CONFIGS / name))  # accelerate's loader: unknown keys are an error
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == EXPECTED[name]["distributed_type"]
    assert config.num_processes == EXPECTED[name]["num_processes"]
    assert config.mixed_precision == EXPECTED[name]["mixed_precision"]
    assert config.use_cpu is EXPECTED[name]["use_cpu"]
    if name == "zero3-8gpu.yaml":
        ds = config.deepspeed_config
        assert ds["zero_stage"] == 3
        assert ds["zero3_save_16bit_model"] is True  # else no loadable model in OUT, only DeepSpeed shards
        assert ds["deepspeed_multinode_launcher"] == "standard"  # one launch per node, no pdsh
        # Left to rtool's flags: a fixed value here that differs from --grad-accum stops the run at start.
        assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds
    if name == "fsdp-8gpu.yaml":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_version"] == 2
        assert fsdp["fsdp_cpu_ram_efficient_loading"] is True  # rank 0 alone reads the checkpoint
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one loadable model dir in OUT


def resolve_launch(config, *extra):
    """What `accelerate launch --config_file CONFIG EXTRA -m rtool.cli sft` would start, as accelerate resolves
    it (its own parser and validation, then the DDP or DeepSpeed environment), without starting anything."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), *extra, "-m", "rtool.cli", "sft"])
    args, defaults, _ = _validate_launch_command(args)
    env = {}
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        cmd, env = prepare_deepspeed_cmd_env(args)
        assert cmd is None  # started like torchrun on each node, not through the deepspeed/pdsh launcher
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    return args, env


@pytest.mark.parametrize("name, processes, kind", [("1gpu.yaml", 1, "single"), ("ddp-8gpu.yaml", 8, "ddp"),
                                                   ("zero3-8gpu.yaml", 8, "deepspeed"), ("fsdp-8gpu.yaml", 8, "fsdp"),
                                                   ("ddp-2cpu.yaml", 2, "ddp")])
def test_accelerate_resolves_the_launch(name, processes, kind, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    args, env = resolve_launch(CONFIGS / name)
    assert args.module and args.training_script == "rtool.cli" and args.training_script_args == ["sft"]
    assert args.num_processes == processes
    assert (args.multi_gpu, args.use_deepspeed, args.use_fsdp) == {
        "single": (False, False, False), "ddp": (True, False, False), "deepspeed": (False, True, False),
        "fsdp": (False, False, True)}[kind]
    if kind != "single":
        assert args.nproc_per_node == str(processes)
        assert env["ACCELERATE_MIXED_PRECISION"] == EXPECTED[name]["mixed_precision"]
    if kind == "deepspeed":
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
        assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"
        assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    if kind == "fsdp":  # what the training processes read (rtool.train.sharding, accelerate's FSDP plugin)
        assert env["ACCELERATE_USE_FSDP"] == "true"
        assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
        assert env["FSDP_VERSION"] == "2"
        assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


@pytest.mark.parametrize("name", ["ddp-8gpu.yaml", "zero3-8gpu.yaml", "fsdp-8gpu.yaml"])
def test_two_nodes_as_the_readme_launches_them(name, monkeypatch):
    """README: the same config on both nodes plus --num_machines 2 --num_processes 16 --machine_rank R
    --main_process_ip HEAD --main_process_port 29500: 8 processes a node, rendezvous at the head node."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    args, _ = resolve_launch(CONFIGS / name, *TWO_NODES)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert args.rdzv_endpoint == "10.0.0.1:29500"


def test_zero3_deepspeed_config_as_accelerate_builds_it(monkeypatch):
    """The DeepSpeed config the training processes get: stage 3, 16-bit weights gathered at save, bf16, and the
    batch values "auto" (filled from rtool's --batch-size and --grad-accum). DeepSpeed itself is not needed."""
    from accelerate.utils import DeepSpeedPlugin

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _, env = resolve_launch(CONFIGS / "zero3-8gpu.yaml")
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(env["ACCELERATE_MIXED_PRECISION"])
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert config["bf16"]["enabled"] is True
    assert config["gradient_accumulation_steps"] == "auto"
    assert config["train_micro_batch_size_per_gpu"] == "auto"
    assert plugin.zero3_init_flag is True


def test_zero3_auto_values_are_filled_from_rtools_trainer_args(monkeypatch, tmp_path):
    """transformers fills the DeepSpeed config's "auto" values from the TrainingArguments rtool builds (GPU
    precision policy: float32 master weights, bf16 autocast); nothing may contradict them."""
    pytest.importorskip("deepspeed", reason="transformers' DeepSpeed integration needs deepspeed installed")
    from accelerate.utils import DeepSpeedPlugin
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from rtool.train import core as training
    from rtool.train.precision import precision

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _, env = resolve_launch(CONFIGS / "zero3-8gpu.yaml")
    for key, value in env.items():
        if key.startswith("ACCELERATE_DEEPSPEED_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("bf16")
    prec = precision("auto", lora=False, cuda_available=True, bf16_supported=True)
    hp = training.Hyperparams(out=tmp_path, lr=1e-5, batch_size=1, grad_accum=16, gradient_checkpointing=True)
    args = TrainingArguments(**training.trainer_args(hp, prec), use_cpu=True)  # use_cpu: bf16 without a GPU
    config = HfTrainerDeepSpeedConfig(plugin.deepspeed_config)
    config.trainer_config_process(args)
    assert config.config["gradient_accumulation_steps"] == 16
    assert config.config["train_micro_batch_size_per_gpu"] == 1
    assert config.config["bf16"]["enabled"] is True


# ---- the Makefile ---------------------------------------------------------------------------------------------

def dry_run(tmp_path, *overrides, target="all"):
    """`make -n TARGET` in examples/gpu with OUT under tmp_path: the commands, continuation lines joined, each
    split into words."""
    result = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(GPU), target,
                             f"OUT={tmp_path / 'run'}", *overrides],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def rtool_commands():
    import typer.main

    from rtool.cli import app

    root = typer.main.get_command(app)
    context = root.make_context("rtool", ["--help"], resilient_parsing=True)
    return {name: root.get_command(context, name) for name in root.list_commands(context)}


def parse_rtool(commands, words):
    """(subcommand, its parsed parameters) for `rtool SUB ARGS`, by the typer command itself: an unknown flag or a
    bad value is an error here, as it would be at run time. Shell redirections end the arguments."""
    import click

    name, args = words[0], words[1:]
    if ">" in args:
        args = args[:args.index(">")]
    assert name in commands, f"rtool has no command {name!r}"
    command = commands[name]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [word for word in args if word.startswith("-") and word not in known and not _number(word)]
    assert not unknown, f"rtool {name} has no {unknown}"
    try:
        context = command.make_context(name, list(args))
    except click.ClickException as error:
        pytest.fail(f"rtool {name} {' '.join(args)}: {error.format_message()}")
    return name, context.params


def _number(word):
    try:
        float(word)
        return True
    except ValueError:
        return False


def pipeline(tmp_path, *overrides):
    """The rtool commands of `make -n all`, in order: (subcommand, params, accelerate launch args or None)."""
    from accelerate.commands.launch import launch_command_parser

    commands = rtool_commands()
    steps = []
    for words in dry_run(tmp_path, *overrides):
        if words[:2] == ["accelerate", "launch"]:
            launch = launch_command_parser().parse_args(words[2:])
            assert launch.module and launch.training_script == "rtool.cli"
            assert (GPU / launch.config_file).is_file(), launch.config_file  # relative: to examples/gpu (make -C)
            steps.append((*parse_rtool(commands, launch.training_script_args), launch))
        elif words[0] == "rtool":
            steps.append((*parse_rtool(commands, words[1:]), None))
    return steps


@needs_make
def test_dry_run_lists_the_stages_in_order_with_flags_rtool_knows(tmp_path):
    out = tmp_path / "run"
    steps = pipeline(tmp_path)
    assert [name for name, _, _ in steps] == ["distill", "sft", "redi", "merge-bai", "grpo"] + ["eval"] * 5
    by_name = {}
    for name, params, launch in steps:
        by_name.setdefault(name, []).append((params, launch))
    (distill, _), = by_name["distill"]
    assert distill["teacher"].startswith("http") and distill["resume"]
    # Training stages run under accelerate with the 8-GPU DDP config, all processes of one node.
    for name in ("sft", "redi", "grpo"):
        (params, launch), = by_name[name]
        assert Path(launch.config_file).name == "ddp-8gpu.yaml" and launch.num_processes == 8
        assert params["resume"] and params["gradient_checkpointing"] and not params["lora"]
    for name in ("distill", "merge-bai", "eval"):
        assert all(launch is None for _, launch in by_name[name])
    # Each stage starts from the one before.
    (sft, _), = by_name["sft"]
    (redi, _), = by_name["redi"]
    (bai, _), = by_name["merge-bai"]
    (grpo, _), = by_name["grpo"]
    assert redi["model"] == str(sft["out"]) == str(out / "sft")
    assert str(bai["reasoning"]) == str(redi["out"])
    assert grpo["model"] == str(bai["out"])
    assert [params["model"] for params, _ in by_name["eval"]][1:] == [str(out / s) for s in
                                                                      ("sft", "redi", "bai", "grpo")]
    assert all(params["bench"] == BENCH for params, _ in by_name["eval"]) and shipped_benchmark(BENCH).is_file()
    # Realistic for a 1.5B student: long traces, small learning rates, global batches as documented.
    assert sft["max_length"] >= 8192 and sft["lr"] <= 2e-5
    assert redi["alpha"] == 0.8 and redi["lr"] == 1e-6
    assert grpo["lr"] == 1e-6 and grpo["use_vllm"] and grpo["max_steps"]
    assert sft["batch_size"] * sft["grad_accum"] * 8 == 128
    assert redi["batch_size"] * redi["grad_accum"] * 8 == 32
    assert grpo["batch_size"] * grpo["grad_accum"] * 8 == 256
    assert (grpo["batch_size"] * grpo["grad_accum"] * 8) % grpo["num_generations"] == 0


@needs_make
@pytest.mark.parametrize("overrides, config, processes, accum", [
    (["NGPUS=1"], "1gpu.yaml", 1, 128),
    (["ACCEL_CONFIG=accelerate/zero3-8gpu.yaml", "NNODES=2", "NODE_RANK=1", "MAIN_IP=10.0.0.1"],
     "zero3-8gpu.yaml", 16, 8),
])
def test_dry_run_on_other_hardware_keeps_the_global_batch(tmp_path, overrides, config, processes, accum):
    for name, params, launch in pipeline(tmp_path, *overrides):
        if launch is None:
            continue
        assert Path(launch.config_file).name == config and launch.num_processes == processes
        if processes == 16:
            assert (launch.num_machines, launch.machine_rank, launch.main_process_ip) == (2, 1, "10.0.0.1")
        if name == "sft":
            assert params["grad_accum"] == accum and params["batch_size"] * accum * processes == 128


@needs_make
def test_dry_run_with_lora_hands_on_the_merged_models(tmp_path):
    out = tmp_path / "run"
    steps = {name: params for name, params, _ in pipeline(tmp_path, "LORA=1") if name != "eval"}
    for name in ("sft", "redi", "grpo"):
        assert steps[name]["lora"] and steps[name]["merge_lora"], name
    assert steps["sft"]["lr"] == 1e-4 and steps["redi"]["lr"] == 1e-5
    assert steps["redi"]["model"] == str(out / "sft" / "merged")
    assert str(steps["merge-bai"]["reasoning"]) == str(out / "redi" / "merged")


@needs_make
def test_a_bad_split_of_the_global_batch_stops_make(tmp_path):
    result = subprocess.run(["make", "-n", "-C", str(GPU), "sft", f"OUT={tmp_path}", "NGPUS=3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "global batch 128 is not a multiple of 1 per GPU x 3 processes" in result.stderr
    result = subprocess.run(["make", "-n", "-C", str(GPU), "sft", f"OUT={tmp_path}", "NNODES=2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "needs MAIN_IP" in result.stderr


@needs_make
def test_finished_stages_are_not_run_again(tmp_path):
    run = tmp_path / "run"
    (run / "done").mkdir(parents=True)
    for age, path in enumerate([run / "prompts.jsonl", run / "traces.jsonl", run / "done" / "sft"]):
        path.touch()
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    names = [words[words.index("rtool.cli") + 1] if "rtool.cli" in words else words[1]
             for words in dry_run(tmp_path) if words[0] in ("rtool", "accelerate")]
    assert names == ["redi", "merge-bai", "grpo"] + ["eval"] * 5


# ---- a real 2-process run of the Makefile's sft recipe on the CPU ---------------------------------------------

def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@needs_make
def test_makefile_sft_runs_under_accelerate_with_two_cpu_processes(tmp_path, tiny_model_dir, tiny_task_file):
    """`make sft` with the CPU twin of the DDP config: accelerate starts 2 processes (gloo), rtool trains the tiny
    model through the Makefile's own launch line and flags; one model and one metrics writer; stdout is the out
    dir (rank 0 only; make -s echoes nothing); the stage's stamp is left."""
    import torch

    run = tmp_path / "run"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RTOOL_DEBUG": "0"}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(GPU), "sft", "-o", str(tiny_task_file),
         f"OUT={run}", f"TRACES={tiny_task_file}", f"STUDENT={tiny_model_dir}", "NGPUS=2",
         "ACCEL_CONFIG=accelerate/ddp-2cpu.yaml", "SFT_GLOBAL_BATCH=4", "SFT_BATCH=2", "SFT_LR=1e-2",
         "MAX_LENGTH=256", "SFT_EXTRA=--max-steps 2 --warmup-ratio 0 --logging-steps 1 --save-steps 0"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    out = run / "sft"
    assert result.stdout == f"{out}\n"
    assert len(list(out.rglob("model.safetensors"))) == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]  # one writer, two processes
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(out).values()))
    assert (run / "done" / "sft").is_file()


@needs_make
def test_check_loading_reports_every_process(tmp_path, tiny_model_dir):
    """`make check-loading`, the GPU node's host-memory check, as far as a CPU runs it: with the 2-process CPU DDP
    config (not sharded: no verdict) it runs 2 sft steps in each process and prints each one's peak memory."""
    run = tmp_path / "run"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RTOOL_DEBUG": "0"}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(GPU), "check-loading", f"OUT={run}", "NGPUS=2",
         f"CHECK_MODEL={tiny_model_dir}", "ACCEL_CONFIG=accelerate/ddp-2cpu.yaml", f"PYTHON={sys.executable}"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    out = run / "check-loading" / "sft"
    assert result.stdout.splitlines()[:3] == [str(out), f"model: {tiny_model_dir}, 0 MiB in float32",
                                              "rank  peak MiB at training start  peak MiB at end"]
    table = [line.split() for line in result.stdout.splitlines()[3:]]
    assert [row[0] for row in table] == ["0", "1"] and len(table) == 2
    assert all(0 < int(row[1]) <= int(row[2]) for row in table)
    assert (out / "model.safetensors").is_file()
