"""The KTO recipe module on a tiny random model: feedback rows in each shape, weights from the data's balance,
training moves the adapter and is scored like DPO, SFT then KTO, and bad input."""

from __future__ import annotations

import json

import pytest

from tuner import TunerError, recipe_from_dict
from tuner.data.splits import load_data
from tuner.recipes import kto, preflight, sft
from tuner.schema import FeedbackConfig
from tuner.trainers import feedback_weights

from helpers import TEAMS, dpo_document, pair_rows, recipe_document, ticket_rows, write_jsonl


def feedback_rows(n: int, offset: int = 0, every: int = 3) -> list[dict]:
    """One answer per ticket: right (thumbs up) for every `every`-th ticket, else the next team (thumbs down)."""
    rows = []
    for i, row in enumerate(ticket_rows(n, offset)):
        good = i % every == 0
        answer = row["label"] if good else TEAMS[(TEAMS.index(row["label"]) + 1) % 5]
        rows.append({"prompt": f"Which team? {row['text']}", "completion": answer, "label": good})
    return rows


@pytest.fixture
def feedback_files(tmp_path):
    return (
        write_jsonl(tmp_path / "feedback" / "train.jsonl", feedback_rows(24)),
        write_jsonl(tmp_path / "feedback" / "test_pairs.jsonl", pair_rows(8, offset=100)),
    )


def kto_document(tiny_model_dir, files, output_dir, **changes) -> dict:
    return dpo_document(tiny_model_dir, files, output_dir, method="kto", **changes)


def test_kto_trains_on_feedback_and_is_scored_like_dpo(tmp_path, tiny_model_dir, feedback_files):
    from safetensors.torch import load_file

    result = kto.run(recipe_from_dict(kto_document(tiny_model_dir, feedback_files, tmp_path / "kto")))
    run_dir = result.run_dir
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "kto" and metrics["train_steps"] == 3
    assert metrics["feedback_rows"] == {"desirable": 8, "undesirable": 16}
    assert metrics["first_kl"] is not None and metrics["last_loss"] is not None
    assert metrics["eval_preference"]["task"] == "preference" and metrics["eval_preference"]["rows"] == 8
    assert metrics["eval"]["task"] == "choice" and metrics["eval"]["rows"] == 8
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # 8 up against 16 down: each thumbs up weighs 2, so both sides weigh the same.
    assert manifest["kto"]["desirable_weight"] == 2.0 and manifest["kto"]["undesirable_weight"] == 1.0
    assert manifest["data"]["format"] == "feedback"
    assert "***" not in (run_dir / "metrics.json").read_text()  # no metric name mistaken for a secret


def test_feedback_weights_balance_the_sides_unless_the_recipe_sets_them():
    assert feedback_weights(FeedbackConfig(), {"desirable": 10, "undesirable": 30}) == {
        "desirable_weight": 3.0,
        "undesirable_weight": 1.0,
    }
    assert feedback_weights(FeedbackConfig(), {"desirable": 40, "undesirable": 10}) == {
        "desirable_weight": 1.0,
        "undesirable_weight": 4.0,
    }
    assert feedback_weights(FeedbackConfig(desirable_weight=1.2), {"desirable": 10, "undesirable": 30}) == {
        "desirable_weight": 1.2,
        "undesirable_weight": 1.0,
    }


def test_feedback_in_every_shape_reads_as_the_same_rows(tmp_path, tiny_model_dir):
    from tuner.schema import DataConfig

    trl_shape = [
        {"prompt": "Which team? my bill", "completion": "billing", "label": True},
        {"prompt": "Which team? my parcel", "completion": "returns", "label": False},
    ]
    llamafactory = [
        {
            "messages": [
                {"role": "user", "content": "Which team? my bill"},
                {"role": "assistant", "content": "billing"},
            ],
            "label": True,
        },
        {
            "messages": [
                {"role": "user", "content": "Which team? my parcel"},
                {"role": "assistant", "content": "returns"},
            ],
            "label": False,
        },
    ]
    thumbs = [
        {"question": "Which team? my bill", "completion": "billing", "thumbs": "up"},
        {"question": "Which team? my parcel", "completion": "returns", "thumbs": "down"},
    ]
    read = {}
    for name, rows, columns in (
        ("trl", trl_shape, None),
        ("llamafactory", llamafactory, None),
        ("thumbs", thumbs, {"prompt": "question", "label": "thumbs"}),
    ):
        path = write_jsonl(tmp_path / f"{name}.jsonl", rows * 3)
        splits = load_data(
            DataConfig(train={"path": str(path)}, columns=columns, eval_fraction=0.3, drop_eval_overlap=False)
        )
        read[name] = sorted(
            (json.dumps(row["prompt"]), json.dumps(row["completion"]), row["desirable"])
            for row in list(splits.train) + list(splits.eval)
        )
        assert splits.report["format"].startswith("feedback")
    assert read["trl"] == read["llamafactory"] == read["thumbs"]


def test_held_out_feedback_scores_the_answers_marked_good_and_overlap_drops_the_right_rows(tmp_path):
    from tuner.data.rows import answer_text, question, scoring_rows
    from tuner.schema import DataConfig

    rows = feedback_rows(30)
    path = write_jsonl(tmp_path / "feedback.jsonl", rows + [rows[0]])  # one question asked twice
    splits = load_data(
        DataConfig(
            train={"path": str(path)}, eval={"path": str(write_jsonl(tmp_path / "eval.jsonl", [rows[0], rows[1]]))}
        )
    )
    # Both copies of the scored row 0 are dropped, and nothing else (row 1, thumbs down, is not scored).
    assert splits.report["train_rows_dropped_as_eval_questions"] == 2 and len(splits.train) == 29
    questions = [question(row) for row in splits.train]
    assert rows[0]["prompt"] not in questions and rows[1]["prompt"] in questions
    assert [answer_text(row) for row in scoring_rows(splits.eval)] == [rows[0]["completion"]]  # only the good one


def test_bad_feedback_is_refused_before_a_model_loads(tmp_path, tiny_model_dir, feedback_files, ticket_files):
    all_up = write_jsonl(tmp_path / "up.jsonl", [{**row, "label": True} for row in feedback_rows(12)])
    document = kto_document(tiny_model_dir, feedback_files, tmp_path / "kto")
    document["data"]["train"] = {"path": str(all_up)}
    with pytest.raises(TunerError, match="every one of the 12 train rows .* is thumbs up.*both `label` values"):
        preflight.validate(recipe_from_dict(document))

    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(12))
    document["data"]["train"] = {"path": str(pairs)}
    with pytest.raises(TunerError, match="Set `kto.unpair: true`"):
        preflight.validate(recipe_from_dict(document))
    document["kto"] = {"unpair": True}
    assert preflight.validate(recipe_from_dict(document))["train_rows"] == 12

    document["data"]["train"] = {"path": str(ticket_files[0])}
    document["data"]["eval"] = {"path": str(ticket_files[1])}
    with pytest.raises(TunerError, match="method kto needs feedback rows"):
        preflight.validate(recipe_from_dict(document))

    words = write_jsonl(tmp_path / "words.jsonl", [{**row, "label": "billing"} for row in feedback_rows(4)])
    document["data"]["train"] = {"path": str(words)}
    # Class names in `label` are not feedback: detected as prompt/completion rows, named as such ...
    with pytest.raises(TunerError, match="method kto needs feedback rows .* holds prompt_completion rows"):
        preflight.validate(recipe_from_dict(document))
    document["data"]["format"] = "feedback"  # ... and, named feedback, each row says why it is not
    with pytest.raises(TunerError, match="not a thumbs up or down"):
        preflight.validate(recipe_from_dict(document))
    document["data"]["format"] = "auto"

    only_feedback = kto_document(tiny_model_dir, feedback_files, tmp_path / "kto", eval={"task": "preference"})
    only_feedback["data"].pop("eval")
    with pytest.raises(
        TunerError, match="`eval.task` is preference, but the held-out rows of this KTO run are feedback"
    ):
        preflight.validate(recipe_from_dict(only_feedback))


def test_kto_on_thumbs_alone_is_scored_by_how_often_its_implied_reward_agrees_with_held_out_thumbs(
    tmp_path, tiny_model_dir, feedback_files
):
    # LLaMA-Factory's kto_en_demo shape, no eval section: it trains, and measures what held-out thumbs allow.
    train, _ = feedback_files
    document = kto_document(tiny_model_dir, (train, None), tmp_path / "kto", eval={})
    document["data"]["eval_fraction"] = 0.25
    document["train"]["max_steps"] = 4
    preflight.validate(recipe_from_dict(document))
    result = kto.run(recipe_from_dict(document))
    scores = result.metrics["eval"]
    assert scores["task"] == "feedback" and scores["rows"] == 6 and 0.0 <= scores["accuracy"] <= 1.0
    assert scores["mean_implied_reward_good"] is not None and scores["mean_implied_reward_bad"] is not None
    lines = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    for line in lines:
        reward = line["scores"]["implied_reward"]
        assert line["correct"] == ((reward > 0) == (line["gold"] == "good"))
    assert any(line["scores"]["implied_reward"] != 0 for line in lines)  # the adapter moved the likelihoods


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kto": {"beta": 0}}, "`kto.beta`"),
        ({"kto": {"loss_type": "sigmoid"}}, "`kto.loss_type`"),
        ({"kto": {"desirable_wieght": 1.0}}, "Did you mean `desirable_weight`"),
        ({"train": {"beta": 0.2}}, "belongs in the `kto:` block"),
        ({"train": {"packing": True}}, "KTO does not pack"),
        ({"train": {"use_weighting": True}}, "not a field of TRL's KTOConfig"),
    ],
)
def test_bad_kto_settings(tmp_path, tiny_model_dir, feedback_files, change, message):
    with pytest.raises(TunerError, match=message):
        recipe_from_dict(kto_document(tiny_model_dir, feedback_files, tmp_path / "kto", **change))


def test_sft_then_kto_trains_the_sft_adapter_on(tmp_path, tiny_model_dir, feedback_files, ticket_files):
    from safetensors.torch import load_file

    train, test = ticket_files
    first = sft.run(recipe_from_dict(recipe_document(tiny_model_dir, train, test, tmp_path / "sft")))
    document = kto_document(tiny_model_dir, feedback_files, tmp_path / "kto")
    document.pop("adapter")
    document["model"]["adapter"] = str(first.run_dir)
    result = kto.run(recipe_from_dict(document))
    assert result.metrics["method"] == "sft+kto"
    before = load_file(str(first.run_dir / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert set(before) == set(after) and any((before[k] - after[k]).abs().max() > 0 for k in before)


def test_sigterm_then_resume_matches_an_uninterrupted_kto_run(tmp_path, tiny_model_dir, feedback_files, signal_at_step):
    from helpers import stopped_and_resumed

    def document(output_dir):
        doc = kto_document(tiny_model_dir, feedback_files, output_dir)
        doc["train"].update(max_steps=6, save_strategy="steps", save_steps=2, logging_steps=1)
        return doc

    _, _, before, after = stopped_and_resumed(kto.run, document, tmp_path, signal_at_step, 3, 6)
    for step in range(4, 7):  # optimizer, scheduler, RNG and the fixed row order restored
        assert after[step] == pytest.approx(before[step], rel=1e-3, abs=1e-4), (step, before, after)


def test_kto_moves_held_out_preferences_towards_what_the_feedback_rewards(tmp_path, tiny_model_dir):
    """Thumbs up for a polite sentence naming the team, down for the bare name: on other tickets' pairs, the tuned
    model prefers the sentence (per token) where the base did not, beyond the paired interval."""
    from tuner.intervals import paired_difference_interval
    from tuner.recipes import evaluation

    def sentence(team):
        return f"Thank you for writing. The {team} team will look into this today."

    train = [
        {
            "prompt": f"Which team? {r['text']}",
            "completion": sentence(r["label"]) if i % 2 else r["label"],
            "label": bool(i % 2),
        }
        for i, r in enumerate(ticket_rows(48))
    ]
    test = [
        {"prompt": f"Which team? {r['text']}", "chosen": sentence(r["label"]), "rejected": r["label"]}
        for r in ticket_rows(40, offset=100)
    ]
    files = (write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test))
    document = kto_document(tiny_model_dir, files, tmp_path / "kto", eval={"task": "preference"})
    document["train"].update(max_steps=12, learning_rate=1.0e-2)
    tuned = kto.run(recipe_from_dict(document))
    base = evaluation.run(recipe_from_dict(document), output_dir=tmp_path / "base")

    def outcomes(run_dir):
        return [row["correct_length_normalized"] for row in map(json.loads, open(run_dir / "predictions.jsonl"))]

    low, high = paired_difference_interval(outcomes(tuned.run_dir), outcomes(base.run_dir))
    assert low > 0, (low, high, base.metrics["eval"], tuned.metrics["eval"])
    assert tuned.metrics["eval"]["accuracy_length_normalized"] > base.metrics["eval"]["accuracy_length_normalized"]
    assert tuned.metrics["last_rewards_margins"] > tuned.metrics["first_rewards_margins"]


def test_a_label_column_of_class_names_is_not_feedback(tmp_path):
    """`messages` or `prompt`/`completion` rows with a `label` of class names stay what they were before feedback
    formats existed; only thumbs (booleans, 1/0, up/down) make feedback rows."""
    from tuner.schema import DataConfig

    chats = [
        {
            "messages": [{"role": "user", "content": f"Ticket {n}"}, {"role": "assistant", "content": "billing"}],
            "label": "billing",
        }
        for n in range(4)
    ]
    pairs = [{"prompt": f"Ticket {n}", "completion": "billing", "label": "billing"} for n in range(4)]
    thumbs = [{"prompt": f"Ticket {n}", "completion": "billing", "label": n % 2} for n in range(4)]
    for rows, expected in ((chats, "messages"), (pairs, "prompt_completion"), (thumbs, "feedback")):
        path = write_jsonl(tmp_path / f"{expected}.jsonl", rows)
        splits = load_data(DataConfig(train={"path": str(path)}, eval={"path": str(path)}, drop_eval_overlap=False))
        assert splits.format == expected
