"""Accuracy of each knowledge-quickstart run on the two kinds of held-out question: about products whose facts were
in the training questions (asked in a new phrasing), and about products found only in the handbook.

    python examples/knowledge_breakdown.py runs/knowledge/handbook
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_handbook import TRAINED, _slug  # noqa: E402

TRAINED_SOURCES = {f"products/{_slug(product)}.md" for product in TRAINED}


def main(folder: str) -> None:
    test = [json.loads(line) for line in (Path(__file__).parent / "data/handbook/test.jsonl").read_text().splitlines()]
    print("| run | facts in training (40) | only in the handbook (24) |\n|---|---|---|")
    for run in sorted(p for p in Path(folder).iterdir() if (p / "predictions.jsonl").is_file()):
        predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
        if len(predictions) != len(test):
            continue  # a run on a subset of the rows
        kinds = {True: [], False: []}
        for row, prediction in zip(test, predictions):
            kinds[row["source"] in TRAINED_SOURCES].append(prediction["correct"])
        trained, handbook_only = (sum(kinds[k]) / len(kinds[k]) for k in (True, False))
        print(f"| {run.name} | {trained:.3f} | {handbook_only:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/knowledge/handbook")
