"""Retrieval's stages beyond the first search: rank metrics (MRR, nDCG, precision), filters by document and tag over
BM25 and the vector store, the relative score cutoff, passage order in the prompt, the late-interaction reranker on
the offline embedding model, and `rag.retrieval_only` runs that load no language model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_rag import FACTS, _rag_document, write_corpus

from tuner.errors import TunerError
from tuner.index import Hit, build_index
from tuner.rag_config import FilterConfig, RagConfig, RerankConfig
from tuner.retrieval import _with_context, ranking, retrieval_scores, retrieve

pytestmark = pytest.mark.usefixtures("own_cache")

TAGGED = {
    **FACTS,
    "kettle.md": "---\ntags: [products, kitchen]\n---\n" + FACTS["kettle.md"],
    "toaster.md": "---\ntags: products\n---\n" + FACTS["toaster.md"],
}


def _hit(document: str, number: int = 0, score: float = 1.0, text: str = "") -> Hit:
    return Hit(id=f"{document}#{number}", document=document, title=None, text=text or document, score=score)


# ---- rank metrics ----


def test_ranks_score_the_first_relevant_hit_and_all_relevant_hits():
    hits = [_hit("a.md"), _hit("kettle.md", 0), _hit("b.md"), _hit("kettle.md", 1)]
    second = ranking(hits, "kettle.md", k=3, relevant_passages=1)
    assert second == {
        "found": 1.0,
        "reciprocal_rank": 0.5,
        "ndcg": pytest.approx(1 / math.log2(3)),
        "precision": pytest.approx(1 / 3),
    }
    # Two passages of the source in the top 4, of two in the corpus: the ideal puts both on top.
    both = ranking(hits, "kettle.md", k=4, relevant_passages=2)
    ideal = 1 + 1 / math.log2(3)
    assert both["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert both["precision"] == 0.5
    # A passage id as the source: only that passage counts.
    assert ranking(hits, "kettle.md#1", k=4, relevant_passages=1)["reciprocal_rank"] == 0.25
    assert ranking(hits, "kettle.md#1", k=3, relevant_passages=1) == {
        "found": 0.0,
        "reciprocal_rank": 0.0,
        "ndcg": 0.0,
        "precision": 0.0,
    }
    assert ranking([_hit("kettle.md")], "kettle.md", k=1, relevant_passages=3)["ndcg"] == 1.0


# ---- filters ----


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid"])
def test_a_filter_keeps_search_inside_the_documents_and_tags_it_names(smollm2_tokenizer, tmp_path, retriever):
    corpus = write_corpus(tmp_path / "corpus", TAGGED)
    index = build_index(corpus, smollm2_tokenizer, retriever, chunk_size=32, chunk_overlap=4)
    question = "How long is the Aurora Kettle warranty and what does the toaster cost?"
    try:
        everything = {hit.document for hit in index.search(question, 4, retriever)}
        assert {"kettle.md", "toaster.md"} <= everything
        by_tag = index.search(question, 4, retriever, where=FilterConfig(tags=["kitchen"]))
        assert by_tag and {hit.document for hit in by_tag} == {"kettle.md"}
        products = index.search(question, 4, retriever, where=FilterConfig(tags=["products", "other"]))
        assert {hit.document for hit in products} == {"kettle.md", "toaster.md"}
        policies = index.search("returned within days", 4, retriever, where=FilterConfig(documents=["policies/*"]))
        assert [hit.document for hit in policies] == ["policies/returns.txt"]
        both = FilterConfig(documents=["*.md"], tags=["products"])
        assert {hit.document for hit in index.search(question, 4, retriever, where=both)} <= {"kettle.md", "toaster.md"}
        assert index.search(question, 4, retriever, where=FilterConfig(documents=["nowhere/*"])) == []
    finally:
        index.close()


def test_the_tags_of_front_matter_reach_the_passages_and_leave_the_text(smollm2_tokenizer, tmp_path):
    index = build_index(write_corpus(tmp_path / "corpus", TAGGED), smollm2_tokenizer, chunk_size=32, chunk_overlap=4)
    kettle = [chunk for chunk in index.passages if chunk.document == "kettle.md"]
    assert kettle and all(list(chunk.tags) == ["products", "kitchen"] for chunk in kettle)
    assert not any("tags:" in chunk.text for chunk in kettle)


# ---- cutoff, order, rerank ----


def test_min_score_leaves_out_passages_far_below_the_best(smollm2_tokenizer, tmp_path):
    index = build_index(write_corpus(tmp_path / "corpus"), smollm2_tokenizer, chunk_size=32, chunk_overlap=4)
    question = "How long is the Aurora Kettle warranty and when does the Brindleton office open?"
    every = retrieve(index, question, RagConfig(corpus="c", k=4))
    assert [hit.document for hit in every] == ["kettle.md", "offices.md"]  # the office half-matched
    kept = retrieve(index, question, RagConfig(corpus="c", k=4, min_score=0.6))
    assert kept == every[:1] and every[1].score < 0.6 * every[0].score
    assert retrieve(index, question, RagConfig(corpus="c", k=4, min_score=0.3)) == every


def test_best_last_puts_the_strongest_passage_next_to_the_question():
    hits = [_hit("kettle.md", text="Best passage."), _hit("toaster.md", text="Second passage.")]
    first = _with_context("Q?", "Q?", hits, RagConfig(corpus="c"))
    last = _with_context("Q?", "Q?", hits, RagConfig(corpus="c", order="best_last", passage_template="{text}"))
    assert first.index("Best passage.") < first.index("Second passage.")
    assert last.index("Second passage.") < last.index("Best passage.") < last.index("Question: Q?")
    chat = _with_context([{"role": "user", "content": "Q?"}], "Q?", hits, RagConfig(corpus="c", order="best_last"))
    assert chat[-1]["content"] == _with_context("Q?", "Q?", hits, RagConfig(corpus="c", order="best_last"))


def test_the_late_interaction_reranker_lifts_the_passage_that_answers(smollm2_tokenizer, tmp_path):
    from tuner.reranker import load_reranker

    # BM25 favours the passage that repeats the question's words (many, come); the one that answers says them once.
    files = {
        "noise.md": "Come and see the Aurora range: many kettle colours come in many sizes, and many more come soon.",
        "kettle.md": "The Aurora Kettle carries a warranty of 33 months from the day of purchase, and repairs are free "
        "for that time.",
        "toaster.md": FACTS["toaster.md"],
        "offices.md": FACTS["offices.md"],
    }
    index = build_index(write_corpus(tmp_path / "corpus", files), smollm2_tokenizer, chunk_size=48, chunk_overlap=4)
    question = "How many months of warranty does the Aurora Kettle come with?"
    first = index.search(question, 4)
    reranker = load_reranker(RerankConfig(), "all-MiniLM-L6-v2")
    reranked = reranker.rerank(question, first)
    assert first[0].document == "noise.md" and reranked[0].document == "kettle.md"
    assert {hit.id for hit in reranked} == {hit.id for hit in first}
    assert [hit.score for hit in reranked] == sorted((hit.score for hit in reranked), reverse=True)
    # Through retrieve: candidates beyond k reach the reranker, and k come back.
    config = RagConfig(corpus="c", k=1, rerank=RerankConfig(candidates=4))
    assert [hit.document for hit in retrieve(index, question, config, reranker)] == ["kettle.md"]
    assert [hit.document for hit in retrieve(index, question, RagConfig(corpus="c", k=1))] == ["noise.md"]


def test_a_reranker_that_cannot_be_found_is_named(tmp_path):
    from tuner.reranker import load_reranker

    with pytest.raises(TunerError, match=r"recipe.yaml: key `rag.rerank.model`: 'colbert' is neither late-interaction"):
        load_reranker(RerankConfig(model="colbert"), "all-MiniLM-L6-v2", "recipe.yaml")
    with pytest.raises(TunerError, match=r"key `rag.rerank.model`: could not load the cross-encoder"):
        load_reranker(RerankConfig(model=str(tmp_path)), "all-MiniLM-L6-v2", "recipe.yaml")


# ---- retrieval only ----


def test_a_retrieval_only_run_scores_the_index_without_loading_the_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import tuner.recipes.rag as rag
    from tuner import recipe_from_dict, run
    from tuner.summary import report_run

    def refuse(*args, **kwargs):
        raise AssertionError("retrieval_only loaded the language model")

    monkeypatch.setattr(rag, "load_model", refuse)
    result = run(recipe_from_dict(_rag_document(tiny_model_dir, tmp_path, retrieval_only=True)))
    scores = result.metrics["eval"]
    assert result.metrics["retrieval_only"] is True and scores["task"] == "retrieval"
    assert scores["metric"] == "recall@2" and scores["accuracy"] == 1.0 and scores["rows"] == 3
    assert scores["metrics"]["mrr"]["mean"] == 1.0 and scores["metrics"]["ndcg@2"]["mean"] == 1.0
    assert scores["metrics"]["precision@2"]["mean"] == 0.5  # one passage per document, two slots
    assert scores["metrics"]["answer_in_passages"]["mean"] == 1.0
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["source"] for p in predictions] == ["kettle.md", "toaster.md", "policies/returns.txt"]
    assert all(p["correct"] and p["passages"][0]["id"].startswith(p["source"]) for p in predictions)
    assert json.loads((result.run_dir / "manifest.json").read_text())["model"]["loaded"].startswith("tokenizer only")
    capsys.readouterr()
    report_run(result)  # what the command prints: retrieval's own figures, no model half
    said = capsys.readouterr().out
    assert "eval (retrieval): recall@2 1.0000" in said and "mrr 1.0000" in said and "model)" not in said


def test_retrieval_only_on_rows_without_sources_names_the_key(smollm2_tokenizer, tmp_path):
    index = build_index(write_corpus(tmp_path / "corpus"), smollm2_tokenizer, chunk_size=32, chunk_overlap=4)
    rows = [{"prompt": "How long is the warranty?", "completion": "33 months"}]
    with pytest.raises(TunerError, match=r"key `rag.retrieval_only`: no eval row names its source.*data.source_column"):
        retrieval_scores(rows, index, RagConfig(corpus="c", retrieval_only=True), "recipe.yaml")


def test_retrieval_only_scores_fall_as_the_index_stops_finding_the_source(smollm2_tokenizer, tmp_path):
    index = build_index(write_corpus(tmp_path / "corpus"), smollm2_tokenizer, chunk_size=32, chunk_overlap=4)
    rows = [
        {"prompt": "How long is the Aurora Kettle warranty?", "completion": "33", "source": "kettle.md"},
        {"prompt": "How long is the Aurora Kettle warranty?", "completion": "33", "source": "offices.md"},
    ]
    result = retrieval_scores(rows, index, RagConfig(corpus="c", k=1))
    assert result.metrics["accuracy"] == 0.5 and [p["correct"] for p in result.predictions] == [True, False]
    assert result.metrics["metrics"]["mrr"]["mean"] == 0.5
    assert Path(index.folder).is_dir()


def test_a_sweep_of_retrieval_only_runs_compares_chunking_without_a_break_even(tiny_model_dir, tmp_path):
    from tuner import recipe_from_dict
    from tuner.comparison import method_label
    from tuner.recipes.sweep import sweep

    recipe = recipe_from_dict(_rag_document(tiny_model_dir, tmp_path, retrieval_only=True))
    done = sweep(recipe, {"rag.chunk.strategy": ["tokens", "sentences"]})
    rows = done.comparison.table.to_dict("records")
    assert [row["method"] for row in rows] == ["retrieval only (BM25)"] * 2
    assert all(row["retrieval_accuracy"] == 1.0 and row["index_hours"] > 0 for row in rows)
    assert all(row["break_even_requests"] is None for row in rows)  # nothing served, nothing to pay back
    assert done.curve.axes[0].get_ylabel() == "retrieval recall@2"  # the score retrieval is judged by
    page = done.comparison.markdown()
    assert "mrr 1.000" in page and "Δ retrieval vs baseline" in page and "Break-even" not in page
    assert method_label({"method": "rag", "retriever": "bm25", "rerank": "late-interaction"}, {}) == (
        "RAG (BM25, reranked)"
    )
