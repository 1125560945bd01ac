"""Sweeps and seeds on Ray: six runs on a local Ray cluster of two workers compare as the same runs made one after
another, finished runs are kept, a run's own error comes back as its paragraph, and the options are refused where
they mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner import recipe_from_dict
from tuner.cli import cli
from tuner.errors import TunerError
from tuner.recipes.sweep import run_seeds, sweep

from helpers import recipe_document, ticket_rows, write_jsonl, write_recipe

ray = pytest.importorskip("ray")


@pytest.fixture
def one_thread():
    """Serial runs with the one thread each Ray worker gets on two cores, so both sweeps compute alike."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _document(tiny_model_dir, ticket_files, out: Path) -> dict:
    train, test = ticket_files
    write_jsonl(train, ticket_rows(40))
    document = recipe_document(tiny_model_dir, train, test, out)
    document["train"]["max_steps"] = 2
    return document


def _table(folder: Path) -> list[tuple]:
    runs = json.loads((folder / "comparison" / "comparison.json").read_text())["runs"]
    keys = ("run", "method", "seeds", "choice_rows", "choice_accuracy", "choice_ci_low", "choice_ci_high")
    return sorted(tuple(json.dumps(run.get(key)) for key in keys) for run in runs)


def _written(folder: Path) -> list[tuple]:
    found = []
    for path in folder.glob("*/seed-*/metrics.json"):
        metrics = json.loads(path.read_text())
        found.append(
            (str(path.parent.relative_to(folder)), metrics["eval"]["accuracy"], round(metrics["train_loss"], 5))
        )
    return sorted(found)


def test_a_sweep_of_six_runs_on_two_ray_workers_compares_as_a_serial_sweep(
    tiny_model_dir, ticket_files, tmp_path, one_thread
):
    grid, seeds = {"data.max_train_samples": [8, 16, 32]}, [0, 1]
    serial = sweep(recipe_from_dict(_document(tiny_model_dir, ticket_files, tmp_path / "serial")), grid, seeds)
    serial.write()
    on_ray = sweep(recipe_from_dict(_document(tiny_model_dir, ticket_files, tmp_path / "ray")), grid, seeds, workers=2)
    on_ray.write()
    assert len(on_ray.runs) == 6 and len({result.run_dir for result in on_ray.runs}) == 6
    # Each run went to its own worker process, and each wrote its folder where the serial sweep wrote its own.
    assert [Path(r.run_dir).relative_to(tmp_path / "ray") for r in on_ray.runs] == [
        Path(r.run_dir).relative_to(tmp_path / "serial") for r in serial.runs
    ]
    assert _written(tmp_path / "ray") == _written(tmp_path / "serial")
    assert _table(tmp_path / "ray") == _table(tmp_path / "serial")
    assert on_ray.passes == serial.passes
    assert not ray.is_initialized()  # the local cluster started for the sweep is stopped after it


def test_seeds_on_ray_keep_finished_seeds_and_run_only_the_rest(tiny_model_dir, ticket_files, tmp_path, monkeypatch):
    document = _document(tiny_model_dir, ticket_files, tmp_path / "seeds")
    first = run_seeds(recipe_from_dict(document), [0])
    results = run_seeds(recipe_from_dict(document), [0, 1], workers=2)
    assert [result.run_dir for result in results][0] == first[0].run_dir  # kept, not run again
    assert results[1].metrics["train_steps"] == 2 and Path(results[1].run_dir).name == "seed-1"
    # Every seed finished: nothing to send, and no cluster is started for nothing.
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("a Ray cluster was started"))
    again = run_seeds(recipe_from_dict(document), [0, 1], workers=2)
    assert [result.run_dir for result in again] == [result.run_dir for result in results]


def test_a_runs_own_error_comes_back_from_its_worker_as_its_paragraph(tiny_model_dir, ticket_files, tmp_path):
    document = _document(tiny_model_dir, ticket_files, tmp_path / "bad")
    # Train rows that all ask what the eval rows ask: the data is first read in the workers, which refuse it with
    # the run's own paragraph, not Ray's wrapper of it.
    train, test = ticket_files
    train.write_bytes(test.read_bytes())
    with pytest.raises(TunerError) as raised:
        run_seeds(recipe_from_dict(document), [0, 1], workers=2)
    assert "every row of data.train asks a question" in str(raised.value)
    assert "RayTaskError" not in str(raised.value)
    assert not ray.is_initialized()


def test_workers_without_seeds_or_below_one_are_refused(tiny_model_dir, ticket_files, tmp_path):
    recipe = write_recipe(tmp_path / "sft.yaml", _document(tiny_model_dir, ticket_files, tmp_path / "one"))
    once = CliRunner().invoke(cli, ["sft", str(recipe), "--workers", "2"])
    assert once.exit_code == 2 and "runs once" in once.output and "--seeds" in once.output
    none = CliRunner().invoke(cli, ["sft", str(recipe), "--seeds", "0,1", "--workers", "0"])
    assert none.exit_code == 2 and "--workers 0" in none.output
    assert not (tmp_path / "one").exists()  # refused before any run folder was made


def test_an_unreachable_cluster_is_one_paragraph(tiny_model_dir, ticket_files, tmp_path):
    recipe = write_recipe(tmp_path / "sft.yaml", _document(tiny_model_dir, ticket_files, tmp_path / "far"))
    done = CliRunner().invoke(cli, ["sft", str(recipe), "--seeds", "0,1", "--cluster", "127.0.0.1:9"])
    assert done.exit_code == 2, done.output
    assert "--cluster 127.0.0.1:9: could not connect" in done.output and "ray start --head" in done.output
    assert "Traceback" not in done.output
