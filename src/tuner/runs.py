"""The run folder: choosing it without overwriting, atomic writes, the manifest and the result object."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .secrets import redact, redact_data

PACKAGES = ("tuner", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "evaluate")


@dataclass
class RunResult:
    """What a recipe run returns: its folder and the metrics and manifest written there."""

    run_dir: Path
    metrics: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        """The run folder's top-level entries, for telling the user what it holds."""
        return sorted(p.name + ("/" if p.is_dir() else "") for p in self.run_dir.iterdir())


def new_run_dir(output_dir: str | Path) -> Path:
    """Create the run folder; if `output_dir` already holds something, use the first free `output_dir-N`.

    An earlier run is never overwritten: its folder is left as it is and the new run goes next to it.
    """
    base = Path(output_dir)
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    if candidate != base:
        print(f"tuner: {base} already holds files; writing to {candidate} instead")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically: to a temporary file beside it, then rename. Environment secrets (tokens, keys,
    passwords) are masked first: nothing tuner writes holds them."""
    path, text = Path(path), redact(text)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(redact_data(data), indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def write_recipe(run_dir: Path, recipe) -> None:
    """The resolved recipe (defaults filled in, overrides applied), as YAML."""
    write_text(run_dir / "recipe.yaml", yaml.safe_dump(redact_data(recipe.to_dict()), sort_keys=False))


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The current folder's git commit, with '+dirty' when the tree has changes; None outside a repository."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(recipe, data_report: dict[str, Any], model_info: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run needs to be reproduced and compared: versions, hardware, seed, data and model identity."""
    from .accounting import device_info
    from .distributed import engine, world_size

    return {
        "method": recipe.method,
        "recipe_file": recipe.source,
        "seed": recipe.seed,
        "versions": versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hardware": device_info(),
        "world_size": world_size(),
        "engine": engine(),
        "git_revision": git_revision(),
        "data": data_report,
        "model": model_info,
        "precision": model_info.get("dtype"),
        "eval_settings": recipe.eval.model_dump(),
        **(extra or {}),
    }


def finish_run(run_dir: Path, metrics: dict[str, Any], manifest: dict[str, Any],
               log_history: list[dict[str, Any]] | None = None) -> RunResult:
    """Write a run's metrics.json, manifest.json (and the trainer's log_history.json) and return its RunResult."""
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "manifest.json", manifest)
    if log_history is not None:
        write_json(run_dir / "log_history.json", log_history)
    return RunResult(run_dir=run_dir, metrics=metrics, manifest=manifest)


def record_evaluation(run_dir: Path, result, metrics: dict[str, Any], phases: dict[str, Any],
                      name: str | None = None) -> None:
    """Put an EvalResult into a run: predictions.jsonl, its scores under metrics['eval'], its phase beside the
    others. A second evaluation of the same run takes a `name`: predictions_NAME.jsonl and metrics['eval_NAME']."""
    key = f"eval_{name}" if name else "eval"
    write_jsonl(run_dir / (f"predictions_{name}.jsonl" if name else "predictions.jsonl"), result.predictions)
    phases[key] = result.metrics["phase"]
    metrics[key] = {k: v for k, v in result.metrics.items() if k != "phase"}


def read_adapter_run(path: str | Path, model_config, source: str = "<recipe>") -> dict[str, Any]:
    """Check that `path` is a run folder with an adapter trained on the recipe's base model; return its manifest."""
    from .errors import TunerError

    run_dir = Path(path)
    manifest_file, adapter_config = run_dir / "manifest.json", run_dir / "adapter" / "adapter_config.json"
    if not manifest_file.is_file() or not adapter_config.is_file():
        raise TunerError(f"{run_dir}: not a tuner run folder with an adapter (it needs manifest.json and "
                         f"adapter/adapter_config.json, as `tuner sft` writes them). Point at the folder that "
                         f"`tuner sft` printed.")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TunerError(f"{manifest_file}: unreadable ({exc}). The run folder is damaged; train again.") from None
    trained_on = manifest.get("model", {}).get("name_or_path")
    if trained_on != model_config.name_or_path:
        raise TunerError(f"{run_dir}: its adapter was trained on {trained_on!r}, but {source} sets "
                         f"`model.name_or_path` to {model_config.name_or_path!r}. An adapter only fits its own "
                         f"base model: use the same model, or another run.")
    return manifest
