"""Rewards: the score a reward model gives a prompt and answer (`reward_scores`), and how a reward model run is
evaluated, by how often it ranks the chosen answer of a held-out pair above the rejected one (`evaluate_rewards`)."""

from __future__ import annotations

import time
from typing import Any

from .accounting import phase
from .data.rows import eval_identity
from .evaluator import EvalResult, precision_autocast, rows_finished
from .intervals import bootstrap_interval
from .progress import Progress, RowClock
from .rendering import render_prompt, reward_ids


def reward_scores(model, tokenizer, items: list[tuple[Any, Any, str | None]], batch_size: int = 16,
                  on_scored=None) -> list[float]:
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
            batch = order[start:start + batch_size]
            width = len(encoded[batch[0]])
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, number in enumerate(batch):
                ids[row, :len(encoded[number])] = torch.tensor(encoded[number])
                mask[row, :len(encoded[number])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for number, value in zip(batch, logits[:, 0].float().tolist()):
                scores[number] = value
            if on_scored is not None:
                on_scored(batch)
    return scores


def evaluate_rewards(model, tokenizer, rows: list[dict[str, Any]], eval_config,
                     precision: str | None = None) -> EvalResult:
    """Score a reward model on held-out preference pairs: the share whose chosen answer gets the higher reward, with
    its 95% bootstrap interval, the mean margin, latency per pair and the phase's accounting."""
    phases: dict[str, Any] = {}
    items = [(row["prompt"], row[side], row.get("tools")) for row in rows for side in ("chosen", "rejected")]
    with phase("eval", phases), precision_autocast(model, precision), Progress(len(rows), "scoring (reward)",
                                                                                "pairs") as progress:
        clock = RowClock(progress, len(rows))
        start = time.perf_counter()
        scores = reward_scores(model, tokenizer, items, eval_config.batch_size,
                               on_scored=rows_finished([n // 2 for n in range(len(items))], clock))
        seconds = time.perf_counter() - start
    correct, predictions = [], []
    for number, row in enumerate(rows):
        chosen, rejected = scores[2 * number], scores[2 * number + 1]
        correct.append(chosen > rejected)
        predictions.append({"row": number, "prompt": render_prompt(row["prompt"], tokenizer, row.get("tools")),
                            "gold": "chosen", "prediction": "chosen" if chosen > rejected else "rejected",
                            "correct": chosen > rejected, "latency_ms": clock.ms[number],
                            "scores": {"chosen": round(chosen, 4), "rejected": round(rejected, 4)}})
    margins = [scores[2 * n] - scores[2 * n + 1] for n in range(len(rows))]
    metrics = {"task": "reward", "rows": len(rows), "accuracy": round(sum(correct) / len(correct), 4),
               "accuracy_ci95": bootstrap_interval(correct), "mean_reward_margin": round(sum(margins) / len(rows), 4),
               "latency_ms_per_example": round(1000 * seconds / len(rows), 2),
               **eval_identity(rows, eval_config.model_copy(update={"task": "preference"})),
               "phase": phases["eval"]}
    return EvalResult(task="reward", metrics=metrics, predictions=predictions)
