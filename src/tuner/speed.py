"""Speed and memory settings, decided once from the recipe and the hardware before any trainer is built: precision,
batch layout (packing or length grouping), gradient checkpointing and kernels, each with the reason for it.

`decide_precision` runs before the model loads (the weights' dtype depends on it); `decide` runs once the model and
its tokenizer are there and returns a plain `Speed`. The TRL config is built from it in `trainers.py`, and nothing
changes the config or the trainer afterwards. A recipe's own `train:` key always wins over a decision here.

Measured on CPU (BENCHMARKS.md): TRL's best-fit-decreasing packing flattens a batch into one padding-free sequence,
which the varlen flash-attention kernels split at the sequence boundaries; with SDPA or eager attention (every CPU,
GPUs without flash-attn) transformers instead masks the flattened sequence block-diagonally and still computes the
whole (batch x max_length)^2 score matrix. There, batches of rows of similar length waste almost nothing on padding
and keep attention short, so SFT packs only under flash attention and groups by length elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

from .errors import TunerError
from .estimate import estimate
from .files import cache_dir, write_json
from .hardware import (
    available_memory_mb,
    cpu_bf16_speedup,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_name,
    cuda_capability,
    cuda_has_bf16,
    device_kind,
)
from .rendering import longest_row_tokens

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")
# TUNER_MALLOC=system leaves the C allocator as glibc sets it up (for comparing, or where memory is tight).
MALLOC_ENV = "TUNER_MALLOC"
# Recipe keys under which a recipe decides checkpointing itself (`gradient_checkpointing` is transformers' older
# name of `activation_checkpointing`).
CHECKPOINTING_KEYS = ("gradient_checkpointing", "activation_checkpointing")
# On a CPU, the most tokens (rows x the longest row, a DPO pair counting both answers) one micro-batch holds.
# Measured (BENCHMARKS.md): 96 alpaca rows of up to about 750 tokens trained 1.20x as fast in micro-batches of 2 as in
# batches of 8, at 0.44x the memory, and faster than 1 row at a time; 16 DPO pairs of up to 1,024 tokens a side 1.80x
# as fast one pair at a time as 4; the quickstart's ticket rows (74 tokens at most) 0.69x as fast in 2s as in 8s.
MICRO_BATCH_TOKENS = 2048
# The sequences one training row puts through the model (a DPO pair: chosen and rejected side by side), for the
# methods whose batches may be split.
SEQUENCES_PER_ROW = {"sft": 1, "dpo": 2}
# DPO losses computed across a batch rather than per pair (AOT sorts the batch's log-ratios; the SFT term averages
# over the batch's tokens): a micro-batch would change them.
BATCH_LOSSES = {"aot", "aot_unpaired", "sft"}


@dataclass(frozen=True)
class Precision:
    """The compute precision (bf16, fp16 or fp32), the dtype the base weights are loaded in, and the precision the
    evaluator scores in (None: the compute precision)."""

    compute: str
    weights: str
    scoring: str | None = None
    reason: str | None = field(default=None, compare=False)


# bf16 autocast on a CPU only where it measured at least this much faster than fp32: it also rounds, so a near tie
# goes to fp32. Measured (benchmarks/cpu_precision.py): a LoRA step of SmolLM2-135M 1.71x faster in bf16 on one CPU with
# AVX512-BF16, 0.66x (slower) on a 2-core Intel Xeon with AVX512-BF16 and no AMX.
BF16_MIN_SPEEDUP = 1.1


def cpu_bf16_speedup_here() -> float | None:
    """`hardware.cpu_bf16_speedup` on this CPU, measured once per CPU model, flags and torch version and kept in
    tuner's cache (so every run on a machine decides alike); None where the CPU has no native bf16 (emulated bf16
    is many times slower, no need to measure)."""
    import torch

    if not cpu_has_native_bf16():
        return None
    key = hashlib.sha256(f"{cpu_name()}|{sorted(cpu_flags())}|{torch.__version__}".encode()).hexdigest()[:16]
    path = cache_dir() / "hardware" / f"cpu-bf16-{key}.json"
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speedup = round(cpu_bf16_speedup(), 3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"speedup": speedup, "cpu": cpu_name(), "torch": torch.__version__})
    except OSError:  # an unwritable cache: measured again next time
        pass
    return speedup


def decide_precision(model_config) -> Precision:
    """`model.dtype`, or for `auto`: bf16 on GPUs that support it, fp16 on older GPUs; on CPUs bf16 only where the
    CPU has native bf16 instructions, else fp32. On a CPU the weights stay fp32 and bf16 runs as autocast (mixed
    precision), so fp32 master weights keep small updates; on a GPU the weights are loaded in the compute dtype.

    Measured (BENCHMARKS.md): on a CPU with AVX512-BF16 a LoRA step of SmolLM2-135M in bf16 autocast is about 1.7x
    faster than fp32; where bf16 is emulated it is far slower (DESIGN.md reports ~17x), which is why TRL's bf16
    default is not taken blindly.

    Scoring on a CPU under `auto` is fp32, whatever training ran in: bf16 autocast moves a choice's log-probability
    by up to 0.34 nats, so near-ties went the other way on 3 of 20 quickstart rows against every faithful export
    (merged, GGUF f32/f16, vLLM), which all serve fp32 arithmetic on a CPU (shared/reviews/exports-in-real-clients).
    A run's accuracy is then the one its export reproduces.
    """
    device = device_kind()
    compute, scoring, reason = model_config.dtype, model_config.dtype, "model.dtype"
    if compute == "auto" and device == "cuda":
        compute = scoring = "bf16" if cuda_has_bf16() else "fp16"
        reason = f"{compute}: {'the GPU computes bf16' if compute == 'bf16' else 'the GPU has no bf16'}"
    elif compute == "auto":
        speedup = cpu_bf16_speedup_here()
        compute, scoring = ("bf16" if speedup and speedup >= BF16_MIN_SPEEDUP else "fp32"), "fp32"
        reason = (
            "fp32: the CPU has no native bf16"
            if speedup is None
            else f"{compute}: bf16 autocast measured {speedup:.2f}x fp32's speed on this CPU "
            f"({'at least' if compute == 'bf16' else 'under'} {BF16_MIN_SPEEDUP}x); scores in fp32"
        )
    return Precision(compute=compute, weights=compute if device == "cuda" else "fp32", scoring=scoring, reason=reason)


def quantization_note(model_config) -> str | None:
    """What `model.quantize` costs where it runs, said before a run on a CPU: bitsandbytes' CPU path saves little
    memory for a small model and trains more slowly than LoRA (BENCHMARKS.md, SST-2: QLoRA SFT of SmolLM2-135M
    0.133 CPU-h against LoRA's 0.095 on the same 500 rows, peak RSS 5.7 GB against 5.3 GB). None on a GPU, or
    without quantization."""
    if not model_config.quantize or device_kind() == "cuda":
        return None
    return (
        f"tuner: {model_config.quantize} weights on a CPU (QLoRA): bitsandbytes' CPU path dequantizes each layer "
        f"as it runs, so this run is slower than LoRA and saves little memory for a model that fits in RAM "
        f"(BENCHMARKS.md measures both); QLoRA is for GPUs short of memory. For speed here, set "
        f"`model.quantize: null`."
    )


# What each flash-attention kernel needs: its package, and the smallest GPU compute capability it runs on.
FLASH_NEEDS = {"flash_attention_2": ("flash_attn", (8, 0)), "flash_attention_3": ("flash_attn_interface", (9, 0))}


def decide_attention(model_config, source: str = "<recipe>") -> str:
    """`model.attn_implementation`, or for `auto`: flash_attention_2 where its package is installed and the GPU has
    compute capability 8 or more, else sdpa. A flash kernel asked for where it cannot run is refused here, before
    any weight loads."""
    asked = model_config.attn_implementation
    if asked in ("sdpa", "eager"):
        return asked
    for kernel in [asked] if asked != "auto" else ["flash_attention_2"]:
        package, capability = FLASH_NEEDS[kernel]
        found = cuda_capability()
        if find_spec(package) is not None and found is not None and found >= capability:
            return kernel
        if asked != "auto":
            raise TunerError(
                f"{source}: key `model.attn_implementation` is {kernel}, which needs the {package} "
                f"package and a GPU of compute capability {capability[0]}.{capability[1]} or more; this "
                f"machine has {'a GPU of ' + '.'.join(map(str, found)) if found else 'no GPU'}"
                f"{'' if find_spec(package) else ' and no ' + package}. Use `auto` or sdpa."
            )
    return "sdpa"


def is_flash_attention(implementation: str | None) -> bool:
    """Whether an attention implementation is a varlen flash-attention kernel (which takes flattened batches as
    they are)."""
    return str(implementation or "") in FLASH_ATTENTION or "flash-attn" in str(implementation or "")


def liger_applies(recipe) -> bool:
    """Liger's Triton kernels (fused RMSNorm, SwiGLU, rotary) where they run: a CUDA GPU, the package installed, and
    a base that is not bitsandbytes-quantised (Liger replaces the MLP's linear layers)."""
    return device_kind() == "cuda" and not recipe.model.quantize and find_spec("liger_kernel") is not None


@dataclass(frozen=True)
class Speed:
    """What a training run does for speed and memory, decided before its trainer is built, with the reasons.

    `trl_values()` are the TRL config keys these decisions set; `manifest()` is what the run folder records.
    """

    precision: Precision
    attention: str | None
    batches: str
    packing: bool | None = None
    train_sampling_strategy: str | None = None
    length_column: bool = False
    gradient_checkpointing: bool = False
    gradient_checkpointing_reason: str | None = None
    liger_kernel: bool | None = None
    allocator: str | None = None
    micro_batch: int | None = None
    accumulation: int | None = None

    @property
    def packed_rows(self) -> bool:
        """SFT packing without a varlen kernel: packed rows batched as rows, each masked block-diagonally."""
        return bool(self.packing) and not is_flash_attention(self.attention)

    def trl_values(self) -> dict[str, Any]:
        """The TRL config keys tuner decides (a key left None is the recipe's or TRL's own)."""
        values: dict[str, Any] = {
            "bf16": self.precision.compute == "bf16",
            "fp16": self.precision.compute == "fp16",
            "use_cpu": device_kind() == "cpu",
            "gradient_checkpointing": self.gradient_checkpointing,
        }
        if self.packing is not None:
            values["packing"] = self.packing
        if self.train_sampling_strategy is not None:
            values["train_sampling_strategy"] = self.train_sampling_strategy
        if self.length_column:
            # The `length` column must reach the sampler: TRL's preference collator reads only its own columns, so
            # nothing else is removed.
            values.update(length_column_name="length", remove_unused_columns=False)
        if self.liger_kernel is not None:
            values["use_liger_kernel"] = self.liger_kernel
        if self.micro_batch is not None:
            values.update(per_device_train_batch_size=self.micro_batch, gradient_accumulation_steps=self.accumulation)
        return values

    def manifest(self) -> dict[str, Any]:
        """The decisions as the run folder records them."""
        return {
            "batches": self.batches,
            "attention": self.attention,
            "precision": self.precision.compute,
            "precision_reason": self.precision.reason,
            "gradient_checkpointing": self.gradient_checkpointing,
            "gradient_checkpointing_reason": self.gradient_checkpointing_reason,
            "allocator": self.allocator,
            "micro_batches": None
            if self.micro_batch is None
            else (
                f"{self.accumulation} of {self.micro_batch} rows per optimizer step of "
                f"{self.micro_batch * self.accumulation} (gradients accumulated; rows x the longest row kept "
                f"within {MICRO_BATCH_TOKENS:,} tokens)"
            ),
        }


def apply_process_settings(speed: Speed) -> None:
    """What a run's speed decisions ask of the whole process, set just before it trains: glibc keeps freed memory
    (`decide_allocator`). In a notebook the setting stays for the rest of the process."""
    if speed.allocator:
        keep_freed_memory()


def micro_batch(batch: int, longest: int, budget: int) -> int:
    """Rows per micro-batch: the largest divisor of `batch` whose rows of `longest` tokens stay within `budget`
    tokens (one row at least)."""
    return max(size for size in range(1, batch + 1) if batch % size == 0 and (size == 1 or size * longest <= budget))


def micro_batches(recipe, tokenizer, rows) -> dict[str, int]:
    """On a CPU, an SFT or DPO batch trained as micro-batches with gradients accumulated: `micro_batch` rows (pairs)
    at a time, `accumulation` of them per optimizer step, so each step still sees the recipe's batch: SFT's loss is
    normalised by the whole batch's answer tokens and DPO's is a mean over pairs, so the update is the same up to
    float rounding. Empty where a batch stays whole: off a CPU, packed rows, a DPO loss computed across the batch
    (`BATCH_LOSSES`), a recipe that sets `gradient_accumulation_steps` itself, or short rows.

    A CPU computes a large batch no faster per token than a small one, and a batch of long rows is megabytes of
    activations per layer that no cache holds: the memory-bound work between the matmuls (norms, rotary, casts)
    then runs at RAM speed (BENCHMARKS.md)."""
    train = recipe.train_settings()
    if (
        device_kind() != "cpu"
        or recipe.method not in SEQUENCES_PER_ROW
        or train.get("packing")
        or "gradient_accumulation_steps" in recipe.train
        or BATCH_LOSSES & set(loss_types(recipe))
    ):
        return {}
    batch = int(train["per_device_train_batch_size"])
    longest = SEQUENCES_PER_ROW[recipe.method] * longest_row_tokens(rows, tokenizer, train.get("max_length"))
    size = micro_batch(batch, longest, MICRO_BATCH_TOKENS)
    return {} if size == batch else {"micro_batch": size, "accumulation": batch // size}


def loss_types(recipe) -> list[str]:
    """A DPO recipe's loss types (one or a list); none for other methods."""
    if recipe.method != "dpo":
        return []
    return [recipe.dpo.loss_type] if isinstance(recipe.dpo.loss_type, str) else list(recipe.dpo.loss_type)


def decide_allocator() -> str | None:
    """How a CPU run sets glibc's allocator: freed memory kept for reuse, unless `TUNER_MALLOC=system`; None on a GPU
    and where the C library is not glibc.

    glibc hands every freed block above its mmap threshold (32 MiB at most) back to the system, and a training step
    on a CPU frees gigabytes of activations: the next step takes them again, page by page, each page faulted in and
    zeroed. Kept in the heap, they are reused as they are (BENCHMARKS.md: SFT 1.41x faster for 16% more
    resident memory at the peak)."""
    if device_kind() != "cpu" or os.environ.get(MALLOC_ENV) == "system" or platform.libc_ver()[0] != "glibc":
        return None
    return "glibc keeps freed memory (mmap and trimming off)"


def keep_freed_memory() -> bool:
    """Tell glibc to serve every allocation from its heap and never give freed memory back (mallopt M_MMAP_MAX 0,
    M_TRIM_THRESHOLD -1); true where it took both. Process-wide, from the next allocation on."""
    import ctypes

    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_max = -1, -4
    return libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, -1) == 1


def _sft_batches(recipe, attention: str | None) -> dict[str, Any]:
    train = recipe.train
    packing = bool(train["packing"]) if "packing" in train else is_flash_attention(attention)
    if packing:
        if is_flash_attention(attention):
            return {"packing": True, "batches": "packed, padding-free (flash-attention varlen)"}
        return {"packing": True, "batches": "packed rows (block-diagonal causal mask per row)"}
    if "train_sampling_strategy" in train:
        grouped = train["train_sampling_strategy"] == "group_by_length"
        return {"packing": False, "batches": "length-grouped padded rows" if grouped else "padded rows"}
    return {"packing": False, "train_sampling_strategy": "group_by_length", "batches": "length-grouped padded rows"}


def _dpo_batches(recipe) -> dict[str, Any]:
    """Length-grouped batches of pairs (DPO, reward models) unless the recipe picks a sampler: pairs of similar length
    are padded together."""
    if "train_sampling_strategy" in recipe.train:
        return {"batches": f"padded pairs ({recipe.train['train_sampling_strategy']} order)"}
    return {
        "train_sampling_strategy": "group_by_length",
        "length_column": True,
        "batches": "length-grouped padded pairs",
    }


def _kto_batches(recipe) -> dict[str, Any]:
    """KTO batches in order: its KL estimate pairs each prompt with a neighbouring row's answer in a fixed-order
    batch, which TRL refuses to break (the run shuffles its rows once, with its seed, instead)."""
    return {"batches": f"padded rows ({recipe.train.get('train_sampling_strategy', 'sequential')} order)"}


def checkpointing(recipe, precision: Precision, model_config, tokenizer, rows) -> tuple[bool, str | None]:
    """Gradient checkpointing, and why: the recipe's own choice when it makes one; on a CPU off (RAM is the larger
    pool, and recomputation costs about 20% of step time); on a GPU on only when the dry-run estimate of what the run
    adds to the loaded weights (adapter, gradients, optimizer state, activations at the longest batch) exceeds 90%
    of the GPU's free memory."""
    for key in CHECKPOINTING_KEYS:
        if key in recipe.train:
            return bool(recipe.train[key]), None
    if device_kind() != "cuda":
        return False, None
    predicted = estimate(recipe, rows, model_config, tokenizer, precision, checkpointing=False, rendered_rows=0)
    needed = predicted.peak_mb - predicted.memory_mb["weights"] - predicted.memory_mb.get("runtime", 0)
    free = available_memory_mb("cuda")
    if free is None or needed <= 0.9 * free:
        return False, None
    reason = (
        f"on because memory needs it: an estimated {needed:,.0f} MB beyond the weights against {free:,.0f} MB "
        f"free on the GPU (set train.gradient_checkpointing to decide yourself)"
    )
    print(f"tuner: gradient checkpointing {reason}.")
    return True, reason


def decide(recipe, loaded, rows) -> Speed:
    """Every speed setting of a training run, from the recipe, the loaded model and the hardware. `rows` are the
    canonical training rows (the checkpointing estimate measures their longest batch)."""
    model, attention = loaded.model, loaded.info.get("attn_implementation")  # as models.load_model decided it
    batches = {
        "sft": lambda: _sft_batches(recipe, attention),
        "dpo": lambda: _dpo_batches(recipe),
        "kto": lambda: _kto_batches(recipe),
        "reward": lambda: _dpo_batches(recipe),
        "grpo": lambda: {"batches": f"groups of {recipe.grpo.num_generations} sampled answers per prompt"},
    }[recipe.method]()
    on, reason = checkpointing(recipe, loaded.precision, model.config, loaded.tokenizer, rows)
    liger = None if "use_liger_kernel" in recipe.train else (liger_applies(recipe) or None)
    return Speed(
        precision=loaded.precision,
        attention=attention,
        gradient_checkpointing=on,
        gradient_checkpointing_reason=reason,
        liger_kernel=liger,
        allocator=decide_allocator(),
        **micro_batches(recipe, loaded.tokenizer, rows),
        **batches,
    )
