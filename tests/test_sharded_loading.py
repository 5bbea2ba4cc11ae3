"""The model load for sharded training (DeepSpeed ZeRO-3, FSDP): rtool.train.sharding and load_model(weights=False).

What a CPU shows: a process that receives its weights from rank 0 (FSDP with cpu_ram_efficient_loading) builds the
same model as rank 0 without reading a weight (same parameters, ties, buffers, generation config, and no memory for
them), for every loader the training commands use; which process reads the weights; under an accelerate FSDP
config, CPU processes train with DDP (accelerate applies FSDP on GPUs only) and are told so; an accelerate DeepSpeed
config without deepspeed stops before any work; and, where deepspeed is installed, ZeRO-3 partitions the model as it
loads. FSDP itself needs GPUs: `make -C examples/gpu check-loading` measures it on a node.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtool.io.models import load_model, record_absolute_base, save_model

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
RTOOL = str(Path(sys.executable).with_name("rtool"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def signature(model):
    """What a process that receives its weights must agree on with rank 0: every parameter's name, shape, dtype
    and trainability, and the model's class."""
    return type(model).__name__, {name: (tuple(p.shape), p.dtype, p.requires_grad)
                                  for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def bf16_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model saved in bfloat16, as hub checkpoints are (rtool loads it in float32 for full fine-tuning)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    return save_model(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path_factory.mktemp("bf16") / "m")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model, its base recorded as rtool records it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    path = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(path)
    record_absolute_base(path)
    return path


@pytest.mark.parametrize("source", ["float32", "bfloat16"])
def test_a_model_built_without_weights_is_the_loaded_model_without_data(tiny_model_dir, bf16_model_dir, source):
    path = tiny_model_dir if source == "float32" else bf16_model_dir
    loaded, _ = load_model(path, dtype="float32", device="cpu", for_training=True)
    empty, _ = load_model(path, dtype="float32", device="cpu", for_training=True, weights=False)
    assert signature(empty) == signature(loaded)
    assert {p.device.type for p in empty.parameters()} == {"meta"}
    # Buffers are what the model computes, not what rank 0 broadcasts: they must be real and equal.
    loaded_buffers, empty_buffers = dict(loaded.named_buffers()), dict(empty.named_buffers())
    assert loaded_buffers.keys() == empty_buffers.keys() and loaded_buffers
    assert all(torch.equal(loaded_buffers[name], empty_buffers[name]) for name in loaded_buffers)
    assert empty.lm_head.weight is empty.model.embed_tokens.weight  # tied as in the loaded model
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert empty.generation_config.to_dict() == loaded.generation_config.to_dict()
    assert empty.training and empty.name_or_path == loaded.name_or_path


def test_every_training_loader_builds_the_same_model_without_weights(tiny_model_dir, adapter_dir):
    """prm-train's token classifier (its embeddings grown for the step separator) and a LoRA adapter as --model
    (trained further with --lora, or merged into its base for full fine-tuning, as run_training does)."""
    from rtool.train.prm import load_prm
    from rtool.train.run import adapter_start

    loaders = [lambda **kw: load_prm(tiny_model_dir, seed=0, **kw),
               lambda **kw: load_model(adapter_dir, **kw)]
    for loader in loaders:
        loaded, _ = loader(dtype="float32", device="cpu", for_training=True)
        empty, _ = loader(dtype="float32", device="cpu", for_training=True, weights=False)
        assert signature(empty) == signature(loaded)
        assert {p.device.type for p in empty.parameters()} == {"meta"}
    assert signature(empty)[0] == "PeftModelForCausalLM"
    merged_loaded, _ = adapter_start(loaded, None)
    merged_empty, _ = adapter_start(empty, None)
    assert signature(merged_empty) == signature(merged_loaded)
    assert signature(merged_empty)[0] == "LlamaForCausalLM"


MEASURE = """
import json, sys
from pathlib import Path
from rtool.io.models import load_model

def mib(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":"))
    return int(line.split()[1]) / 1024

load_model(sys.argv[2], dtype="float32", device="cpu", for_training=True)  # imports warm
growth = {}
for weights in (False, True):
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current RSS
    before = mib("VmRSS")
    model, _ = load_model(sys.argv[1], dtype="float32", device="cpu", for_training=True, weights=weights)
    growth[str(weights)] = mib("VmHWM") - before
    del model
print(json.dumps(growth))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures with Linux's /proc")
def test_a_process_that_reads_no_weights_holds_no_copy(tmp_path, tiny_model_dir):
    """A 34M-parameter model (134 MiB in float32) saved in bfloat16 and loaded in float32: loading it takes a whole
    float32 copy, building it without weights next to nothing."""
    from transformers import AutoTokenizer

    from rtool.tiny import save_tiny, tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = tiny_llama(tokenizer, hidden_size=512, num_layers=8, num_heads=8, seed=0).to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    copy_mib = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    path = save_tiny(model, tokenizer, tmp_path / "m")
    del model
    # cwd: not the repo root, where `python -c` would import ./rtool rather than the installed package
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(tiny_model_dir)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **SINGLE_THREAD}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    growth = json.loads(result.stdout.splitlines()[-1])
    assert growth["True"] > 0.8 * copy_mib  # the measure sees a copy where there is one
    assert growth["False"] < 0.1 * copy_mib, growth


@pytest.mark.parametrize("fsdp, ram_efficient, rank, reads", [
    (False, False, 0, True), (False, False, 1, True),  # DDP, DeepSpeed (which partitions in from_pretrained)
    (False, True, 3, True),                             # the env variable without FSDP means nothing
    (True, False, 0, True), (True, False, 5, True),     # FSDP without it: every process loads the whole model
    (True, True, 0, True), (True, True, 1, False), (True, True, 7, False),  # rank 0 reads, the others receive
])
def test_which_process_reads_the_weights(fsdp, ram_efficient, rank, reads):
    from rtool.train.sharding import reads_weights

    assert reads_weights(fsdp=fsdp, ram_efficient=ram_efficient, rank=rank) is reads


FSDP_ON_CPUS = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_cpu_ram_efficient_loading: true
  fsdp_state_dict_type: FULL_STATE_DICT
num_processes: 2
num_machines: 1
machine_rank: 0
main_process_port: 0
mixed_precision: "no"
use_cpu: true
"""


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def launch(tmp_path, config: str, model, data, *extra, env=None):
    (tmp_path / "accelerate.yaml").write_text(config)
    out = tmp_path / "out"
    command = [ACCELERATE, "launch", "--config_file", str(tmp_path / "accelerate.yaml"), "-m", "rtool.cli", "sft",
               "--model", str(model), "--data", str(data), "--out", str(out), "--max-steps", "2", "--lr", "1e-2",
               "--batch-size", "2", "--save-steps", "0", "--logging-steps", "1", *extra]
    # Two CPU processes, on a GPU machine too (CUDA hidden): these tests mean the CPU.
    environment = {**os.environ, **SINGLE_THREAD, "RTOOL_DEBUG": "0", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    # cwd: not the repo root, where `-m rtool.cli` would import ./rtool rather than the installed package
    return out, subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)


def test_an_fsdp_config_on_cpus_trains_with_ddp_and_says_so(tmp_path, tiny_model_dir, tiny_task_file):
    """accelerate ignores the FSDP plugin on CPUs (MULTI_CPU) and wraps the model in DDP: every process must load
    the whole model then (an empty one would fail), and the user learns that FSDP did not apply."""
    out, result = launch(tmp_path, FSDP_ON_CPUS, tiny_model_dir, tiny_task_file)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"
    notes = [line for line in result.stderr.splitlines() if "accelerate applies FSDP on GPUs only" in line]
    assert len(notes) == 1 and "these 2 CPU processes train with DDP" in notes[0]
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(out).values()))


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed")
def test_a_deepspeed_config_without_deepspeed_stops_before_any_work(tmp_path, tiny_model_dir, tiny_task_file):
    """accelerate launch sets ACCELERATE_USE_DEEPSPEED for a DEEPSPEED config; without deepspeed installed rtool
    says so in one line before reading data or loading the model, and leaves no OUT."""
    out = tmp_path / "out"
    result = subprocess.run([RTOOL, "sft", "--model", str(tiny_model_dir),
                             "--data", str(tiny_task_file), "--out", str(out), "--max-steps", "1"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, **SINGLE_THREAD, "RTOOL_DEBUG": "0", "ACCELERATE_USE_DEEPSPEED": "true"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "rtool: error: the accelerate config asks for DeepSpeed (distributed_type: DEEPSPEED), which is not "
        "installed (pip install deepspeed, or launch with a DDP or FSDP config)"]
    assert not out.exists()


ZERO3_ON_CPUS = """compute_environment: LOCAL_MACHINE
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


def test_zero3_partitions_the_model_as_it_loads(tmp_path, bf16_model_dir, tiny_task_file):
    """DeepSpeed on 2 CPU processes (its CPU accelerator, gloo): transformers builds the model inside
    deepspeed.zero.Init, which it does only when the DeepSpeed config is registered before from_pretrained; the
    run trains and saves one loadable model."""
    pytest.importorskip("deepspeed", reason="DeepSpeed ZeRO-3 needs deepspeed installed")
    out, result = launch(tmp_path, ZERO3_ON_CPUS, bf16_model_dir, tiny_task_file,
                         env={"TRANSFORMERS_VERBOSITY": "info"})
    assert result.returncode == 0, result.stderr[-3000:]
    # accelerate's launcher process imports deepspeed too, whose logger prints its accelerator choice on stdout;
    # rtool's processes print the out dir only.
    assert [line for line in result.stdout.splitlines() if "real_accelerator.py" not in line] == [str(out)]
    assert "Detected DeepSpeed ZeRO-3: activating zero.init() for this model" in result.stderr
    assert "DeepSpeed ZeRO-3: the model is partitioned across the 2 processes as it loads" in result.stderr
    trained, _ = load_model(out, dtype="float32", device="cpu")
    base, _ = load_model(bf16_model_dir, dtype="float32", device="cpu")
    assert signature(trained) == signature(base)
    assert any(not torch.equal(a, b) for a, b in zip(base.state_dict().values(), trained.state_dict().values()))
