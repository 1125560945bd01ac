"""The adapter builder is a pure function of its config; parameter counts are real."""

from __future__ import annotations

import pytest

from tuner.adapters import build_peft_config, parameter_counts
from tuner.schema import AdapterConfig


@pytest.mark.parametrize("kind, dora, rslora", [("lora", False, False), ("dora", True, False), ("rslora", False, True)])
def test_adapter_types(kind, dora, rslora):
    config = build_peft_config(AdapterConfig(type=kind, r=8, alpha=16, dropout=0.1))
    assert (config.use_dora, config.use_rslora) == (dora, rslora)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.1)
    assert config.target_modules == "all-linear" and config.task_type == "CAUSAL_LM"


def test_target_and_saved_modules_pass_through():
    config = build_peft_config(AdapterConfig(target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]))
    assert set(config.target_modules) == {"q_proj", "v_proj"} and config.modules_to_save == ["lm_head"]


def test_builder_is_pure():
    adapter = AdapterConfig(r=4)
    assert build_peft_config(adapter).to_dict() == build_peft_config(adapter).to_dict()
    assert adapter == AdapterConfig(r=4)


def test_parameter_counts_on_tiny_model(tiny_model_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    total_before = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, build_peft_config(AdapterConfig(r=2, target_modules=["q_proj"])))
    counts = parameter_counts(peft_model)
    # q_proj is 64x64 in each of 2 layers: A is 2x64 and B is 64x2.
    assert counts["trainable_parameters"] == 2 * (2 * 64 + 64 * 2)
    assert counts["total_parameters"] == total_before + counts["trainable_parameters"]
