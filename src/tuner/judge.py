"""The judge of free-form answers (`eval.metrics: [llm_judge]`, `eval.judge`): a model, local or served, asked with
the recipe's rubric whether each reply says what its gold answer says, its yes or no the row's score; every verdict
kept in the cache by judge, rubric and row, so a rerun asks nothing again; and how often the judge agrees with the
reference metrics scored beside it, so a team sees whether to trust it.

The verdict is read as the choice task reads an answer: the judge's log-likelihood of "yes" against "no" (either
capitalisation) after the rubric, as its chat template renders it; a served judge without prompt log-probabilities
replies, and the reply's first word decides (a reply that is neither counts as no, and is counted).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from .endpoint import Endpoint
from .files import cache_dir, write_json
from .likelihood import loglikelihoods
from .models import load_model
from .rendering import render_prompt

YES, NO = ("yes", "Yes"), ("no", "No")
# A reply of a served judge is a word or two; a longer one is still read by its first word.
REPLY_TOKENS = 8


def identity(judge_config) -> dict[str, Any]:
    """What makes two judges the same judge: its model section (less the key's variable) and rubric."""
    model = judge_config.model.model_dump(mode="json")
    if model.get("endpoint"):
        model["endpoint"] = {k: v for k, v in model["endpoint"].items() if k not in ("api_key_env", "cache")}
    return {"model": model, "rubric": judge_config.rubric}


def _key(judge: dict[str, Any], question: str, gold: str, reply: str) -> str:
    text = json.dumps([judge, question, gold, reply], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached(key: str) -> Path:
    return cache_dir() / "judge" / key[:2] / f"{key}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _prompt(rubric: str, question: str, gold: str, reply: str, tokenizer) -> str:
    text = rubric.format(question=question, gold=gold, reply=reply)
    if tokenizer.chat_template:
        return render_prompt([{"role": "user", "content": text}], tokenizer)
    return render_prompt(f"{text}\nAnswer:", tokenizer)


def _by_likelihood(model, tokenizer, contexts: list[str], batch_size: int, chat: bool) -> list[dict[str, Any]]:
    """Each context's verdict from the log-likelihoods of yes and no after it."""
    words = [*YES, *NO]
    pairs = [(context, word if chat else f" {word}") for context in contexts for word in words]
    if isinstance(model, Endpoint):  # a served judge: the completions API's prompt log-probabilities
        scores = model.loglikelihoods(pairs)
    else:
        scores = loglikelihoods(model, tokenizer, pairs, batch_size=batch_size)
    verdicts = []
    for start in range(0, len(scores), len(words)):
        yes, no = max(scores[start : start + 2]), max(scores[start + 2 : start + 4])
        verdicts.append({"verdict": yes > no, "p_yes": round(1 / (1 + math.exp(no - yes)), 4)})
    return verdicts


def _by_reply(endpoint, questions: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Each verdict from a served judge's reply: its first word, yes or no."""
    texts, _, _ = endpoint.chat(questions, REPLY_TOKENS)
    verdicts = []
    for text in texts:
        word = (re.findall(r"[a-z]+", text.lower()) or [""])[0]
        verdicts.append({"verdict": word == "yes", "reply": text, "unclear": word not in ("yes", "no")})
    return verdicts


def grade(judge_config, questions: list[str], golds: list[str], replies: list[str], source: str) -> dict[str, Any]:
    """The judge's verdict on each reply (1.0 yes, 0.0 no) with what it cost: rows asked, rows read from the cache,
    the share of unclear replies of a served judge."""
    judge = identity(judge_config)
    keys = [_key(judge, q, g, r) for q, g, r in zip(questions, golds, replies)]
    found = {key: _read(_cached(key)) for key in keys} if judge_config.cache else {}
    missing = [n for n, key in enumerate(keys) if not found.get(key)]
    if missing:
        loaded = load_model(judge_config.model, f"{source} (eval.judge)")
        model, tokenizer = loaded.model, loaded.tokenizer
        served = judge_config.model.endpoint is not None
        if served and not model.returns_prompt_logprobs():
            texts = [
                judge_config.rubric.format(question=questions[n], gold=golds[n], reply=replies[n]) for n in missing
            ]
            verdicts = _by_reply(model, [[{"role": "user", "content": text}] for text in texts])
        else:
            contexts = [_prompt(judge_config.rubric, questions[n], golds[n], replies[n], tokenizer) for n in missing]
            verdicts = _by_likelihood(model, tokenizer, contexts, 8, bool(tokenizer.chat_template))
        for number, verdict in zip(missing, verdicts):
            found[keys[number]] = verdict
            if judge_config.cache:
                _cached(keys[number]).parent.mkdir(parents=True, exist_ok=True)
                write_json(_cached(keys[number]), verdict)
        del loaded, model
    verdicts = [found[key] for key in keys]
    return {
        "scores": [1.0 if verdict["verdict"] else 0.0 for verdict in verdicts],
        "verdicts": verdicts,
        "asked": len(missing),
        "cached": len(keys) - len(missing),
        "unclear_share": round(sum(bool(v.get("unclear")) for v in verdicts) / max(1, len(verdicts)), 4),
    }


def agreement(judged: list[float], references: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
    """How often the judge's verdicts match each reference metric read as right or wrong (a score of 0.5 or more is
    right, as the run's accuracy reads it): the share of rows alike and Cohen's kappa (agreement beyond what the two
    rates alone would give; None when either says the same of every row)."""
    found = {}
    for name, values in references.items():
        judge_says = [value >= 0.5 for value in judged]
        metric_says = [value >= 0.5 for value in values]
        rows = len(values)
        same = sum(a == b for a, b in zip(judge_says, metric_says)) / rows
        p_judge, p_metric = sum(judge_says) / rows, sum(metric_says) / rows
        chance = p_judge * p_metric + (1 - p_judge) * (1 - p_metric)
        kappa = None if chance >= 1 else round((same - chance) / (1 - chance), 4)
        found[name] = {"agreement": round(same, 4), "kappa": kappa}
    return found
