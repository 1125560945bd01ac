"""The knowledge quickstart's runs, question by question, from their predictions.jsonl:

- for the held-out questions (runs/knowledge/handbook): accuracy on questions about products whose facts were in
  the training questions (asked in a new phrasing), and on products found only in the handbook;
- for the questions whose answer changed (runs/knowledge/updated): how many each run answered with the new fact,
  and how many with the old one (the stale answer is among the choices).

    python examples/knowledge_breakdown.py runs/knowledge/handbook
    python examples/knowledge_breakdown.py runs/knowledge/updated
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_handbook import TRAINED, _slug  # noqa: E402

DATA = Path(__file__).parent / "data" / "handbook"
TRAINED_SOURCES = {f"products/{_slug(product)}.md" for product in TRAINED}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def _runs(folder: str, count: int):
    for run in sorted(p for p in Path(folder).iterdir() if (p / "predictions.jsonl").is_file()):
        predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
        if len(predictions) == count:  # a run on all of the rows, not a subset
            yield run.name, predictions


def main(folder: str) -> None:
    test, updated = _rows("test.jsonl"), _rows("updated.jsonl")
    if "updated" in Path(folder).name:
        old = {row["prompt"]: row["completion"] for row in test}
        print(f"| run | new answer ({len(updated)}) | old answer | questions on trained facts answered old |")
        print("|---|---|---|---|")
        for name, predictions in _runs(folder, len(updated)):
            stale = [p["prediction"] == old[row["prompt"]] for row, p in zip(updated, predictions)]
            trained_stale = sum(s for s, row in zip(stale, updated) if row["source"] in TRAINED_SOURCES)
            trained = sum(row["source"] in TRAINED_SOURCES for row in updated)
            print(
                f"| {name} | {sum(p['correct'] for p in predictions)} | {sum(stale)} | {trained_stale} of {trained} |"
            )
        return
    print("| run | facts in training (40) | only in the handbook (24) |\n|---|---|---|")
    for name, predictions in _runs(folder, len(test)):
        kinds: dict[bool, list[bool]] = {True: [], False: []}
        for row, prediction in zip(test, predictions):
            kinds[row["source"] in TRAINED_SOURCES].append(prediction["correct"])
        trained, handbook_only = (sum(kinds[k]) / len(kinds[k]) for k in (True, False))
        print(f"| {name} | {trained:.3f} | {handbook_only:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/knowledge/handbook")
