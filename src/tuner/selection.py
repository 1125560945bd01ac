"""Few-shot prompts: for each eval row, k worked examples chosen from the train split (first, seeded random, or the
most similar by BM25) and put before its question, as earlier chat turns or as one plain-text prompt."""

from __future__ import annotations

import random
from typing import Any

from .data.rows import answer_text, asked, prompt_text, scoring_rows
from .errors import TunerError
from .progress import LARGE, bars_shown
from .rendering import continuation


def _system_turns(prompt: Any) -> list[dict[str, str]]:
    return [m for m in prompt if m["role"] == "system"][:1] if isinstance(prompt, list) else []


def fewshot_rows(train, evaluation, fewshot_config) -> list[dict[str, Any]]:
    """Eval rows whose prompts carry k worked examples from the train split (never from the eval split).

    `select`: `first` k rows, `random` k rows per eval row (seeded), or the k most `similar` by BM25 (most similar
    last, nearest the question). `as_chat`: examples as earlier chat turns of chat rows; otherwise (and always for
    plain-text rows) one plain-text prompt. With k = 0 the rows keep their prompts as `data.chat` rendered them.
    """
    evaluation, k = scoring_rows(evaluation), fewshot_config.k
    eval_questions = {asked(row) for row in evaluation}
    # A train row asking what an eval row asks (its whole conversation) would leak the answer into the prompt.
    pool = [row for row in scoring_rows(train) if asked(row) not in eval_questions]
    if k > len(pool):
        raise TunerError(
            f"fewshot.k is {k} but the train split has only {len(pool)} rows usable as examples (rows "
            f"that repeat an eval question are left out). Lower `fewshot.k` or add train rows."
        )
    picks = _pick_examples(pool, evaluation, fewshot_config)
    # `base_prompt` keeps the question as the data section rendered it, so the evaluator can tell that a few-shot run
    # scored the same rows, rendered the same way, as a fine-tuned one.
    return [
        {
            **row,
            "prompt": _fewshot_prompt(row, [pool[i] for i in chosen], fewshot_config.as_chat),
            "base_prompt": row["prompt"],
        }
        for row, chosen in zip(evaluation, picks)
    ]


def _pick_examples(pool, evaluation, fewshot_config) -> list[list[int]]:
    k = fewshot_config.k
    if k == 0:
        return [[] for _ in evaluation]
    if fewshot_config.select == "first":
        return [list(range(k)) for _ in evaluation]
    if fewshot_config.select == "random":
        rng = random.Random(fewshot_config.seed)
        return [rng.sample(range(len(pool)), k) for _ in evaluation]
    import bm25s

    # bm25s draws its own bars (indexing, retrieval): shown for large pools or eval sets on a terminal.
    shown = bars_shown() and max(len(pool), len(evaluation)) >= LARGE
    corpus = bm25s.tokenize([prompt_text(row) for row in pool], stopwords="en", show_progress=shown)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=shown)
    queries = bm25s.tokenize([prompt_text(row) for row in evaluation], stopwords="en", show_progress=shown)
    indices, _ = retriever.retrieve(queries, k=k, show_progress=shown, n_threads=1)
    return [list(reversed(row.tolist())) for row in indices]


def _asked_turns(example) -> list[dict]:
    """An example's conversation before its answer, system turns aside (the eval row's system turn leads)."""
    prompt = example["prompt"]
    if isinstance(prompt, list):
        return [turn for turn in prompt if turn["role"] != "system"]
    return [{"role": "user", "content": prompt_text(example)}]


def _fewshot_prompt(row, examples, as_chat: bool):
    if not examples:
        return row["prompt"]  # zero-shot: the row as the data section rendered it (chat or plain text)
    if as_chat and isinstance(row["prompt"], list):  # plain-text rows (`data.chat: false`) stay plain text
        # Each example whole (a multi-turn chat with its earlier turns), then the row's own conversation whole:
        # cut to their last user turns, the question loses what it refers to ("it is still orange").
        turns = _system_turns(row["prompt"])
        for example in examples:
            turns += _asked_turns(example) + [{"role": "assistant", "content": answer_text(example)}]
        return turns + [turn for turn in row["prompt"] if turn["role"] != "system"]
    # Each example as training joins it: the answer after the separator its own row had.
    shots = [
        prompt_text(example) + continuation({**example, "prompt": prompt_text(example)}, answer_text(example))
        for example in examples
    ]
    return "\n\n".join(shots + [prompt_text(row)])
