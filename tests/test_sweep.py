"""Seeds and sweeps: a recipe run once per seed and per grid point into its own folder, finished runs kept on a second
invocation, the comparison grouping the seeds, and the learning curve with its baselines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner import TunerError, recipe_from_dict
from tuner.cli import cli
from tuner.recipes.sweep import parse_grid, parse_seeds, plan

from helpers import recipe_document, ticket_rows, write_jsonl, write_recipe


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _recipe(tiny_model_dir, ticket_files, out: Path, **sections) -> dict:
    train, test = ticket_files
    return recipe_document(tiny_model_dir, train, test, out, **sections)


def test_plan_gives_each_seed_and_grid_point_its_folder_seed_and_adapter(tiny_model_dir, ticket_files, tmp_path):
    sft_runs = tmp_path / "runs" / "sft"
    for seed in (0, 1):
        (sft_runs / f"seed-{seed}").mkdir(parents=True)
    document = _recipe(
        tiny_model_dir, ticket_files, tmp_path / "runs" / "sweep", fewshot={"k": 2, "select": "random", "seed": 7}
    )
    recipe = recipe_from_dict(document)
    planned = plan(recipe, {"data.max_train_samples": [8, 16], "train.learning_rate": [0.01]}, [0, 1])
    assert [(p.output_dir, p.seed, p.fewshot.seed, p.data.max_train_samples) for p in planned] == [
        (str(tmp_path / "runs/sweep/data.max_train_samples=8,train.learning_rate=0.01/seed-0"), 0, 0, 8),
        (str(tmp_path / "runs/sweep/data.max_train_samples=8,train.learning_rate=0.01/seed-1"), 1, 1, 8),
        (str(tmp_path / "runs/sweep/data.max_train_samples=16,train.learning_rate=0.01/seed-0"), 0, 0, 16),
        (str(tmp_path / "runs/sweep/data.max_train_samples=16,train.learning_rate=0.01/seed-1"), 1, 1, 16),
    ]
    assert all(p.seeds is None for p in planned)
    # DPO on an SFT run of several seeds continues each seed's own adapter.
    dpo = {**document, "method": "dpo", "model": {**document["model"], "adapter": str(sft_runs)}, "seeds": [0, 1]}
    dpo.pop("adapter")
    dpo["data"] = {**dpo["data"], "format": "preference"}
    with pytest.raises(TunerError):  # the fake folders hold no adapter: the plan checks each seed's one
        plan(recipe_from_dict(dpo, check_files=False))
    assert plan(recipe_from_dict({**document, "seeds": [3]}))[0].output_dir == str(tmp_path / "runs/sweep/seed-3")


def test_bad_seeds_and_grids_are_refused_with_the_option_named(tiny_model_dir, ticket_files, tmp_path):
    for text in ("a,b", "1,1", "-1", ","):
        with pytest.raises(TunerError, match=f"--seeds {text}"):
            parse_seeds(text)
    for text in ("data.max_train_samples", "=1,2", "seed=1,2", "output_dir=a,b"):
        with pytest.raises(TunerError, match="--grid"):
            parse_grid([text])
    assert parse_grid(["data.max_train_samples=8,16", "train.learning_rate=1e-3"]) == {
        "data.max_train_samples": [8, 16],
        "train.learning_rate": ["1e-3"],
    }
    recipe = write_recipe(tmp_path / "r.yaml", _recipe(tiny_model_dir, ticket_files, tmp_path / "out"))
    result = invoke("sft", recipe, "--seeds", "0,zero")
    assert result.exit_code == 2 and "--seeds 0,zero: expected whole numbers" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    result = invoke("sweep", recipe, "--grid", "data.max_train_samples=8", "--against", tmp_path / "missing")
    assert result.exit_code == 2 and "missing: no such folder" in result.output and not (tmp_path / "out").exists()
    document = _recipe(tiny_model_dir, ticket_files, tmp_path / "out", seeds=[0, 0])
    result = invoke("sft", write_recipe(tmp_path / "dup.yaml", document))
    assert result.exit_code == 2 and "`seeds` must list distinct" in result.output


def test_sft_seeds_run_apart_are_kept_on_a_second_call_and_compare_as_one_row(tiny_model_dir, ticket_files, tmp_path):
    out = tmp_path / "runs" / "sft"
    recipe = write_recipe(tmp_path / "sft.yaml", _recipe(tiny_model_dir, ticket_files, out))
    result = invoke("sft", recipe, "--seeds", "0,1", "--set", "train.max_steps=2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1"]
    adapters = [(out / f"seed-{seed}" / "adapter" / "adapter_model.safetensors").read_bytes() for seed in (0, 1)]
    assert adapters[0] != adapters[1]  # each seed initialised and trained its own
    assert [json.loads((out / f"seed-{s}" / "manifest.json").read_text())["seed"] for s in (0, 1)] == [0, 1]
    assert "2 seeds in" in result.output and f"tuner compare {out}" in result.output
    again = invoke("sft", recipe, "--seeds", "0,1", "--set", "train.max_steps=2")
    assert again.exit_code == 0 and again.output.count("holds a finished run of this recipe; kept") == 2
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1"]
    # The same recipe on edited data is another run (review M11): it runs again beside the kept one.
    train, _ = ticket_files
    original = train.read_text()
    write_jsonl(train, ticket_rows(24, offset=500))
    edited = invoke("sft", recipe, "--seeds", "0", "--set", "train.max_steps=2")
    assert edited.exit_code == 0 and "ran on other rows (train_fingerprint differ)" in edited.output
    assert (out / "seed-0-2" / "metrics.json").is_file()
    shutil.rmtree(out / "seed-0-2")
    train.write_text(original)
    other = invoke("sft", recipe, "--seeds", "0", "--set", "train.max_steps=1")  # another recipe: a new folder
    assert other.exit_code == 0 and (out / "seed-0-2" / "metrics.json").is_file()
    compared = invoke("compare", out.parent)
    assert compared.exit_code == 0, compared.output
    line = next(row for row in compared.output.splitlines() if row.startswith("| sft (baseline) |"))
    assert "2 seeds: " in line
    assert "1 seed (0)" in next(row for row in compared.output.splitlines() if row.startswith("| sft/seed-0-2 |"))
    assert "- seed: 0 (sft/seed-0, sft/seed-0-2); 1 (sft/seed-1)" in compared.output


def test_sweep_runs_the_grid_draws_the_curve_and_keeps_finished_points(tiny_model_dir, ticket_files, tmp_path):
    train, test = ticket_files
    write_jsonl(train, ticket_rows(40))
    prompt = _recipe(
        tiny_model_dir,
        ticket_files,
        tmp_path / "runs" / "fewshot",
        method="fewshot",
        fewshot={"k": 2, "select": "first"},
    )
    prompt.pop("adapter"), prompt.pop("train")
    assert invoke("fewshot", write_recipe(tmp_path / "fewshot.yaml", prompt)).exit_code == 0
    recipe = write_recipe(tmp_path / "sft.yaml", _recipe(tiny_model_dir, ticket_files, tmp_path / "runs" / "sweep"))
    args = (
        "sweep",
        recipe,
        "--grid",
        "data.max_train_samples=8,32",
        "--seeds",
        "0,1",
        "--against",
        tmp_path / "runs" / "fewshot",
        "--set",
        "train.max_steps=2",
    )
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    sweep_dir = tmp_path / "runs" / "sweep"
    assert sorted(p.name for p in sweep_dir.iterdir()) == [
        "comparison",
        "data.max_train_samples=32",
        "data.max_train_samples=8",
    ]
    manifest = json.loads((sweep_dir / "data.max_train_samples=8" / "seed-1" / "manifest.json").read_text())
    assert manifest["data"]["train_rows"] == 8 and manifest["seed"] == 1
    comparison = json.loads((sweep_dir / "comparison" / "comparison.json").read_text())
    assert comparison["baseline"] == "fewshot"
    points = {run["run"]: run for run in comparison["runs"]}
    assert set(points) == {"fewshot", "data.max_train_samples=8", "data.max_train_samples=32"}
    assert points["data.max_train_samples=8"]["seeds"] == [0, 1]
    assert (sweep_dir / "comparison" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    passes = (sweep_dir / "comparison" / "learning_curve.md").read_text()
    assert "2-shot (first)" in passes and ("passes" in passes or "does not pass" in passes)
    assert passes.strip() in result.output
    again = invoke(*args)
    assert again.exit_code == 0 and again.output.count("holds a finished run of this recipe; kept") == 4
    # The comparison is written again in place (it is the runs' table, not a run), and said so.
    assert "comparison holds an earlier comparison; its files are replaced" in again.output
    assert not (sweep_dir / "comparison-2").exists() and (sweep_dir / "comparison" / "learning_curve.png").is_file()


def test_pass_lines_name_where_the_curve_passes_each_baseline_on_the_mean_and_beyond_noise():
    from tuner.recipes.sweep import pass_lines

    def row(method, accuracy, delta=None, real=None, seeds=(0, 1, 2)):
        return {
            "method": method,
            "choice_accuracy": accuracy,
            "choice_delta": delta,
            "choice_delta_distinguishable": real,
            "seeds": list(seeds),
        }

    key = "data.max_train_samples"
    curve = [
        (((key, 25),), row("SFT", 0.5, -0.3, True)),
        (((key, 100),), row("SFT", 0.85, 0.05, False)),
        (((key, 400),), row("SFT", 0.95, 0.15, True)),
    ]
    fewshot, zeroshot = row("5-shot (similar)", 0.8, 0.0, None, (0,)), row("zero-shot", 0.2, -0.6, True, (0,))
    assert pass_lines(curve, [fewshot, zeroshot], "choice") == [
        "SFT passes 5-shot (similar) (0.800) from data.max_train_samples=100 on the mean (0.850 over 3 seeds); beyond "
        "the noise of rows and seeds (paired 95% interval above zero) from data.max_train_samples=400.",
        "SFT passes zero-shot (0.200) from data.max_train_samples=25 on the mean (0.500 over 3 seeds).",
    ]
    assert pass_lines(curve[:1], [fewshot], "choice") == [
        "SFT does not pass 5-shot (similar) (0.800) at any data.max_train_samples swept: its best is 0.500 at "
        "data.max_train_samples=25."
    ]


def test_a_finished_run_written_before_a_new_recipe_key_is_still_kept(tiny_model_dir, ticket_files, tmp_path):
    import yaml

    from tuner.recipes.sweep import finished_run

    recipe = recipe_from_dict(_recipe(tiny_model_dir, ticket_files, tmp_path / "runs" / "sft" / "seed-0"))
    folder = tmp_path / "runs" / "sft" / "seed-0"
    folder.mkdir(parents=True)
    written = recipe.to_dict()
    del written["data"]["drop_eval_overlap"]  # a run from before that key existed
    (folder / "recipe.yaml").write_text(yaml.safe_dump(written))
    (folder / "metrics.json").write_text('{"method": "sft"}')
    (folder / "manifest.json").write_text("{}")
    assert finished_run(recipe).run_dir == folder
    written["data"]["drop_eval_overlap"] = False  # set otherwise: another run
    (folder / "recipe.yaml").write_text(yaml.safe_dump(written))
    assert finished_run(recipe) is None


def test_a_dpo_recipe_on_sft_seeds_plans_each_seed_on_its_own_adapter(tiny_model_dir, tmp_path):
    from helpers import fake_adapter_run

    sft = tmp_path / "runs" / "sft"
    for seed in (0, 1):
        fake_adapter_run(sft / f"seed-{seed}", str(tiny_model_dir))
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": f"Ticket {n}?", "chosen": "billing", "rejected": "shipping"} for n in range(8)],
    )
    document = {
        "method": "dpo",
        "model": {"name_or_path": str(tiny_model_dir), "adapter": str(sft)},
        "data": {"train": {"path": str(pairs)}, "format": "preference"},
        "output_dir": str(tmp_path / "runs" / "sft-dpo"),
        "seeds": [0, 1],
    }
    planned = plan(recipe_from_dict(document))
    assert [(p.model.adapter, p.seed) for p in planned] == [(str(sft / "seed-0"), 0), (str(sft / "seed-1"), 1)]
    with pytest.raises(TunerError, match="not a tuner run folder with an adapter"):
        recipe_from_dict({**document, "seeds": None})  # without seeds the folder must be a run itself


def test_a_finished_run_that_continued_an_adapter_is_kept_and_its_recipe_loads_back(tiny_model_dir, tmp_path):
    import yaml

    from tuner.recipes.sweep import finished_run

    from helpers import fake_adapter_run

    sft = fake_adapter_run(tmp_path / "runs" / "sft", str(tiny_model_dir))
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": f"Ticket {n}?", "chosen": "billing", "rejected": "shipping"} for n in range(8)],
    )
    folder = tmp_path / "runs" / "sft-dpo"
    recipe = recipe_from_dict(
        {
            "method": "dpo",
            "model": {"name_or_path": str(tiny_model_dir), "adapter": str(sft)},
            "data": {"train": {"path": str(pairs)}, "format": "preference"},
            "output_dir": str(folder),
        }
    )
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict()))  # as runs.finish_run writes it
    (folder / "metrics.json").write_text('{"method": "sft+dpo"}')
    (folder / "manifest.json").write_text("{}")
    # The written recipe is a recipe again (an `adapter:` section beside `model.adapter` would be refused) ...
    assert recipe_from_dict(yaml.safe_load((folder / "recipe.yaml").read_text())).model.adapter == str(sft)
    # ... so a second call of the same seeds keeps the run instead of training it again.
    assert finished_run(recipe).run_dir == folder
