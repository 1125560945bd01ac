"""One evaluator for every method: the same rows, prompt rendering, answer extraction and metric for all.

Tasks:
- `choice`: log-likelihood of each allowed answer after the prompt; accuracy and length-normalised accuracy.
- `generate`: greedy generation to EOS / end of turn, answer extraction, normalised exact match.
- `preference`: share of pairs where `chosen` gets a higher log-likelihood than `rejected`.

Every accuracy comes with a 95% bootstrap interval and its row count; latency is measured on the same rows.
"""

from __future__ import annotations

import copy
import re
import string
import time
from dataclasses import dataclass, field
from typing import Any

from .accounting import phase
from .data.rows import answer_text, eval_identity
from .errors import TunerError
from .hardware import device_kind, is_out_of_memory
from .rendering import continuation, render_prompt

BOOTSTRAP_SAMPLES = 1000


@dataclass
class EvalResult:
    """Scores of one evaluation: `metrics` (accuracy, interval, rows, latency, the phase's accounting) and one
    prediction per row."""

    task: str
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)


def bootstrap_interval(correct: list[bool], seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean of 0/1 outcomes."""
    import numpy as np

    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(BOOTSTRAP_SAMPLES, values.size))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, single spaces: the form exact match compares."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def extract_answer(generated: str, pattern: re.Pattern | None) -> str:
    """The answer in a generation: the regex's first group (or whole match), else the first non-empty line."""
    if pattern is not None:
        match = pattern.search(generated)
        if not match:
            return ""
        return match.group(1) if match.groups() else match.group(0)
    lines = [line for line in generated.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


# ---- scoring machinery ----

def _encode_pair(tokenizer, context: str, answer: str) -> tuple[list[int], list[int]]:
    # As lm-evaluation-harness does: trailing spaces of the context move to the continuation, the whole string is
    # encoded once and the continuation is what follows the context's tokens.
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, answer = context[:-spaces], context[-spaces:] + answer
    whole = tokenizer(context + answer, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    return whole[:len(context_ids)], whole[len(context_ids):]


def _model_device(model):
    return next(model.parameters()).device


def loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                   max_length: int | None = None) -> list[float]:
    """Sum of log-probabilities of each continuation given its context, for (context, continuation) pairs.

    Each distinct context runs once, whatever the number of answers scored after it: its last position scores every
    answer's first token, and the key/value cache carries the rest of each answer through one short extra pass.
    Contexts are sorted by length and left-padded per batch, and only the positions that score an answer token go
    through the output layer.
    """
    import torch

    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for index, (context, answer) in enumerate(pairs):
        context_ids, answer_ids = _encode_pair(tokenizer, context, answer)
        if not answer_ids:
            raise TunerError(f"the answer {answer!r} encodes to no tokens; choices must be non-empty text.")
        keep_context = max(1, max_length - len(answer_ids) + 1)  # over-long inputs lose their start, as in lm-eval
        groups.setdefault(tuple(context_ids[-keep_context:]), []).append((index, answer_ids))
    ordered = sorted(groups.items(), key=lambda item: -len(item[0]))
    scores = [0.0] * len(pairs)
    device = _model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start:start + batch_size]
            width = len(batch[0][0])
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (context_ids, _) in enumerate(batch):
                input_ids[row, width - len(context_ids):] = torch.tensor(context_ids)
                mask[row, width - len(context_ids):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            follow = [(row, index, ids) for row, (_, targets) in enumerate(batch) for index, ids in targets
                      if len(ids) > 1]
            output = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), use_cache=bool(follow), logits_to_keep=1)
            first = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
            for row, (_, targets) in enumerate(batch):
                for index, answer_ids in targets:
                    scores[index] = float(first[row, answer_ids[0]])
            for chunk in _token_chunks(follow):
                cache = output.past_key_values if chunk is follow else copy.deepcopy(output.past_key_values)
                _score_rest(model, cache, chunk, mask, positions, pad, device, scores)
    return scores


def _token_chunks(follow: list, budget: int = 2048) -> list[list]:
    """Split the answers still to score so each pass holds about `budget` answer tokens (bounds the logits)."""
    if sum(len(ids) for _, _, ids in follow) <= budget:
        return [follow] if follow else []
    chunks, current, used = [], [], 0
    for item in follow:
        if current and used + len(item[2]) > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += len(item[2])
    return chunks + [current]


def _score_rest(model, cache, chunk, mask, positions, pad: int, device, scores: list[float]) -> None:
    """Add the log-probabilities of each answer's tokens after the first, continuing from the contexts' cache."""
    import torch

    rows = torch.tensor([row for row, _, _ in chunk])
    cache.reorder_cache(rows.to(device))
    length = max(len(ids) - 1 for _, _, ids in chunk)
    inputs = torch.full((len(chunk), length), pad, dtype=torch.long)
    targets = torch.zeros((len(chunk), length), dtype=torch.long)
    valid = torch.zeros((len(chunk), length), dtype=torch.long)
    for n, (_, _, ids) in enumerate(chunk):
        inputs[n, :len(ids) - 1] = torch.tensor(ids[:-1])
        targets[n, :len(ids) - 1] = torch.tensor(ids[1:])
        valid[n, :len(ids) - 1] = 1
    # Padding sits after each answer, so causal attention keeps it out of every position that is scored.
    attention = torch.cat([mask[rows], torch.ones_like(valid)], dim=1)
    position_ids = positions[rows, -1:] + 1 + torch.arange(length)
    logits = model(input_ids=inputs.to(device), attention_mask=attention.to(device),
                   position_ids=position_ids.to(device), past_key_values=cache, use_cache=False).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.to(device)[..., None])[..., 0]
    for n, (_, index, _) in enumerate(chunk):
        scores[index] += float((logprobs[n] * valid[n].to(device)).sum())


def _stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   batch_size: int = 16) -> tuple[list[str], int]:
    """Greedy continuations of plain-text prompts (stopping at EOS / end of turn) and the generated token count."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    generated_tokens = 0
    device = _model_device(model)
    stops = _stop_token_ids(tokenizer)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                indices = order[start:start + batch_size]
                encoded = tokenizer([prompts[i] for i in indices], return_tensors="pt", padding=True,
                                    add_special_tokens=False).to(device)
                new = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                     pad_token_id=tokenizer.pad_token_id)[:, encoded["input_ids"].shape[1]:]
                for i, tokens in zip(indices, new.tolist()):
                    cut = next((n for n, t in enumerate(tokens) if t in stops), len(tokens))
                    generated_tokens += cut
                    outputs[i] = tokenizer.decode(tokens[:cut], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return outputs, generated_tokens


# ---- tasks ----

def _row_choices(row: dict[str, Any], eval_config, label_names: list[str] | None) -> list[str]:
    choices = row.get("choices") or eval_config.choices or label_names
    if not choices:
        raise TunerError("task: choice needs the allowed answers: set `eval.choices`, `data.label_names`, or "
                         "`data.choices_column`.")
    return list(choices)


def check_rows(rows, eval_config, label_names: list[str] | None = None) -> None:
    """Refuse eval rows the task cannot score (an empty split, a gold answer outside the choices) before any model
    loads."""
    rows = list(rows)
    if not rows:
        raise TunerError("the eval split is empty: give `data.eval` rows or a larger `data.eval_fraction`.")
    if eval_config.task != "choice":
        return
    for number, row in enumerate(rows):
        choices, gold = _row_choices(row, eval_config, label_names), answer_text(row)
        if gold not in choices:
            raise TunerError(f"eval row {number}: the gold answer {gold!r} is not among the choices {choices}. Fix "
                             f"the row, or add the answer to `eval.choices`.")


def _choice(model, tokenizer, rows, eval_config, label_names):
    contexts = [render_prompt(row["prompt"], tokenizer) for row in rows]
    pairs, spans = [], []
    for row, context in zip(rows, contexts):
        choices, gold = _row_choices(row, eval_config, label_names), answer_text(row)
        spans.append((len(pairs), choices, gold))
        pairs.extend((context, continuation(row["prompt"], choice)) for choice in choices)
    scores = loglikelihoods(model, tokenizer, pairs, batch_size=eval_config.batch_size)
    predictions, correct, correct_norm = [], [], []
    for number, ((offset, choices, gold), context) in enumerate(zip(spans, contexts)):
        lls = scores[offset:offset + len(choices)]
        # Normalised by the answer's length in bytes, as lm-evaluation-harness's acc_norm.
        normed = [ll / max(1, len(continuation(rows[number]["prompt"], c).encode())) for ll, c in zip(lls, choices)]
        prediction = choices[max(range(len(choices)), key=lls.__getitem__)]
        prediction_norm = choices[max(range(len(choices)), key=normed.__getitem__)]
        correct.append(prediction == gold)
        correct_norm.append(prediction_norm == gold)
        predictions.append({"row": number, "prompt": context, "gold": gold, "prediction": prediction,
                            "prediction_norm": prediction_norm, "correct": prediction == gold,
                            "scores": dict(zip(choices, [round(s, 4) for s in lls]))})
    metrics = {"accuracy_norm": round(sum(correct_norm) / len(correct_norm), 4),
               "accuracy_norm_ci95": bootstrap_interval(correct_norm)}
    return correct, predictions, metrics


def _generate(model, tokenizer, rows, eval_config, label_names):
    pattern = re.compile(eval_config.answer_regex) if eval_config.answer_regex else None
    contexts = [render_prompt(row["prompt"], tokenizer) for row in rows]
    start = time.perf_counter()
    texts, generated = generate_texts(model, tokenizer, contexts, eval_config.max_new_tokens, eval_config.batch_size)
    seconds = time.perf_counter() - start
    predictions, correct = [], []
    for number, (row, context, text) in enumerate(zip(rows, contexts, texts)):
        gold, answer = answer_text(row), extract_answer(text, pattern)
        hit = normalize_answer(answer) == normalize_answer(gold)
        correct.append(hit)
        predictions.append({"row": number, "prompt": context, "gold": gold, "prediction": answer,
                            "generated": text, "correct": hit})
    return correct, predictions, {"generated_tokens": generated,
                                  "generated_tokens_per_second": round(generated / seconds, 1) if seconds else None}


def _preference(model, tokenizer, rows, eval_config, label_names):
    pairs = []
    for number, row in enumerate(rows):
        if not {"prompt", "chosen", "rejected"} <= set(row):
            raise TunerError(f"eval row {number}: task preference needs `prompt`, `chosen` and `rejected`; the row "
                             f"has {sorted(row)}.")
        context = render_prompt(row["prompt"], tokenizer)
        for side in ("chosen", "rejected"):
            pairs.append((context, continuation(row["prompt"], answer_text({"completion": row[side]}))))
    scores = loglikelihoods(model, tokenizer, pairs, batch_size=eval_config.batch_size)
    predictions, correct = [], []
    for number, row in enumerate(rows):
        chosen, rejected = scores[2 * number], scores[2 * number + 1]
        correct.append(chosen > rejected)
        predictions.append({"row": number, "prompt": pairs[2 * number][0], "gold": "chosen",
                            "prediction": "chosen" if chosen > rejected else "rejected", "correct": chosen > rejected,
                            "scores": {"chosen": round(chosen, 4), "rejected": round(rejected, 4)}})
    margins = [scores[2 * n] - scores[2 * n + 1] for n in range(len(rows))]
    return correct, predictions, {"mean_logprob_margin": round(sum(margins) / len(margins), 4)}


TASKS = {"choice": _choice, "generate": _generate, "preference": _preference}


def _with_smaller_batches_on_oom(model, tokenizer, rows, eval_config, label_names):
    """Run the task; out of memory, halve `eval.batch_size` and run it again, down to batches of one."""
    import torch

    while True:
        try:
            return TASKS[eval_config.task](model, tokenizer, rows, eval_config, label_names)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if device_kind() == "cuda":
                torch.cuda.empty_cache()
            if eval_config.batch_size == 1:
                raise TunerError("out of memory while scoring one row at a time: shorten the eval rows, load the "
                                 "model with `model.quantize: 4bit`, or use a device with more memory.") from None
            smaller = max(1, eval_config.batch_size // 2)
            print(f"tuner: out of memory scoring batches of {eval_config.batch_size}; retrying with {smaller} "
                  f"(set `eval.batch_size: {smaller}` to start there)")
            eval_config = eval_config.model_copy(update={"batch_size": smaller})


def _autocast(model, precision: str | None):
    """bf16/fp16 autocast when fp32 weights should compute in lower precision (tuner's CPU bf16 mode)."""
    import contextlib

    import torch

    parameter = next(model.parameters())
    if precision not in ("bf16", "fp16") or parameter.dtype != torch.float32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=parameter.device.type, dtype=dtype)


def evaluate(model, tokenizer, rows, eval_config, label_names: list[str] | None = None,
             precision: str | None = None) -> EvalResult:
    """Score a model (base or with an adapter) on canonical rows with a recipe's `eval` section.

    `rows` is a list of dicts or a `datasets.Dataset` in tuner's column names. `precision` ("bf16", "fp16") runs
    fp32 weights under autocast, as training did. Returns accuracy with its 95% bootstrap interval and row count,
    latency per example, the phase's device-hours and memory, and predictions.
    """
    rows = list(rows)
    if eval_config.task is None:
        raise TunerError("`eval.task` is not set: choose choice, generate or preference.")
    check_rows(rows, eval_config, label_names)
    phases: dict[str, Any] = {}
    with phase("eval", phases), _autocast(model, precision):
        correct, predictions, extra = _with_smaller_batches_on_oom(model, tokenizer, rows, eval_config, label_names)
    record = phases["eval"]
    metrics = {"task": eval_config.task, "rows": len(rows), "accuracy": round(sum(correct) / len(correct), 4),
               "accuracy_ci95": bootstrap_interval(correct), **extra,
               "latency_ms_per_example": round(1000 * record["wall_seconds"] / len(rows), 2),
               **eval_identity(rows, eval_config), "phase": record}
    return EvalResult(task=eval_config.task, metrics=metrics, predictions=predictions)
