"""Several processes (`torchrun`, `accelerate launch`): the process group and the one run folder they share.

tuner adds no launcher: the launcher sets RANK / WORLD_SIZE / LOCAL_RANK (read in `hardware.py`), Trainer (through
accelerate) trains data-parallel, and this module makes the rest safe: rank 0 alone picks and writes the run folder
(and evaluates), and every rank learns its path, so no `-2` folder appears for rank 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .hardware import device_kind, is_main_process, local_rank, world_size


def _process_group():
    """Join the launcher's process group (Trainer later reuses it): gloo on CPUs, NCCL for CUDA tensors."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device_kind() == "cuda":
            torch.cuda.set_device(local_rank())
            dist.init_process_group(backend="cuda:nccl,cpu:gloo")
        else:
            dist.init_process_group(backend="gloo")
    return dist


def shared(make: Callable[[], Path]) -> Path:
    """`make()` on rank 0 only (it creates the run folder); every rank gets its result."""
    if world_size() == 1:
        return make()
    dist = _process_group()
    box = [str(make()) if is_main_process() else None]
    dist.broadcast_object_list(box, src=0, group=dist.new_group(backend="gloo"))
    return Path(box[0])

