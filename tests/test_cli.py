"""The CLI: bad input gets a one-paragraph message, exit code 2 and no traceback, before any model loads."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import fake_adapter_run, recipe_document, write_jsonl, write_recipe
from tuner.cli import cli


@pytest.fixture
def good_recipe(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    return write_recipe(tmp_path / "good.yaml", recipe_document(tiny_model_dir, train, test, tmp_path / "out"))


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


TELEMETRY = "import tuner.cli, huggingface_hub.constants as c; print(c.HF_HUB_DISABLE_TELEMETRY)"


def test_tuner_sends_no_telemetry_unless_the_environment_allows_it():
    import os

    environment = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}

    def disabled(**extra) -> str:
        return subprocess.run([sys.executable, "-c", TELEMETRY], env={**environment, **extra}, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert disabled() == "True"
    assert disabled(HF_HUB_DISABLE_TELEMETRY="0") == "False"


def test_validate_ok(good_recipe):
    result = invoke("validate", good_recipe)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "24 train and 10 eval rows" in result.output


def _assert_bad(result, *needles):
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1  # one paragraph
    for needle in needles:
        assert needle in result.output, (needle, result.output)


@pytest.mark.parametrize("command", ["validate", "sft"])
def test_misspelt_train_key(command, good_recipe):
    _assert_bad(invoke(command, good_recipe, "--set", "train.lerning_rate=0.1"), str(good_recipe),
                "train.lerning_rate", "learning_rate")


@pytest.mark.parametrize("command", ["validate", "sft"])
def test_misspelt_section_key(command, good_recipe):
    _assert_bad(invoke(command, good_recipe, "--set", "adapter.alpah=3"), "adapter.alpah", "`alpha`")


def test_wrong_type(good_recipe):
    _assert_bad(invoke("sft", good_recipe, "--set", "adapter.dropout=lots"), "adapter.dropout")


def test_missing_data_file(good_recipe, tmp_path):
    _assert_bad(invoke("sft", good_recipe, "--set", f"data.train.path={tmp_path}/gone.jsonl"),
                "data.train.path", "gone.jsonl", "does not exist")


def test_unknown_format(good_recipe):
    _assert_bad(invoke("sft", good_recipe, "--set", "data.format=xml"), "data.format")


def test_columns_fit_no_format(good_recipe, tmp_path):
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question_text": "a", "answer_text": "b"}])
    _assert_bad(invoke("sft", good_recipe, "--set", f"data.train.path={odd}"), "odd.jsonl",
                "['answer_text', 'question_text']")


def test_empty_data_set(good_recipe, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    _assert_bad(invoke("sft", good_recipe, "--set", f"data.train.path={empty}"), "empty.jsonl", "no rows")


def test_all_rows_bad(good_recipe, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "", "label": "billing"}] * 3)
    _assert_bad(invoke("sft", good_recipe, "--set", f"data.train.path={bad}"), "row 0", "empty")


def test_missing_gguf(good_recipe, tmp_path):
    _assert_bad(invoke("sft", good_recipe, "--set", f"model.name_or_path={tmp_path}/m.gguf"),
                "model.name_or_path", "m.gguf")


def test_missing_recipe_file(tmp_path):
    _assert_bad(invoke("validate", tmp_path / "none.yaml"), "none.yaml", "not found")


def test_method_mismatch(good_recipe):
    _assert_bad(invoke("sft", good_recipe, "--set", "method=fewshot", "--set", "train={}"), "method")


def test_bad_override_syntax(good_recipe):
    _assert_bad(invoke("validate", good_recipe, "--set", "train.max_steps"), "KEY.PATH=VALUE")


def test_real_process_exit_code_and_no_traceback(good_recipe):
    done = subprocess.run([sys.executable, "-m", "tuner", "validate", str(good_recipe), "--set", "adapter.r=0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "adapter.r" in done.stderr


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0 and "sft" in result.output and "validate" in result.output


@pytest.fixture
def fewshot_recipe(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "fs")
    document.update(method="fewshot", train={}, fewshot={"k": 2})
    return write_recipe(tmp_path / "fewshot.yaml", document)


def test_fewshot_k_larger_than_train(fewshot_recipe):
    _assert_bad(invoke("fewshot", fewshot_recipe, "--set", "fewshot.k=50"), "fewshot.k is 50", "24")


def test_fewshot_gold_answer_not_among_choices(fewshot_recipe):
    _assert_bad(invoke("fewshot", fewshot_recipe, "--set", "eval.choices=[billing, shipping]"), "eval row",
                "not among the choices")


def test_fewshot_empty_eval_split(fewshot_recipe, tmp_path):
    empty = tmp_path / "empty-eval.jsonl"
    empty.write_text("", encoding="utf-8")
    _assert_bad(invoke("fewshot", fewshot_recipe, "--set", f"data.eval.path={empty}"), "empty-eval.jsonl", "empty")


def test_bad_answer_regex(fewshot_recipe):
    _assert_bad(invoke("validate", fewshot_recipe, "--set", "eval.task=generate", "--set", "eval.answer_regex=(a"),
                "eval.answer_regex", "regular expression")


def test_eval_adapter_that_is_not_a_run_folder(good_recipe, tmp_path):
    _assert_bad(invoke("eval", good_recipe, "--adapter", tmp_path), "not a tuner run folder", "manifest.json")


def test_eval_adapter_from_another_base_model(good_recipe, tmp_path):
    run = fake_adapter_run(tmp_path / "other-run", "org/other")
    _assert_bad(invoke("eval", good_recipe, "--adapter", run), "org/other", "own base model")


def test_eval_base_model_and_adapter(good_recipe, tmp_path):
    import json

    trained = invoke("sft", good_recipe)
    assert trained.exit_code == 0, trained.output
    run_dir = tmp_path / "out"
    base = invoke("eval", good_recipe, "--output-dir", tmp_path / "base-eval")
    tuned = invoke("eval", good_recipe, "--adapter", run_dir, "--output-dir", tmp_path / "tuned-eval")
    assert base.exit_code == 0 and tuned.exit_code == 0, (base.output, tuned.output)
    base_scores = [json.loads(line)["scores"] for line in (tmp_path / "base-eval" / "predictions.jsonl").open()]
    tuned_scores = [json.loads(line)["scores"] for line in (tmp_path / "tuned-eval" / "predictions.jsonl").open()]
    assert base_scores != tuned_scores  # the adapter is applied
    own_scores = [json.loads(line)["scores"] for line in (run_dir / "predictions.jsonl").open()]
    assert tuned_scores == [pytest.approx(s, abs=1e-3) for s in own_scores]


def test_dpo_on_data_without_preference_columns(good_recipe):
    _assert_bad(invoke("dpo", good_recipe, "--set", "method=dpo"),
                "needs preference pairs", "'text'", "'label'")


def test_quiet_silences_progress_and_keeps_results(fewshot_recipe, tmp_path, monkeypatch):
    import os

    for name in ("TUNER_QUIET", "TQDM_DISABLE"):  # unset now, and unset again after the test (the CLI sets them)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    loud = CliRunner().invoke(cli, ["fewshot", str(fewshot_recipe), "--set", f"output_dir={tmp_path / 'loud'}"])
    assert loud.exit_code == 0, loud.output
    assert "tuner: scoring (choice): 10 of 10 rows in" in loud.stderr  # one line: the output is not a terminal
    quiet = CliRunner().invoke(cli, ["--quiet", "fewshot", str(fewshot_recipe), "--set",
                                     f"output_dir={tmp_path / 'quiet'}"])
    assert quiet.exit_code == 0, quiet.output
    assert "tuner: scoring" not in quiet.stderr and "eval (choice): accuracy" in quiet.stdout
    assert os.environ["TUNER_QUIET"] == "1" and os.environ["TQDM_DISABLE"] == "1"
