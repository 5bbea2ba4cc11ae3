"""Which training process this is, of how many, and on what devices: torchrun/accelerate set RANK, WORLD_SIZE and
LOCAL_WORLD_SIZE; a single process has neither. Only rank 0 logs progress and writes OUT.
"""

from __future__ import annotations

import os

from rtool.errors import UserError
from rtool.log import logger

def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def device_shortage(processes: int, gpus: int) -> str | None:
    """Why `processes` training processes on this machine cannot each have one of its `gpus` CUDA devices, or None
    (no GPU: they share the CPU)."""
    if gpus == 0 or processes <= gpus:
        return None
    return (f"{processes} training processes on this machine but {gpus} CUDA GPU(s) visible: each process takes "
            f"its own GPU")


def check_devices() -> None:
    """UserError when torchrun/accelerate started more processes on this machine than it has GPUs (CUDA would fail
    each extra one with "invalid device ordinal" and a traceback)."""
    import torch

    problem = device_shortage(local_world_size(), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if problem:
        raise UserError(problem, hint="start at most that many (torchrun --nproc_per_node N), or hide the GPUs "
                                      "(CUDA_VISIBLE_DEVICES=) to train on the CPU")


def quiet_other_ranks() -> None:
    """Under torchrun, only rank 0 logs progress; the others keep warnings and errors."""
    import logging

    if not is_main_process():
        logger.setLevel(logging.WARNING)


def end_distributed() -> None:
    """Leave the process group (without this torch warns about a group never destroyed). Call it only once the
    trainer and its DDP-wrapped model are released: freeing DDP's reducer after the group is destroyed hung a rank
    on a gloo futex at exit now and then (seen with 2 CPU processes under load)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

