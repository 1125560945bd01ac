"""Several processes (`torchrun`, `accelerate launch`): which process writes, and the one run folder they share.

tuner adds no launcher: the launcher sets RANK / WORLD_SIZE / LOCAL_RANK, Trainer (through accelerate) trains
data-parallel, and this module makes the rest safe: rank 0 alone picks and writes the run folder (and evaluates),
and every rank learns its path, so no `-2` folder appears for rank 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes run files and prints results."""
    return int(os.environ.get("RANK", "0")) == 0


def engine() -> str:
    """What started the processes, for the manifest."""
    if any(key.startswith("ACCELERATE_") for key in os.environ) and world_size() > 1:
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in os.environ or world_size() > 1:
        return "torchrun"
    return "single process"


def _process_group():
    """Join the launcher's process group (Trainer later reuses it): gloo on CPUs, NCCL for CUDA tensors."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
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


def wait_for_main() -> None:
    """Hold every rank here until all have arrived (so rank 0 finishes writing before the others exit)."""
    if world_size() > 1:
        _process_group().barrier()
