"""The evaluator on a tiny model, against scores computed directly, one row at a time, without batching."""

from __future__ import annotations

import pytest

from tuner import TunerError
from tuner.data.rows import normalize_answer
from tuner.evaluator import evaluate, extract_answer, generate_texts
from tuner.intervals import bootstrap_interval
from tuner.likelihood import encode_pair, loglikelihoods
from tuner.schema import EvalConfig


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model.eval(), tokenizer


def direct_loglikelihood(model, tokenizer, context: str, answer: str) -> float:
    """Sum of the answer's token log-probabilities from one unpadded forward pass."""
    import torch

    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + answer, add_special_tokens=False)["input_ids"]
    answer_ids = whole[len(context_ids) :]
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(context_ids) + i - 1, t]) for i, t in enumerate(answer_ids))


PAIRS = [
    ("The weather today is", " sunny"),
    ("A much longer context that needs padding in a batch: the weather", " is sunny and warm"),
    ("The weather today is", " rainy"),
    ("Q: 2+2?\nA:", " 4"),
    ("Route this:", " billing"),
]


def test_loglikelihood_equals_the_sum_of_token_logprobs(tiny):
    model, tokenizer = tiny
    batched = loglikelihoods(model, tokenizer, PAIRS, batch_size=3)
    for (context, answer), score in zip(PAIRS, batched):
        assert score == pytest.approx(direct_loglikelihood(model, tokenizer, context, answer), abs=1e-3)


def test_choice_task_accuracy_and_predictions(tiny):
    model, tokenizer = tiny
    rows = [
        {"prompt": "Is it good? The film was great.", "label": "positive"},
        {"prompt": "Is it good? The film was bad.", "label": "negative"},
        {"prompt": "Is it good? Fine.", "label": "positive"},
    ]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=["negative", "positive"]))
    expected = []
    for row, prediction in zip(rows, result.predictions):
        scores = {c: direct_loglikelihood(model, tokenizer, row["prompt"], " " + c) for c in ("negative", "positive")}
        assert prediction["scores"] == pytest.approx(scores, abs=1e-3)
        expected.append(max(scores, key=scores.get) == row["label"])
        assert prediction["gold"] == row["label"] and prediction["prompt"] == row["prompt"]
    assert result.metrics["accuracy"] == pytest.approx(sum(expected) / 3, abs=1e-4)
    assert result.metrics["rows"] == 3 and len(result.metrics["accuracy_ci95"]) == 2
    assert result.metrics["latency_ms_per_example"] > 0 and result.metrics["phase"]["wall_seconds"] > 0


def test_chat_prompts_are_rendered_with_the_chat_template(tiny):
    model, tokenizer = tiny
    rows = [{"prompt": [{"role": "user", "content": "Which team? charged twice"}], "label": "billing"}]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=["billing", "shipping"]))
    rendered = result.predictions[0]["prompt"]
    assert rendered.endswith("<|im_start|>assistant\n") and "charged twice" in rendered
    # In chat rendering the answer follows the assistant header directly, with no joining space.
    expected = direct_loglikelihood(model, tokenizer, rendered, "billing")
    assert result.predictions[0]["scores"]["billing"] == pytest.approx(expected, abs=1e-3)


def test_gold_answer_outside_the_choices_names_the_row(tiny):
    model, tokenizer = tiny
    rows = [{"prompt": "a", "label": "x"}, {"prompt": "b", "label": "maybe"}]
    with pytest.raises(TunerError, match="eval row 1.*'maybe'"):
        evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=["x", "y"]))


def test_empty_eval_split(tiny):
    with pytest.raises(TunerError, match="empty"):
        evaluate(*tiny, [], EvalConfig(task="choice", choices=["x"]))


def test_generate_exact_match(tiny):
    model, tokenizer = tiny
    prompts = ["Say something:", "Another prompt here:"]
    texts, count, _ = generate_texts(model, tokenizer, prompts, max_new_tokens=4)
    assert count > 0
    # Gold of row 0 is what the model generates; row 1's gold is something it does not.
    rows = [
        {"prompt": prompts[0], "completion": " " + extract_answer(texts[0], None)},
        {"prompt": prompts[1], "completion": " certainly-not-generated"},
    ]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="generate", max_new_tokens=4))
    assert [p["correct"] for p in result.predictions] == [True, False]
    assert result.metrics["accuracy"] == 0.5 and result.metrics["generated_tokens_per_second"] > 0


def test_generate_scores_every_metric_and_says_which_decides_and_what_was_cut(tiny, capsys):
    model, tokenizer = tiny
    prompts = ["Say something:", "Another prompt here:"]
    texts, _, cut = generate_texts(model, tokenizer, prompts, max_new_tokens=2)
    assert cut == [True, True]  # a random model does not end its reply within two tokens
    reply = extract_answer(texts[0], None)
    rows = [
        {"prompt": prompts[0], "completion": " " + reply.split()[-1]},  # the reply's last word: contained in it
        {"prompt": prompts[1], "completion": " certainly-not-generated"},
    ]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="generate", max_new_tokens=2))
    said = capsys.readouterr().out
    assert "free-form answers scored by contains (the default; exact_match, token_f1 beside it)" in said
    assert "warning: 2 of 2 replies stopped at `eval.max_new_tokens` (2)" in said
    scores = result.metrics
    assert scores["metric"] == "contains" and scores["metric_is_default"] and scores["truncated_share"] == 1.0
    assert scores["accuracy"] == scores["metrics"]["contains"]["mean"] == 0.5
    assert set(scores["metrics"]) == {"contains", "exact_match", "token_f1"}
    low, high = scores["metrics"]["token_f1"]["ci95"]
    assert 0 <= low < scores["metrics"]["token_f1"]["mean"] < high <= 1
    first, second = result.predictions
    assert first["metrics"]["contains"] == 1.0 and first["truncated"] and second["score"] == 0.0
    chosen = evaluate(
        model, tokenizer, rows, EvalConfig(task="generate", max_new_tokens=2, metrics=["token_f1", "chrf"])
    )
    assert chosen.metrics["metric"] == "token_f1" and not chosen.metrics["metric_is_default"]
    assert chosen.metrics["accuracy"] == chosen.metrics["metrics"]["token_f1"]["mean"]
    assert "the default" not in capsys.readouterr().out


def test_answer_extraction_and_normalisation():
    import re

    assert extract_answer("\n  Billing.\nmore text", None) == "Billing."
    assert extract_answer("The team is: shipping!", re.compile(r"team is: (\w+)")) == "shipping"
    assert extract_answer("nothing here", re.compile(r"team: (\w+)")) == ""
    assert normalize_answer("  The  Billing-Team. ") == "the billingteam"


def test_numbers_keep_their_sign_point_and_fraction_bar_in_exact_match_and_the_grpo_reward():
    # Review M5: punctuation stripped from numbers made "-3" equal "3", "3.5" equal "35" and "1/2" equal "12".
    from tuner.rewards import _exact_match

    for one, other in (("-3", "3"), ("3.5", "35"), ("1/2", "12")):
        assert normalize_answer(one) != normalize_answer(other)
    assert normalize_answer("The answer is 33.") == "the answer is 33" and normalize_answer("1,000") == "1000"
    reward = _exact_match(None, None)
    assert reward(None, ["-3", "35", "3.5."], ["3", "3.5", "3.5"]) == [0.0, 0.0, 1.0]


def test_preference_task(tiny):
    model, tokenizer = tiny
    # Plain-text answers are scored exactly as the trainer reads prompt + answer: with the space the data loader
    # writes before them, or none where the row has none.
    rows = [
        {"prompt": "Answer briefly: 2+2?", "chosen": " 4", "rejected": " It is four, I think, maybe."},
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Paris."},
    ]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="preference"))
    wins, per_token = [], []
    for row, prediction in zip(rows, result.predictions):
        chosen = direct_loglikelihood(model, tokenizer, row["prompt"], row["chosen"])
        rejected = direct_loglikelihood(model, tokenizer, row["prompt"], row["rejected"])
        assert prediction["scores"] == pytest.approx({"chosen": chosen, "rejected": rejected}, abs=1e-3)
        wins.append(chosen > rejected)
        lengths = [len(encode_pair(tokenizer, row["prompt"], row[side])[1]) for side in ("chosen", "rejected")]
        per_token.append(chosen / lengths[0] > rejected / lengths[1])
    assert result.metrics["accuracy"] == sum(wins) / 2
    # Per token: the long rejected answer is no longer penalised for its length alone.
    assert result.metrics["accuracy_length_normalized"] == sum(per_token) / 2
    assert [p["correct_length_normalized"] for p in result.predictions] == per_token


def test_bootstrap_interval():
    assert bootstrap_interval([True] * 20) == [1.0, 1.0]
    low, high = bootstrap_interval([True, False] * 50)
    assert low < 0.5 < high and high - low < 0.25


def test_bad_regex_is_a_recipe_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="regular expression"):
        EvalConfig(task="generate", answer_regex="team: (")


INTENTS = [
    "card_arrival",
    "card_delivery_estimate",
    "card_not_working",
    "card_linking",
    "cash_withdrawal_charge",
    "cash_withdrawal_not_recognised",
    "exchange_rate",
    "exchange_via_app",
    "top_up_failed",
    "top_up_limits",
    "transfer_not_received_by_recipient",
    "pin_blocked",
]


def test_many_labels_sharing_prefixes_score_as_each_alone(tiny):
    # Labels that share their first tokens are scored through one token trie per context: every score equals an
    # unbatched forward pass over the context and that label alone.
    model, tokenizer = tiny
    contexts = ["Which intent? My card has not arrived yet.\nIntent:", "Which intent? Why was I charged at the ATM?"]
    pairs = [(context, " " + label) for context in contexts for label in INTENTS]
    scores = loglikelihoods(model, tokenizer, pairs, batch_size=2)
    for (context, answer), score in zip(pairs, scores):
        assert score == pytest.approx(direct_loglikelihood(model, tokenizer, context, answer), abs=1e-3)


def test_a_trie_split_across_passes_scores_the_same(tiny, monkeypatch):
    import tuner.likelihood as module

    model, tokenizer = tiny
    pairs = [("Which intent? My card has not arrived yet.", " " + label) for label in INTENTS] + PAIRS
    whole = loglikelihoods(model, tokenizer, pairs, batch_size=8)
    monkeypatch.setattr(module, "TOKEN_BUDGET", 3)  # a few nodes per pass: ancestors sit in earlier passes' cache
    split = loglikelihoods(model, tokenizer, pairs, batch_size=2)
    assert split == pytest.approx(whole, abs=1e-4)


def test_the_prefix_all_contexts_share_is_fed_once(tiny):
    # Five worked examples before every question: their tokens go through the model once for the whole call, and
    # every answer still scores as an unbatched forward pass over its whole context.
    model, tokenizer = tiny
    shots = "".join(
        f"Review: {text}\nSentiment: {label}\n\n"
        for text, label in [
            ("A fine film.", "positive"),
            ("Dull.", "negative"),
            ("Loved every minute of it.", "positive"),
            ("The plot made no sense at all.", "negative"),
            ("Great cast.", "positive"),
        ]
    )
    questions = ["What a waste of time.", "Charming and warm.", "I left early.", "A masterpiece, truly a joy to watch."]
    pairs = [(f"{shots}Review: {q}\nSentiment:", f" {label}") for q in questions for label in ("negative", "positive")]
    fed = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: fed.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    try:
        scores = loglikelihoods(model, tokenizer, pairs, batch_size=2)
    finally:
        hook.remove()
    for (context, answer), score in zip(pairs, scores):
        assert score == pytest.approx(direct_loglikelihood(model, tokenizer, context, answer), abs=1e-3)
    shot_tokens = len(tokenizer(shots, add_special_tokens=False)["input_ids"])
    assert shot_tokens > 40 and sum(fed) < 2 * shot_tokens  # each of the 4 contexts alone would feed them again


def test_no_pairs_score_to_no_scores(tiny):
    assert loglikelihoods(*tiny, [], batch_size=4) == []


def test_each_distinct_answer_prefix_is_fed_once():
    from tuner.likelihood import _trie

    # card_arrival = [5, 6, 7], card_delivery = [5, 6, 8, 9], card = [5]: nodes are the prefixes [5], [5, 6] and
    # [5, 6, 8], each once; a single-token answer needs no node.
    trie = _trie([(0, [5, 6, 7]), (1, [5, 6, 8, 9]), (2, [5])])
    assert trie.tokens == [5, 6, 8] and trie.parents == [-1, 0, 1] and trie.depths == [1, 2, 3]
    assert dict(trie.answers) == {0: [(0, 5), (1, 6), (2, 7)], 1: [(0, 5), (1, 6), (2, 8), (3, 9)], 2: [(0, 5)]}


def test_choice_predictions_carry_the_top_labels_with_probabilities(tiny):
    import math

    model, tokenizer = tiny
    rows = [{"prompt": "Which intent? My card has not arrived yet.", "label": "card_arrival"}]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=INTENTS))
    prediction = result.predictions[0]
    top = prediction["top"]
    assert len(top) == 5 and top[0]["label"] == prediction["prediction"]
    probabilities = [entry["probability"] for entry in top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    normaliser = sum(math.exp(value) for value in prediction["scores"].values())
    assert probabilities[0] == pytest.approx(math.exp(prediction["scores"][top[0]["label"]]) / normaliser, abs=1e-3)


def test_a_many_label_evaluation_shows_a_moving_progress_bar(tiny, monkeypatch, capsys):
    import tuner.progress

    model, tokenizer = tiny
    monkeypatch.setattr(tuner.progress, "interactive", lambda: True)  # as on a terminal
    monkeypatch.setattr(tuner.progress.Progress, "redraw_seconds", 0)  # every update, however fast the model
    rows = [
        {"prompt": f"Which intent? Message {n} about my card.", "label": INTENTS[n % len(INTENTS)]} for n in range(6)
    ]
    evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=INTENTS, batch_size=2))
    drawn = capsys.readouterr().err
    counts = [int(match) for match in __import__("re").findall(r"(\d)/6 \[", drawn)]
    assert "tuner: scoring (choice)" in drawn and "rows/s" in drawn
    assert counts[0] == 0 and counts[-1] == 6 and len(set(counts)) >= 3  # it moved, pass by pass


def test_progress_is_one_line_off_a_terminal_and_silent_when_quiet(tiny, monkeypatch, capsys):
    model, tokenizer = tiny
    rows = [{"prompt": "Is it good? Fine.", "label": "positive"}]
    evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=["negative", "positive"]))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tuner:")]
    assert len(lines) == 1 and lines[0].startswith("tuner: scoring (choice): 1 of 1 rows in ")
    monkeypatch.setenv("TUNER_QUIET", "1")
    evaluate(model, tokenizer, rows, EvalConfig(task="choice", choices=["negative", "positive"]))
    assert "tuner:" not in capsys.readouterr().err


@pytest.mark.parametrize("task", ["choice", "generate"])
def test_every_prediction_carries_its_share_of_the_scoring_time(tiny, task):
    model, tokenizer = tiny
    rows = [{"prompt": f"Is it good? Review {n}: {'great ' * n}", "label": "positive"} for n in range(1, 8)]
    result = evaluate(
        model, tokenizer, rows, EvalConfig(task=task, choices=["negative", "positive"], batch_size=3, max_new_tokens=3)
    )
    shares = [p["latency_ms"] for p in result.predictions]
    assert all(share > 0 for share in shares)
    # Batches of three: the rows of one batch share its time evenly, and all rows add up to the scoring time.
    assert len(set(shares)) <= 3
    assert sum(shares) / 1000 == pytest.approx(result.metrics["phase"]["wall_seconds"], rel=0.25)


def test_plain_text_is_scored_after_the_bos_token_a_tokenizer_adds(tiny):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from tuner.rendering import render_prompt

    model, base = tiny
    tokenizer = AutoTokenizer.from_pretrained(base.name_or_path)
    tokenizer.bos_token = "<|im_start|>"
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", bos)]
    )
    assert tokenizer("a")["input_ids"][0] == bos  # as Llama's tokenizer does, and TRL trains with it
    assert render_prompt("Is it good?", tokenizer) == "<|im_start|>Is it good?"
    assert render_prompt("Is it good?", base) == "Is it good?"  # SmolLM2 adds none
    row = {"prompt": "Is it good? The film was great.", "label": "positive"}
    result = evaluate(model, tokenizer, [row], EvalConfig(task="choice", choices=["negative", "positive"]))
    expected = direct_loglikelihood(model, tokenizer, "<|im_start|>" + row["prompt"], " positive")
    assert result.predictions[0]["scores"]["positive"] == pytest.approx(expected, abs=1e-3)
    assert result.predictions[0]["scores"]["positive"] != pytest.approx(
        direct_loglikelihood(model, tokenizer, row["prompt"], " positive"), abs=1e-3
    )
