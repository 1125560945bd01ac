"""The judge of free-form answers (`eval.metrics: [llm_judge]`): its verdicts read from a local judge's likelihood of
yes against no, or from a served judge's reply; every verdict cached, so a rerun loads no judge; its agreement with
the reference metrics on the same rows; a broken rubric or a judge without its metric refused."""

from __future__ import annotations

import json
import math

import pytest

from tuner import recipe_from_dict
from tuner.errors import TunerError
from tuner.judge import _prompt, agreement
from tuner.likelihood import loglikelihoods
from tuner.recipes import fewshot

from helpers import recipe_document, ticket_rows, write_jsonl
from served import StandIn


def _judged_document(tmp_path, tiny_model_dir, judge_model: dict, metrics=("llm_judge", "contains")) -> dict:
    train = write_jsonl(tmp_path / "data" / "train.jsonl", ticket_rows(10))
    test = write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(6, offset=100))
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "judged")
    document.update(method="fewshot", train={}, fewshot={"k": 0})
    document.pop("adapter")
    document["eval"] = {
        "task": "generate",
        "max_new_tokens": 4,
        "metrics": list(metrics),
        "judge": {"model": judge_model},
    }
    return document


def _predictions(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_a_local_judge_grades_by_yes_against_no_and_a_rerun_reads_its_verdicts_from_the_cache(
    tmp_path, tiny_model_dir, monkeypatch
):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    document = _judged_document(tmp_path, tiny_model_dir, {"name_or_path": str(tiny_model_dir)})
    recipe = recipe_from_dict(document)
    first = fewshot.run(recipe)
    metrics = json.loads((first.run_dir / "metrics.json").read_text())["eval"]
    predictions = _predictions(first.run_dir)

    # Each verdict is the judge's likelihood of yes against no after the rubric, as its chat template renders it.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for prediction, row in zip(predictions, ticket_rows(6, offset=100)):
        question = f"Which team? {row['text']}"
        context = _prompt(recipe.eval.judge.rubric, question, prediction["gold"], prediction["prediction"], tokenizer)
        lls = loglikelihoods(model, tokenizer, [(context, w) for w in ("yes", "Yes", "no", "No")])
        yes, no = max(lls[:2]), max(lls[2:])
        assert prediction["judge"]["verdict"] == (yes > no)
        assert prediction["judge"]["p_yes"] == pytest.approx(1 / (1 + math.exp(no - yes)), abs=2e-4)
    assert [p["metrics"]["llm_judge"] for p in predictions] == [float(p["judge"]["verdict"]) for p in predictions]
    assert metrics["metric"] == "llm_judge" and metrics["accuracy"] == pytest.approx(
        sum(p["metrics"]["llm_judge"] for p in predictions) / len(predictions), abs=1e-4
    )
    judge = metrics["judge"]
    assert judge["asked"] == 6 and judge["cached"] == 0 and judge["model"] == str(tiny_model_dir)
    assert (
        judge["agreement"]["contains"]
        == agreement(
            [p["metrics"]["llm_judge"] for p in predictions],
            {"contains": [p["metrics"]["contains"] for p in predictions]},
        )["contains"]
    )

    import tuner.judge

    def no_loading(*args, **kwargs):
        raise AssertionError("the judge was loaded although every verdict is cached")

    monkeypatch.setattr(tuner.judge, "load_model", no_loading)
    again = fewshot.run(recipe)
    rerun = json.loads((again.run_dir / "metrics.json").read_text())["eval"]
    assert rerun["judge"]["asked"] == 0 and rerun["judge"]["cached"] == 6
    assert [p["judge"] for p in _predictions(again.run_dir)] == [p["judge"] for p in predictions]


def test_a_served_judge_without_prompt_logprobs_grades_by_its_reply(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    server = StandIn()
    server.echo = False
    try:
        judge = {"name_or_path": str(tiny_model_dir), "endpoint": {"base_url": server.base_url, "model": "stand-in"}}
        document = _judged_document(tmp_path, tiny_model_dir, judge)
        # The answers: the stand-in served as the arm too, naming the ticket's team, except on rows it is not asked.
        document["model"]["endpoint"] = {"base_url": server.base_url, "model": "stand-in"}
        result = fewshot.run(recipe_from_dict(document))
    finally:
        server.close()
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["eval"]
    predictions = _predictions(result.run_dir)
    assert metrics["judge"]["served"] and metrics["judge"]["model"] == "stand-in"
    # The stand-in judge says yes exactly when the reply holds the gold answer: it agrees with `contains` on every row.
    assert [p["judge"]["verdict"] for p in predictions] == [p["metrics"]["contains"] == 1.0 for p in predictions]
    assert metrics["judge"]["agreement"]["contains"]["agreement"] == 1.0
    assert metrics["judge"]["unclear_share"] == 0.0


def test_agreement_and_kappa():
    judged = [1.0, 1.0, 0.0, 0.0]
    found = agreement(judged, {"same": [1.0, 0.6, 0.0, 0.2], "half": [1.0, 0.0, 1.0, 0.0], "flat": [1.0] * 4})
    assert found["same"] == {"agreement": 1.0, "kappa": 1.0}
    assert found["half"] == {"agreement": 0.5, "kappa": 0.0}
    assert found["flat"]["agreement"] == 0.5 and found["flat"]["kappa"] == 0.0


@pytest.mark.parametrize(
    ("judge", "metrics", "expected"),
    [
        (None, ["llm_judge"], "metric llm_judge needs `eval.judge`"),
        ({"model": {"name_or_path": "x"}}, ["contains"], "`judge` is for metric llm_judge"),
        (
            {"model": {"name_or_path": "x"}, "rubric": "Is {reply} right?"},
            ["llm_judge"],
            "must name {reply} and {gold}",
        ),
        ({"model": {"name_or_path": "x"}, "rubric": "{reply} {gold} {answer}"}, ["llm_judge"], "no other field"),
        ({"model": {"name_or_path": "models/none.gguf"}}, ["llm_judge"], "key `eval.judge.model.name_or_path`"),
    ],
)
def test_a_broken_judge_is_refused_before_any_model_loads(tmp_path, tiny_model_dir, judge, metrics, expected):
    document = _judged_document(tmp_path, tiny_model_dir, {"name_or_path": "x"}, metrics)
    if judge is None:
        document["eval"].pop("judge")
    else:
        document["eval"]["judge"] = judge
    with pytest.raises(TunerError, match=expected.replace("{", r"\{").replace("}", r"\}").replace("`", "`")):
        recipe_from_dict(document)
