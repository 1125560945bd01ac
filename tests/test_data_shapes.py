"""Data as users have it, on the tiny model: tool-call chats, content parts, per-message loss switches, preference
chats, intent CSVs with many string labels and no `eval.choices`, multiple choice by answer index, column maps and
mixtures of sources. Each file is written here in the shape its project writes it."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tuner import recipe_from_dict
from tuner.errors import TunerError
from tuner.estimate import describe
from tuner.recipes import dpo, fewshot, sft
from tuner.recipes.preflight import dry_run, validate

from helpers import recipe_document, write_jsonl

TOOLS = [
    {
        "name": "track_order",
        "description": "Where an order is now",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
    }
]


def _chat_recipe(tiny_model_dir, train, tmp_path, **data):
    document = recipe_document(tiny_model_dir, train, None, tmp_path / "runs" / "chat")
    document["data"].update(data)
    document["eval"] = {"task": "generate", "max_new_tokens": 4}
    document["train"]["max_length"] = 512  # the tool schemas ride in every prompt
    return recipe_from_dict(document)


def _loss_spans(shown: str) -> list[str]:
    text = "\n".join(line[6:] if line.startswith("    | ") else line for line in shown.splitlines())
    return re.findall(r"\[\[(.*?)\]\]", text, re.S)


def test_a_sharegpt_tool_call_file_trains_every_assistant_turn_with_its_tools(tiny_model_dir, tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"Where is order {n}?"},
                {"from": "function_call", "value": json.dumps({"name": "track_order", "arguments": {"order": str(n)}})},
                {"from": "observation", "value": json.dumps({"status": "in transit"})},
                {"from": "gpt", "value": f"Order {n} is in transit."},
            ],
            "tools": json.dumps(TOOLS),
        }
        for n in range(12)
    ]
    recipe = _chat_recipe(tiny_model_dir, write_jsonl(tmp_path / "tools.jsonl", rows), tmp_path)
    shown = describe(dry_run(recipe), recipe)
    spans = _loss_spans(shown)
    # The call and the answer carry loss; the tool's result and the schemas (in the system turn) are context.
    assert any(s.startswith('{"name": "track_order"') for s in spans) and any("is in transit." in s for s in spans)
    assert '"track_order", "description"' in shown and not any("status" in s for s in spans)
    result = sft.run(recipe)
    assert result.manifest["data"]["tools_rendering"].startswith("plain: the schemas in the system turn")
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert "You can call these functions" in predictions[0]["prompt"]  # scored with the same rendering


def test_openai_messages_with_content_parts_tool_calls_and_a_loss_switch(tiny_model_dir, tmp_path):
    rows = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": f"Order {n}:"}, {"type": "text", "text": "where?"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"type": "function", "function": {"name": "track_order", "arguments": {"order": str(n)}}}
                    ],
                },
                {"role": "tool", "content": "delivered"},
                {"role": "assistant", "content": [{"type": "text", "value": "Delivered already."}], "loss_weight": 0},
                {"role": "user", "content": f"Thanks for order {n}!"},
                {"role": "assistant", "content": "You are welcome.", "loss_weight": 1.0},
            ],
            "tools": TOOLS,
        }
        for n in range(12)
    ]
    recipe = _chat_recipe(tiny_model_dir, write_jsonl(tmp_path / "openai.jsonl", rows), tmp_path)
    spans = _loss_spans(describe(dry_run(recipe), recipe))
    assert any('"name": "track_order"' in s for s in spans) and any("You are welcome." in s for s in spans)
    assert not any("Delivered already." in s for s in spans)  # loss_weight 0: context only
    assert sft.run(recipe).metrics["train_steps"] == 3


def test_a_message_with_an_image_stops_the_data_naming_the_row(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3 + [
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "cat.png"}}]},
                {"role": "assistant", "content": "a cat"},
            ]
        }
    ]
    recipe = _chat_recipe(tiny_model_dir, write_jsonl(tmp_path / "images.jsonl", rows), tmp_path)
    with pytest.raises(TunerError, match=r"row 3: message 0 part 0 is of type 'image_url': tuner tunes text models"):
        validate(recipe)


def test_llamafactory_chosen_and_rejected_messages_train_dpo(tiny_model_dir, tmp_path):
    rows = [
        {
            "chosen_messages": [
                {"role": "user", "content": f"Ticket {n}: charged twice"},
                {"role": "assistant", "content": "billing"},
            ],
            "rejected_messages": [
                {"role": "user", "content": f"Ticket {n}: charged twice"},
                {"role": "assistant", "content": "shipping"},
            ],
        }
        for n in range(16)
    ]
    document = recipe_document(tiny_model_dir, write_jsonl(tmp_path / "pairs.jsonl", rows), None, tmp_path / "dpo")
    document.update(method="dpo", eval={"task": "preference"})
    recipe = recipe_from_dict(document)
    assert validate(recipe)["format"] == "preference_messages"
    result = dpo.run(recipe)
    assert result.metrics["eval"]["task"] == "preference" and result.metrics["eval"]["rows"] == 2
    assert result.metrics["train_steps"] == 3


def _intents(path, rows: int, labels: list[str]):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utterance", "intent"])
        for n in range(rows):
            writer.writerow([f"request {n} about {labels[n % len(labels)]}", labels[n % len(labels)]])
    return path


def test_an_intent_csv_with_many_string_labels_needs_no_choices(tiny_model_dir, tmp_path):
    labels = ["None", "NA", "null"] + [f"intent_{n:02d}" for n in range(52)]
    train = _intents(tmp_path / "intents.csv", 6 * len(labels), labels)
    document = recipe_document(tiny_model_dir, train, None, tmp_path / "fs")
    document.update(method="fewshot", train={}, fewshot={"k": 0}, eval={"task": "choice"})
    document["data"].update(columns={"text": "utterance", "label": "intent"}, eval_fraction=0.2)
    document.pop("adapter")
    recipe = recipe_from_dict(document)
    report = validate(recipe)
    assert report["labels"] == sorted(labels) and len(report["labels"]) == 55  # "None" and "NA" stay labels
    result = fewshot.run(recipe)
    scores = result.metrics["eval"]
    assert 0 <= scores["macro_f1"] <= 1 and result.manifest["data"]["labels"] == sorted(labels)
    matrix = list(csv.reader((result.run_dir / "confusion.csv").open(encoding="utf-8")))
    assert matrix[0][0] == "gold \\ predicted" and matrix[0][-1] == "accuracy"
    assert sum(int(c) for row in matrix[1:] for c in row[1:-1]) == scores["rows"]
    assert len(matrix[0]) - 2 > 30 and not (result.run_dir / "confusion.png").exists()  # over 30: the CSV only


def test_an_eval_label_unseen_in_training_is_said_by_row(tiny_model_dir, tmp_path, capsys):
    train = _intents(tmp_path / "train.csv", 20, ["billing", "shipping"])
    test = _intents(tmp_path / "test.csv", 6, ["billing", "shipping", "returns"])
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "sft")
    document["data"].update(columns={"text": "utterance", "label": "intent"})
    document["eval"] = {"task": "choice"}
    result = sft.run(recipe_from_dict(document))
    unseen = result.manifest["data"]["eval_labels_unseen_in_train"]
    assert unseen == {"labels": ["returns"], "rows": [2, 5], "count": 2}
    assert "2 eval rows have a label no train row has (returns; eval rows [2, 5])" in capsys.readouterr().out
    assert (result.run_dir / "confusion.png").read_bytes().startswith(b"\x89PNG")


def test_an_mmlu_shaped_file_scores_each_row_against_its_own_options(tiny_model_dir, tmp_path):
    rows = [
        {"question": f"What is {n} + {n}?", "choices": [str(2 * n), str(2 * n + 1), str(n), "none"], "answer": n % 3}
        for n in range(10)
    ]
    data = write_jsonl(tmp_path / "mmlu.jsonl", rows)
    document = recipe_document(tiny_model_dir, data, data, tmp_path / "mmlu")
    document.update(method="fewshot", train={}, fewshot={"k": 0}, eval={"task": "choice"})
    document["data"].update(
        choices_column="choices",
        answer_index_column="answer",
        prompt_template="{text}\nOptions:\n{choices}",
        drop_eval_overlap=False,
    )
    document.pop("adapter")
    result = fewshot.run(recipe_from_dict(document))
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in predictions] == [row["choices"][row["answer"]] for row in rows]
    assert all(set(p["scores"]) == set(row["choices"]) for p, row in zip(predictions, rows))
    assert "Options:\n6\n7\n3\nnone" in predictions[3]["prompt"]


def test_a_mixture_of_sources_in_two_formats(tiny_model_dir, tmp_path):
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": f"Say {n}.", "output": str(n)} for n in range(10)])
    tickets = _intents(tmp_path / "tickets.csv", 8, ["billing", "shipping"])
    document = recipe_document(tiny_model_dir, alpaca, None, tmp_path / "mix")
    document["data"]["train"] = [
        {"path": str(alpaca), "weight": 0.5},
        {
            "path": str(tickets),
            "format": "classification",
            "columns": {"text": "utterance", "label": "intent"},
            "weight": 2,
        },
    ]
    document["eval"] = {"task": "generate", "max_new_tokens": 4}
    recipe = recipe_from_dict(document)
    report = validate(recipe)
    sources = report["train_sources"]
    assert [(s["format"], s["rows"], s["rows_used"]) for s in sources] == [("alpaca", 10, 5), ("classification", 8, 16)]
    # The repeated tickets are one question: a copy held out for eval takes its twin out of training.
    assert report["train_rows"] + report["eval_rows"] + report["train_rows_dropped_as_eval_questions"] == 21
    assert all(len(s["fingerprint"]) == 64 for s in sources)
    assert sft.run(recipe).manifest["data"]["train_sources"] == sources


def test_a_column_map_to_a_missing_column_is_named(tiny_model_dir, tmp_path):
    train = _intents(tmp_path / "intents.csv", 10, ["a", "b"])
    document = recipe_document(tiny_model_dir, train, None, tmp_path / "x")
    document["data"]["columns"] = {"text": "utterance", "label": "topic"}
    with pytest.raises(
        TunerError,
        match=r"key `data.columns.label` reads the column `topic`, but the columns are "
        r"\['utterance', 'intent'\]",
    ):
        validate(recipe_from_dict(document))


def test_validate_refuses_what_the_dry_run_and_the_run_refuse(tiny_model_dir, ticket_files, tmp_path):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "dpo")
    document["method"] = "dpo"  # on classification rows: no pairs to prefer
    recipe = recipe_from_dict(document)
    for check in (validate, dry_run):
        with pytest.raises(TunerError, match="method dpo needs preference pairs, but data.train holds classification"):
            check(recipe)
