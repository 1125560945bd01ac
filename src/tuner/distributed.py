"""Several processes (`torchrun`, `accelerate launch`): the process group and the one run folder they share.

tuner adds no launcher: the launcher sets RANK / WORLD_SIZE / LOCAL_RANK (read in `hardware.py`), Trainer (through
accelerate) trains data-parallel, and this module makes the rest safe: rank 0 alone picks and writes the run folder
(and evaluates), and every rank learns its path, so no `-2` folder appears for rank 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .hardware import device_kind, is_main_process, local_rank, world_size


def process_group():
    """Join the launcher's process group (Trainer later reuses it): gloo on CPUs, NCCL for CUDA tensors, with this
    rank's GPU made the current device."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device_kind() == "cuda":
            torch.cuda.set_device(local_rank())
            dist.init_process_group(backend="cuda:nccl,cpu:gloo")
        else:
            dist.init_process_group(backend="gloo")
    return dist


def before_loading() -> None:
    """Under a launcher, join the process group before the model loads: the rank's own GPU is then the current
    device, and transformers sees the group (under FSDP with `cpu_ram_efficient_loading`, rank 0 alone reads the
    weights and the others build the model empty, to receive them when FSDP wraps it)."""
    if world_size() > 1:
        process_group()


def shared(make: Callable[[], Path]) -> Path:
    """`make()` on rank 0 only (it creates the run folder); every rank gets its result."""
    if world_size() == 1:
        return make()
    dist = process_group()
    box = [str(make()) if is_main_process() else None]
    dist.broadcast_object_list(box, src=0, group=dist.new_group(backend="gloo"))
    return Path(box[0])
