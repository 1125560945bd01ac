"""`tuner decide`: the data found, the arms planned from it, the budget kept, finished arms kept, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import pair_rows, ticket_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_the_tickets_folder_is_read_as_labelled_rows_pairs_and_thumbs_with_their_eval_files():
    from tuner.data.inventory import inventory

    found = inventory([ROOT / "examples" / "data" / "tickets"])
    assert set(found.train) == {"answers", "pairs", "thumbs"} and set(found.eval) == {"answers", "pairs"}
    assert found.train["answers"].labels == ["account", "billing", "returns", "shipping", "technical"]
    assert found.train["answers"].rows == 600 and found.eval["answers"].rows == 150
    assert found.train["thumbs"].columns == {"label": "thumbs_up"}  # the thumbs column read as feedback's label
    assert found.task == "choice" and found.corpus is None


def test_the_handbook_folder_is_read_as_questions_with_their_own_choices_and_a_corpus():
    from tuner.data.inventory import inventory

    found = inventory([ROOT / "examples" / "data" / "handbook"])
    answers = found.train["answers"]
    assert answers.choices_column == "choices" and answers.source_column == "source" and answers.labels is None
    assert found.corpus.name == "corpus_v1" and found.corpus_files == 30
    assert any("2 document folders (corpus_v1, corpus_v2)" in note for note in found.notes)
    assert any("updated.jsonl" in note and "left aside" in note for note in found.notes)


def test_the_plan_follows_the_data_retrieval_only_with_documents_feedback_only_with_pairs_or_thumbs():
    from tuner.arms import plan_arms
    from tuner.data.inventory import inventory

    tickets = [arm.name for arm in plan_arms(inventory([ROOT / "examples" / "data" / "tickets"]))]
    assert tickets == ["zeroshot", "fewshot", "sft-150", "sft-300", "sft", "dpo", "kto"]
    handbook = plan_arms(inventory([ROOT / "examples" / "data" / "handbook"]))
    assert [arm.name for arm in handbook] == [
        "zeroshot",
        "fewshot",
        "rag-bm25",
        "rag-hybrid",
        "sft-20",
        "sft-40",
        "sft",
        "rag-sft",
    ]
    by_name = {arm.name: arm for arm in handbook}
    assert by_name["rag-sft"].document["rag"]["corpus"].endswith("corpus_v1") and by_name["rag-sft"].trains
    assert by_name["sft-20"].document["data"]["max_train_samples"] == 20
    assert by_name["zeroshot"].document["eval"] == {"task": "choice"}  # each row's own choices
    labelled = plan_arms(inventory([ROOT / "examples" / "data" / "tickets"]))[0].document
    assert labelled["eval"]["choices"] == ["account", "billing", "returns", "shipping", "technical"]
    # The labelled rows are asked as the team's own pairs and thumbs ask them, so every arm scores one prompt.
    wrapped = "Team for this ticket (billing, shipping, returns, technical or account)?\n{text}"
    assert labelled["data"]["prompt_template"] == wrapped


def test_labelled_rows_without_pairs_are_asked_with_their_labels_listed(tmp_path):
    from tuner.arms import plan_arms
    from tuner.data.inventory import inventory

    write_jsonl(tmp_path / "d" / "train.jsonl", ticket_rows(40))
    document = plan_arms(inventory([tmp_path / "d"]))[0].document
    listed = "Which one fits this text: account, billing, returns, shipping or technical?\n{text}"
    assert document["data"]["prompt_template"] == listed


def test_one_file_without_an_eval_file_is_held_out_with_a_recorded_seed(tmp_path):
    from tuner.arms import plan_arms
    from tuner.data.inventory import inventory

    data = write_jsonl(tmp_path / "tickets.jsonl", ticket_rows(40))
    zeroshot = plan_arms(inventory([data]))[0].document
    assert zeroshot["data"]["eval_fraction"] == 0.2 and zeroshot["data"]["split_seed"] == 0
    assert "eval" not in zeroshot["data"]


def test_budget_strings_become_seconds_and_a_wrong_one_says_what_to_write():
    from tuner.errors import TunerError
    from tuner.recipes.decision import parse_budget

    assert parse_budget("2h") == 7200 and parse_budget("90m") == 5400 and parse_budget("0.5gpu-h") == 1800
    with pytest.raises(TunerError, match="2h, 90m, 600s or 0.5gpu-h"):
        parse_budget("two hours")


def _data_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "team"
    write_jsonl(folder / "train.jsonl", ticket_rows(24))
    write_jsonl(folder / "test.jsonl", ticket_rows(10, offset=100))
    return folder


def test_decide_runs_the_arms_compares_them_and_keeps_them_when_run_again(tiny_model_dir, tmp_path):
    from tuner import decide

    out = tmp_path / "decision"
    done = decide([_data_folder(tmp_path)], model=str(tiny_model_dir), out=out, train_overrides=("train.max_steps=2",))
    assert {step.arm.name: step.status for step in done.steps} == {"zeroshot": "ran", "fewshot": "ran", "sft": "ran"}
    assert all(step.estimate > 0 and step.seconds > 0 for step in done.steps)
    assert (out / "runs" / "sft" / "seed-0" / "adapter" / "adapter_model.safetensors").is_file()
    assert {path.name for path in (out / "recipes").iterdir()} == {"zeroshot.yaml", "fewshot.yaml", "sft.yaml"}
    written = done.write()
    assert len(done.comparison.table) == 3 and written["html"].is_file()
    page = written["decision"].read_text()
    assert "## Data found" in page and "| sft | 0 | sft |" in page and "Recommendation (choice)" in page
    assert json.loads(written["json"].read_text())["steps"][2]["run_dir"].endswith("seed-0")

    # Interrupted or not, run again: every finished arm is kept, none runs twice, the comparison is the same.
    again = decide([_data_folder(tmp_path)], model=str(tiny_model_dir), out=out, train_overrides=("train.max_steps=2",))
    assert [step.status for step in again.steps] == ["kept", "kept", "kept"]
    assert list(again.comparison.table["choice_accuracy"]) == list(done.comparison.table["choice_accuracy"])


def test_a_budget_too_small_for_training_skips_it_and_says_so(tiny_model_dir, tmp_path, monkeypatch):
    import tuner.recipes.decision as decision

    # The estimates fixed (a 2-core figure would vary): prompts 10 s, training 1,000 s; a budget of 2 minutes.
    monkeypatch.setattr(decision.Clock, "estimate", lambda self, step: 1000.0 if step.arm.trains else 10.0)
    done = decision.decide([_data_folder(tmp_path)], model=str(tiny_model_dir), out=tmp_path / "d", budget="2m")
    statuses = {step.arm.name: (step.status, step.why) for step in done.steps}
    assert statuses["zeroshot"][0] == "ran" and statuses["fewshot"][0] == "ran"
    assert statuses["sft"] == ("skipped", statuses["sft"][1]) and "estimated 16.7 min" in statuses["sft"][1]
    assert not (tmp_path / "d" / "runs" / "sft").exists()
    assert any(line.startswith("Not run, so not in the table: sft") for line in done.recommendation)
    assert "skipped: estimated 16.7 min" in done.markdown()


def test_a_folder_tuner_cannot_read_gets_one_paragraph_and_exit_2(tmp_path):
    folder = tmp_path / "mess"
    folder.mkdir()
    (folder / "notes.jsonl").write_text('{"what": 1, "ever": 2}\n{"what": 3, "ever": 4}\n')
    (folder / "broken.jsonl").write_text("{not json\n")
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "decide", str(folder), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith("error: tuner decide found no rows it can use:") and len(message.splitlines()) == 1
    assert "notes.jsonl" in message and "broken.jsonl" in message
    assert not (tmp_path / "out").exists()


def test_an_out_folder_holding_other_files_is_refused_before_anything_runs(tmp_path):
    from tuner import decide
    from tuner.errors import TunerError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.md").write_text("mine")
    with pytest.raises(TunerError, match="holds files tuner decide did not write"):
        decide([_data_folder(tmp_path)], out=out)
    assert (out / "thesis.md").read_text() == "mine" and not (out / "recipes").exists()


def test_pairs_alone_plan_dpo_beside_the_prompts(tmp_path):
    from tuner.arms import plan_arms
    from tuner.data.inventory import inventory

    write_jsonl(tmp_path / "d" / "train.jsonl", ticket_rows(40))
    write_jsonl(tmp_path / "d" / "train_pairs.jsonl", pair_rows(30))
    names = [arm.name for arm in plan_arms(inventory([tmp_path / "d"]))]
    assert names[:2] == ["zeroshot", "fewshot"] and names[-1] == "dpo"


def test_a_budget_no_arm_fits_says_so_in_one_paragraph(tiny_model_dir, tmp_path, monkeypatch):
    import tuner.recipes.decision as decision
    from tuner.errors import TunerError

    monkeypatch.setattr(decision.Clock, "estimate", lambda self, step: 600.0)
    with pytest.raises(
        TunerError, match=r"no arm ran, so there is nothing to compare \(the cheapest, \w+, is estimated"
    ):
        decision.decide([_data_folder(tmp_path)], model=str(tiny_model_dir), out=tmp_path / "d", budget="1m")
    assert sorted(path.name for path in (tmp_path / "d" / "recipes").iterdir()) == [
        "fewshot.yaml",
        "sft.yaml",
        "zeroshot.yaml",
    ]


def test_an_edited_recipe_is_used_as_edited_and_said(tiny_model_dir, tmp_path, capsys):
    from tuner import decide

    out = tmp_path / "d"
    decide([_data_folder(tmp_path)], model=str(tiny_model_dir), out=out, plan_only=True)
    recipe = out / "recipes" / "zeroshot.yaml"
    recipe.write_text(recipe.read_text().replace("k: 0", "k: 1"))
    capsys.readouterr()
    again = decide([_data_folder(tmp_path)], model=str(tiny_model_dir), out=out, plan_only=True)
    said = capsys.readouterr().out
    assert f"using {recipe} as edited" in said and "fewshot.yaml as edited" not in said
    assert next(step for step in again.steps if step.arm.name == "zeroshot").recipe.fewshot.k == 1


def test_the_extrapolation_says_where_a_line_reaches_the_prompt_and_when_it_never_will_soon():
    from tuner.recipes.decision import _extrapolated

    assert "at about 640 rows" in _extrapolated([(40, 0.5), (80, 0.6), (160, 0.7)], 0.9, "5-shot")
    # nearly flat (the handbook at two steps): once overflowed math.exp
    assert "beyond 100 times the 80 rows" in _extrapolated([(20, 0.25), (40, 0.25001), (80, 0.25002)], 0.9, "rag")
    assert "did not rise" in _extrapolated([(20, 0.5), (40, 0.4)], 0.9, "rag")
