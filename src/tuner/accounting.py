"""Time and resources per phase: wall seconds, device, GPU-hours (CPU-hours on a CPU), tokens/s, peak memory."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

from .hardware import device_info, device_kind, peak_rss_bytes, world_size


@contextmanager
def phase(name: str, into: dict[str, Any]):
    """Measure one phase; on exit `into[name]` holds its wall seconds, device, device-hours and peak memory.

    The caller may add `tokens` to the yielded dict; tokens/s is then derived. GPU-hours are wall hours times the
    number of processes (one device each); on a CPU-only machine the same figure is reported as `cpu_hours`, not hidden.
    """
    import torch

    record: dict[str, Any] = {}
    cuda = device_kind() == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        yield record
    finally:
        wall = time.perf_counter() - start
        device = device_info()
        world = world_size()
        # One device per process: a single process uses one GPU even when more are visible.
        hours = wall / 3600 * world
        record.update(wall_seconds=round(wall, 3), **device, world_size=world)
        record["gpu_hours" if cuda else "cpu_hours"] = hours
        if cuda:
            record["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            # The process's peak resident memory so far; on a CPU the model lives there.
            record["peak_memory_mb"] = round(peak_rss_bytes() / 2**20, 1)
        if record.get("tokens") and wall > 0:
            record["tokens_per_second"] = round(record["tokens"] / wall, 1)
        into[name] = record


def count_earlier(record: dict[str, Any], earlier_seconds: float) -> None:
    """A resumed run's train phase includes the time before the interruption (hours and tokens/s are whole-run)."""
    if not earlier_seconds:
        return
    hours_key = "gpu_hours" if "gpu_hours" in record else "cpu_hours"
    record[hours_key] += earlier_seconds / 3600 * record.get("world_size", 1)
    record["wall_seconds_before_resume"] = earlier_seconds
    total = record["wall_seconds"] + earlier_seconds
    if record.get("tokens"):
        record["tokens_per_second"] = round(record["tokens"] / total, 1)
