"""Few-shot prompt building: examples come from the train split only; BM25 finds the neighbours."""

from __future__ import annotations

import json

import pytest

from tuner import TunerError, recipe_from_dict
from tuner.data.splits import load_data
from tuner.schema import DataConfig, FewshotConfig
from tuner.selection import fewshot_rows

from helpers import recipe_document, ticket_rows


def splits(train_rows, eval_rows, **data):
    return load_data(DataConfig(train=train_rows, eval=eval_rows, prompt_template="Team? {text}", **data))


def test_examples_never_come_from_the_eval_split():
    train, test = ticket_rows(30), ticket_rows(10, offset=100)
    # One eval question also sits in train: it must not be offered as an example.
    data = splits(train + [test[0]], test)
    for select in ("random", "first", "similar"):
        rows = fewshot_rows(data.train, data.eval, FewshotConfig(k=5, select=select))
        for row, original in zip(rows, test):
            shown = json.dumps(row["prompt"][:-1])
            assert original["text"] not in shown
            assert not any(other["text"] in shown for other in test)
            assert original["text"] in row["prompt"][-1]["content"]  # the question itself comes last


def test_chat_rendering_has_k_example_turns():
    data = splits(ticket_rows(30), ticket_rows(4, offset=100), system_prompt="Route tickets.")
    rows = fewshot_rows(data.train, data.eval, FewshotConfig(k=3, select="first"))
    roles = [m["role"] for m in rows[0]["prompt"]]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert rows[0]["prompt"][2]["content"] == data.train[0]["label"]
    assert rows[0]["label"] == data.eval[0]["label"]


def test_plain_text_rendering():
    data = splits(ticket_rows(10), ticket_rows(2, offset=100), chat=False)
    rows = fewshot_rows(data.train, data.eval, FewshotConfig(k=2, select="first", as_chat=False))
    prompt = rows[0]["prompt"]
    assert isinstance(prompt, str) and prompt.count("Team? ") == 3
    blocks = prompt.split("\n\n")
    assert blocks[0] == data.train[0]["prompt"] + " " + data.train[0]["label"]
    assert blocks[-1] == data.eval[0]["prompt"]


@pytest.mark.parametrize("chat", [True, False])
def test_zero_shot_keeps_the_prompt(chat):
    data = splits(ticket_rows(10), ticket_rows(3, offset=100), chat=chat)
    rows = fewshot_rows(data.train, data.eval, FewshotConfig(k=0, as_chat=True))
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in data.eval]
    assert isinstance(rows[0]["prompt"], list) == chat


def test_random_selection_is_seeded():
    data = splits(ticket_rows(40), ticket_rows(5, offset=100))
    first = fewshot_rows(data.train, data.eval, FewshotConfig(k=4, select="random", seed=1))
    again = fewshot_rows(data.train, data.eval, FewshotConfig(k=4, select="random", seed=1))
    other = fewshot_rows(data.train, data.eval, FewshotConfig(k=4, select="random", seed=2))
    assert first == again != other


def test_bm25_returns_the_expected_neighbours():
    corpus = [
        "the tent pole snapped in the wind",
        "my invoice shows a double charge",
        "parcel lost by the courier",
        "refund for the returned jacket",
        "login password reset email missing",
    ]
    train = [{"text": t, "label": "x"} for t in corpus]
    queries = [
        {"text": "courier says parcel delivered but it is lost", "label": "x"},
        {"text": "double charge on my invoice", "label": "x"},
    ]
    data = splits(train, queries)
    rows = fewshot_rows(data.train, data.eval, FewshotConfig(k=1, select="similar"))
    assert "parcel lost by the courier" in rows[0]["prompt"][0]["content"]
    assert "double charge" in rows[1]["prompt"][0]["content"]
    two = fewshot_rows(data.train, data.eval, FewshotConfig(k=2, select="similar"))
    assert "parcel lost" in two[0]["prompt"][2]["content"]  # the most similar sits nearest the question


def test_k_larger_than_the_train_split():
    data = splits(ticket_rows(3), ticket_rows(2, offset=100))
    with pytest.raises(TunerError, match="fewshot.k is 5 but the train split has only 3"):
        fewshot_rows(data.train, data.eval, FewshotConfig(k=5))


def test_fewshot_run_writes_metrics_and_predictions(tmp_path, tiny_model_dir, ticket_files):
    from tuner.recipes import fewshot

    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "fs")
    document.update(method="fewshot", train={}, fewshot={"k": 2, "select": "similar"})
    result = fewshot.run(recipe_from_dict(document))
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 10 and {"prompt", "gold", "prediction", "scores"} <= set(predictions[0])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    correct = sum(p["prediction"] == p["gold"] for p in predictions)
    assert metrics["eval"]["accuracy"] == pytest.approx(correct / 10)
    assert metrics["eval"]["rows"] == 10 and "eval" in metrics["phases"]
    assert not (result.run_dir / "adapter").exists()


def test_fewshot_needs_an_eval_task(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "fs")
    document.update(method="fewshot", train={}, eval={})
    with pytest.raises(TunerError, match="eval.task"):
        recipe_from_dict(document)


def test_multiple_choice_from_a_column(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuner.evaluator import evaluate
    from tuner.schema import EvalConfig

    rows = [
        {"prompt": "2+2=", "completion": "4", "options": ["3", "4", "5"]},
        {"prompt": "Sky colour:", "completion": "blue", "options": ["blue", "green"]},
    ]
    data = load_data(DataConfig(train=rows, eval=rows, chat=False, choices_column="options", drop_eval_overlap=False))
    assert data.eval[0]["choices"] == ["3", "4", "5"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    result = evaluate(model, tokenizer, data.eval, EvalConfig(task="choice"))
    assert set(result.predictions[0]["scores"]) == {"3", "4", "5"}
    assert set(result.predictions[1]["scores"]) == {"blue", "green"}


def test_multi_turn_chats_keep_their_whole_conversation_after_the_examples():
    # Trial point 1: the eval row shrank to its last user turn ("Yes, it's solid orange."), the examples to their last
    # exchange, so the baseline was asked what it could not know (which product).
    def chat(product: str, fix: str) -> dict:
        return {
            "messages": [
                {"role": "user", "content": f"My {product} stopped working."},
                {"role": "assistant", "content": "Is it on? What colour is its light?"},
                {"role": "user", "content": "It is on, blinking orange."},
                {"role": "assistant", "content": f"Orange means no link. For the {product}: {fix}."},
            ]
        }

    train = [chat("Aurora", "hold reset 10 seconds"), chat("Drizzle", "press WPS on both")]
    data = load_data(DataConfig(train=train, eval=[chat("Borealis", "unplug it for 30 seconds")]))
    row = fewshot_rows(data.train, data.eval, FewshotConfig(k=2, select="first"))[0]
    contents = [m["content"] for m in row["prompt"]]
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user", "assistant"] * 2 + [
        "user",
        "assistant",
        "user",
    ]
    assert contents[0] == "My Aurora stopped working." and contents[4] == "My Drizzle stopped working."
    assert contents[-3:] == [
        "My Borealis stopped working.",
        "Is it on? What colour is its light?",
        "It is on, blinking orange.",
    ]
    assert row["completion"][-1]["content"] == "Orange means no link. For the Borealis: unplug it for 30 seconds."
