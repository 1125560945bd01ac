"""The confusion of a classification: gold against predicted label counts, and the macro-averaged F1 over labels,
which weighs a rare label as much as a common one (accuracy alone hides a model that never predicts one)."""

from __future__ import annotations


def confusion_matrix(gold: list[str], predicted: list[str]) -> tuple[list[str], list[list[int]]]:
    """The labels (gold and predicted, sorted) and counts[gold][predicted]."""
    labels = sorted(set(gold) | set(predicted))
    where = {label: n for n, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, guess in zip(gold, predicted):
        matrix[where[truth]][where[guess]] += 1
    return labels, matrix


def macro_f1(gold: list[str], predicted: list[str]) -> float | None:
    """F1 of each label (gold or predicted), averaged with equal weight, as scikit-learn's `f1_score(average=
    "macro")`; None for no rows."""
    if not gold:
        return None
    labels, matrix = confusion_matrix(gold, predicted)
    scores = []
    for n in range(len(labels)):
        hits = matrix[n][n]
        said = sum(row[n] for row in matrix)
        true = sum(matrix[n])
        scores.append(2 * hits / (said + true) if said + true else 0.0)
    return round(sum(scores) / len(scores), 4)


def per_label_accuracy(labels: list[str], matrix: list[list[int]]) -> list[float | None]:
    """Each gold label's share of rows predicted right (recall); None for a label no row has as gold."""
    return [row[n] / sum(row) if sum(row) else None for n, row in enumerate(matrix)]
