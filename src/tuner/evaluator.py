"""One evaluator for every method: the same rows, prompt rendering, answer extraction and metric for all.

Tasks:
- `choice`: log-likelihood of each allowed answer after the prompt; accuracy and length-normalised accuracy.
- `generate`: greedy generation to EOS / end of turn, answer extraction, normalised exact match.
- `preference`: share of pairs where `chosen` gets a higher log-likelihood than `rejected`.

Every accuracy comes with a 95% bootstrap interval and its row count; latency is measured on the same rows.
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .accounting import phase
from .data.rows import answer_text, eval_identity
from .errors import TunerError
from .hardware import device_kind, is_out_of_memory
from .progress import Progress
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


# Answer tokens one scoring pass may hold per row of its batch: with `eval.batch_size` rows, a pass keeps at most
# batch_size x this many positions' logits (tokens x vocabulary), however many choices there are.
TOKENS_PER_ROW = 128


@dataclass
class _Unit:
    """One row of a scoring pass: a context, then trie nodes (distinct answer prefixes, each token once) that attend
    to the context and to their own ancestors, and the answers scored there as (pair index, [(slot, token)]): slot 0
    is the context's last position, slot 1 + i the i-th node."""

    context: tuple[int, ...]
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    answers: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)


def _units(context: tuple[int, ...], targets: list[tuple[int, list[int]]], budget: int) -> list[_Unit]:
    """One context's answers as a token trie, split into units of about `budget` nodes (an answer's prefixes stay
    in one unit). Answers are sorted by their tokens, so answers that share a beginning share its nodes."""
    units: list[_Unit] = []
    index: dict[tuple[int, ...], int] = {}
    for pair, ids in sorted(targets, key=lambda target: target[1]):
        path = [tuple(ids[:end]) for end in range(1, len(ids))]
        new = [prefix for prefix in path if prefix not in index]
        if not units or (units[-1].tokens and len(units[-1].tokens) + len(new) > budget):
            units.append(_Unit(context))
            index, new = {}, path
        unit = units[-1]
        for prefix in new:
            index[prefix] = len(unit.tokens)
            unit.tokens.append(prefix[-1])
            unit.parents.append(index[prefix[:-1]] if len(prefix) > 1 else -1)
            unit.depths.append(len(prefix))
        unit.answers.append((pair, [(0, ids[0])] + [(index[tuple(ids[:end])] + 1, ids[end])
                                                    for end in range(1, len(ids))]))
    return units


def _passes(units: list[_Unit], batch_size: int) -> list[list[_Unit]]:
    """Units grouped into forward passes of at most `batch_size` rows and `batch_size x TOKENS_PER_ROW` scored
    positions (the longest unit sets each row's width); a unit larger than that goes alone."""
    budget = batch_size * TOKENS_PER_ROW
    passes: list[list[_Unit]] = []
    for unit in units:
        current = passes[-1] if passes else None
        width = 1 + max([len(unit.tokens)] + [len(other.tokens) for other in current or []])
        if current is None or len(current) >= batch_size or (len(current) + 1) * width > budget:
            passes.append([unit])
        else:
            current.append(unit)
    return passes


def _tree_inputs(units: list[_Unit], pad: int, dtype):
    """A pass as model inputs: contexts left-padded to the longest, then each unit's nodes; position ids that
    continue each context along the node's depth; an additive attention mask in which a context attends causally
    to itself and a node to the whole context and its own ancestors (padding attends to itself only)."""
    import torch

    width = max(len(unit.context) for unit in units)
    nodes = max(len(unit.tokens) for unit in units)
    size = width + nodes
    input_ids = torch.full((len(units), size), pad, dtype=torch.long)
    positions = torch.zeros((len(units), size), dtype=torch.long)
    allowed = torch.zeros((len(units), size, size), dtype=torch.bool)
    causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
    for row, unit in enumerate(units):
        start = width - len(unit.context)
        input_ids[row, start:width] = torch.tensor(unit.context)
        positions[row, start:width] = torch.arange(len(unit.context))
        allowed[row, start:width, start:width] = causal[:len(unit.context), :len(unit.context)]
        for node, (token, parent, depth) in enumerate(zip(unit.tokens, unit.parents, unit.depths)):
            column = width + node
            input_ids[row, column] = token
            positions[row, column] = len(unit.context) - 1 + depth
            if parent >= 0:
                allowed[row, column] = allowed[row, width + parent]  # the context and the parent's own ancestors
            else:
                allowed[row, column, start:width] = True
            allowed[row, column, column] = True
    allowed |= torch.eye(size, dtype=torch.bool)  # padding rows see themselves, so no row is wholly masked
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return input_ids, positions, mask[:, None], nodes


def loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                   max_length: int | None = None, on_scored: Callable[[list[int]], None] | None = None) -> list[float]:
    """Sum of log-probabilities of each continuation given its context, for (context, continuation) pairs.

    A context runs once, however many answers are scored after it, and so does each distinct answer prefix: the
    answers of a context form a token trie whose nodes follow the context in the same forward pass, each attending
    to the context and to its own ancestors (tree attention), so `card_arrival` and `card_delivery_estimate` share
    the tokens of `card_`. The context's last position scores every answer's first token and each node scores the
    token after it. Contexts are sorted by length and left-padded per pass; the logits kept per pass are bounded by
    `batch_size` (see TOKENS_PER_ROW), not by the number of choices. `on_scored` hears the pair indices each pass
    finished.
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
    units = [unit for context, targets in sorted(groups.items(), key=lambda item: -len(item[0]))
             for unit in _units(context, targets, TOKENS_PER_ROW)]
    scores = [0.0] * len(pairs)
    device = _model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with torch.inference_mode():
        for batch in _passes(units, batch_size):
            input_ids, positions, mask, nodes = _tree_inputs(batch, pad, model.dtype)
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), use_cache=False, logits_to_keep=nodes + 1).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            wanted = [(row, pair, slot, token) for row, unit in enumerate(batch) for pair, slots in unit.answers
                      for slot, token in slots]
            rows, pairs_of, slots, tokens = (torch.tensor(column) for column in zip(*wanted))
            values = logprobs[rows.to(device), slots.to(device), tokens.to(device)].tolist()
            for pair, value in zip(pairs_of.tolist(), values):
                scores[pair] += value
            if on_scored is not None:
                on_scored([pair for unit in batch for pair, _ in unit.answers])
    return scores


def _stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                   on_done: Callable[[int], None] | None = None) -> tuple[list[str], int]:
    """Greedy continuations of plain-text prompts (stopping at EOS / end of turn) and the generated token count;
    `on_done` hears how many prompts each batch finished."""
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
                if on_done is not None:
                    on_done(len(indices))
    finally:
        tokenizer.padding_side = side
    return outputs, generated_tokens


# ---- tasks ----

def _rows_finished(pair_rows: list[int], progress: Progress) -> Callable[[list[int]], None]:
    """A callback for `loglikelihoods` that counts a row done once all of its pairs are scored."""
    left: dict[int, int] = {}
    for row in pair_rows:
        left[row] = left.get(row, 0) + 1

    def scored(pairs: list[int]) -> None:
        finished = 0
        for pair in pairs:
            left[pair_rows[pair]] -= 1
            finished += left[pair_rows[pair]] == 0
        progress.update(finished)

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


def _choice(model, tokenizer, rows, eval_config, label_names, progress):
    contexts = [render_prompt(row["prompt"], tokenizer) for row in rows]
    pairs, spans, pair_rows = [], [], []
    for number, (row, context) in enumerate(zip(rows, contexts)):
        choices, gold = _row_choices(row, eval_config, label_names), answer_text(row)
        spans.append((len(pairs), choices, gold))
        pairs.extend((context, continuation(row["prompt"], choice)) for choice in choices)
        pair_rows.extend([number] * len(choices))
    scores = loglikelihoods(model, tokenizer, pairs, batch_size=eval_config.batch_size,
                            on_scored=_rows_finished(pair_rows, progress))
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
                            "top": _top(choices, lls), "scores": dict(zip(choices, [round(s, 4) for s in lls]))})
    metrics = {"accuracy_norm": round(sum(correct_norm) / len(correct_norm), 4),
               "accuracy_norm_ci95": bootstrap_interval(correct_norm)}
    return correct, predictions, metrics


def _generate(model, tokenizer, rows, eval_config, label_names, progress):
    pattern = re.compile(eval_config.answer_regex) if eval_config.answer_regex else None
    contexts = [render_prompt(row["prompt"], tokenizer) for row in rows]
    start = time.perf_counter()
    texts, generated = generate_texts(model, tokenizer, contexts, eval_config.max_new_tokens, eval_config.batch_size,
                                      on_done=progress.update)
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


def _preference(model, tokenizer, rows, eval_config, label_names, progress):
    pairs = []
    for number, row in enumerate(rows):
        if not {"prompt", "chosen", "rejected"} <= set(row):
            raise TunerError(f"eval row {number}: task preference needs `prompt`, `chosen` and `rejected`; the row "
                             f"has {sorted(row)}.")
        context = render_prompt(row["prompt"], tokenizer)
        for side in ("chosen", "rejected"):
            pairs.append((context, continuation(row["prompt"], answer_text({"completion": row[side]}))))
    scores = loglikelihoods(model, tokenizer, pairs, batch_size=eval_config.batch_size,
                            on_scored=_rows_finished([n // 2 for n in range(len(pairs))], progress))
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


def _with_smaller_batches_on_oom(model, tokenizer, rows, eval_config, label_names, progress):
    """Run the task; out of memory, halve `eval.batch_size` and run it again, down to batches of one."""
    import torch

    while True:
        try:
            return TASKS[eval_config.task](model, tokenizer, rows, eval_config, label_names, progress)
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
            progress.restart()


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
    with phase("eval", phases), _autocast(model, precision), Progress(len(rows), f"scoring ({eval_config.task})",
                                                                      "rows") as progress:
        correct, predictions, extra = _with_smaller_batches_on_oom(model, tokenizer, rows, eval_config, label_names,
                                                                   progress)
    record = phases["eval"]
    metrics = {"task": eval_config.task, "rows": len(rows), "accuracy": round(sum(correct) / len(correct), 4),
               "accuracy_ci95": bootstrap_interval(correct), **extra,
               "latency_ms_per_example": round(1000 * record["wall_seconds"] / len(rows), 2),
               **eval_identity(rows, eval_config), "phase": record}
    return EvalResult(task=eval_config.task, metrics=metrics, predictions=predictions)
