"""Checkpoints: saved on the recipe's schedule and on SIGINT/SIGTERM, marked when complete, found again to resume.

A checkpoint is TRL's (Trainer's) folder `checkpoints/checkpoint-N`: the adapter as safetensors, optimizer,
scheduler and RNG state (loaded back with `weights_only=True`), and the trainer state. tuner adds
`tuner_checkpoint.json` once everything else is on disk: a checkpoint without it was cut off mid-write and is
skipped. The marker holds the resolved recipe and data fingerprints, so a resume can refuse a changed recipe or data.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .errors import TunerError
from .files import write_json
from .runs import CHECKPOINT_MARKER
from .secrets import redact_data

MARKER = CHECKPOINT_MARKER
REQUIRED = ("trainer_state.json", "adapter_model.safetensors")
# Recipe keys a resumed run may change: they steer logging, saving and scoring, not what is trained.
# What is trained is guarded by the train data fingerprint and the rest of the recipe.
SAFE_TO_CHANGE = (
    "resume",
    "output_dir",
    "train.logging_steps",
    "train.save_steps",
    "train.save_strategy",
    "train.save_total_limit",
    "train.report_to",
    "train.disable_tqdm",
    "train.dataloader_num_workers",
    "eval.",
    "data.eval",
    "data.max_eval_samples",
)


class Interrupted(TunerError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; exit code 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal(TrainerCallback):
    """On SIGINT or SIGTERM (a preempted spot instance gets SIGTERM), finish the current step, save a checkpoint
    and stop. A second signal stops at once.

    Under a launcher (several processes) the ranks agree at every step's end on whether any of them got a signal,
    so all stop after the same step and save one checkpoint together (a rank that stopped alone would leave the
    others waiting for it in their next gradient exchange). A second signal within `SAME_SIGNAL_SECONDS` of the
    first counts as the same one there: on Ctrl-C the terminal signals every process and torchrun forwards the
    signal to its workers again."""

    SAME_SIGNAL_SECONDS = 1.0

    def __init__(self, processes: int = 1):
        self.signum: int | None = None
        self.processes = processes
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            # Python lets only the main thread install signal handlers (a notebook worker, a job runner's thread).
            print(
                "tuner: training in a worker thread: SIGINT/SIGTERM cannot be caught here, so an interruption "
                "saves no checkpoint (checkpoints on `train.save_steps` still do)."
            )
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if self.processes > 1 and time.monotonic() - self._when < self.SAME_SIGNAL_SECONDS:
                return
            self.uninstall()
            raise KeyboardInterrupt
        self.signum, self._when = signum, time.monotonic()
        print(
            f"\ntuner: got {signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
            f"(send it again to stop at once).",
            flush=True,
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.processes > 1:
            self.signum = agreed_signal(self.signum)
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
        return control


def agreed_signal(signum: int | None) -> int | None:
    """The signal any rank got (the highest number when several did), the same on every rank; a collective call
    every rank makes at the same step."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return signum
    # NCCL reduces CUDA tensors only; gloo (CPUs) CPU tensors.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([signum or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


class EpochOrder(TrainerCallback):
    """Draw each epoch's row order (after the first) from a generator seeded by the run's seed and the epoch, so a
    run resumed in epoch 2 or later trains the rows an uninterrupted run trains.

    Trainer's length-grouped sampler draws its permutation from torch's global generator when the epoch starts, and
    a resume restores that generator only from the checkpoint's step: mid-epoch, the permutation was drawn before.
    Reseeding at the end of each epoch's last step (before its checkpoint records the generator) and at the start of
    the next makes the draw the same function of (seed, epoch) in both runs. The first epoch keeps the order it
    always had (drawn after `set_seed` and model loading, which a resumed run repeats)."""

    @staticmethod
    def _reseed(seed: int, epoch: int) -> None:
        import torch

        torch.manual_seed(seed * 1_000_003 + epoch)

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = math.floor((state.epoch or 0.0) + 1e-9)
        if epoch >= 1:
            self._reseed(args.seed, epoch)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        ended = round(state.epoch or 0.0)
        if ended >= 1 and abs(state.epoch - ended) < 1e-9:  # this step ended an epoch
            self._reseed(args.seed, ended)
        return control


class MarkComplete(TrainerCallback):
    """After the trainer has written a checkpoint, drop its pickled arguments (not needed to resume) and write the
    marker that says the checkpoint is whole, with what a resume must match."""

    def __init__(self, identity: dict[str, Any], earlier_seconds: float = 0.0):
        self.identity = identity
        self.started = time.perf_counter() - earlier_seconds

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return control
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        (folder / "training_args.bin").unlink(missing_ok=True)
        write_json(
            folder / MARKER,
            {**self.identity, "step": state.global_step, "train_seconds": round(time.perf_counter() - self.started, 3)},
        )
        return control


def identity(recipe, data_report: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the resolved recipe and the train data fingerprint."""
    return {"recipe": recipe.to_dict(), "train_fingerprint": data_report["train_fingerprint"]}


def _step(folder: Path) -> int:
    try:
        return int(folder.name.split("-")[-1])
    except ValueError:
        return -1


def last_complete(run_dir: Path) -> Path | None:
    """The newest whole checkpoint of a run folder; checkpoints cut off mid-write are reported and skipped."""
    folders = sorted((p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.is_dir()), key=_step, reverse=True)
    for folder in folders:
        if (folder / MARKER).is_file() and all((folder / name).is_file() for name in REQUIRED):
            try:
                json.loads((folder / MARKER).read_text(encoding="utf-8"))
                return folder
            except (OSError, ValueError):
                pass
        print(f"tuner: skipping {folder}: incomplete (cut off while being written); trying the one before")
    return None


def _candidates(output_dir: Path) -> list[Path]:
    """The recipe's run folders: output_dir and output_dir-2, -3, ... as new_run_dir names them."""
    found = [output_dir] if output_dir.is_dir() else []
    if output_dir.parent.is_dir():
        found += [
            p
            for p in output_dir.parent.glob(f"{output_dir.name}-*")
            if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()
        ]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_checkpoint(recipe) -> Path | None:
    """The checkpoint `recipe.resume` points at: `auto` (the newest unfinished run of this recipe's output_dir with
    a whole checkpoint), a checkpoint folder, or a run folder (its newest whole checkpoint). None without resume."""
    if recipe.resume is None:
        return None
    if recipe.resume != "auto":
        given = Path(recipe.resume)
        run_dir = given.parent.parent if (given / MARKER).is_file() else given
        if (run_dir / "metrics.json").is_file():
            # Resuming would train the finished run again and overwrite its adapter and metrics.
            raise TunerError(
                f"{recipe.source}: key `resume`: {run_dir} is a finished run (it has metrics.json); "
                f"resuming would overwrite its adapter and metrics. Leave `resume` out to start a new "
                f"run, which goes to a new folder."
            )
        if (given / MARKER).is_file():
            return given
        if (given / "checkpoints").is_dir():
            found = last_complete(given)
            if found:
                return found
        raise TunerError(
            f"{recipe.source}: key `resume`: {given} is not a whole tuner checkpoint (a "
            f"checkpoints/checkpoint-N folder holding {MARKER}) nor a run folder with one. Point at "
            f"one, use `resume: auto`, or leave resume out to start a new run."
        )
    for run_dir in _candidates(Path(recipe.output_dir)):
        if (run_dir / "metrics.json").is_file():
            continue  # finished runs are not resumed
        found = last_complete(run_dir)
        if found:
            return found
    raise TunerError(
        f"{recipe.source}: nothing to resume: no unfinished run under {recipe.output_dir} (or "
        f"{Path(recipe.output_dir).name}-N) has a whole checkpoint. Runs save one when interrupted by "
        f"SIGINT/SIGTERM and every `train.save_steps` steps with `train.save_strategy: steps`. Run "
        f"without --resume to start over."
    )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def check_resumable(checkpoint: Path, recipe, data_report: dict[str, Any]) -> dict[str, Any]:
    """Refuse to resume when the recipe (beyond SAFE_TO_CHANGE) or the data differ from the checkpoint's; returns
    the checkpoint's marker."""
    marker = json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))
    then, now = _flatten(marker.get("recipe", {})), _flatten(redact_data(recipe.to_dict()))
    changed = [
        key
        for key in sorted(set(then) | set(now))
        if then.get(key) != now.get(key) and not key.startswith(SAFE_TO_CHANGE)
    ]
    if changed:
        shown = "; ".join(f"{key}: {then.get(key)!r} then, {now.get(key)!r} now" for key in changed[:5])
        raise TunerError(
            f"{recipe.source}: cannot resume {checkpoint}: the recipe changed since it was saved "
            f"({shown}). Restore those values to resume, or run without --resume to start a new run."
        )
    if marker.get("train_fingerprint") != data_report["train_fingerprint"]:
        raise TunerError(
            f"{recipe.source}: cannot resume {checkpoint}: the train data changed since it was saved "
            f"(its fingerprint differs). Restore the data to resume, or run without --resume to start "
            f"a new run."
        )
    return marker


def resume_point(recipe, data_report: dict[str, Any]) -> Path | None:
    """The checkpoint `recipe.resume` names, checked against the recipe and data (before any model loads)."""
    checkpoint = find_checkpoint(recipe)
    if checkpoint is not None:
        check_resumable(checkpoint, recipe, data_report)
    return checkpoint


def earlier_seconds(checkpoint: Path | None) -> float:
    """Training seconds spent before the checkpoint a run resumes from (0 for a new run)."""
    if checkpoint is None:
        return 0.0
    return json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))["train_seconds"]


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
