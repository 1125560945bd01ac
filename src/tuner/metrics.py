"""Metrics of free-form answers (`task: generate`): how close each reply is to its gold answer, one score in [0, 1] per
row and metric, chosen per recipe in `eval.metrics` (the first is the primary one, the run's accuracy and the
verdict's).

- `exact_match`: the extracted answer (`eval.answer_regex`'s group, else the reply's first line) equals the gold
  answer after SQuAD's normalisation (lower case, no punctuation or articles, numbers read as numbers: `-3` is not
  `3`, `3.5` not `35`).
- `contains`: the gold answer appears in the reply as a whole phrase, after the same normalisation ("The Platform
  team is led by Ingrid Solvang." contains "Ingrid Solvang"; "13" does not contain "3").
- `token_f1`: SQuAD's token F1 of reply and gold answer.
- `rouge_l`: ROUGE-L F-measure (Google's `rouge-score`, the implementation `evaluate`'s rouge wraps; `evaluate`
  itself fetches its metric scripts from the Hub, which an offline machine cannot reach).
- `chrf`: chrF (sacrebleu's `sentence_chrf`), scaled to [0, 1].
- `semantic_similarity`: cosine similarity of reply and gold answer under the offline embedding model dense retrieval
  uses (all-MiniLM-L6-v2), below zero counted as zero.

Every metric but exact match reads the whole reply (the regex's answer where `eval.answer_regex` is set), with a
reasoning block (`<think>`) removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from .data.rows import normalize_answer
from .embedder import DEFAULT, load_embedder

ARTICLES = {"a", "an", "the"}
# When a recipe names none: whether the gold answer is in the reply decides, as a reader checks a free-form answer;
# exact match and token F1 beside it. With an `answer_regex`, the extraction was asked for, so exact match leads.
DEFAULT_METRICS = ("contains", "exact_match", "token_f1")
DEFAULT_WITH_REGEX = ("exact_match", "contains", "token_f1")


def tokens(text: str) -> list[str]:
    """SQuAD's normalisation as tokens: `normalize_answer` (numbers kept whole) without the articles."""
    return [token for token in normalize_answer(text).split() if token not in ARTICLES]


def exact_match(answer: str, gold: str) -> float:
    return float(tokens(answer) == tokens(gold))


def contains(reply: str, gold: str) -> float:
    wanted, found = tokens(gold), tokens(reply)
    if not wanted:
        return float(not found)
    width = len(wanted)
    return float(any(found[start : start + width] == wanted for start in range(len(found) - width + 1)))


def token_f1(reply: str, gold: str) -> float:
    predicted, wanted = tokens(reply), tokens(gold)
    if not predicted or not wanted:
        return float(predicted == wanted)
    shared = sum((Counter(predicted) & Counter(wanted)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(wanted)
    return 2 * precision * recall / (precision + recall)


def _rouge_l(replies: list[str], golds: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return [scorer.score(gold, reply)["rougeL"].fmeasure for reply, gold in zip(replies, golds)]


def _chrf(replies: list[str], golds: list[str]) -> list[float]:
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return [chrf.sentence_score(reply, [gold]).score / 100 for reply, gold in zip(replies, golds)]


def _semantic_similarity(replies: list[str], golds: list[str]) -> list[float]:
    embedder = load_embedder(DEFAULT, "<eval.metrics semantic_similarity>")
    vectors = embedder.encode(replies + golds)
    count = len(replies)
    return [max(0.0, float(vectors[n] @ vectors[count + n])) for n in range(count)]


def _per_row(function: Callable[[str, str], float]) -> Callable[[list[str], list[str]], list[float]]:
    return lambda replies, golds: [function(reply, gold) for reply, gold in zip(replies, golds)]


# name -> scores of replies against gold answers (exact match is given the extracted answers as its replies).
METRICS: dict[str, Callable[[list[str], list[str]], list[float]]] = {
    "exact_match": _per_row(exact_match),
    "contains": _per_row(contains),
    "token_f1": _per_row(token_f1),
    "rouge_l": _rouge_l,
    "chrf": _chrf,
    "semantic_similarity": _semantic_similarity,
}


def chosen(names: list[str] | None, answer_regex: str | None) -> tuple[list[str], bool]:
    """The metrics a generate run reports, primary first, and whether they are the default (no `eval.metrics`)."""
    if names:
        return list(dict.fromkeys(names)), False
    return list(DEFAULT_WITH_REGEX if answer_regex else DEFAULT_METRICS), True


def score(names: list[str], answers: list[str], replies: list[str], golds: list[str]) -> dict[str, list[float]]:
    """Each named metric's score per row, rounded to four places: exact match of the extracted `answers`, the
    others of the whole `replies`, against the `golds`."""
    return {
        name: [round(value, 4) for value in METRICS[name](answers if name == "exact_match" else replies, golds)]
        for name in names
    }


def supported_share(reply: str, passages: str) -> float | None:
    """The share of a reply's words (normalised as for the metrics) that occur in the passages it was given: 1.0
    when every word of it can be read there, None for an empty reply."""
    words, available = tokens(reply), set(tokens(passages))
    if not words:
        return None
    return sum(word in available for word in words) / len(words)
