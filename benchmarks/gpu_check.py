"""GPU check: one prepared run that proves tuner's CUDA paths, for the few minutes a GPU is lent.

It reads only the working tree and the kit `benchmarks/gpu_kit.py build` made (wheels, SmolLM2's tokenizer, model
shapes): the models are Llamas built from the kit's shapes with random weights (speed and memory do not depend on
the values) and SmolLM2's vocabulary, the data the quickstart's tickets. Workloads, each in its own child process
(so each peak memory is its own, and one failure does not stop the rest):

    sft_lora_{135m,0.5b,1.5b}  LoRA SFT at SmolLM2-135M's shape, ~0.5B and ~1.5B (0.5B: checkpointing off)
    sft_packing_0.5b           the same with `train.packing: true` (the attention kernel used is recorded)
    sft_checkpointing_0.5b     the same with gradient checkpointing on (its peak memory against the one above)
    sft_qlora_0.5b             QLoRA (4-bit NF4 base); skipped, with the reason, where bitsandbytes is absent
    dpo_135m                   DPO on the quickstart pairs
    choice_135m                the evaluator scoring a few hundred rows as choices under the device's attention
                               kernel, and the tree-attention scores against each answer scored whole, in fp32
    mfu_0.5b                   benchmarks/gpu_mfu.py: tuner's LoRA SFT against TRL's defaults, 2,048-token rows

Each training workload is a real `tuner sft|dpo` run (recipe validated, precision and speed settings decided by tuner,
adapter saved), preceded by its dry run. Per workload: tokens/s, MFU against the chip's dense bf16 peak (training
FLOPs counted as in ceiling.py), peak memory, the dry-run estimate's error against it, precision, attention, and
pass/fail of each check. Writes gpu_check.json and gpu_check.md into --out.

    bash benchmarks/gpu_check.sh                                  # on the GPU machine: install from the kit, check
    python benchmarks/gpu_check.py --cpu --kit gpu-kit --out /tmp/check   # the same code on a CPU, tiny models
"""

from __future__ import annotations

import argparse
import importlib.util
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

TICKETS = ROOT / "examples" / "data" / "tickets"
TEAMS = ["billing", "shipping", "returns", "technical", "account"]
# Dense bf16 peak by chip name (the H200 shares the H100 SXM's compute).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
WORKLOADS = [
    "sft_lora_135m",
    "sft_lora_0.5b",
    "sft_lora_1.5b",
    "sft_packing_0.5b",
    "sft_checkpointing_0.5b",
    "sft_qlora_0.5b",
    "dpo_135m",
    "choice_135m",
    "mfu_0.5b",
]
# Answers sharing first tokens, so the scoring trie has nodes after the context (the tree-attention mask is used).
PARITY_ANSWERS = [" billing", " billing dispute", " shipping", " shipping delay", " returns", " technical fault"]


def chip_peak_tflops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((peak for chip, peak in PEAK_TFLOPS.items() if chip in name), None)


def training_document(workload: str, model: str, out: Path, cpu: bool) -> dict:
    """The quickstart recipe for a workload: its data, model, steps and the keys the workload is about."""
    # A tiny random model needs a large step to show its loss falling within a few steps.
    steps, rate = (4, 1.0e-2) if cpu else (20, None)
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
            "per_device_train_batch_size": 4 if cpu else 8 if dpo else 32,
            "max_length": 256,
        },
        "eval": {"task": "preference" if dpo else "choice", "choices": None if dpo else TEAMS},
        "output_dir": str(out / workload),
    }
    if dpo:
        del document["data"]["system_prompt"], document["data"]["prompt_template"]
    if workload.startswith("sft_packing"):
        document["train"]["packing"] = True
    if workload == "sft_lora_0.5b":
        document["train"]["gradient_checkpointing"] = False
    if workload.startswith("sft_checkpointing"):
        document["train"]["gradient_checkpointing"] = True
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


def skipped_qlora(workload: str) -> dict | None:
    """QLoRA needs bitsandbytes; the kit does not carry it (its CUDA libraries alone are over what the machine
    takes), so where the machine lacks it the workload says so instead of failing."""
    if importlib.util.find_spec("bitsandbytes") is not None:
        return None
    return {
        "workload": workload,
        "skipped": "bitsandbytes is not installed: its wheel with CUDA libraries is over the 64 MiB the machine takes",
        "checks": {},
    }


def choice_workload(out: Path, cpu: bool, model: str) -> dict:
    """The evaluator on a few hundred rows as a zero-shot choice run (rows/s, latency, peak memory under the
    device's attention kernel), then the scoring itself: the tree-attention path (each distinct answer prefix
    once, a 4-D mask after a shared cache) against each answer scored whole with a plain padding mask, in the
    run's precision and in fp32. Random weights: agreement of kernels, not accuracy, is what this checks."""
    import torch

    from tuner import recipe_from_dict, run
    from tuner.likelihood import loglikelihoods
    from tuner.models import load_model
    from tuner.schema import ModelConfig
    from tuner.speed import Precision

    document = {
        "method": "fewshot",
        "model": {"name_or_path": model},
        "data": {
            "train": str(TICKETS / "test.jsonl"),
            "eval": str(TICKETS / "train.jsonl"),
            "max_eval_samples": 16 if cpu else 300,
            "prompt_template": "Team for this ticket (billing, shipping, returns, technical or account)?\n{text}",
        },
        "fewshot": {"k": 0},
        "eval": {"task": "choice", "choices": TEAMS, "batch_size": 32},
        "output_dir": str(out / "choice_135m"),
    }
    started = time.perf_counter()
    result = run(recipe_from_dict(document, source="choice_135m"))
    seconds = time.perf_counter() - started
    scores = result.metrics["eval"]
    texts = [json.loads(line)["text"] for line in (TICKETS / "test.jsonl").read_text().splitlines()]
    pairs = [(f"Ticket: {text}\nTeam:", answer) for text in texts[: 8 if cpu else 100] for answer in PARITY_ANSWERS]
    parity = {}
    for name, precision in (("run", None), ("fp32", Precision("fp32", "fp32"))):
        loaded = load_model(ModelConfig(name_or_path=model), precision=precision)
        tree = loglikelihoods(loaded.model, loaded.tokenizer, pairs, batch_size=32)
        whole = loglikelihoods(loaded.model, loaded.tokenizer, pairs, batch_size=32, tree=False)
        parity[name] = {"tree": tree, "whole": whole, "precision": loaded.precision.compute}
        del loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    width = len(PARITY_ANSWERS)

    def picks(values):
        return [max(range(width), key=lambda i: values[row + i]) for row in range(0, len(values), width)]

    def largest_gap(a, b):
        return max(abs(x - y) for x, y in zip(a, b))

    fp32_gap = largest_gap(parity["fp32"]["tree"], parity["fp32"]["whole"])
    device, _ = chip_peak_tflops()
    return {
        "workload": "choice_135m",
        "device": device,
        "rows": scores["rows"],
        "rows_per_second": round(scores["rows"] / seconds, 1),
        "latency_ms_per_example": scores["latency_ms_per_example"],
        "peak_memory_mb": result.metrics["phases"]["eval"]["peak_memory_mb"],
        "precision": result.manifest["precision"],
        "attention": result.manifest["model"]["attn_implementation"],
        "parity_pairs": len(pairs),
        "tree_vs_whole_max_gap_fp32": round(fp32_gap, 6),
        "tree_vs_whole_max_gap_run_precision": round(largest_gap(parity["run"]["tree"], parity["run"]["whole"]), 6),
        "run_precision": parity["run"]["precision"],
        "same_pick_run_precision_vs_fp32": round(
            sum(a == b for a, b in zip(picks(parity["run"]["tree"]), picks(parity["fp32"]["whole"])))
            / (len(pairs) // width),
            3,
        ),
        "checks": {
            "every row scored": scores["rows"] == document["data"]["max_eval_samples"],
            "tree scores equal whole-answer scores in fp32 (within 1e-3 nats)": fp32_gap < 1e-3,
        },
    }


def mfu_workload(cpu: bool, model: str) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_mfu.py"), "--model", model]
    command += ["--tiny", "--steps", "1", "--arms", "tuner"] if cpu else ["--steps", "10"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    arms = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"arm"')]
    tuner = next(arm for arm in arms if arm["arm"] == "tuner")
    return {
        "workload": "mfu_0.5b",
        "arms": arms,
        "tokens_per_second": tuner["tokens_per_second"],
        "mfu": tuner["mfu"],
        "peak_memory_mb": tuner["peak_memory_mb"],
        "checks": {"tuner arm ran": tuner["steps"] > 0},
    }


def workload_result(name: str, out: Path, cpu: bool, models: dict[str, str]) -> dict:
    model = models[name.rsplit("_", 1)[1]]
    if name.startswith("mfu"):
        return mfu_workload(cpu, model)
    if name.startswith("choice"):
        return choice_workload(out, cpu, model)
    if "qlora" in name and (skipped := skipped_qlora(name)):
        return skipped
    return training_workload(name, model, out, cpu)


def markdown(summary: dict) -> str:
    lines = [
        f"# GPU check: {summary['device']}",
        "",
        f"{summary['versions']}; {summary['seconds']:.0f} s in all. Command: `{summary['command']}`. Kit: "
        f"{summary['kit']['mib']} MiB.",
        "",
        "| workload | tokens/s | MFU | peak MB | estimate error | precision | attention | checks |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for result in summary["workloads"]:
        if "error" in result:
            lines.append(f"| {result['workload']} | | | | | | | FAILED: {result['error'].splitlines()[-1]} |")
            continue
        if "skipped" in result:
            lines.append(f"| {result['workload']} | | | | | | | skipped: {result['skipped']} |")
            continue
        checks = "; ".join(
            f"{name}: {'n/a' if ok is None else 'pass' if ok else 'FAIL'}" for name, ok in result["checks"].items()
        )
        error, mfu = result.get("estimate_error"), result.get("mfu")
        shown_mfu = "" if mfu is None else f"{100 * mfu:.1f}%"
        shown_error = "" if error is None else f"{100 * error:+.0f}%"
        speed = result.get("tokens_per_second", "")
        if "rows_per_second" in result:
            speed = f"{result['rows_per_second']} rows/s"
            checks += (
                f"; largest tree-vs-whole gap {result['tree_vs_whole_max_gap_fp32']:.1e} nats (fp32), "
                f"{result['tree_vs_whole_max_gap_run_precision']:.1e} ({result['run_precision']}); same pick "
                f"{result['run_precision']} vs fp32 {100 * result['same_pick_run_precision_vs_fp32']:.0f}%"
            )
        lines.append(
            f"| {result['workload']} | {speed} | {shown_mfu} | {result.get('peak_memory_mb', '')} | {shown_error} | "
            f"{result.get('precision', '')} | {result.get('attention', '')} | {checks} |"
        )
    return "\n".join(lines) + "\n"


def build_models(kit: Path, scratch: Path, names: list[str], cpu: bool) -> dict[str, str]:
    """One folder per shape the workloads name, random weights and the kit's tokenizer (tiny shapes on a CPU)."""
    shapes = json.loads((kit / "shapes.json").read_text())
    models = {}
    for shape in sorted({name.rsplit("_", 1)[1] for name in names}):
        folder = scratch / f"model-{shape}"
        build_model(folder, shapes["tiny"] if cpu else shapes["shapes"][shape], str(kit / "tokenizer"))
        models[shape] = str(folder)
    return models


def origins() -> dict[str, str | None]:
    """Where each package the check imports comes from (the kit's environment or the machine's own)."""
    found = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "pydantic", "tuner"):
        spec = importlib.util.find_spec(name)
        found[name] = spec.origin if spec else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json, gpu_check.md and the runs")
    parser.add_argument("--kit", default=str(ROOT / "gpu-kit"), help="the folder `gpu_kit.py build` made")
    parser.add_argument("--cpu", action="store_true", help="tiny models on the CPU: checks the script, not a GPU")
    parser.add_argument("--runs", help="folder for the workloads' run folders (default: a temporary one)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out, kit = Path(args.out).resolve(), Path(args.kit).resolve()
    if args.workload:
        print("RESULT " + json.dumps(workload_result(args.workload, out, args.cpu, json.loads(args.models))))
        return
    if not (kit / "kit.json").is_file():
        sys.exit(f"{kit} holds no GPU check kit: make one with `python benchmarks/gpu_kit.py build --out {kit}`.")
    from importlib import metadata

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    names = args.workloads.split(",")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        models = build_models(kit, Path(scratch), names, args.cpu)
        built = time.perf_counter() - started
        # the run folders (adapters of up to 1.5B models) stay out of --out, which a lent machine sends back
        runs = Path(args.runs).resolve() if args.runs else Path(scratch) / "runs"
        for name in names:
            command = [sys.executable, __file__, "--workload", name, "--out", str(runs), "--models", json.dumps(models)]
            begun = time.perf_counter()
            done = subprocess.run(command + (["--cpu"] if args.cpu else []), capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            result = (
                json.loads(lines[-1][7:])
                if done.returncode == 0 and lines
                else {"workload": name, "error": (done.stderr.strip() or "no result")[-3000:]}
            )
            result["seconds"] = round(time.perf_counter() - begun, 1)
            results.append(result)
            print(json.dumps(result), flush=True)
    import torch

    device, peak = chip_peak_tflops()
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "transformers", "trl", "peft", "datasets")
    )
    manifest = json.loads((kit / "kit.json").read_text())
    summary = {
        "device": device,
        "peak_tflops": peak,
        "cuda": torch.version.cuda,
        "versions": versions,
        "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "seconds": time.perf_counter() - started,
        "models_built_seconds": round(built, 1),
        "kit": {"path": str(kit), "mib": manifest["mib"], "python": manifest["python"]},
        "imported_from": origins(),
        "workloads": results,
        "passed": all("error" not in r and all(ok is not False for ok in r["checks"].values()) for r in results),
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(summary), encoding="utf-8")
    print(f"GPU check {'passed' if summary['passed'] else 'FAILED'}: {out / 'gpu_check.md'}")
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
