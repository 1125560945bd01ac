"""A served model as an arm (`model.endpoint`), against the stand-in server of tests/served.py: scores through prompt
log-probabilities or replies, every response cached so a rerun fetches nothing, retries, and each way a server can
fail as one paragraph. The real server (llama.cpp's) is in tests/test_integration.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tuner import recipe_from_dict
from tuner.cli import cli
from tuner.errors import TunerError
from tuner.recipes import fewshot

from helpers import TEAMS, recipe_document, ticket_rows, write_jsonl, write_recipe
from served import StandIn


@pytest.fixture
def server():
    stand_in = StandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture(autouse=True)
def _own_endpoint_cache(tmp_path, monkeypatch):
    import tuner.endpoint

    monkeypatch.setattr(tuner.endpoint, "cache_dir", lambda: tmp_path / "cache")


def served_recipe(tiny_model_dir, tmp_path, base_url: str, task: str = "choice", **endpoint) -> dict:
    train = write_jsonl(tmp_path / "data" / "train.jsonl", ticket_rows(10))
    test = write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(6, offset=100))
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "served")
    document["model"]["endpoint"] = {
        "base_url": base_url,
        "model": "stand-in",
        "input_price_per_million": 2.0,
        "output_price_per_million": 8.0,
        "concurrency": 3,
        **endpoint,
    }
    document.update(method="fewshot", train={}, fewshot={"k": 0})
    document.pop("adapter")
    if task == "generate":
        document["eval"] = {"task": "generate", "max_new_tokens": 8}
    return document


def _metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_served_arm_scores_by_prompt_logprobs_prices_its_tokens_and_a_rerun_fetches_nothing(
    server, tiny_model_dir, tmp_path
):
    document = served_recipe(tiny_model_dir, tmp_path, server.base_url)
    first = fewshot.run(recipe_from_dict(document))
    scored = _metrics(first.run_dir)["eval"]
    assert scored["accuracy"] == 1.0 and scored["choice_method"] == "prompt log-probabilities"
    served = scored["served"]
    # one probe of the server's log-probabilities, then one request per row and choice
    assert served["requests"] == served["fetched"] == 1 + 6 * len(TEAMS) and served["from_cache"] == 0
    assert served["price"] == pytest.approx((served["prompt_tokens"] * 2.0 + served["completion_tokens"] * 8.0) / 1e6)
    assert served["price_per_row"] == pytest.approx(served["price"] / 6)
    assert served["latency_ms_p50"] > 0 and served["latency_ms_p95"] >= served["latency_ms_p50"]
    assert scored["precision"] == "served"
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["model"]["endpoint"]["base_url"] == server.base_url

    asked = len(server.seen)
    again = fewshot.run(recipe_from_dict(document))
    rerun = _metrics(again.run_dir)["eval"]
    assert len(server.seen) == asked  # every response came from the cache
    assert rerun["served"]["fetched"] == 0 and rerun["served"]["from_cache"] == served["requests"]
    assert rerun["accuracy"] == 1.0 and rerun["served"]["price"] == served["price"]
    first_rows, second_rows = ((run.run_dir / "predictions.jsonl").read_text() for run in (first, again))
    assert [json.loads(line)["scores"] for line in first_rows.splitlines()] == [
        json.loads(line)["scores"] for line in second_rows.splitlines()
    ]


@pytest.mark.parametrize("fault", ["echo", "shifted"])
def test_a_server_without_aligned_prompt_logprobs_scores_choices_by_its_replies(
    server, tiny_model_dir, tmp_path, capsys, fault
):
    # none at all (chat-only APIs), or one token off (llama-cpp-python's server, abetlen/llama-cpp-python#1983)
    server.echo, server.shifted = fault != "echo", fault == "shifted"
    run = fewshot.run(recipe_from_dict(served_recipe(tiny_model_dir, tmp_path, server.base_url)))
    scored = _metrics(run.run_dir)["eval"]
    assert scored["choice_method"] == "generation matched to the choices" and scored["accuracy"] == 1.0
    assert scored["unmatched_share"] == 0.0 and server.seen.count("/v1/chat/completions") == 6
    said = capsys.readouterr().out
    assert ("one token off" in said) == (fault == "shifted") and "scored by generation" in said


def test_generate_on_a_served_model_goes_through_chat_completions(server, tiny_model_dir, tmp_path):
    run = fewshot.run(recipe_from_dict(served_recipe(tiny_model_dir, tmp_path, server.base_url, task="generate")))
    scored = _metrics(run.run_dir)["eval"]
    assert scored["accuracy"] == 1.0 and scored["served"]["requests"] == 6
    assert set(server.seen) == {"/v1/chat/completions"}


def test_429s_and_5xx_are_tried_again_and_a_server_that_dies_mid_run_resumes_from_the_cache(
    server, tiny_model_dir, tmp_path
):
    document = served_recipe(tiny_model_dir, tmp_path, server.base_url, concurrency=1, retries=3)
    server.fail = [429, 503, 429]  # each retried after its Retry-After of 0 s
    server.die_after = 12  # then the server fails for good: every later request is a 503
    with pytest.raises(TunerError, match="did not answer \\(HTTP 503\\) after 4 tries.*pays only for the rest"):
        fewshot.run(recipe_from_dict(document))
    paid = server.answered
    assert paid == 12
    server.die_after = None
    run = fewshot.run(recipe_from_dict(document))
    served = _metrics(run.run_dir)["eval"]["served"]
    assert served["from_cache"] == paid and served["fetched"] == served["requests"] - paid == server.answered - paid
    assert _metrics(run.run_dir)["eval"]["accuracy"] == 1.0


def test_a_response_that_is_not_json_and_a_timeout_are_one_paragraph(server, tiny_model_dir, tmp_path):
    server.bad_json = True
    with pytest.raises(TunerError, match="not JSON"):
        fewshot.run(recipe_from_dict(served_recipe(tiny_model_dir, tmp_path, server.base_url, retries=0)))
    server.bad_json, server.delay = False, 1.0
    with pytest.raises(TunerError, match="timed out"):
        fewshot.run(recipe_from_dict(served_recipe(tiny_model_dir, tmp_path, server.base_url, retries=0, timeout=0.2)))


def test_keys_are_read_from_the_environment_and_a_refused_one_is_named(tiny_model_dir, tmp_path, monkeypatch):
    guarded = StandIn(key="right-key")
    try:
        document = served_recipe(tiny_model_dir, tmp_path, guarded.base_url, api_key_env="TUNER_TEST_KEY")
        monkeypatch.delenv("TUNER_TEST_KEY", raising=False)
        with pytest.raises(TunerError, match="names TUNER_TEST_KEY, which is not set"):
            fewshot.run(recipe_from_dict(document))
        monkeypatch.setenv("TUNER_TEST_KEY", "wrong-key")
        with pytest.raises(TunerError, match="refused the key in TUNER_TEST_KEY \\(HTTP 401\\)"):
            fewshot.run(recipe_from_dict(document))
        monkeypatch.setenv("TUNER_TEST_KEY", "right-key")
        run = fewshot.run(recipe_from_dict(document))
        for written in run.run_dir.rglob("*"):
            assert not written.is_file() or "right-key" not in written.read_text(errors="replace"), written
        for cached in (tmp_path / "cache").rglob("*.json"):
            assert "right-key" not in cached.read_text()
    finally:
        guarded.close()


def test_a_model_the_server_does_not_serve_and_an_unreachable_server_are_named(server, tiny_model_dir, tmp_path):
    document = served_recipe(tiny_model_dir, tmp_path, server.base_url)
    document["model"]["endpoint"]["model"] = "gpt-unknown"
    with pytest.raises(TunerError, match="does not serve model 'gpt-unknown'; it serves stand-in"):
        fewshot.run(recipe_from_dict(document))
    closed = StandIn()
    url = closed.base_url
    closed.close()
    recipe = write_recipe(tmp_path / "served.yaml", served_recipe(tiny_model_dir, tmp_path, url))
    done = CliRunner().invoke(cli, ["fewshot", str(recipe)])
    assert done.exit_code == 2 and "nothing answers at" in done.output and "Traceback" not in done.output


def test_an_endpoint_is_refused_where_it_cannot_answer(tiny_model_dir, tmp_path):
    document = served_recipe(tiny_model_dir, tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(TunerError, match="`model.endpoint` serves a model tuner cannot change.*not method sft"):
        recipe_from_dict({**document, "method": "sft", "train": {"max_steps": 1}})
    document["model"]["endpoint"]["api_key_env"] = "sk-live-0123456789abcdef"
    with pytest.raises(TunerError, match="not the key itself"):
        recipe_from_dict(document)
    document["model"]["endpoint"].update(api_key_env=None, base_url="127.0.0.1:8080")
    with pytest.raises(TunerError, match="not an http"):
        recipe_from_dict(document)


def test_replies_are_matched_to_the_choice_they_give():
    from tuner.evaluator import matched_choice

    choices = ["account", "account manager", "billing"]
    assert matched_choice("Billing.", choices) == "billing"
    assert matched_choice("account manager, clearly", choices) == "account manager"
    assert matched_choice("I think it is billing, not account", choices) == "billing"
    assert matched_choice("no idea", choices) is None


def test_compare_prices_a_served_arm_per_token_beside_a_local_one_with_a_break_even(server, tiny_model_dir, tmp_path):
    import pandas as pd

    from tuner import compare
    from tuner.recipes import sft

    document = served_recipe(tiny_model_dir, tmp_path, server.base_url)
    served = fewshot.run(recipe_from_dict(document))
    local = recipe_document(
        tiny_model_dir, tmp_path / "data" / "train.jsonl", tmp_path / "data" / "test.jsonl", tmp_path / "runs" / "sft"
    )
    tuned = sft.run(recipe_from_dict(local))
    comparison = compare([served.run_dir, tuned.run_dir], price_per_cpu_hour=0.05)
    table = comparison.table.set_index("run")
    per_row = _metrics(served.run_dir)["eval"]["served"]["price_per_row"]
    assert table.loc[served.run_dir.name, "cost_per_1k_requests"] == pytest.approx(1000 * per_row)
    assert table.loc[served.run_dir.name, "cost"] == pytest.approx(per_row * 6)
    row = table.loc[tuned.run_dir.name]
    # the tuned run's one-off hours at $0.05 an hour, paid back by what each request saves against the served price
    saved = per_row - row["latency_ms"] / 3_600_000 * 0.05
    assert row["break_even_against"] == served.run_dir.name
    assert row["break_even_requests"] == round(row["train_hours"] * 0.05 / saved)
    text = comparison.markdown()
    assert "cost / 1k requests" in text and "per token" in text
    assert table.loc[served.run_dir.name, "method"] == "zero-shot (served)"

    # a server the recipe gives no price: no tuned run undercuts it, and its wall time is no device's latency
    document["model"]["endpoint"].update(input_price_per_million=0.0, output_price_per_million=0.0)
    document["output_dir"] = str(tmp_path / "runs" / "free")
    free = fewshot.run(recipe_from_dict(document))
    unpriced = compare([free.run_dir, tuned.run_dir], price_per_cpu_hour=0.05).table.set_index("run")
    assert unpriced.loc[free.run_dir.name, "cost_per_1k_requests"] == 0.0
    assert pd.isna(unpriced.loc[tuned.run_dir.name, "break_even_requests"])


def test_predict_and_eval_answer_through_a_served_model(server, tiny_model_dir, tmp_path):
    from tuner import load_recipe, predict
    from tuner.recipes import evaluation

    recipe = write_recipe(tmp_path / "served.yaml", served_recipe(tiny_model_dir, tmp_path, server.base_url))
    asked = write_jsonl(tmp_path / "ask.jsonl", [{"text": row["text"]} for row in ticket_rows(4, offset=200)])
    answers = predict(recipe, asked, tmp_path / "answers.jsonl")
    assert [row["answer"] for row in answers.rows] == [row["label"] for row in ticket_rows(4, offset=200)]
    scored = evaluation.run(load_recipe(recipe), output_dir=tmp_path / "ev")
    assert scored.metrics["eval"]["accuracy"] == 1.0 and scored.metrics["eval"]["served"]["requests"] > 0
    with pytest.raises(TunerError, match="cannot go on a served model"):
        evaluation.run(load_recipe(recipe), adapter=tmp_path, output_dir=tmp_path / "ev2")


def test_after_a_request_fails_for_good_no_further_one_starts(server, tiny_model_dir, tmp_path):
    server.die_after = 1  # the probe is answered, then every request is a 503
    document = served_recipe(tiny_model_dir, tmp_path, server.base_url, concurrency=3, retries=1)
    with pytest.raises(TunerError, match="after 2 tries"):
        fewshot.run(recipe_from_dict(document))
    # at most the requests in flight, each tried twice: not 30 rows-and-choices x 2
    assert len(server.seen) <= 1 + 3 * 2
