"""Time and resources per phase: wall seconds, device, GPU-hours (CPU-hours on a CPU), tokens/s, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from typing import Any


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """The device training and evaluation run on: GPU name and count, or the CPU and its cores."""
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(0),
                "device_count": torch.cuda.device_count()}
    return {"device": "cpu", "device_name": cpu_name(), "device_count": 1, "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


@contextmanager
def phase(name: str, into: dict[str, Any]):
    """Measure one phase; on exit `into[name]` holds its wall seconds, device, device-hours and peak memory.

    The caller may add `tokens` to the yielded dict; tokens/s is then derived. GPU-hours are wall hours times the
    number of processes (one device each); on a CPU-only machine the same figure is reported as `cpu_hours`, not hidden.
    """
    import torch

    record: dict[str, Any] = {}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        yield record
    finally:
        wall = time.perf_counter() - start
        device = device_info()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        # One device per process: a single process uses one GPU even when more are visible.
        hours = wall / 3600 * world
        record.update(wall_seconds=round(wall, 3), **device, world_size=world)
        record["gpu_hours" if cuda else "cpu_hours"] = hours
        if cuda:
            record["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            # The process's peak resident memory so far; on a CPU the model lives there.
            record["peak_memory_mb"] = round(_peak_rss_bytes() / 2**20, 1)
        if record.get("tokens") and wall > 0:
            record["tokens_per_second"] = round(record["tokens"] / wall, 1)
        into[name] = record
