"""Trackers: a run's own results (scores with intervals, hours, memory) logged to the TensorBoard folder and the MLflow
run its training's loss went to, read back from the stores themselves; a prompt-side run's to a run of its own; a
tracker that fails keeps the run."""

from __future__ import annotations

import json

import pytest

from tuner import recipe_from_dict
from tuner.errors import TunerError
from tuner.recipes import fewshot, sft
from tuner.trackers import scalars

from helpers import recipe_document


def _events(folder):
    """Scalar tag -> [(step, value)] and the text tags of a TensorBoard event folder, read by TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder))
    reader.Reload()
    tags = reader.Tags()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in tags["scalars"]}, tags["tensors"]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow store (sqlite, MLflow's own default kind) named through MLflow's environment variables."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tickets")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs(client):
    experiment = client.get_experiment_by_name("tickets")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_sft_results_go_to_the_trackers_its_training_logged_to(tmp_path, tiny_model_dir, ticket_files, mlflow_store):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "sft")
    document["train"]["report_to"] = ["tensorboard", "mlflow"]
    result = sft.run(recipe_from_dict(document))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    accuracy, (low, high) = metrics["eval"]["accuracy"], metrics["eval"]["accuracy_ci95"]

    # TensorBoard: tuner's scores in the event folder of the training's loss, at the training's last step.
    folder = metrics["tracked"]["tensorboard"]
    assert str(result.run_dir / "checkpoints" / "runs") in folder
    values, texts = _events(folder)
    assert values["train/loss"]  # transformers' callback, the same folder
    assert values["tuner/eval/accuracy"] == [(3, pytest.approx(accuracy))]
    assert values["tuner/eval/accuracy_ci95/low"][0][1] == pytest.approx(low)
    assert values["tuner/eval/accuracy_ci95/high"][0][1] == pytest.approx(high)
    assert values["tuner/phases/train/cpu_hours"][0][1] > 0
    assert any(tag.startswith("tuner/results") for tag in texts)

    # MLflow: one run holds both the training's loss and tuner's scores.
    (run,) = _runs(mlflow_store)
    assert run.info.run_id == metrics["tracked"]["mlflow"]
    assert "loss" in run.data.metrics and run.data.params["output_dir"] == str(result.run_dir / "checkpoints")
    assert run.data.metrics["tuner/eval/accuracy"] == pytest.approx(accuracy)
    assert run.data.metrics["tuner/eval/accuracy_ci95/high"] == pytest.approx(high)
    assert run.data.params["tuner.method"] == "sft" and run.data.tags["tuner.run_dir"] == str(result.run_dir)
    history = mlflow_store.get_metric_history(run.info.run_id, "tuner/eval/accuracy")
    assert [m.step for m in history] == [3]


def _fewshot_document(tmp_path, tiny_model_dir, ticket_files, **eval_keys):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "fewshot")
    document.update(method="fewshot", train={}, fewshot={"k": 1})
    document["eval"].update(eval_keys)
    return document


def test_a_prompt_side_run_gets_a_tracker_run_of_its_own(tmp_path, tiny_model_dir, ticket_files, mlflow_store):
    document = _fewshot_document(tmp_path, tiny_model_dir, ticket_files, report_to=["mlflow", "tensorboard"])
    result = fewshot.run(recipe_from_dict(document))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())

    (run,) = _runs(mlflow_store)
    assert run.info.run_name == result.run_dir.name and run.info.run_id == metrics["tracked"]["mlflow"]
    assert run.data.metrics["tuner/eval/accuracy"] == pytest.approx(metrics["eval"]["accuracy"])
    assert run.data.params["tuner.method"] == "fewshot"
    values, _ = _events(result.run_dir / "tensorboard")
    assert values["tuner/eval/accuracy"] == [(0, pytest.approx(metrics["eval"]["accuracy"]))]
    # Where the scores were logged is not a scoring setting: the manifest's eval settings do not hold it.
    assert "report_to" not in json.loads((result.run_dir / "manifest.json").read_text())["eval_settings"]


def test_a_tracker_that_fails_keeps_the_run(tmp_path, tiny_model_dir, ticket_files, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    document = _fewshot_document(tmp_path, tiny_model_dir, ticket_files, report_to=["mlflow"])
    result = fewshot.run(recipe_from_dict(document))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["eval"]["accuracy"] >= 0 and (result.run_dir / "predictions.jsonl").is_file()
    assert "nosuchscheme" in metrics["tracked"]["mlflow"]["error"]
    assert "the run is saved, but logging its results to mlflow failed" in caplog.text


def test_a_tracker_whose_package_is_missing_is_refused_before_any_model_loads(
    tmp_path, tiny_model_dir, ticket_files, monkeypatch
):
    import tuner.recipe_file

    monkeypatch.setattr(tuner.recipe_file, "installed", lambda name: name != "tensorboard")
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "sft")
    document["train"]["report_to"] = "tensorboard"
    with pytest.raises(TunerError, match=r"key `train.report_to` names tensorboard, but its package is not installed"):
        recipe_from_dict(document)
    document = _fewshot_document(tmp_path, tiny_model_dir, ticket_files, report_to=["tensorboard"])
    with pytest.raises(TunerError, match=r"key `eval.report_to` names tensorboard.*pip install tensorboard"):
        recipe_from_dict(document)


def test_results_flatten_to_numbers_with_interval_ends():
    metrics = {
        "eval": {"accuracy": 0.5, "accuracy_ci95": [0.25, 0.75], "task": "choice", "rows": 4, "fingerprint": "ab"},
        "phases": {"train": {"cpu_hours": 0.1, "device": "cpu"}},
        "flag": True,
    }
    assert scalars(metrics) == {
        "eval/accuracy": 0.5,
        "eval/accuracy_ci95/low": 0.25,
        "eval/accuracy_ci95/high": 0.75,
        "eval/rows": 4.0,
        "phases/train/cpu_hours": 0.1,
    }


def test_a_comparison_goes_to_the_trackers_named(tmp_path, tiny_model_dir, ticket_files, mlflow_store):
    from click.testing import CliRunner

    from tuner.cli import cli

    for k in (0, 1):
        document = _fewshot_document(tmp_path, tiny_model_dir, ticket_files)
        document.update(fewshot={"k": k}, output_dir=str(tmp_path / "runs" / "arms" / f"k{k}"))
        fewshot.run(recipe_from_dict(document))
    arms = tmp_path / "runs" / "arms"
    result = CliRunner().invoke(cli, ["compare", str(arms), "--report-to", "tensorboard,mlflow"])
    assert result.exit_code == 0, result.output
    table = json.loads((arms / "comparison" / "comparison.json").read_text())["runs"]
    accuracy = {row["run"]: row["choice_accuracy"] for row in table}

    values, texts = _events(arms / "comparison" / "tensorboard")
    for run, value in accuracy.items():
        assert values[f"tuner/comparison/{run}/choice_accuracy"] == [(0, pytest.approx(value))]
    assert any(tag.startswith("tuner/comparison") for tag in texts)
    (run,) = _runs(mlflow_store)
    assert run.info.run_name == "comparison comparison" and f"Tracked in mlflow: {run.info.run_id}" in result.output
    assert run.data.metrics["tuner/comparison/k1/choice_accuracy"] == pytest.approx(accuracy["k1"])
    assert "| run |" in run.data.tags["tuner.comparison"]

    refused = CliRunner().invoke(cli, ["compare", str(arms), "--report-to", "wandb"])
    assert refused.exit_code == 2 and "wandb is not a tracker tuner logs to" in refused.output
