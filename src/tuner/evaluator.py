"""One evaluator for every method: the same rows, prompt rendering, answer extraction and metric for all.

Tasks:
- `choice`: log-likelihood of each allowed answer after the prompt; accuracy and length-normalised accuracy.
- `generate`: greedy generation to EOS / end of turn, each reply scored by the metrics of `metrics.py` (`eval.metrics`,
  the first the accuracy; default: the gold answer contained in the reply), the share cut at `eval.max_new_tokens`.
- `preference`: share of pairs where `chosen` gets a higher log-likelihood than `rejected` (and, as
  `accuracy_length_normalized`, a higher mean log-probability per token, which does not favour the shorter answer).

Every accuracy comes with its 95% Wilson interval and row count; latency is measured on the same rows, with a bootstrap
interval over them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .accounting import phase
from .confusion import macro_f1
from .data.rows import answer_text, eval_identity, extract_answer, prompt_text
from .endpoint import Endpoint
from .errors import TunerError
from .families import END_OF_TURN, without_reasoning
from .hardware import device_kind, is_out_of_memory
from .intervals import bootstrap_interval, score_interval
from .judge import agreement, grade
from .likelihood import encode_pair, loglikelihoods, model_device
from .metrics import DEFAULT_METRICS, chosen, score
from .progress import Progress, RowClock
from .rendering import continuation, render_prompt

# The share of replies cut at `eval.max_new_tokens` above which a run says so.
TRUNCATED_WARNING = 0.1
# The most tokens a served model's reply to a choice question is given: the choice is named at its start or not at all.
CHOICE_REPLY_TOKENS = 16


@dataclass
class EvalResult:
    """Scores of one evaluation: `metrics` (accuracy, interval, rows, latency, the phase's accounting) and one
    prediction per row."""

    task: str
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)


def stop_token_ids(tokenizer) -> list[int]:
    """The end-of-text token and every end-of-turn token of `families.END_OF_TURN` the tokenizer has."""
    ids = {tokenizer.eos_token_id}
    for token in END_OF_TURN:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_done: Callable[[list[int]], None] | None = None,
) -> tuple[list[str], int, list[bool]]:
    """Greedy continuations of plain-text prompts (stopping at EOS / end of turn), the generated token count, and
    for each prompt whether its continuation stopped at `max_new_tokens` rather than ending; `on_done` hears which
    prompts (by index) each batch finished."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    truncated = [False] * len(prompts)
    generated_tokens = 0
    device = model_device(model)
    stops = stop_token_ids(tokenizer)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                encoded = tokenizer(
                    [prompts[i] for i in indices], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                new = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=tokenizer.pad_token_id,
                )[:, encoded["input_ids"].shape[1] :]
                for i, tokens in zip(indices, new.tolist()):
                    cut = next((n for n, t in enumerate(tokens) if t in stops), len(tokens))
                    truncated[i] = cut == len(tokens) == max_new_tokens
                    generated_tokens += cut
                    outputs[i] = tokenizer.decode(tokens[:cut], skip_special_tokens=True)
                if on_done is not None:
                    on_done(indices)
    finally:
        tokenizer.padding_side = side
    return outputs, generated_tokens, truncated


# ---- tasks ----


def rows_finished(pair_rows: list[int], clock: RowClock) -> Callable[[list[int]], None]:
    """A callback for `loglikelihoods` that counts a row done once all of its pairs are scored."""
    left: dict[int, int] = {}
    for row in pair_rows:
        left[row] = left.get(row, 0) + 1

    def scored(pairs: list[int]) -> None:
        finished = []
        for pair in pairs:
            left[pair_rows[pair]] -= 1
            if left[pair_rows[pair]] == 0:
                finished.append(pair_rows[pair])
        clock.finished(finished)

    return scored


def _top(choices: list[str], scores: list[float], count: int = 5) -> list[dict[str, Any]]:
    """The `count` most likely choices with their probabilities, normalised over the choices."""
    import math

    best = max(scores)
    weights = [math.exp(score - best) for score in scores]
    total = sum(weights)
    ranked = sorted(range(len(choices)), key=lambda n: -scores[n])[:count]
    return [{"label": choices[n], "probability": round(weights[n] / total, 4)} for n in ranked]


def _row_choices(row: dict[str, Any], eval_config, label_names: list[str] | None) -> list[str]:
    choices = row.get("choices") or eval_config.choices or label_names
    if not choices:
        raise TunerError(
            "eval.task choice needs the allowed answers, and the rows have no labels to take them "
            "from: set `eval.choices`, `data.label_names`, or `data.choices_column`."
        )
    return list(choices)


def check_rows(rows, eval_config, label_names: list[str] | None = None, source: str | None = None) -> None:
    """Refuse eval rows the task cannot score (an empty split, a gold answer outside the choices) before any model
    loads; `source` (the recipe file) opens the message."""
    try:
        _check_rows(list(rows), eval_config, label_names)
    except TunerError as error:
        raise TunerError(f"{source}: {error}" if source else str(error)) from None


def _check_rows(rows, eval_config, label_names: list[str] | None) -> None:
    if not rows:
        raise TunerError("the eval split is empty: give `data.eval` rows or a larger `data.eval_fraction`.")
    if eval_config.task != "choice":
        return
    for number, row in enumerate(rows):
        choices, gold = _row_choices(row, eval_config, label_names), answer_text(row)
        if gold not in choices:
            raise TunerError(
                f"eval row {number}: the gold answer {gold!r} is not among the choices {choices}. Fix "
                f"the row, or add the answer to `eval.choices`."
            )


def _likelihoods(model, tokenizer, pairs, eval_config, on_scored=None) -> list[float]:
    """Log-likelihoods of (context, answer) pairs from local weights or from a served model's prompt
    log-probabilities."""
    if isinstance(model, Endpoint):
        return model.loglikelihoods(pairs, on_scored)
    return loglikelihoods(model, tokenizer, pairs, batch_size=eval_config.batch_size, on_scored=on_scored)


def matched_choice(reply: str, choices: list[str]) -> str | None:
    """The choice a free reply gives: the one it starts with, else the one named first in it (case and
    punctuation aside); None when it names none."""

    def words(text: str) -> str:
        return " " + " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split()) + " "

    said = words(reply)
    longest_first = sorted(choices, key=len, reverse=True)  # "account manager" before "account"
    starting = [choice for choice in longest_first if said.startswith(words(choice))]
    if starting:
        return starting[0]
    named = [(said.find(words(choice)), choice) for choice in longest_first if words(choice) in said]
    return min(named, key=lambda found: found[0])[1] if named else None


def _choice_by_generation(model, tokenizer, rows, eval_config, label_names, clock):
    """Choice on a server without prompt log-probabilities: the reply to each row matched to its choices."""
    longest = min(eval_config.max_new_tokens, CHOICE_REPLY_TOKENS)
    texts, _, _ = model.chat([row["prompt"] for row in rows], longest, clock.finished)
    predictions, correct = [], []
    for number, (row, text) in enumerate(zip(rows, texts)):
        choices, gold = _row_choices(row, eval_config, label_names), answer_text(row)
        prediction = matched_choice(without_reasoning(text), choices)
        correct.append(prediction == gold)
        predictions.append(
            {
                "row": number,
                "prompt": render_prompt(row["prompt"], tokenizer, row.get("tools")),
                "gold": gold,
                "prediction": prediction,
                "generated": text,
                "correct": prediction == gold,
            }
        )
    metrics = {
        "choice_method": "generation matched to the choices",
        "unmatched_share": round(sum(p["prediction"] is None for p in predictions) / len(predictions), 4),
        "macro_f1": macro_f1([p["gold"] for p in predictions], [str(p["prediction"]) for p in predictions]),
    }
    return correct, predictions, metrics


def _choice(model, tokenizer, rows, eval_config, label_names, clock):
    if isinstance(model, Endpoint) and not model.returns_prompt_logprobs():
        return _choice_by_generation(model, tokenizer, rows, eval_config, label_names, clock)
    contexts = [render_prompt(row["prompt"], tokenizer, row.get("tools")) for row in rows]
    pairs, spans, pair_rows = [], [], []
    for number, (row, context) in enumerate(zip(rows, contexts)):
        choices, gold = _row_choices(row, eval_config, label_names), answer_text(row)
        spans.append((len(pairs), choices, gold))
        pairs.extend((context, continuation(row, choice)) for choice in choices)
        pair_rows.extend([number] * len(choices))
    scores = _likelihoods(model, tokenizer, pairs, eval_config, rows_finished(pair_rows, clock))
    predictions, correct, correct_norm = [], [], []
    for number, ((offset, choices, gold), context) in enumerate(zip(spans, contexts)):
        lls = scores[offset : offset + len(choices)]
        # Normalised by the answer's length in bytes, as lm-evaluation-harness's acc_norm.
        normed = [ll / max(1, len(continuation(rows[number], c).encode())) for ll, c in zip(lls, choices)]
        prediction = choices[max(range(len(choices)), key=lls.__getitem__)]
        prediction_norm = choices[max(range(len(choices)), key=normed.__getitem__)]
        correct.append(prediction == gold)
        correct_norm.append(prediction_norm == gold)
        predictions.append(
            {
                "row": number,
                "prompt": context,
                "gold": gold,
                "prediction": prediction,
                "prediction_norm": prediction_norm,
                "correct": prediction == gold,
                "top": _top(choices, lls),
                "scores": dict(zip(choices, [round(s, 4) for s in lls])),
            }
        )
    metrics = {
        "accuracy_norm": round(sum(correct_norm) / len(correct_norm), 4),
        "accuracy_norm_ci95": score_interval(correct_norm),
        "macro_f1": macro_f1([p["gold"] for p in predictions], [p["prediction"] for p in predictions]),
        **({"choice_method": "prompt log-probabilities"} if isinstance(model, Endpoint) else {}),
    }
    return correct, predictions, metrics


def _generate(model, tokenizer, rows, eval_config, label_names, clock):
    pattern = re.compile(eval_config.answer_regex) if eval_config.answer_regex else None
    names, default = chosen(eval_config.metrics, eval_config.answer_regex)
    if default:
        print(
            f"tuner: free-form answers scored by {names[0]} (the default; {', '.join(names[1:])} beside it): "
            f"`eval.metrics` chooses"
        )
    contexts = [render_prompt(row["prompt"], tokenizer, row.get("tools")) for row in rows]
    start = time.perf_counter()
    if isinstance(model, Endpoint):  # the row's messages: the server renders them with its own template
        texts, generated, truncated = model.chat(
            [row["prompt"] for row in rows], eval_config.max_new_tokens, clock.finished
        )
    else:
        texts, generated, truncated = generate_texts(
            model, tokenizer, contexts, eval_config.max_new_tokens, eval_config.batch_size, on_done=clock.finished
        )
    seconds = time.perf_counter() - start
    # A reasoning block (a Qwen3-style `<think>`) is not the answer, however the model was tuned.
    replies = [without_reasoning(text).strip() for text in texts]
    answers = [extract_answer(reply, pattern) for reply in replies]
    golds = [answer_text(row) for row in rows]
    measured = [name for name in names if name != "llm_judge"]  # the judge grades after the timed phase
    scores = score(measured, answers, [answer if pattern else reply for answer, reply in zip(answers, replies)], golds)
    primary = scores.get(names[0], [0.0] * len(rows))  # with the judge first, its verdicts replace these
    predictions = [
        {
            "row": number,
            "prompt": context,
            "gold": gold,
            "prediction": answer,
            "generated": text,
            "correct": primary[number] >= 0.5,
            "score": primary[number],
            "metrics": {name: scores[name][number] for name in measured},
            "truncated": truncated[number],
        }
        for number, (context, gold, answer, text) in enumerate(zip(contexts, golds, answers, texts))
    ]
    return (
        primary,
        predictions,
        {
            "metric": names[0],
            "metric_is_default": default,
            "metrics": {
                name: {"mean": round(sum(values) / len(values), 4), "ci95": score_interval(values)}
                for name, values in scores.items()
            },
            "truncated_share": round(sum(truncated) / len(truncated), 4),
            "generated_tokens": generated,
            "generated_tokens_per_second": round(generated / seconds, 1) if seconds else None,
        },
    )


def _judged(eval_config, rows, predictions: list[dict[str, Any]], extra: dict[str, Any]) -> list[float] | None:
    """Metric llm_judge, graded after the evaluation's timed phase (the judge's time is not the model's latency): each
    prediction's verdict and score, the metric's mean, what the judge did and its agreement with each reference metric
    (the default ones when the judge is the only metric). Returns the rows' scores when the judge is the primary."""
    names, _ = chosen(eval_config.metrics, eval_config.answer_regex)
    if eval_config.task != "generate" or "llm_judge" not in names:
        return None
    answers = [p["prediction"] for p in predictions]
    graded = [
        p["prediction"] if eval_config.answer_regex else without_reasoning(p["generated"]).strip() for p in predictions
    ]
    golds = [p["gold"] for p in predictions]
    start = time.perf_counter()
    # The question as the data section rendered it: without few-shot examples or retrieved passages.
    asked = [prompt_text({"prompt": rows[p["row"]].get("base_prompt", rows[p["row"]]["prompt"])}) for p in predictions]
    judged = grade(eval_config.judge, asked, golds, graded, "the recipe")
    seconds = time.perf_counter() - start
    references = {name: [p["metrics"][name] for p in predictions] for name in names if name != "llm_judge"}
    values = judged["scores"]
    for prediction, value, verdict in zip(predictions, values, judged["verdicts"]):
        prediction["metrics"] = {n: value if n == "llm_judge" else prediction["metrics"][n] for n in names}
        prediction["judge"] = verdict
        if names[0] == "llm_judge":
            prediction["score"], prediction["correct"] = value, value >= 0.5
    mean = {"mean": round(sum(values) / len(values), 4), "ci95": score_interval(values)}
    extra["metrics"] = {n: mean if n == "llm_judge" else extra["metrics"][n] for n in names}
    model = eval_config.judge.model
    extra["judge"] = {
        "model": model.endpoint.model if model.endpoint else model.name_or_path,
        "served": model.endpoint is not None,
        "asked": judged["asked"],
        "cached": judged["cached"],
        "unclear_share": judged["unclear_share"],
        "seconds": round(seconds, 2),
        "agreement": agreement(values, references or score(list(DEFAULT_METRICS), answers, graded, golds)),
    }
    return values if names[0] == "llm_judge" else None


def _require(row: dict[str, Any], number: int, task: str, columns: tuple[str, ...]) -> None:
    if not set(columns) <= set(row):
        named = ", ".join(f"`{c}`" for c in columns[:-1]) + f" and `{columns[-1]}`"
        raise TunerError(f"eval row {number}: task {task} needs {named}; the row has {sorted(row)}.")


def _preference(model, tokenizer, rows, eval_config, label_names, clock):
    pairs = []
    for number, row in enumerate(rows):
        _require(row, number, "preference", ("prompt", "chosen", "rejected"))
        context = render_prompt(row["prompt"], tokenizer, row.get("tools"))
        for side in ("chosen", "rejected"):
            given = {"prompt": row["prompt"], "completion": row[side]}
            pairs.append((context, continuation(given, answer_text(given))))
    scores = _likelihoods(
        model, tokenizer, pairs, eval_config, rows_finished([n // 2 for n in range(len(pairs))], clock)
    )
    # A summed log-probability favours the shorter answer; per token, it does not.
    per_token = [score / max(1, len(encode_pair(tokenizer, *pair)[1])) for score, pair in zip(scores, pairs)]
    predictions, correct, correct_norm = [], [], []
    for number in range(len(rows)):
        chosen, rejected = scores[2 * number], scores[2 * number + 1]
        correct.append(chosen > rejected)
        correct_norm.append(per_token[2 * number] > per_token[2 * number + 1])
        predictions.append(
            {
                "row": number,
                "prompt": pairs[2 * number][0],
                "gold": "chosen",
                "prediction": "chosen" if chosen > rejected else "rejected",
                "correct": chosen > rejected,
                "correct_length_normalized": correct_norm[-1],
                "scores": {"chosen": round(chosen, 4), "rejected": round(rejected, 4)},
            }
        )
    margins = [scores[2 * n] - scores[2 * n + 1] for n in range(len(rows))]
    return (
        correct,
        predictions,
        {
            "mean_logprob_margin": round(sum(margins) / len(margins), 4),
            "accuracy_length_normalized": round(sum(correct_norm) / len(correct_norm), 4),
            "accuracy_length_normalized_ci95": score_interval(correct_norm),
        },
    )


def _feedback(model, tokenizer, rows, eval_config, label_names, clock):
    """Thumbs up/down rows (prompt, completion, desirable) scored by the tuned model's implied reward: the change its
    adapter made to the answer's log-likelihood against the base (the adapter switched off, peft's
    `disable_adapter`); a row agrees when the answer marked good became likelier, or the one marked bad less
    likely. What a KTO run can be measured on with held-out feedback alone."""
    if not hasattr(model, "disable_adapter"):
        raise TunerError(
            "task feedback scores what an adapter changed against its base, and this model has no adapter: score "
            "a run's adapter (`tuner kto`, or `tuner eval RECIPE --adapter RUN`)."
        )
    pairs = []
    for number, row in enumerate(rows):
        _require(row, number, "feedback", ("prompt", "completion", "desirable"))
        pairs.append((render_prompt(row["prompt"], tokenizer, row.get("tools")), continuation(row, answer_text(row))))
    with model.disable_adapter():
        base = loglikelihoods(model, tokenizer, pairs, batch_size=eval_config.batch_size)
    tuned = loglikelihoods(
        model,
        tokenizer,
        pairs,
        batch_size=eval_config.batch_size,
        on_scored=rows_finished(list(range(len(rows))), clock),
    )
    rewards = [after - before for after, before in zip(tuned, base)]
    correct = [(reward > 0) == bool(row["desirable"]) for reward, row in zip(rewards, rows)]
    predictions = [
        {
            "row": number,
            "prompt": pairs[number][0],
            "gold": "good" if row["desirable"] else "bad",
            "prediction": "good" if reward > 0 else "bad",
            "correct": agrees,
            "scores": {"implied_reward": round(reward, 4), "base": round(before, 4), "tuned": round(after, 4)},
        }
        for number, (row, reward, agrees, before, after) in enumerate(zip(rows, rewards, correct, base, tuned))
    ]
    good = [reward for reward, row in zip(rewards, rows) if row["desirable"]]
    bad = [reward for reward, row in zip(rewards, rows) if not row["desirable"]]
    return (
        correct,
        predictions,
        {
            "mean_implied_reward_good": round(sum(good) / len(good), 4) if good else None,
            "mean_implied_reward_bad": round(sum(bad) / len(bad), 4) if bad else None,
        },
    )


TASKS = {"choice": _choice, "generate": _generate, "preference": _preference, "feedback": _feedback}


def _with_smaller_batches_on_oom(model, tokenizer, rows, eval_config, label_names, clock):
    """Run the task; out of memory, halve `eval.batch_size` and run it again, down to batches of one."""
    import torch

    while True:
        try:
            return TASKS[eval_config.task](model, tokenizer, rows, eval_config, label_names, clock)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if device_kind() == "cuda":
                torch.cuda.empty_cache()
            if eval_config.batch_size == 1:
                raise TunerError(
                    "out of memory while scoring one row at a time: shorten the eval rows, load the "
                    "model with `model.quantize: 4bit`, or use a device with more memory."
                ) from None
            smaller = max(1, eval_config.batch_size // 2)
            print(
                f"tuner: out of memory scoring batches of {eval_config.batch_size}; retrying with {smaller} "
                f"(set `eval.batch_size: {smaller}` to start there)"
            )
            eval_config = eval_config.model_copy(update={"batch_size": smaller})
            clock.restart()


def precision_autocast(model, precision: str | None):
    """bf16/fp16 autocast when fp32 weights should compute in lower precision (tuner's CPU bf16 mode)."""
    import contextlib

    import torch

    if isinstance(model, Endpoint):
        return contextlib.nullcontext()
    parameter = next(model.parameters())
    if precision not in ("bf16", "fp16") or parameter.dtype != torch.float32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=parameter.device.type, dtype=dtype)


def scored_precision(model, precision: str | None) -> str:
    """The precision scores were computed in: the autocast's, else the weights' dtype."""
    import torch

    if isinstance(model, Endpoint):
        return "served"
    if precision in ("bf16", "fp16") and next(model.parameters()).dtype == torch.float32:
        return precision
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(model.parameters()).dtype, "fp32")


def evaluate(
    model, tokenizer, rows, eval_config, label_names: list[str] | None = None, precision: str | None = None
) -> EvalResult:
    """Score a model (base or with an adapter) on canonical rows with a recipe's `eval` section.

    `rows` is a list of dicts or a `datasets.Dataset` in tuner's column names. `precision` ("bf16", "fp16") runs
    fp32 weights under autocast, as training did. Returns accuracy with its 95% Wilson interval and row count,
    latency per example, the phase's device-hours and memory, and predictions.
    """
    rows = list(rows)
    if eval_config.task is None:
        raise TunerError("`eval.task` is not set: choose choice, generate, preference or feedback.")
    check_rows(rows, eval_config, label_names)
    phases: dict[str, Any] = {}
    with (
        phase("eval", phases),
        precision_autocast(model, precision),
        Progress(len(rows), f"scoring ({eval_config.task})", "rows") as progress,
    ):
        clock = RowClock(progress, len(rows))
        correct, predictions, extra = _with_smaller_batches_on_oom(
            model, tokenizer, rows, eval_config, label_names, clock
        )
    record = phases["eval"]
    judged = _judged(eval_config, rows, predictions, extra)
    correct = correct if judged is None else judged
    cut = sum(bool(prediction.get("truncated")) for prediction in predictions)
    if cut > TRUNCATED_WARNING * len(rows):
        print(
            f"tuner: warning: {cut} of {len(rows)} replies stopped at `eval.max_new_tokens` "
            f"({eval_config.max_new_tokens}) before they ended, so their scores read cut answers: raise it"
        )
    for prediction in predictions:
        prediction["latency_ms"] = clock.ms[prediction["row"]]
        if "passages" in rows[prediction["row"]]:  # retrieved passages: the sources a reader can check
            prediction["passages"] = rows[prediction["row"]]["passages"]
    prompt_tokens = sum(
        len(tokenizer(render_prompt(row["prompt"], tokenizer, row.get("tools")), add_special_tokens=False)["input_ids"])
        for row in rows
    )
    metrics = {
        "task": eval_config.task,
        "rows": len(rows),
        "accuracy": round(sum(correct) / len(correct), 4),
        "accuracy_ci95": score_interval(correct),
        "latency_ms_ci95": bootstrap_interval([clock.ms[p["row"]] for p in predictions]),
        **extra,
        "latency_ms_per_example": round(1000 * record["wall_seconds"] / len(rows), 2),
        "prompt_tokens_per_example": round(prompt_tokens / len(rows), 1),
        "precision": scored_precision(model, precision),
        **eval_identity(rows, eval_config),
        "phase": record,
    }
    if isinstance(model, Endpoint):  # what serving these rows cost, priced per token
        served = model.report()
        served["price_per_row"] = round(served["price"] / len(rows), 10)
        metrics["served"] = served
    return EvalResult(task=eval_config.task, metrics=metrics, predictions=predictions)
