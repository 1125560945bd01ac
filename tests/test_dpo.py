"""The DPO recipe module on a tiny random model: training moves the adapter, one copy of the base weights, SFT then
DPO, and bad input."""

from __future__ import annotations

import json

import pytest

from tuner import TunerError, recipe_from_dict
from tuner.recipes import dpo, sft
from tuner.trainers import build_trainer

from helpers import dpo_document, fake_adapter_run, recipe_document


def test_dpo_trains_and_writes_the_run_folder(tmp_path, tiny_model_dir, pair_files):
    from safetensors.torch import load_file

    result = dpo.run(recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo")))
    run_dir = result.run_dir
    assert {
        "recipe.yaml",
        "metrics.json",
        "manifest.json",
        "adapter/",
        "predictions.jsonl",
        "predictions_preference.jsonl",
    } <= set(result.files())
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "dpo" and metrics["train_steps"] == 3
    assert metrics["first_rewards_accuracies"] is not None and metrics["last_rewards_margins"] is not None
    assert metrics["eval_preference"]["task"] == "preference" and metrics["eval_preference"]["rows"] == 8
    assert metrics["eval"]["task"] == "choice"
    assert {"train", "eval", "eval_preference"} <= set(metrics["phases"])
    assert (run_dir / "adapter" / "chat_template.jinja").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dpo"]["beta"] == 0.1 and manifest["trl_args"]["learning_rate"] == 5.0e-3


def test_reference_is_the_base_model_without_a_second_copy(tmp_path, tiny_model_dir, pair_files):
    from tuner.data.splits import load_data
    from tuner.models import load_model

    recipe = recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo"))
    loaded = load_model(recipe.model)
    base_parameters = sum(p.numel() for p in loaded.model.parameters())
    trainer, _ = build_trainer(recipe, loaded, load_data(recipe.data).train, tmp_path / "run")
    assert trainer.ref_model is None  # TRL then scores the reference with the adapter switched off
    frozen = {p.data_ptr(): p.numel() for p in trainer.model.parameters() if not p.requires_grad}
    assert sum(frozen.values()) == base_parameters  # the base weights exist once, shared by policy and reference
    assert "ref" not in trainer.model.peft_config


def test_sft_then_dpo_uses_the_sft_policy_as_reference(tmp_path, tiny_model_dir, pair_files, ticket_files):
    import torch
    from safetensors.torch import load_file

    from tuner.data.splits import load_data
    from tuner.models import load_model

    train, test = ticket_files
    sft_run = sft.run(recipe_from_dict(recipe_document(tiny_model_dir, train, test, tmp_path / "sft"))).run_dir
    document = dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo")
    document.pop("adapter")  # the SFT adapter keeps its own shape
    document["model"]["adapter"] = str(sft_run)
    recipe = recipe_from_dict(document)

    trainer, _ = build_trainer(recipe, load_model(recipe.model), load_data(recipe.data).train, tmp_path / "x")
    assert "ref" in trainer.model.peft_config and trainer.ref_model is None
    sft_weights = load_file(str(sft_run / "adapter" / "adapter_model.safetensors"))
    ref = {n: p for n, p in trainer.model.named_parameters() if ".ref." in n}
    assert ref and all(not p.requires_grad for p in ref.values())
    some = next(n for n in ref if "lora_B" in n)
    saved_name = some.replace(".ref.", ".")
    assert torch.equal(ref[some].detach().cpu(), sft_weights[saved_name])

    result = dpo.run(recipe)
    assert result.metrics["method"] == "sft+dpo"
    assert not (result.run_dir / "adapter" / "ref").exists()  # only the trained adapter is saved
    tuned = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert set(tuned) == set(sft_weights) and any(not torch.equal(tuned[k], sft_weights[k]) for k in tuned)


def test_data_without_preference_columns(tmp_path, tiny_model_dir, pair_files, ticket_files):
    train, _ = ticket_files
    document = dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo")
    document["data"]["train"] = {"path": str(train)}
    document["data"].pop("eval")
    with pytest.raises(TunerError, match=r"needs preference pairs.*\['text', 'label'\]"):
        dpo.run(recipe_from_dict(document))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dpo": {"beta": 0}}, "`dpo.beta`"),
        ({"dpo": {"beta": -1.0}}, "`dpo.beta`"),
        ({"dpo": {"betta": 0.1}}, "Did you mean `beta`"),
        ({"dpo": {"loss_type": "squared"}}, "`dpo.loss_type`"),
        ({"train": {"beta": 0.2}}, "belongs in the `dpo:` block"),
    ],
)
def test_bad_dpo_settings(tmp_path, tiny_model_dir, pair_files, change, message):
    with pytest.raises(TunerError, match=message):
        recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo", **change))


@pytest.mark.parametrize(
    "trained_on, message", [(None, "not a tuner run folder"), ("org/other", "trained on 'org/other'")]
)
def test_model_adapter_must_be_a_run_of_the_same_base(tmp_path, tiny_model_dir, pair_files, trained_on, message):
    run = tmp_path if trained_on is None else fake_adapter_run(tmp_path / "run", trained_on)
    document = dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo")
    document.pop("adapter")
    document["model"]["adapter"] = str(run)
    with pytest.raises(TunerError, match=message):
        recipe_from_dict(document)


def test_adapter_section_beside_model_adapter_is_refused(tmp_path, tiny_model_dir, pair_files):
    run = fake_adapter_run(tmp_path / "run", str(tiny_model_dir))
    document = dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo")
    document["model"]["adapter"] = str(run)
    with pytest.raises(TunerError, match="would be ignored"):
        recipe_from_dict(document)
    document.pop("adapter")
    assert recipe_from_dict(document).model.adapter == str(run)
