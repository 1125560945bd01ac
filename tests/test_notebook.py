"""examples/quickstart.ipynb runs from top to bottom (with QUICKSTART_FAST: two training steps, ten eval rows), so the
notebook's calls never drift from the Python API the CLI uses."""

from __future__ import annotations

import pytest

from helpers import ROOT


@pytest.mark.integration
def test_the_quickstart_notebook_runs_every_method_and_shows_the_comparison(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "runs"
    monkeypatch.setenv("QUICKSTART_FAST", "1")
    monkeypatch.setenv("QUICKSTART_OUT", str(out))
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "examples")}}
    ).execute()
    assert sorted(p.name for p in out.iterdir()) == ["comparison", "dpo", "fewshot", "sft", "sft-dpo", "zeroshot"]
    assert all((out / name / "seed-0" / "metrics.json").is_file() for name in ("zeroshot", "sft", "sft-dpo"))
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    table = next(output["data"]["text/markdown"] for output in outputs if "text/markdown" in output.get("data", {}))
    assert "| zeroshot (baseline) | zero-shot |" in table and "| sft-dpo | SFT+DPO |" in table
    assert "train hours include the SFT stage (sft/seed-0)" in table  # each seed of SFT+DPO continued its SFT seed
    assert any("image/png" in output.get("data", {}) for output in outputs)
