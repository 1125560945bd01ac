"""Every case of the bad-input catalogue (tests/bad_inputs.py, docs/bad-input.md): `tuner validate` answers with
one paragraph that says what is wrong, exit code 2, and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_inputs import CASES, DATA, GOOD_ROWS, RECIPES, _jsonl, run_case
from helpers import OFFLINE_MODEL, ROOT


def test_the_catalogue_is_large_enough():
    assert len(RECIPES) >= 30 and len(DATA) >= 15


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("good")
    (folder / "train.jsonl").write_bytes(_jsonl(GOOD_ROWS))
    (folder / "test.jsonl").write_bytes(_jsonl(GOOD_ROWS[:5]))
    return folder / "train.jsonl", folder / "test.jsonl"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case, good_files, tmp_path):
    code, message, stderr = run_case(case, tmp_path / case.name, *good_files, OFFLINE_MODEL)
    assert code == 2, stderr
    assert message.startswith("error: ") and "Traceback" not in stderr
    assert sum(line.startswith("error: ") for line in stderr.splitlines()) == 1, stderr  # one paragraph, said once
    for fragment in case.expect:
        assert fragment in message, (fragment, message)


def test_the_docs_list_every_case():
    text = (ROOT / "docs" / "bad-input.md").read_text(encoding="utf-8")
    for case in CASES:
        assert f"`{case.name}`" in text, case.name


def test_every_page_that_counts_the_catalogue_gives_its_size():
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    counts = {page.name: int(n) for page in pages for n in re.findall(r"\b(\d+) cases\b", page.read_text("utf-8"))}
    assert counts and set(counts.values()) == {len(CASES)}, counts
