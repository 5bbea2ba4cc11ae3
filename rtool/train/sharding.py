"""Loading the model for a trainer that shards it across processes (DeepSpeed ZeRO-3, FSDP) without a whole copy
in every process: `run_training` loads the model inside `model_loading`.

    with model_loading(args) as reads_weights:     # args: core.trainer_args(...), as the trainer will get them
        model, tokenizer = load_model(spec, ..., for_training=True, weights=reads_weights)

On entry the trainer's arguments are set up, as TRL sets them up before it loads a model it is handed by path: that
starts the process group and, under an accelerate DeepSpeed config, registers the DeepSpeed config with
transformers. With ZeRO-3, `from_pretrained` then builds the model inside `deepspeed.zero.Init`: each process holds
its partition as the model loads, and only rank 0 reads the checkpoint. Under accelerate's FSDP with
`fsdp_cpu_ram_efficient_loading` (its default), rank 0 reads the weights and every other process builds the model
without them (`load_model(weights=False)`: shapes on the meta device), then receives its shard of rank 0's weights
as accelerate shards the model. transformers 5 leaves that to the caller: its own FSDP path still reads the whole
checkpoint in every process (huggingface/transformers#43749). Without that setting every process loads the whole
model, as FSDP then needs.

FSDP runs on GPUs only: accelerate trains CPU processes with DDP (its MULTI_CPU mode ignores the FSDP plugin), which
keeps the whole model in each process, so there every process loads it, and rtool says so once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import os
import sys

from rtool.errors import UserError
from rtool.log import logger
from rtool.train.processes import is_main_process, rank, world_size


def check() -> None:
    """UserError, before any data or weights load, when the accelerate config asks for DeepSpeed and it is not
    installed (transformers would stop later, with a PackageNotFoundError). DeepSpeed is imported here when asked
    for, with stdout pointed at stderr: its logger's handler keeps the stream it was made with, and stdout carries
    the command's result only."""
    if not _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("the accelerate config asks for DeepSpeed (distributed_type: DEEPSPEED), which is not "
                        "installed", hint="pip install deepspeed, or launch with a DDP or FSDP config")
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed  # noqa: F401


@contextlib.contextmanager
def model_loading(args: dict):
    """Set up the trainer's arguments (`args`: keyword arguments of transformers' TrainingArguments) and yield
    whether this process reads the model's weights (False: it receives them from rank 0, so it loads the model
    with `weights=False`). The arguments stay alive until exit: the DeepSpeed config they register must outlive
    the load. What libraries print meanwhile (DeepSpeed's op builds) goes to stderr."""
    from transformers import TrainingArguments
    from transformers.integrations import is_deepspeed_zero3_enabled

    with contextlib.redirect_stdout(sys.stderr):
        # A copy (the trainer gets `args` as they were) without a recipe's TRL-only settings (grpo's epsilon_high).
        fields = {field.name for field in dataclasses.fields(TrainingArguments)}
        training_args = TrainingArguments(**copy.deepcopy({key: value for key, value in args.items() if key in fields}))
        fsdp = _env_flag("ACCELERATE_USE_FSDP") or bool(training_args.fsdp)
        on_accelerator = training_args.device.type != "cpu"
        ram_efficient = _env_flag("FSDP_CPU_RAM_EFFICIENT_LOADING")
        if is_main_process():
            _say_how_it_loads(fsdp=fsdp, on_accelerator=on_accelerator, ram_efficient=ram_efficient,
                              zero3=is_deepspeed_zero3_enabled())
        yield reads_weights(fsdp=fsdp and on_accelerator, ram_efficient=ram_efficient, rank=rank())
        del training_args


def reads_weights(*, fsdp: bool, ram_efficient: bool, rank: int) -> bool:
    """Whether the process of rank `rank` reads the checkpoint's weights: all do, but under FSDP with
    cpu_ram_efficient_loading, where rank 0 alone does and accelerate broadcasts them (FSDP2:
    fsdp2_load_full_state_dict; FSDP1: sync_module_states)."""
    return not (fsdp and ram_efficient and rank != 0)


def _say_how_it_loads(*, fsdp: bool, on_accelerator: bool, ram_efficient: bool, zero3: bool) -> None:
    processes = world_size()
    if zero3:
        logger.info("DeepSpeed ZeRO-3: the model is partitioned across the %d processes as it loads (rank 0 reads "
                    "the checkpoint)", processes)
    elif fsdp and not on_accelerator and processes > 1:
        logger.warning("accelerate applies FSDP on GPUs only: these %d CPU processes train with DDP, each holding "
                       "the whole model", processes)
    elif fsdp and not ram_efficient and processes > 1:
        logger.warning("FSDP without fsdp_cpu_ram_efficient_loading: each of the %d processes loads the whole "
                       "model before FSDP shards it; set fsdp_cpu_ram_efficient_loading: true in the accelerate "
                       "config to load it on rank 0 only", processes)
    elif fsdp and processes > 1:
        logger.info("FSDP: rank 0 reads the weights; the other %d processes build the model without them and "
                    "receive their shards", processes - 1)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
