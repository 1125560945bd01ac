"""The CLI: bad input gets a one-paragraph message, exit code 2 and no traceback, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tuner.cli import cli

from helpers import fake_adapter_run, recipe_document, write_jsonl, write_recipe


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
        return subprocess.run(
            [sys.executable, "-c", TELEMETRY], env={**environment, **extra}, capture_output=True, text=True, check=True
        ).stdout.strip()

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
    _assert_bad(
        invoke(command, good_recipe, "--set", "train.lerning_rate=0.1"),
        str(good_recipe),
        "train.lerning_rate",
        "learning_rate",
    )


@pytest.mark.parametrize("command", ["validate", "sft"])
def test_misspelt_section_key(command, good_recipe):
    _assert_bad(invoke(command, good_recipe, "--set", "adapter.alpah=3"), "adapter.alpah", "`alpha`")


def test_wrong_type(good_recipe):
    _assert_bad(invoke("sft", good_recipe, "--set", "adapter.dropout=lots"), "adapter.dropout")


def test_missing_data_file(good_recipe, tmp_path):
    _assert_bad(
        invoke("sft", good_recipe, "--set", f"data.train.path={tmp_path}/gone.jsonl"),
        "data.train.path",
        "gone.jsonl",
        "does not exist",
    )


def test_unknown_format(good_recipe):
    _assert_bad(invoke("sft", good_recipe, "--set", "data.format=xml"), "data.format")


def test_columns_fit_no_format(good_recipe, tmp_path):
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question_text": "a", "answer_text": "b"}])
    _assert_bad(
        invoke("sft", good_recipe, "--set", f"data.train.path={odd}"), "odd.jsonl", "['answer_text', 'question_text']"
    )


def test_empty_data_set(good_recipe, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    _assert_bad(invoke("sft", good_recipe, "--set", f"data.train.path={empty}"), "empty.jsonl", "no rows")


def test_all_rows_bad(good_recipe, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "", "label": "billing"}] * 3)
    _assert_bad(invoke("sft", good_recipe, "--set", f"data.train.path={bad}"), "row 0", "empty")


def test_missing_gguf(good_recipe, tmp_path):
    _assert_bad(
        invoke("sft", good_recipe, "--set", f"model.name_or_path={tmp_path}/m.gguf"), "model.name_or_path", "m.gguf"
    )


def test_missing_recipe_file(tmp_path):
    _assert_bad(invoke("validate", tmp_path / "none.yaml"), "none.yaml", "not found")


def test_method_mismatch(good_recipe):
    _assert_bad(invoke("sft", good_recipe, "--set", "method=fewshot", "--set", "train={}"), "method")


def test_bad_override_syntax(good_recipe):
    _assert_bad(invoke("validate", good_recipe, "--set", "train.max_steps"), "KEY.PATH=VALUE")


def test_real_process_exit_code_and_no_traceback(good_recipe):
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "validate", str(good_recipe), "--set", "adapter.r=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    _assert_bad(
        invoke("fewshot", fewshot_recipe, "--set", "eval.choices=[billing, shipping]"),
        "eval row",
        "not among the choices",
    )


def test_fewshot_empty_eval_split(fewshot_recipe, tmp_path):
    empty = tmp_path / "empty-eval.jsonl"
    empty.write_text("", encoding="utf-8")
    _assert_bad(invoke("fewshot", fewshot_recipe, "--set", f"data.eval.path={empty}"), "empty-eval.jsonl", "empty")


def test_bad_answer_regex(fewshot_recipe):
    _assert_bad(
        invoke("validate", fewshot_recipe, "--set", "eval.task=generate", "--set", "eval.answer_regex=(a"),
        "eval.answer_regex",
        "regular expression",
    )


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
    _assert_bad(invoke("dpo", good_recipe, "--set", "method=dpo"), "needs preference pairs", "'text'", "'label'")


def test_quiet_silences_progress_and_keeps_results(fewshot_recipe, tmp_path, monkeypatch):
    import os

    for name in ("TUNER_QUIET", "TQDM_DISABLE"):  # unset now, and unset again after the test (the CLI sets them)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    loud = CliRunner().invoke(cli, ["fewshot", str(fewshot_recipe), "--set", f"output_dir={tmp_path / 'loud'}"])
    assert loud.exit_code == 0, loud.output
    assert "tuner: scoring (choice): 10 of 10 rows in" in loud.stderr  # one line: the output is not a terminal
    quiet = CliRunner().invoke(
        cli, ["--quiet", "fewshot", str(fewshot_recipe), "--set", f"output_dir={tmp_path / 'quiet'}"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert "tuner: scoring" not in quiet.stderr and "eval (choice): accuracy" in quiet.stdout
    assert os.environ["TUNER_QUIET"] == "1" and os.environ["TQDM_DISABLE"] == "1"


# The lines tuner itself prints after a run (tuner's notices and phases start with "tuner:").
TUNER_LINES = ("tuner:", "Run folder:", "  holds:", "  train_loss", "  eval (", "  retrieval:")


@pytest.mark.parametrize("flags", [["-q"], []], ids=["quiet", "default"])
def test_a_training_run_prints_no_line_from_a_library(flags, good_recipe, tmp_path):
    # A real process, as a user runs it: warnings and log records go to its stderr, which is a pipe (no bars).
    environment = {k: v for k, v in os.environ.items() if k not in ("TUNER_QUIET", "TQDM_DISABLE")}
    done = subprocess.run(
        [sys.executable, "-m", "tuner", *flags, "sft", str(good_recipe), "--set", f"output_dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "Run folder:" in done.stdout and "eval (choice): accuracy" in done.stdout
    foreign = [
        line for line in (done.stdout + done.stderr).splitlines() if line.strip() and not line.startswith(TUNER_LINES)
    ]
    assert foreign == []
    assert "\r" not in done.stderr
    if flags:
        assert "tuner: scoring" not in done.stderr


def test_a_long_phase_prints_its_tenths_in_a_log(monkeypatch, capsys):
    from tuner import progress

    clock = iter(range(0, 10_000, 10))  # each reading of the clock is 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.delenv("TUNER_QUIET", raising=False)
    lines = progress.Lines(total=20, what="training", unit="steps")
    for step in range(1, 21):
        lines.update(step, ", loss 1.5")
    printed = capsys.readouterr().err.splitlines()
    assert (
        len(printed) == 9
        and printed[0] == "tuner: training: 2 of 20 steps (10%), 10 s, about 1 min 30 s left, loss 1.5"
    )
    assert printed[-1].startswith("tuner: training: 18 of 20 steps (90%)") and printed[-1].endswith(", loss 1.5")
    quick = progress.Lines(total=10_000, what="scoring", unit="rows")
    quick.update(5_000)  # half done in 10 s: 20 s in all, silent
    assert capsys.readouterr().err == ""


def test_the_cli_reference_page_is_every_commands_help():
    from tuner.reference import reference

    from helpers import ROOT

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == reference(), "docs/cli.md is out of date: .venv/bin/python -m tuner.reference > docs/cli.md"
    assert all(f"## tuner {name}\n" in page for name in cli.commands)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_each_commands_help_ends_with_an_example_that_names_real_files(name):
    import yaml

    from tuner.options import EXAMPLES

    from helpers import ROOT

    def recipe(path):
        return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))

    shown = invoke(name, "--help")
    assert shown.exit_code == 0 and f"Example:\n    {EXAMPLES[name]}\n" in shown.output
    words = EXAMPLES[name].split()
    assert words[:2] == ["tuner", name]
    recipes = [word for word in words if word.endswith(".yaml")]
    assert all(
        recipe(path)["method"] == name
        for path in recipes
        if name in cli.commands and name not in ("validate", "eval", "sweep")
    ), recipes
    # A run folder named is one a shipped recipe writes (the quickstart's SFT run), or the pipeline's folder.
    runs = [word for word in words if word.startswith("runs/")]
    written = {recipe(path.relative_to(ROOT)).get("output_dir") for path in (ROOT / "recipes").glob("*/*.yaml")}
    assert all(run in written or run == "runs/quickstart" for run in runs), runs
    data = [word for word in words if word.startswith("examples/data/")]  # `tuner decide` reads a data folder
    assert all((ROOT / folder).exists() for folder in data), data
    assert recipes or runs or data


def test_fewshot_dry_run_shows_the_prompts_as_the_model_reads_them_and_writes_nothing(fewshot_recipe, tmp_path):
    shown = invoke("fewshot", fewshot_recipe, "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "(fewshot; no weights loaded, nothing scored)" in shown.stdout and "10 eval prompts:" in shown.stdout
    row = shown.stdout.split("  row 0: ")[1].split("  row 1: ")[0]
    # Two examples with their answers (fewshot.k 2), then the eval ticket and its gold answer between [[ ]].
    assert row.count("Which team? Ticket") == 3 and "Ticket 100:" in row and row.rstrip().endswith("[[billing]]")
    assert not (tmp_path / "fs").exists()


def test_a_key_in_the_wrong_section_is_pointed_to_its_section(good_recipe):
    _assert_bad(
        invoke("validate", good_recipe, "--set", "eval.max_eval_samples=2"),
        "eval.max_eval_samples",
        "did you mean `data.max_eval_samples`?",
    )
    _assert_bad(invoke("validate", good_recipe, "--set", "max_steps=2"), "did you mean `train.max_steps`?")


def test_an_error_in_a_set_value_names_the_set_option_and_how_it_was_read(good_recipe):
    shown = invoke("validate", good_recipe, "--set", "data.prompt_template=Ticket: {text}")
    _assert_bad(
        shown,
        "`data.prompt_template` came from `--set data.prompt_template=Ticket: {text}`, read as YAML, "
        "which gave a mapping: quote the value",
        "Fix the --set value and run again.",
    )
    assert "Fix the recipe" not in shown.stderr


def test_unmapped_columns_are_answered_with_a_data_columns_mapping_built_from_them(good_recipe, tmp_path):
    data = write_jsonl(tmp_path / "mine.jsonl", [{"utterance": f"ticket {i}", "intent": "billing"} for i in range(5)])
    for format_name in ("classification", "auto"):
        _assert_bad(
            invoke("validate", good_recipe, "--set", f"data.train.path={data}", "--set", f"data.format={format_name}"),
            "`data.columns: {text: utterance, label: intent}`",
        )


def test_validate_says_which_folder_a_run_will_take_and_the_labels_it_found(good_recipe, tmp_path):
    first = invoke("validate", good_recipe)
    assert first.exit_code == 0 and "holds files" not in first.output
    assert "5 labels: account, billing, returns, shipping, technical" in first.output
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}", encoding="utf-8")
    taken = invoke("validate", good_recipe)
    assert f"output {tmp_path / 'out'} (it holds files: this run will be {tmp_path / 'out-2'})" in taken.output


def test_qlora_on_a_cpu_is_said_to_cost_speed_before_the_run(good_recipe):
    from tuner.hardware import device_kind

    if device_kind() == "cuda":
        pytest.skip("the note is for CPUs")
    shown = invoke("sft", good_recipe, "--set", "model.quantize=4bit", "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "tuner: 4bit weights on a CPU (QLoRA)" in shown.output and "`model.quantize: null`" in shown.output
    assert "QLoRA" not in invoke("sft", good_recipe, "--dry-run").output


def test_the_training_bar_shows_each_steps_loss_but_not_the_summary_tuner_prints_itself():
    from types import SimpleNamespace

    from tuner.trainers import TrainingBar

    written = []
    bar = TrainingBar()
    bar.training_bar = SimpleNamespace(write=written.append)
    state = SimpleNamespace(is_world_process_zero=True)
    step = {"loss": 7.2, "grad_norm": 6.4, "train_runtime": 41.0, "train_tokens_per_second": 13.9}
    bar.on_log(None, state, None, logs=step)
    bar.on_log(None, state, None, logs={"train_loss": 7.2, "train_runtime": 61.8, "train_samples_per_second": 0.3})
    assert len(written) == 1 and "'loss': '7.2'" in written[0]


def test_a_run_trained_in_bf16_autocast_scores_as_eval_of_its_adapter_does(good_recipe, tmp_path, monkeypatch):
    import json

    import tuner.speed

    # Train in bf16 autocast on any CPU (emulated where bf16 is not native: the tiny model makes it cheap). Scoring on a
    # CPU is fp32 either way: accelerate's autocast wrapper of the model's forward must not follow it into the scoring.
    monkeypatch.setattr(tuner.speed, "cpu_bf16_speedup_here", lambda: 2.0)
    trained = invoke("sft", good_recipe)
    assert trained.exit_code == 0, trained.output
    run_dir = tmp_path / "out"
    assert json.loads((run_dir / "manifest.json").read_text())["precision"] == "bf16"
    tuned = invoke("eval", good_recipe, "--adapter", run_dir, "--output-dir", tmp_path / "tuned-eval")
    assert tuned.exit_code == 0, tuned.output
    tuned_scores = [json.loads(line)["scores"] for line in (tmp_path / "tuned-eval" / "predictions.jsonl").open()]
    own_scores = [json.loads(line)["scores"] for line in (run_dir / "predictions.jsonl").open()]
    assert tuned_scores == [pytest.approx(s, abs=1e-5) for s in own_scores]
