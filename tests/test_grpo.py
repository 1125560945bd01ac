"""The GRPO recipe on a tiny random model: rewards (built-in, a reward model run, the user's function) as TRL calls
them, training against them, the reward before and after on held-out prompts, and bad input."""

from __future__ import annotations

import json

import pytest

from tuner import TunerError, recipe_from_dict
from tuner.recipes import grpo, preflight
from tuner.rewards import named_choice, reward_functions

from helpers import TEAMS, recipe_document, ticket_rows, write_jsonl


def grpo_document(tiny_model_dir, ticket_files, output_dir, rewards=None, **changes) -> dict:
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, output_dir)
    document["method"] = "grpo"
    document["grpo"] = {"rewards": rewards or [{"type": "choice"}], "num_generations": 4, "max_completion_length": 4}
    document["train"] = {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1.0e-2, "logging_steps": 1}
    document["data"]["max_eval_samples"] = 6
    document.update(changes)
    return document


def test_named_choice_is_the_one_choice_an_answer_names():
    assert named_choice("Send it to Billing.", TEAMS) == "billing"
    assert named_choice("billing, billing!", TEAMS) == "billing"
    # Repeating the options (the question's own list) names them all, and earns nothing.
    assert named_choice("Team for this ticket (billing, shipping, returns", TEAMS) is None
    assert named_choice("shipping or billing", TEAMS) is None
    assert named_choice("re-billing team", ["billing", "re-billing"]) == "re-billing"
    assert named_choice("no team here", TEAMS) is None


def test_built_in_rewards_as_trl_calls_them(tmp_path, tiny_model_dir, ticket_files):
    document = grpo_document(
        tiny_model_dir,
        ticket_files,
        tmp_path / "grpo",
        rewards=[
            {"type": "choice"},
            {"type": "exact_match"},
            {"type": "regex", "pattern": r"^\w+$"},
            {"type": "length", "max_tokens": 2},
        ],
    )
    choice, exact, regex, length = reward_functions(recipe_from_dict(document), None, TEAMS)
    completions = [
        [{"role": "assistant", "content": text}]
        for text in ("billing", "Billing team, I think", "shipping", "It goes to billing, or returns.")
    ]
    gold = ["billing"] * 4
    kwargs = {"prompts": [[]] * 4, "completions": completions, "gold": gold, "trainer_state": None}
    assert choice(**kwargs) == [1.0, 1.0, 0.0, 0.0]
    assert exact(**kwargs) == [1.0, 0.0, 0.0, 0.0]
    assert regex(**kwargs) == [1.0, 0.0, 1.0, 0.0]
    assert length(**kwargs, completion_ids=[[1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]) == [0.0, 0.0, -0.5, -1.0]


def test_grpo_trains_against_its_rewards_and_reports_them_before_and_after(tmp_path, tiny_model_dir, ticket_files):
    from safetensors.torch import load_file

    # A random model never names a team, so the choice reward alone would be 0 for every answer (no advantage, no
    # update); the regex reward varies with its random text.
    rewards = [{"type": "choice"}, {"type": "regex", "pattern": "^[A-Za-z ]+$", "weight": 0.5}]
    result = grpo.run(recipe_from_dict(grpo_document(tiny_model_dir, ticket_files, tmp_path / "grpo", rewards)))
    run_dir = result.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "grpo" and metrics["train_steps"] == 3
    assert metrics["first_reward"] is not None
    for key in ("reward_before", "reward_after"):
        assert metrics[key]["rows"] == 6 and 0.0 <= metrics[key]["mean"] <= 1.5
    assert len(metrics["reward_change_ci95"]) == 2
    assert metrics["eval"]["task"] == "choice" and metrics["eval"]["rows"] == 6
    rewards = [json.loads(line) for line in (run_dir / "rewards.jsonl").read_text().splitlines()]
    assert len(rewards) == 6 and all(set(row) == {"row", "gold", "before", "after"} for row in rewards)
    assert all(row["gold"] in TEAMS for row in rewards)
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["grpo"]["rewards"][0]["type"] == "choice" and manifest["trl_args"]["learning_rate"] == 1.0e-2


def test_a_user_function_reward_is_imported_checked_and_used(tmp_path, tiny_model_dir, ticket_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, **kwargs):\n"
        "    return [1.0 if len(c[-1]['content']) < 20 else 0.0 for c in completions]\n"
        "def broken(prompts, completions, **kwargs):\n"
        "    return [1.0]\n",
        encoding="utf-8",
    )
    spec = {"type": "function", "function": "my_rewards:short", "trust_remote_code": True}
    document = grpo_document(tiny_model_dir, ticket_files, tmp_path / "grpo", rewards=[spec])
    assert preflight.validate(recipe_from_dict(document))["train_rows"] > 0

    for function, message in (
        (
            "my_rewards:broken",
            r"returned \[1.0\], not one finite number .* per completion "
            r"\(4 given\)",
        ),
        ("my_rewards:missing", "my_rewards has no function 'missing'"),
        ("nowhere:short", "cannot import 'nowhere'"),
    ):
        bad = grpo_document(tiny_model_dir, ticket_files, tmp_path / "grpo", rewards=[{**spec, "function": function}])
        with pytest.raises(TunerError, match=message):
            preflight.validate(recipe_from_dict(bad))
    unsafe = grpo_document(
        tiny_model_dir, ticket_files, tmp_path / "grpo", rewards=[{**spec, "trust_remote_code": False}]
    )
    with pytest.raises(TunerError, match="set `trust_remote_code: true` on it"):
        recipe_from_dict(unsafe)


def test_bad_grpo_recipes_are_refused_before_a_model_loads(tmp_path, tiny_model_dir, ticket_files):
    with pytest.raises(TunerError, match="method grpo needs a `grpo:` section"):
        recipe_from_dict({**grpo_document(tiny_model_dir, ticket_files, tmp_path / "g"), "grpo": None})
    with pytest.raises(TunerError, match="a `regex` reward needs `pattern`"):
        recipe_from_dict(grpo_document(tiny_model_dir, ticket_files, tmp_path / "g", rewards=[{"type": "regex"}]))
    with pytest.raises(TunerError, match="must hold whole groups of `grpo.num_generations`"):
        document = grpo_document(tiny_model_dir, ticket_files, tmp_path / "g")
        document["train"]["per_device_train_batch_size"] = 6
        recipe_from_dict(document)
    with pytest.raises(TunerError, match="belongs in the `grpo:` block"):
        document = grpo_document(tiny_model_dir, ticket_files, tmp_path / "g")
        document["train"]["num_generations"] = 8
        recipe_from_dict(document)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Which team? {r['text']}"} for r in ticket_rows(8)])
    document = grpo_document(tiny_model_dir, (prompts, None), tmp_path / "g", eval={})
    document["data"].pop("prompt_template")
    with pytest.raises(TunerError, match="the `choice` reward compares each answer with the row's gold answer"):
        preflight.validate(recipe_from_dict(document))
    document["grpo"]["rewards"] = [{"type": "regex", "pattern": "team"}]
    assert preflight.validate(recipe_from_dict(document))["format"] == "prompts"  # prompts alone are fine for it
    document["method"], document["grpo"] = "sft", None
    document.pop("train")
    with pytest.raises(TunerError, match="prompts alone .* which only `tuner grpo` trains on"):
        preflight.validate(recipe_from_dict(document))
    not_reward = tmp_path / "sft-run"
    from helpers import fake_adapter_run

    fake_adapter_run(not_reward, str(tiny_model_dir))
    with pytest.raises(TunerError, match="a `model` reward needs a reward model run"):
        recipe_from_dict(
            grpo_document(
                tiny_model_dir, ticket_files, tmp_path / "g", rewards=[{"type": "model", "run": str(not_reward)}]
            )
        )


def test_sigterm_then_resume_matches_an_uninterrupted_grpo_run(tmp_path, tiny_model_dir, ticket_files, signal_at_step):
    from helpers import stopped_and_resumed

    def document(output_dir):
        doc = grpo_document(
            tiny_model_dir, ticket_files, output_dir, rewards=[{"type": "regex", "pattern": "^[A-Za-z ]+$"}]
        )
        doc["train"].update(max_steps=4, save_strategy="steps", save_steps=2)
        return doc

    whole, resumed, before, after = stopped_and_resumed(grpo.run, document, tmp_path, signal_at_step, 2, 4)
    for step in (3, 4):  # the sampled answers, their rewards and the update all as in the uninterrupted run
        assert after[step] == pytest.approx(before[step], rel=1e-3, abs=1e-4), (step, before, after)
    assert resumed.metrics["reward_after"] == whole.metrics["reward_after"]
    from safetensors.torch import load_file  # GRPO's logged loss is near 0 by construction: compare the weights

    trained, continued = (
        load_file(str(run / "adapter" / "adapter_model.safetensors")) for run in (whole.run_dir, resumed.run_dir)
    )
    assert any(t.abs().sum() > 0 for name, t in trained.items() if "lora_B" in name)
    assert all((trained[name] - continued[name]).abs().max() < 1e-5 for name in trained)


def test_grpo_memory_is_estimated_on_prompts_and_sampled_answers(
    tmp_path, tiny_model_dir, ticket_files, monkeypatch, capsys
):
    import tuner.estimate as estimate_module
    import tuner.speed as speed
    from tuner.data.rows import prompt_rows
    from tuner.data.splits import load_data
    from tuner.models import load_config_and_tokenizer
    from tuner.rendering import render_prompt
    from tuner.speed import Precision, checkpointing

    recipe = recipe_from_dict(grpo_document(tiny_model_dir, ticket_files, tmp_path / "g"))
    config, tokenizer = load_config_and_tokenizer(recipe.model)
    rows = prompt_rows(load_data(recipe.data).train, TEAMS)
    estimate = preflight.dry_run(recipe)
    # The dry run shows what GRPO trains on: the prompt and sampled answers, never the row's gold answer.
    shown = estimate.rows[0]["answers"][0]
    assert shown["answer"] == "(up to 4 sampled tokens)" and shown["answer_tokens"] == 4
    assert shown["prompt"] == render_prompt(rows[0]["prompt"], tokenizer)
    longest = max(
        len(tokenizer(render_prompt(row["prompt"], tokenizer), add_special_tokens=False)["input_ids"]) for row in rows
    )
    assert estimate.batch_tokens == 4 * (longest + 4)  # 4 sampled answers a batch, each its prompt and 4 tokens

    # On a GPU the run decides gradient checkpointing from this estimate on its prompt rows (it crashed there:
    # prompt rows have no answer to measure).
    for module in (speed, estimate_module):
        monkeypatch.setattr(module, "device_kind", lambda: "cuda")
        monkeypatch.setattr(module, "available_memory_mb", lambda device: 1.0)
    on, reason = checkpointing(recipe, Precision("bf16", "bf16"), config, tokenizer, rows)
    assert on and "1 MB free on the GPU" in reason


def test_rloo_trains_against_the_rewards_with_its_own_trl_config(tmp_path, tiny_model_dir, ticket_files):
    from safetensors.torch import load_file

    rewards = [{"type": "choice"}, {"type": "regex", "pattern": "^[A-Za-z ]+$", "weight": 0.5}]
    document = grpo_document(tiny_model_dir, ticket_files, tmp_path / "rloo", rewards)
    document["grpo"]["algorithm"] = "rloo"
    document["train"]["normalize_advantages"] = True  # a key of RLOOConfig, not of GRPOConfig
    result = grpo.run(recipe_from_dict(document))
    assert result.metrics["method"] == "rloo" and result.metrics["train_steps"] == 3
    tensors = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)  # the adapter was trained
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["grpo"]["algorithm"] == "rloo" and manifest["trl_args"]["normalize_advantages"] is True
    with pytest.raises(TunerError, match="`train.normalize_advantages` is not a field of TRL's GRPOConfig"):
        recipe_from_dict({**document, "grpo": {**document["grpo"], "algorithm": "grpo"}})
