"""The reward-model recipe on a tiny random model: a score head and adapter trained on pairs, scored by pairwise
accuracy on held-out pairs with its interval, the run folder a GRPO recipe reads, and bad input."""

from __future__ import annotations

import json

import pytest

from tuner import TunerError, recipe_from_dict
from tuner.recipes import reward

from helpers import fake_adapter_run, recipe_document, ticket_rows, write_jsonl


def sentence_pairs(n: int, offset: int = 0) -> list[dict]:
    """A polite sentence naming the team (chosen) against the bare team name (rejected): a contrast a tiny model can
    learn to score."""
    return [
        {
            "prompt": f"Which team? {r['text']}",
            "chosen": f"Thank you for writing. The {r['label']} team will look into this today.",
            "rejected": r["label"],
        }
        for r in ticket_rows(n, offset)
    ]


@pytest.fixture
def pair_files(tmp_path):
    return (
        write_jsonl(tmp_path / "pairs" / "train.jsonl", sentence_pairs(32)),
        write_jsonl(tmp_path / "pairs" / "test.jsonl", sentence_pairs(40, offset=100)),
    )


def reward_document(tiny_model_dir, files, output_dir, **changes) -> dict:
    train, test = files
    document = recipe_document(tiny_model_dir, train, test, output_dir)
    document["method"] = "reward"
    document["data"].pop("prompt_template")
    document.pop("eval")
    document["train"].update(max_steps=8, learning_rate=1.0e-2, max_length=128)
    document.update(changes)
    return document


def test_reward_model_learns_to_rank_held_out_pairs(tmp_path, tiny_model_dir, pair_files):
    from safetensors.torch import load_file

    result = reward.run(recipe_from_dict(reward_document(tiny_model_dir, pair_files, tmp_path / "reward")))
    run_dir = result.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "reward" and metrics["train_steps"] == 8
    scores = metrics["eval"]
    assert scores["task"] == "reward" and scores["rows"] == 40
    # Beyond chance with the interval: the untrained head ranks these pairs at random.
    assert scores["accuracy_ci95"][0] > 0.5, scores
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(".score." in name for name in tensors), sorted(tensors)[:5]  # the score head is saved with it
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 40 and all(set(p["scores"]) == {"chosen", "rejected"} for p in predictions)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["method"] == "reward" and manifest["model"]["head"] == "reward"
    # It scores answers and cannot write any: export and predict refuse it with what to give instead.
    from tuner import export, predict

    with pytest.raises(TunerError, match="reward model run .* no language-model head to export"):
        export(run_dir, to="merged", out=tmp_path / "export")
    with pytest.raises(TunerError, match="no language-model head to answer with"):
        predict(run_dir, pair_files[1], tmp_path / "answers.jsonl")
    assert not (tmp_path / "export").exists() and not (tmp_path / "answers.jsonl").exists()


def test_reward_scores_match_a_direct_forward(tmp_path, tiny_model_dir):
    import torch

    from tuner.models import load_model
    from tuner.rendering import reward_ids
    from tuner.rewards import reward_scores
    from tuner.schema import ModelConfig

    loaded = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), head="reward")
    items = [
        ([{"role": "user", "content": "Which team? my bill"}], "billing", None),
        (
            [{"role": "user", "content": "Which team? my parcel never came, where is it"}],
            "Thank you. The shipping team will look into this.",
            None,
        ),
        ("Which team? plain text", " returns", None),
    ]
    batched = reward_scores(loaded.model, loaded.tokenizer, items, batch_size=3)
    with torch.inference_mode():
        alone = [
            loaded.model(input_ids=torch.tensor([reward_ids(prompt, answer, loaded.tokenizer)])).logits[0, 0].item()
            for prompt, answer, _ in items
        ]
    assert batched == pytest.approx(alone, abs=1e-4)  # padding changes nothing
    assert reward_ids(items[2][0], items[2][1], loaded.tokenizer)[-1] == loaded.tokenizer.eos_token_id


def test_bad_reward_recipes(tmp_path, tiny_model_dir, pair_files, ticket_files):
    document = reward_document(tiny_model_dir, pair_files, tmp_path / "reward", eval={"task": "choice"})
    with pytest.raises(TunerError, match="method reward is scored by how often"):
        recipe_from_dict(document)
    document = reward_document(tiny_model_dir, ticket_files, tmp_path / "reward")
    with pytest.raises(TunerError, match="method reward needs preference pairs"):
        reward.run(recipe_from_dict(document))
    document = reward_document(tiny_model_dir, pair_files, tmp_path / "reward")
    document["train"]["max_length"] = 16
    with pytest.raises(TunerError, match="every one of the 32 train pairs is longer than train.max_length"):
        reward.run(recipe_from_dict(document))
    assert not (tmp_path / "reward").exists()  # refused before a run folder was made


def test_a_reward_model_run_is_refused_as_a_policy_adapter(tmp_path, tiny_model_dir, pair_files):
    run = fake_adapter_run(tmp_path / "run", str(tiny_model_dir))
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "method": "reward"}))
    document = recipe_document(tiny_model_dir, *pair_files, tmp_path / "dpo")
    document.update(method="dpo", adapter=None)
    document.pop("adapter")
    document["data"].pop("prompt_template")
    document["model"]["adapter"] = str(run)
    with pytest.raises(TunerError, match="this is a reward model run .* cannot answer itself"):
        recipe_from_dict(document)


def test_sigterm_then_resume_matches_an_uninterrupted_reward_run(tmp_path, tiny_model_dir, pair_files, signal_at_step):
    from helpers import stopped_and_resumed

    def document(output_dir):
        doc = reward_document(tiny_model_dir, pair_files, output_dir)
        doc["train"].update(
            max_steps=6, save_strategy="steps", save_steps=2, logging_steps=1, per_device_train_batch_size=4
        )
        return doc

    whole, resumed, before, after = stopped_and_resumed(reward.run, document, tmp_path, signal_at_step, 3, 6)
    for step in range(4, 7):  # optimizer, scheduler, RNG and data position restored, the score head with them
        assert after[step] == pytest.approx(before[step], rel=1e-3, abs=1e-4), (step, before, after)
    assert resumed.metrics["eval"]["accuracy"] == whole.metrics["eval"]["accuracy"]
