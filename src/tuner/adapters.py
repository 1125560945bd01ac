"""Adapters: the peft config built from a recipe's `adapter` section (pure: needs no model), parameter counts, and
the adapter of a run folder (checked, loaded, gathered across shards, saved)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import TunerError
from .files import as_umask_allows, write_json


def build_peft_config(adapter_config, head: str = "causal_lm"):
    """Map an AdapterConfig to a `peft.LoraConfig` (LoRA, DoRA or rsLoRA) for a causal language model, or (`head`
    "reward") for a reward model, whose new score head peft then trains and saves with the adapter."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS if head == "reward" else TaskType.CAUSAL_LM,
        r=adapter_config.r,
        lora_alpha=adapter_config.alpha,
        lora_dropout=adapter_config.dropout,
        target_modules=adapter_config.target_modules,
        modules_to_save=adapter_config.modules_to_save,
        use_dora=adapter_config.type == "dora",
        use_rslora=adapter_config.type == "rslora",
        bias="none",
    )


def parameter_counts(model) -> dict[str, Any]:
    """Trainable and total parameters of a (peft-wrapped) model, and the trainable share in percent."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0,
    }


def adapter_dir(run_dir: str | Path) -> Path:
    """The adapter of a run: the `adapter` folder `tuner sft` and `tuner dpo` write into their run folder."""
    return Path(run_dir) / "adapter"


def read_adapter_run(path: str | Path, model_config, source: str = "<recipe>", kind: str = "policy") -> dict[str, Any]:
    """Check that `path` is a run folder with an adapter trained on the recipe's base model, a policy (an SFT run's)
    or, with `kind` "reward", a reward model (`tuner reward`); return its manifest."""
    run_dir = Path(path)
    manifest_file, adapter_config = run_dir / "manifest.json", adapter_dir(run_dir) / "adapter_config.json"
    if not manifest_file.is_file() or not adapter_config.is_file():
        raise TunerError(
            f"{run_dir}: not a tuner run folder with an adapter (it needs manifest.json and "
            f"adapter/adapter_config.json, as `tuner sft` writes them). Point at the folder that "
            f"`tuner sft` printed."
        )
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TunerError(f"{manifest_file}: unreadable ({exc}). The run folder is damaged; train again.") from None
    if kind == "policy" and manifest.get("method") == "reward":
        raise TunerError(
            f"{run_dir}: this is a reward model run (`tuner reward`): its adapter scores answers and "
            f"cannot answer itself. Point at a `tuner sft` run here; a reward model is used by naming it "
            f"in a GRPO recipe's rewards."
        )
    if kind == "reward" and manifest.get("method") != "reward":
        raise TunerError(
            f"{run_dir}: a `model` reward needs a reward model run (`tuner reward`), but this is a "
            f"{manifest.get('method')} run. Train one with `tuner reward` and name its folder as the "
            f"reward's `run`."
        )
    trained_on = manifest.get("model", {}).get("name_or_path")
    if trained_on != model_config.name_or_path:
        raise TunerError(
            f"{run_dir}: its adapter was trained on {trained_on!r}, but {source} sets "
            f"`model.name_or_path` to {model_config.name_or_path!r}. An adapter only fits its own "
            f"base model: use the same model, or another run."
        )
    return manifest


def run_peft_config(run_dir: str | Path):
    """The peft config of a run's adapter, ready to train further (for the meta-device model of a dry run)."""
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(adapter_dir(run_dir)))
    return dataclasses.replace(config, inference_mode=False)


def with_run_adapter(model, run_dir: str | Path, trainable: bool = False):
    """`model` with the adapter of a run folder on top (trainable to continue training it, frozen to score it)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir(run_dir)), is_trainable=trainable)


def is_sharded(trainer) -> bool:
    """Whether each rank holds only a shard of the weights (FSDP, DeepSpeed ZeRO-3): then a forward pass and a
    state dict need every rank."""
    if trainer.is_fsdp_enabled:
        return True
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return plugin is not None and plugin.zero_stage == 3


def gathered_state_dict(trainer) -> dict[str, Any] | None:
    """Under FSDP or DeepSpeed ZeRO-3 every rank must join in gathering the full state dict before rank 0 saves.
    None when the model is whole on every rank."""
    if not is_sharded(trainer):
        return None
    return trainer.accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)


def save_adapter(
    model, tokenizer, folder: Path, state_dict: dict[str, Any] | None = None, base_name: str | None = None
) -> None:
    """Adapter weights as safetensors, with the tokenizer and chat template beside them, readable as the umask
    allows; `base_name` (the recipe's `model.name_or_path`) is the base its adapter_config.json names, not the
    machine-local folder the base was loaded from (a GGUF's converted checkpoint in tuner's cache).

    Not `trainer.save_model`: it also pickles the training arguments (training_args.bin), and a run folder holds
    safetensors and text only.
    """
    # Only the trained adapter: DPO from an SFT run also holds a frozen "ref" copy, which is not the result.
    model.save_pretrained(
        str(folder),
        safe_serialization=True,
        selected_adapters=["default"],
        **({"state_dict": state_dict} if state_dict is not None else {}),
    )
    tokenizer.save_pretrained(str(folder))
    config_file = folder / "adapter_config.json"
    if base_name and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        write_json(config_file, {**config, "base_model_name_or_path": base_name})
    as_umask_allows(folder)
