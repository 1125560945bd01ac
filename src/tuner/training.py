"""What every training method shares: tuner's defaults for TRL's config, precision and paths, the train phase and
saving the adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .accounting import phase
from .distributed import is_main_process
from .models import device_kind

# tuner's defaults under the recipe's `train:` keys. They differ from TRL's where TRL's suit full fine-tuning on a
# GPU rather than an adapter on any device: a LoRA learning rate, no gradient checkpointing unless asked (it costs
# about 20% of step time), tokens counted, no tracker, one adapter saved at the end.
DEFAULTS: dict[str, Any] = {
    "learning_rate": 2.0e-4,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "max_length": 512,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "logging_steps": 10,
    "gradient_checkpointing": False,
    "include_num_input_tokens_seen": "non_padding",
    "report_to": "none",
    "save_strategy": "no",
    "eval_strategy": "no",
}


def training_args(recipe, dtype: str, run_dir: Path, config_class=None, defaults: dict[str, Any] = DEFAULTS,
                  method_settings: dict[str, Any] | None = None):
    """The TRL config for a recipe: tuner's defaults, the recipe's `train:` keys and the method's own block (such as
    `dpo:`), then precision and paths, which tuner sets."""
    from .config import trl_config_class

    config_class = config_class or trl_config_class(recipe.method)
    values = {**defaults, **recipe.train, **(method_settings or {})}
    # The precision follows the hardware (model.dtype), never TRL's bf16 default blindly (see models.resolve_dtype).
    values.update(bf16=dtype == "bf16", fp16=dtype == "fp16", output_dir=str(run_dir / "checkpoints"),
                  seed=recipe.seed, use_cpu=device_kind() == "cpu")
    if "use_liger_kernel" not in recipe.train and liger_applies(recipe):
        values["use_liger_kernel"] = True
    return config_class(**values)


def liger_applies(recipe) -> bool:
    """Liger's Triton kernels (fused RMSNorm, SwiGLU, rotary) on by default where they run: a CUDA GPU, the package
    installed, and a base that is not bitsandbytes-quantised (Liger replaces the MLP's linear layers)."""
    from importlib.util import find_spec

    return device_kind() == "cuda" and not recipe.model.quantize and find_spec("liger_kernel") is not None


def checkpoint_if_memory_needs_it(args, recipe, loaded, rows) -> str | None:
    """Gradient checkpointing on only when memory needs it: where the recipe leaves `train.gradient_checkpointing`
    unset and a GPU runs the job, turn it on when the dry-run estimate of what the run adds to the loaded weights
    (adapter, gradients, optimizer state, activations at the longest batch) exceeds 90% of the GPU's free memory.
    On a CPU it stays off (RAM is the larger pool, and recomputation costs about 20% of step time). Returns why it
    was turned on, for the manifest, or None."""
    if "gradient_checkpointing" in recipe.train or device_kind() != "cuda":
        return None
    from .estimate import available_memory_mb, estimate

    predicted = estimate(recipe, rows, loaded.model.config, loaded.tokenizer, rendered_rows=0)
    needed = predicted.peak_mb - predicted.memory_mb["weights"] - predicted.memory_mb.get("runtime", 0)
    free = available_memory_mb("cuda")
    if free is None or needed <= 0.9 * free:
        return None
    args.gradient_checkpointing = True
    reason = (f"on because memory needs it: an estimated {needed:,.0f} MB beyond the weights against {free:,.0f} MB "
              f"free on the GPU (set train.gradient_checkpointing to decide yourself)")
    print(f"tuner: gradient checkpointing {reason}.")
    return reason


def speed_settings(trainer) -> dict[str, Any]:
    """What the run did for speed and memory, for the manifest: batch layout, attention kernel, precision,
    gradient checkpointing, kernels, optimizer and compilation."""
    args = trainer.args
    return {"batches": getattr(trainer, "batching", None),
            "attention": getattr(trainer.model.config, "_attn_implementation", None),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "gradient_checkpointing_reason": getattr(trainer, "checkpointing_reason", None),
            "liger_kernel": bool(getattr(args, "use_liger_kernel", False)),
            "optimizer": str(getattr(args.optim, "value", args.optim)),
            "torch_compile": bool(args.torch_compile)}


def gathered_state_dict(trainer) -> dict[str, Any] | None:
    """Under FSDP or DeepSpeed ZeRO-3 each rank holds a shard of the weights: every rank must join in gathering the
    full state dict before rank 0 saves. None when the model is whole on every rank."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = trainer.accelerator.state.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            return trainer.accelerator.get_state_dict(trainer.deepspeed)
    return None


def save_adapter(model, tokenizer, adapter_dir: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Adapter weights as safetensors, with the tokenizer and chat template beside them.

    Not `trainer.save_model`: it also pickles the training arguments (training_args.bin), and a run folder holds
    safetensors and text only.
    """
    # Only the trained adapter: DPO from an SFT run also holds a frozen "ref" copy, which is not the result.
    model.save_pretrained(str(adapter_dir), safe_serialization=True, selected_adapters=["default"],
                          **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(str(adapter_dir))


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def train_metrics(method: str, output, phases: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """The metrics every training method reports: loss, tokens, tokens/s, steps, parameter counts, phases."""
    return {"method": method, "train_loss": output.training_loss, "train_tokens": phases["train"]["tokens"],
            "train_tokens_per_second": phases["train"].get("tokens_per_second"),
            "train_steps": phases["train"]["steps"], **counts, "phases": phases}


def recorded_args(args, recipe, defaults: dict[str, Any]) -> dict[str, Any]:
    """The TRL arguments tuner or the recipe chose, with the values TRL ended up using, for the manifest."""
    return {key: getattr(args, key) for key in sorted({**defaults, **recipe.train})}


def prepare_base(model, quantize: str | None, gradient_checkpointing: bool):
    """QLoRA: peft's k-bit training preparation of a quantised base (layer norms in fp32, input gradients on)."""
    if not quantize:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def rendered_pairs(row: dict[str, Any], tokenizer) -> list[tuple[str, str]]:
    """A canonical training row as the text the model reads, split into (prompt, answer) for each answer (two for a
    preference pair): the answer is what the loss is on."""
    if "messages" in row:
        from .data import last_turn_as_completion

        row = last_turn_as_completion(row)
    answers = [row[key] for key in ("completion", "chosen", "rejected") if row.get(key) is not None]
    pairs = []
    for answer in answers:
        if isinstance(row["prompt"], list):
            turns = answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}]
            prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(row["prompt"] + turns, tokenize=False)
            pairs.append((prompt, full[len(prompt):] if full.startswith(prompt) else full))
        else:
            text = answer if isinstance(answer, str) else answer[-1]["content"]
            pairs.append((row["prompt"], text + (tokenizer.eos_token or "")))
    return pairs


def _row_lengths(row: dict[str, Any], tokenizer) -> int:
    """Tokens of a canonical training row as the trainer sees it (for pairs, the longer side)."""
    return max(len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"])
               for prompt, answer in rendered_pairs(row, tokenizer))


def report_long_rows(rows, tokenizer, max_length: int | None, data_report: dict[str, Any]) -> None:
    """Count training rows longer than `train.max_length`, say so, and record it: TRL keeps their first max_length
    tokens, and a row whose whole answer lies beyond is dropped."""
    if not max_length:
        return
    long_rows = [number for number, row in enumerate(rows) if _row_lengths(row, tokenizer) > max_length]
    data_report["rows_longer_than_max_length"] = {"count": len(long_rows), "max_length": max_length,
                                                  "first": long_rows[:10], "policy": "truncate"}
    if long_rows:
        print(f"tuner: {len(long_rows)} of {len(rows)} train rows are longer than train.max_length ({max_length} "
              f"tokens; rows {long_rows[:5]}{'...' if len(long_rows) > 5 else ''}): they are cut to their first "
              f"{max_length} tokens, and a row whose answer falls wholly beyond is dropped. Raise "
              f"`train.max_length` to keep them whole.")


def resume_point(recipe, data_report: dict[str, Any]) -> Path | None:
    """The checkpoint `recipe.resume` names, checked against the recipe and data (before any model loads)."""
    from .checkpoints import check_resumable, find_checkpoint

    checkpoint = find_checkpoint(recipe)
    if checkpoint is not None:
        check_resumable(checkpoint, recipe, data_report)
    return checkpoint


def run_folder(recipe, checkpoint: Path | None) -> Path:
    """A new run folder (never an existing one), or the interrupted run's own folder when resuming. With several
    processes, rank 0 makes it and the others are told its path."""
    from .distributed import shared
    from .runs import new_run_dir, write_recipe

    def make() -> Path:
        if checkpoint is None:
            run_dir = new_run_dir(recipe.output_dir)
        else:
            run_dir = checkpoint.parent.parent
            print(f"tuner: resuming {run_dir} from {checkpoint.name}")
        write_recipe(run_dir, recipe)
        return run_dir

    return shared(make)


def train_and_save(trainer, tokenizer, run_dir: Path, phases: dict[str, Any], recipe, data_report: dict[str, Any],
                   checkpoint: Path | None = None):
    """Run the trainer as the `train` phase (tokens and steps recorded), then save the adapter; returns TRL's output.

    Checkpoints are marked whole once written; SIGINT/SIGTERM save one and raise `Interrupted`. From a checkpoint,
    the trainer restores optimizer, scheduler, RNG and data position, and the hours before the interruption count.
    """
    from .checkpoints import Interrupted, MarkComplete, StopOnSignal, identity

    earlier = 0.0
    if checkpoint is not None:
        earlier = json.loads((checkpoint / "tuner_checkpoint.json").read_text(encoding="utf-8"))["train_seconds"]
    stopper = StopOnSignal()
    trainer.add_callback(stopper)
    trainer.add_callback(MarkComplete(identity(recipe, data_report), earlier))
    stopper.install()
    try:
        with phase("train", phases) as record:
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            record["tokens"] = int(trainer.state.num_input_tokens_seen)
            record["steps"] = int(trainer.state.global_step)
    except Exception as error:
        raise _resource_error(error, trainer, run_dir) from None
    finally:
        stopper.uninstall()
    _count_earlier(phases["train"], earlier)
    if stopper.signum is not None:
        from .runs import write_json

        if is_main_process():
            write_json(run_dir / "log_history.json", trainer.state.log_history)
        last = trainer.state.global_step
        raise Interrupted(f"interrupted by {signal_name(stopper.signum)} at step {last} of {trainer.state.max_steps}; "
                          f"checkpoint saved in {run_dir / 'checkpoints' / f'checkpoint-{last}'}. Continue with "
                          f"`tuner {recipe.method} {recipe.source} --resume` with the same --set options (or "
                          f"`resume: auto` in the recipe).",
                          stopper.signum)
    state_dict = gathered_state_dict(trainer)
    if not is_main_process():
        return output
    try:
        save_adapter(trainer.model, tokenizer, run_dir / "adapter", state_dict)
    except OSError as error:
        raise _resource_error(error, trainer, run_dir) from None
    remove_if_empty(run_dir / "checkpoints")
    return output


def _resource_error(error: Exception, trainer, run_dir: Path) -> Exception:
    """Out of memory or out of disk during training or saving, as a message that says what to change; anything
    else unchanged. The run folder keeps its checkpoints either way."""
    import errno
    import shutil

    from .checkpoints import last_complete
    from .errors import TunerError
    from .evaluate import is_out_of_memory

    kept = last_complete(run_dir)
    keep = (f"The run folder keeps {kept}: after the change, continue with --resume (or a new run)." if kept else
            "No checkpoint was saved yet; set `train.save_strategy: steps` and `train.save_steps` to keep some.")
    args, step = trainer.args, trainer.state.global_step
    if is_out_of_memory(error):
        return TunerError(f"out of memory while training at step {step}. Lower `train.per_device_train_batch_size` "
                          f"(now {args.per_device_train_batch_size}; raise `train.gradient_accumulation_steps` to "
                          f"keep the effective batch) or `train.max_length` (now {getattr(args, 'max_length', None)}), "
                          f"turn on `train.gradient_checkpointing: true`, or load the base with `model.quantize: "
                          f"4bit`. {keep}")
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        # A checkpoint holds the adapter (fp32) and Adam's two moments: about 3 x 4 bytes per trainable parameter.
        needed_mb = 12 * trainable / 2**20
        free_mb = shutil.disk_usage(run_dir).free / 2**20
        return TunerError(f"the disk is full while saving in {run_dir}: a checkpoint needs about {needed_mb:.0f} MB "
                          f"and {free_mb:.0f} MB are free. Free some space or set `output_dir` on another disk. "
                          f"{keep}")
    return error


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def _count_earlier(record: dict[str, Any], earlier_seconds: float) -> None:
    """A resumed run's train phase includes the time before the interruption (hours and tokens/s are whole-run)."""
    if not earlier_seconds:
        return
    hours_key = "gpu_hours" if "gpu_hours" in record else "cpu_hours"
    record[hours_key] += earlier_seconds / 3600 * record.get("world_size", 1)
    record["wall_seconds_before_resume"] = earlier_seconds
    total = record["wall_seconds"] + earlier_seconds
    if record.get("tokens"):
        record["tokens_per_second"] = round(record["tokens"] / total, 1)
