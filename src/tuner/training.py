"""Running a built trainer: the `train` phase (tokens, steps, hours, resumed time), signals and checkpoints, out of
memory or disk as messages, saving the adapter, the metrics and arguments every training method records, and how a
feedback-trained (DPO, KTO) policy is scored."""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .accounting import count_earlier, phase
from .adapters import adapter_dir, gathered_state_dict, is_sharded, parameter_counts, save_adapter, with_run_adapter
from .checkpoints import (
    EpochOrder,
    Interrupted,
    MarkComplete,
    StopOnSignal,
    earlier_seconds,
    identity,
    last_complete,
    signal_name,
)
from .data.rows import scoring_rows
from .errors import TunerError
from .evaluator import evaluate
from .files import write_json
from .hardware import is_main_process, is_out_of_memory, rank_device, world_size
from .models import load_model
from .runs import record_evaluation
from .speed import apply_process_settings


def train_and_save(
    trainer,
    speed,
    tokenizer,
    run_dir: Path,
    phases: dict[str, Any],
    recipe,
    data_report: dict[str, Any],
    checkpoint: Path | None = None,
):
    """Run the trainer as the `train` phase (tokens and steps recorded), then save the adapter; returns TRL's output.
    The process-wide settings of its `speed.Speed` (the C allocator) are set first.

    Checkpoints are marked whole once written; SIGINT/SIGTERM save one and raise `Interrupted`. From a checkpoint,
    the trainer restores optimizer, scheduler, RNG and data position, and the hours before the interruption count.
    """
    earlier = earlier_seconds(checkpoint)
    stopper = StopOnSignal(world_size())
    trainer.add_callback(stopper)
    trainer.add_callback(EpochOrder())
    trainer.add_callback(MarkComplete(identity(recipe, data_report), earlier))
    apply_process_settings(speed)
    stopper.install()
    try:
        with phase("train", phases) as record:
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            record["tokens"] = int(trainer.state.num_input_tokens_seen)
            record["steps"] = int(trainer.state.global_step)
    except Exception as error:
        raise _resource_error(error, trainer, run_dir, speed) from None
    finally:
        stopper.uninstall()
    count_earlier(phases["train"], earlier)
    if stopper.signum is not None:
        if is_main_process():
            write_json(run_dir / "log_history.json", trainer.state.log_history)
        last = trainer.state.global_step
        raise Interrupted(
            f"interrupted by {signal_name(stopper.signum)} at step {last} of {trainer.state.max_steps}; "
            f"checkpoint saved in {run_dir / 'checkpoints' / f'checkpoint-{last}'}. Continue with "
            f"`tuner {recipe.method} {recipe.source} --resume` with the same --set options (or "
            f"`resume: auto` in the recipe).",
            stopper.signum,
        )
    state_dict = gathered_state_dict(trainer)
    if not is_main_process():
        return output
    try:
        save_adapter(trainer.model, tokenizer, adapter_dir(run_dir), state_dict, recipe.model.name_or_path)
    except OSError as error:
        raise _resource_error(error, trainer, run_dir) from None
    _remove_if_empty(run_dir / "checkpoints")
    return output


def trained_model(trainer, recipe, run_dir: Path, loaded):
    """The trained model rank 0 scores: the trainer's own when every rank holds it whole. Under FSDP or ZeRO-3 a
    forward pass needs every rank and the others have returned, so the base is loaded anew as `loaded` was (its
    head included), whole, with the adapter just saved (the run scores exactly what its folder holds). Under mixed
    precision accelerate wraps the model's forward in autocast for training; it is unwrapped here, so the run scores
    in the precision the evaluator decides (fp32 on a CPU), as `tuner eval --adapter` and the exports do."""
    if not is_sharded(trainer):
        return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    print(
        "tuner: the trained weights are sharded across ranks: scoring a whole copy (the base and the saved "
        "adapter) on rank 0."
    )
    with outside_zero3(trainer):
        whole = load_model(recipe.model, recipe.source, loaded.precision, head=loaded.info["head"]).model
    return with_run_adapter(whole, run_dir).to(rank_device())


@contextmanager
def outside_zero3(trainer):
    """Loading outside the trainer's DeepSpeed config: while it is alive transformers builds any model under
    `deepspeed.zero.Init`, whose partitioning broadcasts from rank 0 to ranks that have already returned (a hang
    until the NCCL timeout). The config is set again afterwards, for the trainer it belongs to."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    config = getattr(trainer.args, "hf_deepspeed_config", None) if trainer.is_deepspeed_enabled else None
    if config is None:
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _resource_error(error: Exception, trainer, run_dir: Path, speed=None) -> Exception:
    """Out of memory or out of disk during training or saving, as a message that says what to change (with the
    recipe's batch, not TRL's micro-batch, where `speed` split it); anything else unchanged. The run folder keeps its
    checkpoints either way."""
    kept = last_complete(run_dir)
    keep = (
        f"The run folder keeps {kept}: after the change, continue with --resume (or a new run)."
        if kept
        else "No checkpoint was saved yet; set `train.save_strategy: steps` and `train.save_steps` to keep some."
    )
    args, step = trainer.args, trainer.state.global_step
    batch = (
        f"now {args.per_device_train_batch_size}; raise `train.gradient_accumulation_steps` to keep the effective batch"
    )
    if speed is not None and speed.micro_batch is not None:
        batch = (
            f"now {speed.micro_batch * speed.accumulation}, which tuner runs as {speed.accumulation} "
            f"micro-batches of {speed.micro_batch}; with `train.gradient_accumulation_steps` set, the batch you "
            f"give is the micro-batch"
        )
    if is_out_of_memory(error):
        return TunerError(
            f"out of memory while training at step {step}. Lower `train.per_device_train_batch_size` "
            f"({batch}) or `train.max_length` (now {args.max_length}), turn on "
            f"`train.gradient_checkpointing: true`, or load the base with `model.quantize: 4bit`. {keep}"
        )
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        trainable = parameter_counts(trainer.model)["trainable_parameters"]
        # A checkpoint holds the adapter (fp32) and Adam's two moments: about 3 x 4 bytes per trainable parameter.
        needed_mb = 12 * trainable / 2**20
        free_mb = shutil.disk_usage(run_dir).free / 2**20
        return TunerError(
            f"the disk is full while saving in {run_dir}: a checkpoint needs about {needed_mb:.0f} MB "
            f"and {free_mb:.0f} MB are free. Free some space or set `output_dir` on another disk. "
            f"{keep}"
        )
    return error


def train_metrics(method: str, output, phases: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """The metrics every training method reports: loss, tokens, tokens/s, steps, parameter counts, phases."""
    return {
        "method": method,
        "train_loss": output.training_loss,
        "train_tokens": phases["train"]["tokens"],
        "train_tokens_per_second": phases["train"].get("tokens_per_second"),
        "train_steps": phases["train"]["steps"],
        **counts,
        "phases": phases,
    }


def logged(history: list[dict[str, Any]], key: str, which: int) -> float | None:
    """The first (`which` 0) or last (-1) value the trainer logged under `key`, or None."""
    values = [entry[key] for entry in history if key in entry]
    return values[which] if values else None


def first_and_last(history: list[dict[str, Any]], keys) -> dict[str, float | None]:
    """`first_<key>` and `last_<key>` for each logged key (a `/` in TRL's names becomes `_`), for a run's metrics."""
    return {
        f"{end}_{key.replace('/', '_')}": logged(history, key, which)
        for end, which in (("first", 0), ("last", -1))
        for key in keys
    }


def recorded_args(args, recipe) -> dict[str, Any]:
    """The TRL arguments tuner or the recipe chose, with the values TRL ended up using, for the manifest."""
    return {key: getattr(args, key) for key in sorted(recipe.train_settings())}


def speed_record(speed, args) -> dict[str, Any]:
    """What the run did for speed and memory, for the manifest: the `speed` decisions with the kernels, optimizer
    and compilation TRL ended up using."""
    return {
        **speed.manifest(),
        "liger_kernel": bool(args.use_liger_kernel),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "torch_compile": bool(args.torch_compile),
    }


def score_feedback_run(
    model, tokenizer, splits, recipe, precision, run_dir: Path, metrics: dict[str, Any], phases: dict[str, Any]
) -> None:
    """Score a policy tuned on feedback (DPO, KTO) into its run: held-out preference pairs always as preferences;
    the recipe's own task, when it names another, is the main score (feedback rows: their answers marked good)."""
    eval_rows = scoring_rows(splits.eval)
    if "desirable" in splits.eval.column_names and recipe.eval.task in (None, "feedback"):
        # Held-out thumbs alone: how often the tuned model's implied reward agrees with them.
        feedback = recipe.eval.model_copy(update={"task": "feedback"})
        record_evaluation(
            run_dir, evaluate(model, tokenizer, list(splits.eval), feedback, None, precision), metrics, phases
        )
        return
    if "chosen" in splits.eval.column_names:
        preference = evaluate(
            model, tokenizer, eval_rows, recipe.eval.model_copy(update={"task": "preference"}), splits.labels, precision
        )
        if recipe.eval.task in (None, "preference"):
            record_evaluation(run_dir, preference, metrics, phases)
            return
        record_evaluation(run_dir, preference, metrics, phases, name="preference")
    task = evaluate(model, tokenizer, eval_rows, recipe.eval, splits.labels, precision)
    record_evaluation(run_dir, task, metrics, phases)
