"""Every probe of the machine in one leaf: the device, CPU name and flags, free memory, peak memory, the processes a
launcher started, and whether an error means the device ran out of memory.

Probes only read; what follows from them (precision, batching, checkpointing) is decided in `speed.py`.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import Any

MB = 2**20


def device_kind() -> str:
    """'cuda' when a CUDA GPU is visible, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 `flags`, Arm `Features`); empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return {word for line in handle if line.startswith(("flags", "Features")) for word in line.split()}
    except OSError:
        return set()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (x86 AVX512-BF16 or AMX, Arm BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_bf16_speedup(rows: int = 512, width: int = 576, out: int = 1536, repeats: int = 5) -> float:
    """How much faster a linear layer's forward and backward runs in bf16 autocast than in fp32 on this CPU (fp32
    time over bf16 time, best of `repeats` each after a warm-up; about 0.2 s). The flags say whether bf16 is native,
    not whether it pays: on a 2-core Intel Xeon with AVX512-BF16 and no AMX it measured about 0.6 (bf16 slower)."""
    import time

    import torch

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out, width, generator=generator)
    inputs = torch.randn(rows, width, generator=generator, requires_grad=True)

    def best(autocast: bool) -> float:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                result = torch.nn.functional.linear(inputs, weight)
            result.float().sum().backward()
            times.append(time.perf_counter() - start)
        return min(times[1:])

    best(False), best(True)  # both kernels warmed first: the first pass of a process runs slower, whichever it is
    return best(False) / best(True)


def cuda_has_bf16() -> bool:
    """Whether the visible GPU computes bf16 natively (compute capability 8 and up). T4 and V100 only emulate it,
    which torch's default check counts as support."""
    import torch

    return torch.cuda.is_bf16_supported(including_emulation=False)


def cuda_capability() -> tuple[int, int] | None:
    """The visible GPU's compute capability (8, 0 for an A100), None without one."""
    if device_kind() != "cuda":
        return None
    import torch

    return torch.cuda.get_device_capability()


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
        return {
            "device": "cuda",
            "device_name": torch.cuda.get_device_name(0),
            "device_count": torch.cuda.device_count(),
        }
    return {
        "device": "cpu",
        "device_name": cpu_name(),
        "device_count": 1,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def available_memory_mb(device: str) -> float | None:
    """Free memory of the device a run would use: the GPU's free memory, or the machine's available RAM."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free / MB
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's out-of-memory error, or a RuntimeError that says the same (other backends)."""
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def world_size() -> int:
    """How many processes the launcher (torchrun, accelerate launch) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its machine (the GPU it owns)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device() -> str:
    """This process's device: its own GPU (`cuda:LOCAL_RANK`) under a launcher, `cuda:0` alone, or `cpu`."""
    return f"cuda:{local_rank()}" if device_kind() == "cuda" else "cpu"


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
