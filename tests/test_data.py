"""The shared loader: every format to TRL's column names, bad rows counted, real files from other projects."""

from __future__ import annotations

import json

import pytest

from tuner import TunerError
from tuner.data.formats import detect_format, to_canonical
from tuner.data.rows import fingerprint
from tuner.data.sources import read_source
from tuner.data.splits import load_data
from tuner.schema import DataConfig

from helpers import SHARED_DATA, needs_shared_data, ticket_rows, write_jsonl


def canonical(rows, **data):
    import datasets

    config = DataConfig(train={"rows": rows}, **data)
    return to_canonical(datasets.Dataset.from_list(rows), config, "rows")


def test_openai_messages_get_the_system_prompt():
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    out, fmt, bad = canonical(rows, system_prompt="Be brief.")
    assert fmt == "messages" and not bad
    assert out[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


def test_sharegpt_roles_are_mapped():
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "2+2?"},
                {"from": "gpt", "value": "4"},
                {"from": "human", "value": "and 3+3?"},
                {"from": "gpt", "value": "6"},
            ]
        }
    ]
    out, fmt, _ = canonical(rows)
    assert fmt == "sharegpt"
    assert [m["role"] for m in out[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert out[0]["messages"][-1]["content"] == "6"


def test_alpaca_joins_instruction_and_input_as_a_chat_prompt():
    rows = [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ]
    out, fmt, _ = canonical(rows)
    assert fmt == "alpaca"
    assert out[0]["prompt"] == [{"role": "user", "content": "Translate to French.\n\ncat"}]
    assert out[0]["completion"] == [{"role": "assistant", "content": "chat"}]
    assert out[1]["prompt"][0]["content"] == "Say hi."


def test_alpaca_as_plain_text_joins_with_one_space():
    out, _, _ = canonical([{"instruction": "Say hi.", "input": None, "output": "hi"}], chat=False)
    assert out[0]["prompt"] == "Say hi." and out[0]["completion"] == " hi"


def test_prompt_completion_strings():
    out, fmt, _ = canonical([{"prompt": "Q: 1+1?\nA:", "completion": " 2"}], chat=False)
    assert fmt == "prompt_completion" and out[0]["completion"] == " 2"


def test_classification_maps_integer_labels_to_names():
    rows = [{"sentence": "great film", "label": 1}, {"sentence": "dull", "label": 0}]
    out, fmt, _ = canonical(rows, label_names=["negative", "positive"], prompt_template="Review: {text}\nSentiment?")
    assert fmt == "classification"
    assert out[0]["label"] == "positive" and out[1]["label"] == "negative"
    assert out[0]["prompt"][-1] == {"role": "user", "content": "Review: great film\nSentiment?"}
    assert out[0]["completion"] == [{"role": "assistant", "content": "positive"}]


def test_bad_rows_are_counted_with_row_numbers():
    rows = [{"text": "ok", "label": 0}, {"text": "", "label": 1}, {"text": "out of range", "label": 7}]
    out, _, bad = canonical(rows, label_names=["a", "b"])
    assert len(out) == 1
    assert [n for n, _ in bad] == [1, 2]
    assert "empty" in bad[0][1] and "outside" in bad[1][1]


def test_integer_labels_without_names_are_explained():
    with pytest.raises(TunerError, match="label_names"):
        canonical([{"text": "x", "label": 0}])


def test_columns_that_fit_no_format_are_listed():
    with pytest.raises(TunerError) as info:
        detect_format(["foo", "bar"], DataConfig(train={"rows": [{}]}))
    assert "['bar', 'foo']" in str(info.value)


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_every_file_type_loads(tmp_path, suffix):
    import datasets

    rows = ticket_rows(6)
    path = tmp_path / f"rows.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, rows)
    elif suffix == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        sep = "\t" if suffix == "tsv" else ","
        path.write_text("text" + sep + "label\n" + "".join(f'"{r["text"]}"{sep}{r["label"]}\n' for r in rows))
    config = DataConfig(train={"path": str(path)}, eval_fraction=0.5)
    splits = load_data(config, seed=0)
    assert splits.format == "classification"
    assert splits.report["train_rows"] + splits.report["eval_rows"] == 6
    assert {r["label"] for r in splits.train} | {r["label"] for r in splits.eval} <= {
        "billing",
        "shipping",
        "returns",
        "technical",
        "account",
    }


def test_in_memory_rows_and_dataset():
    import datasets

    rows = ticket_rows(10)
    from_list = load_data(DataConfig(train=rows, eval=rows[:3]))
    from_dataset = load_data(DataConfig(train=datasets.Dataset.from_list(rows), eval=rows[:3]))
    assert from_list.report["train_fingerprint"] == from_dataset.report["train_fingerprint"]
    assert from_list.report["eval_rows"] == 3


def test_eval_fraction_is_seeded_and_disjoint():
    rows = ticket_rows(40)
    first = load_data(DataConfig(train=rows, eval_fraction=0.25, split_seed=3))
    again = load_data(DataConfig(train=rows, eval_fraction=0.25, split_seed=3), seed=5)  # the run's seed plays no part
    other = load_data(DataConfig(train=rows, eval_fraction=0.25, split_seed=4))
    assert len(first.eval) == 10 and len(first.train) == 30
    assert fingerprint(first.eval) == fingerprint(again.eval) != fingerprint(other.eval)
    train_prompts = {json.dumps(r["prompt"]) for r in first.train}
    assert not any(json.dumps(r["prompt"]) in train_prompts for r in first.eval)


def test_max_samples():
    rows = ticket_rows(40)
    splits = load_data(DataConfig(train=rows, eval=rows[:20], max_train_samples=7, max_eval_samples=5))
    assert len(splits.train) == 7 and len(splits.eval) == 5
    assert [r["label"] for r in splits.eval] == [r["label"] for r in rows[:5]]


def test_broken_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label"\n', encoding="utf-8")
    with pytest.raises(TunerError, match="line 2"):
        read_source(DataConfig(train=str(path)).train)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(TunerError, match="empty"):
        load_data(DataConfig(train=str(path)))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "caf\xe9", "label": "a"}\n'.encode("latin-1"))
    with pytest.raises(TunerError, match="UTF-8"):
        load_data(DataConfig(train=str(path)))


def test_train_and_eval_of_different_kinds(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(4))
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    with pytest.raises(TunerError, match="same kind"):
        load_data(DataConfig(train=str(train), eval=str(test)))


@needs_shared_data("llamafactory", "alpaca_en_demo.json")
@pytest.mark.parametrize("name", ["alpaca_en_demo.json", "identity.json"])
def test_llamafactory_alpaca_files_load_as_they_are(name):
    splits = load_data(DataConfig(train=str(SHARED_DATA / "llamafactory" / name)))
    assert splits.format == "alpaca" and splits.report["skipped_train_rows"]["count"] == 0
    total = (
        splits.report["train_rows"] + splits.report["eval_rows"] + splits.report["train_rows_dropped_as_eval_questions"]
    )
    assert total == {"alpaca_en_demo.json": 999, "identity.json": 91}[name]
    row = splits.train[0]
    assert row["prompt"][-1]["role"] == "user" and row["completion"][0]["role"] == "assistant"


@needs_shared_data("sst2", "dev.jsonl")
def test_sst2_loads_with_label_names():
    config = DataConfig(
        train=str(SHARED_DATA / "sst2" / "train.jsonl"),
        eval=str(SHARED_DATA / "sst2" / "dev.jsonl"),
        label_names=["negative", "positive"],
        max_train_samples=100,
    )
    splits = load_data(config)
    assert splits.format == "classification"
    assert splits.report["eval_rows"] == 872 and splits.report["train_rows"] == 100
    assert {r["label"] for r in splits.eval} == {"negative", "positive"}


# ---- preference pairs ----


def test_trl_preference_strings_become_chat():
    out, fmt, bad = canonical([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], system_prompt="Be brief.")
    assert fmt == "preference" and not bad
    assert out[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert out[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert out[0]["rejected"] == [{"role": "assistant", "content": "5"}]


def test_trl_preference_plain_text():
    out, _, _ = canonical([{"prompt": "2+2 =", "chosen": "4", "rejected": "5"}], chat=False)
    assert out[0] == {"prompt": "2+2 =", "chosen": " 4", "rejected": " 5"}


def test_trl_conversational_preference():
    rows = [
        {
            "prompt": [{"role": "user", "content": "Sky?"}],
            "chosen": [{"role": "assistant", "content": "Blue"}],
            "rejected": [{"role": "assistant", "content": "Green"}],
        }
    ]
    out, _, _ = canonical(rows)
    assert out[0]["prompt"] == [{"role": "user", "content": "Sky?"}]
    assert out[0]["chosen"][0]["content"] == "Blue" and out[0]["rejected"][0]["content"] == "Green"


def test_llamafactory_sharegpt_preference():
    rows = [
        {
            "conversations": [{"from": "human", "value": "Name a colour."}],
            "chosen": {"from": "gpt", "value": "Blue."},
            "rejected": {"from": "gpt", "value": "Seven."},
        }
    ]
    out, fmt, _ = canonical(rows)
    assert fmt == "preference"
    assert out[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert out[0]["chosen"] == [{"role": "assistant", "content": "Blue."}]


def test_hh_transcripts_have_their_shared_prompt_split_off():
    rows = [
        {
            "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes.",
            "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Please ask someone else.",
        },
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Why did the egg...",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No.",
        },
    ]
    out, _, bad = canonical(rows)
    assert not bad
    assert out[0]["prompt"] == [{"role": "user", "content": "How do I boil an egg?"}]
    assert out[0]["chosen"] == [{"role": "assistant", "content": "Put it in boiling water for 8 minutes."}]
    assert out[0]["rejected"] == [{"role": "assistant", "content": "Please ask someone else."}]
    assert [m["role"] for m in out[1]["prompt"]] == ["user", "assistant", "user"]
    assert out[1]["rejected"][0]["content"] == "No."
    plain, _, _ = canonical(rows[:1], chat=False)
    assert plain[0]["prompt"].endswith("Assistant:") and plain[0]["chosen"] == " Put it in boiling water for 8 minutes."


def test_bad_preference_rows_are_counted():
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": None},
    ]
    out, _, bad = canonical(rows)
    assert len(out) == 1 and [n for n, _ in bad] == [1, 2, 3]
    assert "equals" in bad[0][1] and "empty" in bad[1][1]


@needs_shared_data("llamafactory", "dpo_en_demo.json")
def test_llamafactory_dpo_demo_loads_as_it_is():
    splits = load_data(DataConfig(train=str(SHARED_DATA / "llamafactory" / "dpo_en_demo.json")))
    assert splits.format == "preference"
    assert (
        splits.report["train_rows"] + splits.report["eval_rows"] + splits.report["skipped_train_rows"]["count"] == 300
    )
    row = splits.train[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["chosen"] != row["rejected"]


def test_a_large_file_reports_reading_and_converting(tmp_path, monkeypatch, capsys):
    import tuner.progress

    monkeypatch.setattr(tuner.progress, "LARGE", 50)  # what counts as large, scaled down for the test
    # A date sends the file through Python's line reader (pyarrow would make it a timestamp), which counts lines.
    train = write_jsonl(tmp_path / "big.jsonl", [{**row, "date": "2026-12-03"} for row in ticket_rows(120)])
    splits = load_data(DataConfig(train=str(train), label_column="label"))
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tuner:")]
    assert len(splits.train) + len(splits.eval) == 120
    assert said[0].startswith("tuner: reading big.jsonl: 120 of 120 lines in ")
    assert said[1].startswith("tuner: converting ") and "120 of 120 rows" in said[1]
    # pyarrow reads a plain file in a moment, unannounced; converting it is counted.
    plain = write_jsonl(tmp_path / "plain.jsonl", ticket_rows(120))
    load_data(DataConfig(train=str(plain), label_column="label"))
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tuner:")]
    assert len(said) == 1 and said[0].startswith("tuner: converting ") and "120 of 120 rows" in said[0]


def test_a_system_field_beside_a_system_message_is_a_bad_row(tmp_path):
    rows = [
        {
            "system": "Be brief.",
            "messages": [
                {"role": "system", "content": "Be long."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ],
        },
        {
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        },
    ]
    train = write_jsonl(tmp_path / "chats.jsonl", rows * 3)
    splits = load_data(DataConfig(train=str(train), eval=str(train), drop_eval_overlap=False))
    assert splits.report["skipped_train_rows"]["count"] == 3
    assert "both a `system` field and a system message" in splits.report["skipped_train_rows"]["first"][0]
    assert [m["role"] for m in splits.train[0]["messages"]].count("system") == 1


def test_the_held_out_split_is_the_same_for_every_run_seed(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(40))
    fingerprints = {load_data(DataConfig(train=str(train)), seed=seed).report["eval_fingerprint"] for seed in (0, 1, 2)}
    assert len(fingerprints) == 1
    other = load_data(DataConfig(train=str(train), split_seed=7), seed=0).report
    assert other["eval_fingerprint"] not in fingerprints and other["split_seed"] == 7


def test_train_rows_asking_an_eval_question_are_dropped_and_counted(capsys):
    from tuner.data.splits import load_data

    train, test = ticket_rows(20), ticket_rows(5, offset=100)
    repeated = [{**test[0], "label": "billing"}, test[3]]  # the same questions, one with another answer
    splits = load_data(DataConfig(train=train + repeated, eval=test, prompt_template="Team? {text}"))
    assert len(splits.train) == 20 and splits.report["train_rows"] == 20
    assert splits.report["train_rows_dropped_as_eval_questions"] == 2
    assert not {json.dumps(row["prompt"]) for row in splits.train} & {json.dumps(row["prompt"]) for row in splits.eval}
    assert "dropped 2 train rows asking what an eval row asks" in capsys.readouterr().out
    kept = load_data(DataConfig(train=train + repeated, eval=test, drop_eval_overlap=False))
    assert len(kept.train) == 22 and kept.report["train_rows_dropped_as_eval_questions"] == 0
    # Only the scored rows count: with max_eval_samples 1, test[3] is no longer an eval question.
    capped = load_data(DataConfig(train=train + repeated, eval=test, max_eval_samples=1))
    assert capped.report["train_rows_dropped_as_eval_questions"] == 1 and len(capped.train) == 21


def test_training_on_nothing_but_eval_questions_is_refused():
    from tuner.data.splits import load_data, require_train_rows

    rows = ticket_rows(6)
    splits = load_data(DataConfig(train=rows, eval=rows))  # methods that train on nothing (rag, eval) go on
    assert len(splits.train) == 0 and splits.report["train_rows_dropped_as_eval_questions"] == 6
    with pytest.raises(
        TunerError, match="every row of data.train asks a question that data.eval asks too.*drop_eval_overlap: false"
    ):
        require_train_rows(splits, "<recipe>")  # what sft and dpo call before training


def test_a_column_the_first_row_lacks_is_kept_for_every_row_that_has_it():
    # In memory, as a notebook passes them: Alpaca rows whose `input` only later rows have.
    alpaca = [{"instruction": f"Summarise note {n}", "output": f"summary {n}"} for n in range(3)]
    alpaca += [{"instruction": "Translate", "input": "bonjour", "output": "hello"}] * 3
    held_out = [{"instruction": "Translate", "input": "merci", "output": "thanks"}]
    splits = load_data(DataConfig(train=alpaca, eval=held_out, chat=False))
    assert splits.train["prompt"].count("Translate\n\nbonjour") == 3 and splits.eval["prompt"] == ["Translate\n\nmerci"]
    # Chats whose tool schemas only later rows carry: the canonical rows keep them where given.
    tools = json.dumps([{"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}])
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    with_tools = {**plain, "tools": tools}
    other = {"messages": [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}]}
    chats = load_data(DataConfig(train=[plain, plain, with_tools, with_tools], eval=[other]))
    assert "tools" in chats.train.column_names
    assert [row is not None for row in chats.train["tools"]] == [False, False, True, True]


def test_chats_ending_in_the_same_generic_turn_are_not_taken_for_eval_questions(capsys):
    # Trial point 3: matching the last user turn alone dropped every chat that ended in "thanks".
    from tuner.data.splits import load_data

    def chat(topic: str) -> dict:
        return {
            "messages": [
                {"role": "user", "content": f"My {topic} is broken."},
                {"role": "assistant", "content": f"Sorry about the {topic}; I have opened a ticket."},
                {"role": "user", "content": "thanks!"},
                {"role": "assistant", "content": "You're welcome."},
            ]
        }

    topics = ["kettle", "router", "drill", "lamp", "heater", "fan"]
    splits = load_data(DataConfig(train=[chat(t) for t in topics] + [chat("phone")], eval=[chat("phone")]))
    assert len(splits.train) == 6 and splits.report["train_rows_dropped_as_eval_questions"] == 1
    printed = capsys.readouterr().out
    assert "dropped 1 train row asking what an eval row asks" in printed and "My phone is broken." in printed


def test_held_out_rows_of_a_mixture_are_the_same_whatever_the_run_seed(tmp_path):
    # Review M1: the mixture's draw and a source's max_samples used the run's seed, before eval_fraction held out.
    from tuner.data.splits import load_data

    first = write_jsonl(tmp_path / "a.jsonl", ticket_rows(30))
    second = write_jsonl(tmp_path / "b.jsonl", ticket_rows(30, offset=200))
    config = DataConfig(train=[{"path": str(first), "max_samples": 20}, {"path": str(second), "weight": 0.5}])
    reports = [load_data(config, seed=seed).report for seed in (0, 1, 2)]
    assert len({report["eval_fingerprint"] for report in reports}) == 1
    assert (
        load_data(config.model_copy(update={"split_seed": 5}), seed=0).report["eval_fingerprint"]
        != reports[0]["eval_fingerprint"]
    )


def test_ultrafeedback_binarized_answers_lose_the_prompt_turn_they_repeat():
    # Review H5: a string prompt and whole conversations in chosen/rejected trained "user Q, user Q, assistant A".
    question = "What is 2 + 2?"
    rows = [
        {
            "prompt": question,
            "chosen": [{"role": "user", "content": question}, {"role": "assistant", "content": "4"}],
            "rejected": [{"role": "user", "content": question}, {"role": "assistant", "content": "5"}],
        }
    ] * 3
    dataset, fmt, bad = to_canonical(read_source(DataConfig(train=rows).train_sources()[0]), DataConfig(train=rows))
    assert fmt == "preference" and not bad
    row = dataset[0]
    assert row["chosen"] == [{"role": "assistant", "content": "4"}]
    assert row["rejected"] == [{"role": "assistant", "content": "5"}]
    assert [m["content"] for m in row["prompt"] if m["role"] == "user"] == [question]
