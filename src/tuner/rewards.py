"""Rewards: the score a reward model gives a prompt and answer (`reward_scores`); how a reward model run is
evaluated, by how often it ranks the chosen answer of a held-out pair above the rejected one (`evaluate_rewards`);
and the rewards of a GRPO run (`reward_functions`, from the recipe's `grpo.rewards`: built-ins that need no code, a
reward model run, or the user's own function), called as TRL calls them, and their mean on held-out prompts
(`mean_reward`)."""

from __future__ import annotations

import functools
import importlib
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .accounting import phase
from .adapters import read_adapter_run, with_run_adapter
from .data.rows import eval_identity, extract_answer, normalize_answer
from .errors import TunerError
from .evaluator import EvalResult, generate_texts, precision_autocast, rows_finished
from .families import without_reasoning
from .intervals import bootstrap_interval, score_interval
from .models import load_model
from .progress import Progress, RowClock
from .rendering import generation_prompt, render_prompt, reward_ids


def reward_scores(
    model, tokenizer, items: list[tuple[Any, Any, str | None]], batch_size: int = 16, on_scored=None
) -> list[float]:
    """The reward model's score of each (prompt, answer, tools), longest first in padded batches; `on_scored` hears
    the item numbers of each finished batch."""
    import torch

    encoded = [reward_ids(prompt, answer, tokenizer, tools) for prompt, answer, tools in items]
    order = sorted(range(len(encoded)), key=lambda n: -len(encoded[n]))
    scores: list[float] = [0.0] * len(encoded)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(encoded[batch[0]])
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, number in enumerate(batch):
                ids[row, : len(encoded[number])] = torch.tensor(encoded[number])
                mask[row, : len(encoded[number])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for number, value in zip(batch, logits[:, 0].float().tolist()):
                scores[number] = value
            if on_scored is not None:
                on_scored(batch)
    return scores


def evaluate_rewards(
    model, tokenizer, rows: list[dict[str, Any]], eval_config, precision: str | None = None
) -> EvalResult:
    """Score a reward model on held-out preference pairs: the share whose chosen answer gets the higher reward, with
    its 95% Wilson interval, the mean margin, latency per pair and the phase's accounting."""
    phases: dict[str, Any] = {}
    items = [(row["prompt"], row[side], row.get("tools")) for row in rows for side in ("chosen", "rejected")]
    with (
        phase("eval", phases),
        precision_autocast(model, precision),
        Progress(len(rows), "scoring (reward)", "pairs") as progress,
    ):
        clock = RowClock(progress, len(rows))
        start = time.perf_counter()
        scores = reward_scores(
            model,
            tokenizer,
            items,
            eval_config.batch_size,
            on_scored=rows_finished([n // 2 for n in range(len(items))], clock),
        )
        seconds = time.perf_counter() - start
    correct, predictions = [], []
    for number, row in enumerate(rows):
        chosen, rejected = scores[2 * number], scores[2 * number + 1]
        correct.append(chosen > rejected)
        predictions.append(
            {
                "row": number,
                "prompt": render_prompt(row["prompt"], tokenizer, row.get("tools")),
                "gold": "chosen",
                "prediction": "chosen" if chosen > rejected else "rejected",
                "correct": chosen > rejected,
                "latency_ms": clock.ms[number],
                "scores": {"chosen": round(chosen, 4), "rejected": round(rejected, 4)},
            }
        )
    margins = [scores[2 * n] - scores[2 * n + 1] for n in range(len(rows))]
    metrics = {
        "task": "reward",
        "rows": len(rows),
        "accuracy": round(sum(correct) / len(correct), 4),
        "accuracy_ci95": score_interval(correct),
        "mean_reward_margin": round(sum(margins) / len(rows), 4),
        "latency_ms_per_example": round(1000 * seconds / len(rows), 2),
        **eval_identity(rows, eval_config.model_copy(update={"task": "preference"})),
        "phase": phases["eval"],
    }
    return EvalResult(task="reward", metrics=metrics, predictions=predictions)


# ---- GRPO rewards: each called as TRL calls a reward, (prompts, completions, completion_ids, gold, ...) ----


def completion_text(completion: Any) -> str:
    """A sampled answer as text: a chat completion's last message, or the text itself."""
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def named_choice(text: str, choices: list[str]) -> str | None:
    """The one choice an answer names (whole words, any case), or None when it names none or several: an answer
    that repeats the list of options names them all, and must not earn the reward of the right one."""
    named = {choice for choice in choices if re.search(rf"(?<!\w){re.escape(choice)}(?!\w)", text, re.IGNORECASE)}
    if len(named) > 1:  # "re-billing" names "billing" too: keep the longest of nested names
        named = {
            choice
            for choice in named
            if not any(choice != other and choice.lower() in other.lower() for other in named)
        }
    return named.pop() if len(named) == 1 else None


def _exact_match(spec, choices):
    def exact_match(prompts, completions, gold, **kwargs):
        return [
            float(normalize_answer(extract_answer(without_reasoning(completion_text(c)), None)) == normalize_answer(g))
            for c, g in zip(completions, gold)
        ]

    return exact_match


def _choice(spec, choices):
    def choice(prompts, completions, gold, **kwargs):
        row_choices = kwargs.get("choices") or [choices] * len(completions)
        return [
            float(named_choice(completion_text(c), options or choices) == g)
            for c, g, options in zip(completions, gold, row_choices)
        ]

    return choice


def _regex(spec, choices):
    pattern = re.compile(spec.pattern)

    def regex(prompts, completions, **kwargs):
        return [float(bool(pattern.search(completion_text(c)))) for c in completions]

    return regex


def _length(spec, choices):
    def length(prompts, completions, completion_ids, **kwargs):
        return [-max(0, len(ids) - spec.max_tokens) / spec.max_tokens for ids in completion_ids]

    return length


BUILT_IN = {"exact_match": _exact_match, "choice": _choice, "regex": _regex, "length": _length}
NEEDS_GOLD = ("exact_match", "choice")


def user_function(spec, source: str) -> Callable:
    """The recipe's own `module:function`, imported from the current folder or the installed packages."""
    module_name, _, name = spec.function.partition(":")
    if not module_name or not name:
        raise TunerError(
            f"{source}: reward function {spec.function!r} is not `module:function` (e.g. "
            f"`my_rewards:polite`). Fix `grpo.rewards`."
        )
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TunerError(
            f"{source}: reward function {spec.function}: cannot import {module_name!r} ({exc}). Put "
            f"{module_name}.py in the current folder ({Path.cwd()}) or install it."
        ) from None
    finally:
        sys.path.remove(str(Path.cwd()))
    function = getattr(module, name, None)
    if not callable(function):
        raise TunerError(
            f"{source}: reward function {spec.function}: {module_name} has no function {name!r}. Fix "
            f"the name in `grpo.rewards`."
        )
    return checked(function, spec.function)


def checked(function: Callable, name: str) -> Callable:
    """A user's reward that must return one number (or None) per completion, else a message naming it."""

    @functools.wraps(function)  # TRL logs each reward under its function's name
    def call(prompts, completions, **kwargs):
        try:
            out = function(prompts=prompts, completions=completions, **kwargs)
        except Exception as exc:  # the user's code: its failure is a message about it, not a tuner traceback
            raise TunerError(
                f"reward function {name} raised {type(exc).__name__}: {exc}. Fix the function (it is "
                f"called as TRL calls rewards: prompts=, completions=, completion_ids=, gold=, "
                f"choices=, and more keywords)."
            ) from None
        if (
            not isinstance(out, list | tuple)
            or len(out) != len(completions)
            or not all(
                value is None
                or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))
                for value in out
            )
        ):
            shown = repr(out)[:80]
            raise TunerError(
                f"reward function {name} returned {shown}, not one finite number (or None) per "
                f"completion ({len(completions)} given). Make it return a list of floats."
            )
        return [None if value is None else float(value) for value in out]

    return call


def _reward_model(spec, tokenizer, model_config, source: str, precision) -> Callable:
    """A `tuner reward` run as a reward: its base with the score head and adapter, scoring prompt and answer."""
    read_adapter_run(spec.run, model_config, source, kind="reward")
    loaded = load_model(model_config, source, precision, head="reward")
    model = with_run_adapter(loaded.model, spec.run).eval()

    def reward_model(prompts, completions, **kwargs):
        return reward_scores(model, loaded.tokenizer, [(p, c, None) for p, c in zip(prompts, completions)])

    return reward_model


def reward_functions(
    recipe, tokenizer, choices: list[str] | None, precision=None, load_models: bool = True
) -> list[Callable]:
    """The recipe's `grpo.rewards` as TRL reward functions, in order (their weights go to TRL's `reward_weights`).
    `load_models` false leaves reward model runs out (the checks before a model loads)."""
    functions = []
    for spec in recipe.grpo.rewards:
        if spec.type in BUILT_IN:
            functions.append(BUILT_IN[spec.type](spec, choices or []))
        elif spec.type == "function":
            functions.append(user_function(spec, recipe.source))
        elif load_models:
            functions.append(_reward_model(spec, tokenizer, recipe.model, recipe.source, precision))
    return functions


def weighted_rewards(
    functions: list[Callable], weights: list[float], prompts, completions, completion_ids, extras: dict[str, list]
) -> list[float]:
    """Each completion's reward as TRL sums them: weights times each function's value, None counted as 0."""
    totals = [0.0] * len(completions)
    for function, weight in zip(functions, weights):
        values = function(prompts=prompts, completions=completions, completion_ids=completion_ids, **extras)
        totals = [total + weight * (value or 0.0) for total, value in zip(totals, values)]
    return totals


def mean_reward(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    functions: list[Callable],
    weights: list[float],
    max_new_tokens: int,
    batch_size: int = 16,
) -> dict[str, Any]:
    """The policy's reward on held-out prompts: one greedy answer each, rewarded as in training; the mean, its 95%
    interval, and each row's value (for a paired difference)."""
    prompts = [row["prompt"] for row in rows]
    # As TRL's GRPO samples in training: after the template's generation prompt.
    texts, _, _ = generate_texts(
        model, tokenizer, [generation_prompt(p, tokenizer) for p in prompts], max_new_tokens, batch_size
    )
    completions = [
        [{"role": "assistant", "content": text}] if isinstance(p, list) else text for p, text in zip(prompts, texts)
    ]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    extras = {key: [row.get(key) for row in rows] for key in ("gold", "choices")}
    values = weighted_rewards(functions, weights, prompts, completions, ids, extras)
    return {
        "mean": round(sum(values) / len(values), 4),
        "ci95": bootstrap_interval(values),
        "rows": len(values),
        "values": [round(value, 4) for value in values],
        "answers": texts,
    }
