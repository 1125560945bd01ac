"""The decision report (`comparison/report.html`): self-contained, built from the comparison's own figures, and
working in a real headless browser: every run in the table, sorting, the disagreement filter, paging, no console
errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tuner import compare

from browser import page
from helpers import write_run

TEAMS = ["billing", "shipping", "returns"]


def _answers(folder: Path, gold: list[str], predicted: list[str], passages: bool = False) -> None:
    lines = []
    for n, (g, p) in enumerate(zip(gold, predicted)):
        line = {
            "row": n,
            "gold": g,
            "prediction": p,
            "correct": g == p,
            "prompt": f"<|im_start|>user\nTicket {n}: which team?<|im_end|>\n<|im_start|>assistant\n",
        }
        if passages:
            line["passages"] = [{"id": f"faq.md#{n % 3}", "score": 1.0}]
        lines.append(json.dumps(line))
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def comparison_folder(parent: Path, runs: int = 3, rows: int = 30) -> Path:
    """`runs` runs scored on the same `rows` rows: run 0 always says billing, the others are right on more rows."""
    gold = [TEAMS[n % 3] for n in range(rows)]
    for r in range(runs):
        predicted = (
            ["billing"] * rows
            if r == 0
            else [g if (n + r) % (r + 2) else TEAMS[(n + 1) % 3] for n, g in enumerate(gold)]
        )
        accuracy = sum(g == p for g, p in zip(gold, predicted)) / rows
        method = "fewshot" if r == 0 else "sft"
        folder = write_run(
            parent / f"run-{r}",
            method,
            accuracy,
            [max(0, accuracy - 0.1), min(1, accuracy + 0.1)],
            rows=rows,
            train_cpu_hours=0.01 * r,
            latency=50.0 + 10 * r,
            extra_metrics={"k": 0, "select": "random"} if r == 0 else None,
        )
        _answers(folder, gold, predicted, passages=r == 1)
    return parent


def _data(html: str) -> dict:
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(blob)


def test_the_page_is_self_contained_and_holds_the_comparisons_own_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123456")
    parent = comparison_folder(tmp_path / "runs")
    recipe = parent / "run-1" / "recipe.yaml"
    recipe.write_text(recipe.read_text() + "\n# hub token: hf_secretvalue123456\n")
    (parent / "run-2" / "predictions.jsonl").write_text(
        (parent / "run-2" / "predictions.jsonl").read_text().replace("Ticket 0:", "Ticket 0: </script><b>x</b>")
    )
    comparison = compare([parent])
    written = comparison.write(tmp_path / "out")
    html = written["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<link" not in html
    assert "hf_secretvalue123456" not in html and html.count("</script>") == 2
    data = _data(html)
    assert [row["run"] for row in data["rows"]] == list(comparison.table["run"]) == ["run-0", "run-1", "run-2"]
    # One base model for all: named once in the subtitle, not a column repeating it.
    assert "model" not in data["header"] and "3 runs of SmolLM2.gguf;" in data["subtitle"]
    assert data["cells"][1][2].startswith(f"{comparison.table['choice_accuracy'][1]:.3f}")
    browse = data["browse"]["choice"]
    assert len(browse["gold"]) == 30 and [r["name"] for r in browse["runs"]] == ["run-0", "run-1", "run-2"]
    assert browse["runs"][1]["passages"][4] == ["faq.md#1"]
    assert browse["questions"][3] == "Ticket 3: which team?"
    assert "</script><b>x</b>" in data["prompts"][browse["runs"][2]["prompts"][0]]
    confusion = data["runs"][0]["confusion"][0]
    assert confusion["labels"] == ["billing", "returns", "shipping"] and sum(map(sum, confusion["matrix"])) == 30
    assert confusion["matrix"][0] == [10, 0, 0] and confusion["accuracy"][0] == 1.0  # run 0 says billing to all


def test_the_row_browser_names_the_runs_it_leaves_out(tmp_path):
    parent = comparison_folder(tmp_path / "runs")
    other = write_run(parent / "run-other", "sft", 0.5, [0.4, 0.6], rows=4, train_cpu_hours=0.01)
    _answers(other, ["billing", "returns", "billing", "returns"], ["billing"] * 4)  # other eval rows
    browse = _data(compare([parent]).write(tmp_path / "out")["html"].read_text())["browse"]["choice"]
    assert [r["name"] for r in browse["runs"]] == ["run-0", "run-1", "run-2"] and browse["leftOut"] == ["run-other"]


@pytest.mark.integration  # a real browser: the end-to-end tier
def test_report_in_chromium_sorts_filters_and_logs_no_errors(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    written = compare([comparison_folder(tmp_path / "runs")]).write(tmp_path / "out")
    with page(written["html"]) as driver:
        assert driver.execute_script("return window.reportReady") > 0
        names = lambda: [
            r.get_attribute("data-run") for r in driver.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
        ]
        assert names() == ["run-0", "run-1", "run-2"]
        header = next(
            th
            for th in driver.find_elements(By.CSS_SELECTOR, "#runs-table th")
            if th.text.startswith("choice accuracy")
        )
        header.click()
        ascending = names()
        header = next(
            th
            for th in driver.find_elements(By.CSS_SELECTOR, "#runs-table th")
            if th.text.startswith("choice accuracy")
        )
        header.click()
        assert names() == list(reversed(ascending)) and names() != ascending
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#browser-rows tr.row")
        assert len(rows()) == 30
        Select(driver.find_element(By.ID, "browser-filter")).select_by_value("disagree")
        disagreeing = len(rows())
        Select(driver.find_element(By.ID, "browser-filter")).select_by_value("allfail")
        assert 0 < len(rows()) < disagreeing < 30
        rows()[0].click()
        assert "which team?" in driver.find_element(By.CSS_SELECTOR, "#browser-rows tr.detail").text
        assert driver.find_elements(By.CSS_SELECTOR, "#run-details details") and driver.find_elements(
            By.CSS_SELECTOR, "#plots svg circle"
        )
        driver.save_screenshot(str(tmp_path / "report.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [] and (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.integration  # a real browser: the end-to-end tier
def test_a_large_comparison_pages_its_rows(tmp_path):
    from selenium.webdriver.common.by import By

    written = compare([comparison_folder(tmp_path / "runs", runs=10, rows=5000)]).write(tmp_path / "out")
    with page(written["html"]) as driver:
        opened_ms = driver.execute_script("return window.reportReady")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#browser-rows tr.row")) == 50
        assert driver.find_element(By.ID, "browser-count").text == "rows 1-50 of 5000 (5000 in all)"
        driver.find_element(By.ID, "browser-next").click()
        assert driver.find_element(By.ID, "browser-count").text.startswith("rows 51-100 of 5000")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")) == 10
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    print(
        f"10 runs x 5000 rows: page ready {opened_ms:.0f} ms after navigation, {written['html'].stat().st_size:,} bytes"
    )


def test_a_sweep_gets_its_learning_curve_with_the_baselines_as_lines(tmp_path):
    parent = tmp_path / "sweep"
    for n, accuracy in ((25, 0.2), (100, 0.4), (400, 0.8)):
        write_run(
            parent / f"data.max_train_samples={n}",
            "sft",
            accuracy,
            [accuracy - 0.1, accuracy + 0.1],
            train_cpu_hours=0.001 * n,
        )
    write_run(tmp_path / "fewshot", "fewshot", 0.9, [0.85, 0.95], extra_metrics={"k": 5, "select": "similar"})
    data = _data(
        compare([parent, tmp_path / "fewshot"], baseline="fewshot").write(tmp_path / "out")["html"].read_text()
    )
    curve = data["plots"][-1]
    assert curve["title"] == "learning curve: choice accuracy against data.max_train_samples" and curve["logX"]
    assert [(p["x"], p["y"]) for p in curve["points"]] == [(25.0, 0.2), (100.0, 0.4), (400.0, 0.8)]
    assert [(line["label"], line["y"]) for line in curve["lines"]] == [("fewshot", 0.9)]


def freeform_folder(parent: Path) -> Path:
    """A zero-shot and a RAG run of free-text answers on three rows, scored by `contains` (the trial's replies)."""
    gold = ["Ingrid Solvang", "Fjord", "3"]
    replies = {
        "zeroshot": ["I do not know.", "The warehouse is Lake.", "There are 13."],
        "rag": ["The Platform team is led by Ingrid Solvang.", "It is called Fjord.", "Lake."],
    }
    for name, said in replies.items():
        right = [1.0, 1.0, 0.0] if name == "rag" else [0.0, 0.0, 0.0]
        folder = write_run(
            parent / name,
            "rag" if name == "rag" else "fewshot",
            sum(right) / 3,
            [0, 1],
            rows=3,
            extra_metrics={"k": 0} if name == "zeroshot" else {"retriever": "bm25"},
        )
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["eval"].update(task="generate", metric="contains")
        if name == "rag":
            metrics["eval"].update(groundedness=0.6667, answer_found_not_used_rate=0.3333)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        lines = [
            {
                "row": n,
                "gold": g,
                "prediction": s,
                "correct": r >= 0.5,
                "score": r,
                "prompt": f"Q{n}",
                "metrics": {"contains": r, "token_f1": 0.25},
                **({"grounded": n < 2, "passages": [{"id": "team.md#0", "score": 1.0}]} if name == "rag" else {}),
            }
            for n, (g, s, r) in enumerate(zip(gold, said, right))
        ]
        (folder / "predictions.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n", encoding="utf-8")
    return parent


def test_the_row_browser_shows_each_free_form_rows_scores_and_grounding(tmp_path):
    parent = freeform_folder(tmp_path / "runs")
    comparison = compare([parent])
    text = comparison.markdown()
    assert "grounded (answer found, not used)" in text.splitlines()[0]
    assert "| 0.667 (0.333) |" in next(line for line in text.splitlines() if line.startswith("| rag |"))
    browse = _data(comparison.write(tmp_path / "out")["html"].read_text())["browse"]["generate"]
    zeroshot, rag = browse["runs"]
    assert rag["scores"][0] == {"contains": 1.0, "token_f1": 0.25} and zeroshot["scores"][0]["contains"] == 0.0
    assert rag["grounded"] == [True, True, False] and "grounded" not in zeroshot


@pytest.mark.integration  # a real browser: the end-to-end tier
def test_report_in_chromium_shows_free_form_scores_per_row(tmp_path):
    from selenium.webdriver.common.by import By

    written = compare([freeform_folder(tmp_path / "runs")]).write(tmp_path / "out")
    with page(written["html"]) as driver:
        rows = driver.find_elements(By.CSS_SELECTOR, "#browser-rows tr.row")
        assert len(rows) == 3
        cells = [td.text for td in rows[0].find_elements(By.CSS_SELECTOR, "td.pred")]
        assert cells == [
            "\u2717 I do not know. (contains 0.00)",
            "\u2713 The Platform team is led by Ingrid Solvang. (contains 1.00)",
        ]
        rows[0].click()
        detail = driver.find_element(By.CSS_SELECTOR, "#browser-rows tr.detail").text
        assert "scores: contains 1.000, token_f1 0.250; grounded in its passages: yes" in detail
        assert "generate contains" in driver.find_element(By.ID, "runs-table").text
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
