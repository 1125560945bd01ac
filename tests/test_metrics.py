"""Free-form answer metrics (`eval.metrics`) on the trial's replies: the right answer in a sentence scores, a wrong
one does not, numbers are read as numbers."""

from __future__ import annotations

import pytest

from tuner import metrics

# The new user's trial (../shared/reviews/new-user-trial-2026-12.md, point 2): gold answers and the RAG run's replies.
RIGHT = [
    ("3", "The answer to this question is: 3"),
    ("Ingrid Solvang", "The Platform team is led by Ingrid Solvang."),
    ("Fjord", "The data warehouse is called Fjord."),
    ("22:00", "The answer to this question is: After 22:00."),
]
WRONG = [
    ("3", "There are 13 teams."),
    ("Ingrid Solvang", "The Platform team is led by Ingrid Larsen."),
    ("Fjord", "The data warehouse is called Lake."),
    ("-3", "The temperature was 3 degrees."),
    ("3.5", "Version 35 shipped."),
]


def test_the_default_metric_scores_a_right_answer_in_a_sentence_and_not_a_wrong_one():
    names, default = metrics.chosen(None, None)
    assert default and names[0] == "contains"
    golds, replies = zip(*(RIGHT + WRONG))
    answers = [reply.splitlines()[0] for reply in replies]
    primary = metrics.score(names, answers, list(replies), list(golds))[names[0]]
    assert primary == [1.0] * len(RIGHT) + [0.0] * len(WRONG)
    # Exact match, the only metric before, gives every one of these zero.
    assert metrics.score(["exact_match"], answers, list(replies), list(golds))["exact_match"] == [0.0] * 9


def test_an_answer_regex_puts_exact_match_first():
    names, default = metrics.chosen(None, r"Answer: (.*)")
    assert default and names[0] == "exact_match"
    assert metrics.chosen(["token_f1", "contains", "token_f1"], None) == (["token_f1", "contains"], False)


def test_token_f1_and_exact_match_follow_squad():
    assert metrics.exact_match("The Fjord.", "fjord") == 1.0
    assert metrics.token_f1("led by Ingrid Solvang", "Ingrid Solvang") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert metrics.token_f1("13", "3") == 0.0
    assert metrics.exact_match("-3", "3") == 0.0 and metrics.exact_match("1,000", "1000") == 1.0


def test_rouge_l_and_chrf_come_from_their_libraries():
    golds = ["the warehouse is called Fjord", "the warehouse is called Fjord"]
    replies = ["the data warehouse is called Fjord", "nothing alike here"]
    scores = metrics.score(["rouge_l", "chrf"], replies, replies, golds)
    assert scores["rouge_l"][0] == pytest.approx(2 * (5 / 6) * 1 / (5 / 6 + 1), abs=1e-4)
    assert scores["rouge_l"][1] == 0.0
    assert 0.5 < scores["chrf"][0] <= 1.0 and scores["chrf"][1] < 0.2


def test_semantic_similarity_uses_the_offline_embedding_model():
    golds = ["Ingrid Solvang leads the Platform team", "Ingrid Solvang leads the Platform team"]
    replies = ["The Platform team is led by Ingrid Solvang.", "The cafeteria opens at noon."]
    similar, unrelated = metrics.score(["semantic_similarity"], replies, replies, golds)["semantic_similarity"]
    assert similar > 0.8 > unrelated


def test_supported_share_reads_the_reply_in_the_passages():
    passages = "The Platform team is led by Ingrid Solvang. It runs the data warehouse, Fjord."
    assert metrics.supported_share("Ingrid Solvang leads it", passages) == pytest.approx(3 / 4)
    assert metrics.supported_share("", passages) is None
