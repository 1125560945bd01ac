"""Retrieval into the prompt: each row's question searched in the index (within `rag.filter`), the candidates
reranked (`rag.rerank`), weak ones cut (`rag.min_score`), the passages put into its last user turn through
`rag.context_template` in `rag.order`, and what retrieval cost and found: ms per question, recall@k, MRR, nDCG@k and
precision@k against the row's source document (or passage id), the share of rows whose gold answer is in the
passages; prompts too long for the model refused. After scoring, how grounded the replies were in what was
retrieved (`grounding`). `retrieval_scores` scores retrieval alone, with no language model (`rag.retrieval_only`).

The rag recipe scores rows prepared here; the sft recipe with a `rag:` block trains on them too (retrieval-aware
fine-tuning: the model learns to read the passages, and to pass over the distractors among them).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .accounting import phase
from .data.corpus import read_corpus
from .data.rows import answer_text, normalize_answer, prompt_text, scoring_rows
from .data.sources import table
from .distributed import shared
from .errors import TunerError
from .evaluator import EvalResult
from .hardware import world_size
from .index import Hit, Index, build_index, chunk_settings, describe
from .intervals import bootstrap_interval, score_interval
from .metrics import contains, supported_share
from .rendering import render_prompt
from .reranker import Reranker, load_reranker

# Tokens kept free after the prompt for the answer (choices are short; generation is capped by eval.max_new_tokens).
ANSWER_ROOM = 64
# A reply is grounded when this share of its words can be read in its passages or its question (restating the
# question is not an invention); below it, most of what it says came from elsewhere.
GROUNDED_SHARE = 0.8


@dataclass
class Retrieval:
    """What retrieval did for a set of rows: seconds per question and what was found."""

    seconds: list[float] = field(default_factory=list)
    found_source: list[bool] = field(default_factory=list)
    answer_in_passages: list[bool] = field(default_factory=list)
    # Per row, the passages' text and the question: what a grounded reply could draw on.
    evidence: list[str] = field(default_factory=list)
    # Per row with a source: its rank figures (`ranking`).
    ranks: list[dict[str, float]] = field(default_factory=list)

    def metrics(self, k: int) -> dict[str, Any]:
        """Retrieval's figures for metrics.json: ms per question, recall@k, MRR, nDCG@k and precision@k (rows with a
        source only), gold answer found in the passages."""
        rows = len(self.seconds)

        def mean(name: str) -> float | None:
            return round(sum(r[name] for r in self.ranks) / len(self.ranks), 4) if self.ranks else None

        return {
            "k": k,
            "retrieval_ms_per_example": round(1000 * sum(self.seconds) / rows, 3) if rows else None,
            f"recall_at_{k}": round(sum(self.found_source) / len(self.found_source), 4) if self.found_source else None,
            "mrr": mean("reciprocal_rank"),
            f"ndcg_at_{k}": mean("ndcg"),
            f"precision_at_{k}": mean("precision"),
            "answer_in_passages_rate": round(sum(self.answer_in_passages) / rows, 4) if rows else None,
        }


def ranking(hits: list[Hit], source: str, k: int, relevant_passages: int) -> dict[str, float]:
    """How well `hits` (best first) found `source`, a document id or a passage id: `found` (any hit relevant:
    recall@k), `reciprocal_rank` (1 / rank of the first relevant hit, 0 if none), `ndcg` (binary gains, the ideal
    being min(k, `relevant_passages`) relevant hits on top) and `precision` (relevant hits / k)."""
    relevant = [hit.document == source or hit.id == source for hit in hits[:k]]
    first = next((rank for rank, good in enumerate(relevant, start=1) if good), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, good in enumerate(relevant, start=1) if good)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, max(1, relevant_passages)) + 1))
    return {
        "found": float(first is not None),
        "reciprocal_rank": 1 / first if first else 0.0,
        "ndcg": dcg / ideal,
        "precision": sum(relevant) / k,
    }


def retrieve(index: Index, question: str, rag_config, reranker: Reranker | None = None) -> list[Hit]:
    """The passages for one question, best first: the retriever's `rag.k` (or, with a reranker, its
    `rag.rerank.candidates` reranked and the best `rag.k` kept), within `rag.filter`, less those under `rag.min_score`
    of the best one's score."""
    depth = max(rag_config.k, rag_config.rerank.candidates) if reranker is not None else rag_config.k
    hits = index.search(question, depth, rag_config.retriever, where=rag_config.filter)
    if reranker is not None:
        hits = reranker.rerank(question, hits)
    hits = hits[: rag_config.k]
    if rag_config.min_score and hits and hits[0].score > 0:  # a relative cutoff means nothing below zero
        hits = [hit for hit in hits if hit.score >= rag_config.min_score * hits[0].score]
    return hits


def open_reranker(rag_config, where: str = "<recipe>") -> Reranker | None:
    """The recipe's reranker, loaded; None without `rag.rerank`."""
    return load_reranker(rag_config.rerank, rag_config.embedding_model, where) if rag_config.rerank else None


def open_index(rag_config, tokenizer, context_tokens: int | None, where: str = "<recipe>") -> Index:
    """The recipe's index, built or reused (updated when the corpus changed), with a line saying which."""
    size, overlap = chunk_settings(rag_config, context_tokens)
    corpus = read_corpus(rag_config.corpus, where)
    index = build_index(
        corpus,
        tokenizer,
        rag_config.retriever,
        size,
        overlap,
        rag_config.embedding_model,
        rag_config.store.path,
        rag_config.store,
        where,
        rag_config.chunk.strategy,
    )
    print(describe(index.report))
    index.warm(rag_config.retriever)
    return index


def _fill(template: str, values: dict[str, str]) -> str:
    """The template with each `{slot}` replaced in one pass, so a passage or question holding `{question}` or
    `{text}` stays as written."""
    pattern = "|".join(re.escape("{" + slot + "}") for slot in values)
    return re.sub(pattern, lambda match: values[match.group(0)[1:-1]], template)


def _with_context(prompt: Any, question: str, hits: list[Hit], rag_config) -> Any:
    """The prompt with its question (a plain prompt, or the last user turn of a chat) put into the template."""
    # Best last puts the strongest passage next to the question, where a small model's attention is.
    ordered = list(reversed(hits)) if rag_config.order == "best_last" else hits
    passages = "\n\n".join(
        _fill(
            rag_config.passage_template,
            {"id": hit.id, "title": hit.title or "", "section": hit.section or "", "text": hit.text},
        )
        for hit in ordered
    )
    text = _fill(rag_config.context_template, {"passages": passages, "question": question})
    if isinstance(prompt, str):
        return text
    last = max(i for i, message in enumerate(prompt) if message["role"] == "user")
    return [*prompt[:last], {**prompt[last], "content": text}, *prompt[last + 1 :]]


def with_passages(
    rows, index: Index, rag_config, tokenizer, context_tokens: int | None, what: str = "eval"
) -> tuple[list[dict[str, Any]], Retrieval]:
    """Rows (prompt/completion; chats are split at their last answer) whose questions carry the `rag.k` passages
    retrieved for them, the passages' ids and scores kept under `passages` and the question as the data section
    rendered it under `base_prompt` (so runs with and without retrieval are compared on the same rows). Raises
    TunerError when a prompt with its passages cannot fit the model's context."""
    retrieval, prepared = Retrieval(), []
    reranker, per_document = open_reranker(rag_config), Counter(chunk.document for chunk in index.passages)
    for number, row in enumerate(scoring_rows(rows)):
        question = prompt_text(row)
        start = time.perf_counter()
        hits = retrieve(index, question, rag_config, reranker)
        retrieval.seconds.append(time.perf_counter() - start)
        prompt = _with_context(row["prompt"], question, hits, rag_config)
        tokens = len(tokenizer(render_prompt(prompt, tokenizer), add_special_tokens=False)["input_ids"])
        if context_tokens and tokens + ANSWER_ROOM > context_tokens:
            raise TunerError(
                f"{what} row {number}: its prompt with {len(hits)} passages is {tokens} tokens, and the "
                f"model reads at most {context_tokens} (with {ANSWER_ROOM} left for the answer). Lower "
                f"`rag.k` or `rag.chunk.size`, or shorten `rag.context_template`."
            )
        if row.get("source") is not None:
            source = str(row["source"])
            retrieval.ranks.append(ranking(hits, source, rag_config.k, per_document.get(source, 1)))
            retrieval.found_source.append(bool(retrieval.ranks[-1]["found"]))
        gold = answer_text(row) if row.get("completion") is not None or "label" in row else ""
        found = " ".join(hit.text for hit in hits)
        # As a whole phrase, numbers as numbers: gold "3" is not found in "13 engineers".
        retrieval.answer_in_passages.append(bool(normalize_answer(gold)) and contains(found, gold) == 1.0)
        retrieval.evidence.append(f"{found}\n{question}")
        prepared.append(
            {
                **row,
                "prompt": prompt,
                "base_prompt": row.get("base_prompt", row["prompt"]),
                "passages": [{"id": hit.id, "score": hit.score} for hit in hits],
            }
        )
    return prepared, retrieval


def sourced_rows(rows, where: str = "<recipe>") -> list[dict[str, Any]]:
    """The eval rows that name their source, what `rag.retrieval_only` scores; TunerError if none does."""
    asked = [row for row in scoring_rows(rows) if row.get("source") is not None]
    if not asked:
        raise TunerError(
            f"{where}: key `rag.retrieval_only`: no eval row names its source, so retrieval has nothing to be scored "
            f"against. Give the rows a `source` column (the document's path inside the corpus, or a passage id "
            f"such as `faq.md#2`), or name the column in `data.source_column`."
        )
    return asked


def retrieval_scores(
    rows, index: Index, rag_config, where: str = "<recipe>", reranker: Reranker | None = None
) -> EvalResult:
    """Retrieval scored alone (`rag.retrieval_only`), no language model: each row with a source asked of the index as
    a rag run would, found or not (recall@k, the primary score, with its 95% interval), MRR, nDCG@k,
    precision@k, the share of rows whose gold answer is in the passages, ms per question: an evaluation of task
    `retrieval`, one prediction per row. `reranker`: one already loaded for `rag.rerank` (else it is loaded)."""
    asked = sourced_rows(rows, where)
    if reranker is None:
        reranker = open_reranker(rag_config, where)
    per_document = Counter(chunk.document for chunk in index.passages)
    k, predictions, fingerprint, phases = rag_config.k, [], hashlib.sha256(), {}
    with phase("eval", phases):
        for number, row in enumerate(asked):
            question, source = prompt_text(row), str(row["source"])
            start = time.perf_counter()
            hits = retrieve(index, question, rag_config, reranker)
            seconds = time.perf_counter() - start
            figures = ranking(hits, source, k, per_document.get(source, 1))
            gold = answer_text(row) if row.get("completion") is not None or "label" in row else ""
            found = " ".join(hit.text for hit in hits)
            fingerprint.update(json.dumps([question, source], ensure_ascii=False).encode())
            predictions.append(
                {
                    "row": number,
                    "question": question,
                    "source": source,
                    "passages": [{"id": hit.id, "score": hit.score} for hit in hits],
                    "correct": bool(figures["found"]),
                    **{name: round(value, 4) for name, value in figures.items() if name != "found"},
                    # The passage that holds the fact, not only its document: gold found as a whole phrase.
                    "answer_in_passages": bool(normalize_answer(gold)) and contains(found, gold) == 1.0,
                    "latency_ms": round(1000 * seconds, 3),
                }
            )
    found = [float(p["correct"]) for p in predictions]
    latencies = [p["latency_ms"] for p in predictions]
    metrics = {
        "task": "retrieval",
        "rows": len(predictions),
        "metric": f"recall@{k}",
        "accuracy": round(sum(found) / len(found), 4),
        "accuracy_ci95": score_interval(found),
        "metrics": {
            name: {"mean": round(sum(p[key] for p in predictions) / len(predictions), 4)}
            for name, key in (
                ("mrr", "reciprocal_rank"),
                (f"ndcg@{k}", "ndcg"),
                (f"precision@{k}", "precision"),
                ("answer_in_passages", "answer_in_passages"),
            )
        },
        "latency_ms_per_example": round(sum(latencies) / len(latencies), 3),
        "latency_ms_ci95": bootstrap_interval(latencies),
        "retrieval_ms_per_example": round(sum(latencies) / len(latencies), 3),
        "rows_fingerprint": fingerprint.hexdigest(),
        "prompt_fingerprint": hashlib.sha256(b"retrieval").hexdigest(),
        "phase": phases["eval"],
    }
    return EvalResult(task="retrieval", metrics=metrics, predictions=predictions)


def request_latency(eval_metrics: dict[str, Any], retrieval: Retrieval, k: int) -> dict[str, Any]:
    """An evaluation's metrics with retrieval in them: the latency of a request is retrieval plus generation, and
    both parts are kept."""
    figures = retrieval.metrics(k)
    generation = eval_metrics["latency_ms_per_example"]
    return {
        **eval_metrics,
        **figures,
        "generation_ms_per_example": generation,
        "latency_ms_per_example": round(generation + (figures["retrieval_ms_per_example"] or 0.0), 2),
    }


def grounding(task: str, predictions: list[dict[str, Any]], retrieval: Retrieval) -> dict[str, Any]:
    """How the replies used what retrieval found, for metrics.json: `answer_found_not_used_rate`, the share of rows
    whose gold answer was in the passages yet whose reply was scored wrong, and for free-form replies (`task:
    generate`) `groundedness`, the share of replies with at least `GROUNDED_SHARE` of their words in their passages
    or question. Each free-form prediction gets its `supported_share` and `grounded` (a reply without words is not
    grounded)."""
    rows = len(predictions)
    if not rows:
        return {"groundedness": None, "answer_found_not_used_rate": None}
    unused = [found and not p.get("correct") for p, found in zip(predictions, retrieval.answer_in_passages)]
    figures: dict[str, Any] = {"groundedness": None, "answer_found_not_used_rate": round(sum(unused) / rows, 4)}
    if task != "generate":
        return figures
    for prediction, evidence in zip(predictions, retrieval.evidence):
        share = supported_share(str(prediction.get("prediction") or ""), evidence)
        prediction["supported_share"] = None if share is None else round(share, 4)
        prediction["grounded"] = share is not None and share >= GROUNDED_SHARE
    figures["groundedness"] = round(sum(p["grounded"] for p in predictions) / rows, 4)
    return figures


def _closed(index: Index):
    index.close()
    return index.folder


def retrieval_aware_rows(recipe, config, tokenizer, train, evaluation, phases: dict[str, Any]):
    """Retrieval-aware fine-tuning (`method: sft` with a `rag:` block): train rows (a Dataset) and eval rows whose
    prompts carry the passages retrieved for them, as a rag run would put them; the eval rows' Retrieval; the index
    report. `config` and `tokenizer` are the model's (`models.load_config_and_tokenizer`). The index is built (or
    reused) in the `index` phase, a one-off cost beside training."""

    with phase("index", phases):
        if world_size() > 1:  # rank 0 builds or updates the index; the others wait for it, then open it as it is
            shared(lambda: _closed(open_index(recipe.rag, tokenizer, context_length(config), recipe.source)))
        index = open_index(recipe.rag, tokenizer, context_length(config), recipe.source)
    try:
        train_rows, _ = with_passages(train, index, recipe.rag, tokenizer, context_length(config), what="train")
        eval_rows, retrieval = with_passages(evaluation, index, recipe.rag, tokenizer, context_length(config))
    finally:
        index.close()
    # The trainer reads the prompt and its answer; the retrieval record is for predictions only.
    train_rows = [{k: v for k, v in row.items() if k not in ("passages", "base_prompt")} for row in train_rows]
    return table(train_rows), eval_rows, retrieval, index.report


def context_length(config) -> int | None:
    """The number of positions the model reads (its config's max_position_embeddings)."""
    return getattr(config, "max_position_embeddings", None)
