"""Retrieval: corpus reading and chunking, the index (built, reused, updated, never half-written), BM25, dense and
hybrid search over the real offline embedding model, prompts with passages, the rag recipe and retrieval-aware SFT
on the tiny model, compare's retrieval rows, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuner.data.corpus import read_corpus
from tuner.data.passages import chunk_documents
from tuner.errors import TunerError
from tuner.index import Hit, Index, build_index

from helpers import recipe_document, write_jsonl, write_recipe

FACTS = {
    "kettle.md": "# Aurora Kettle\n\nThe Aurora Kettle carries a warranty of 33 months. It is made in Larkspur.",
    "toaster.md": "# Brisk Toaster\n\nThe Brisk Toaster costs 106 crowns. Its product lead is Bram Sorrel.",
    "policies/returns.txt": "Products may be returned within 41 days of delivery with the original receipt.",
    "offices.md": "# Offices\n\nThe Brindleton office opens at 7:40 and employs 52 people.",
}


def write_corpus(folder: Path, files: dict[str, str] = FACTS) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


pytestmark = pytest.mark.usefixtures("own_cache")


# ---- corpus and chunks ----


def test_a_corpus_folder_is_read_in_path_order_and_unreadable_files_are_skipped_by_name(tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    (folder / "scan.txt").write_bytes(b"\xff\xfe\x00\x81 binary")
    (folder / "empty.md").write_text("  \n", encoding="utf-8")
    (folder / "manual.pdf").write_bytes(b"%PDF-1.4")
    corpus = read_corpus(folder)
    assert [d.id for d in corpus.documents] == ["kettle.md", "offices.md", "policies/returns.txt", "toaster.md"]
    assert corpus.documents[0].title == "Aurora Kettle" and corpus.documents[2].title == "returns"
    skipped = dict(corpus.skipped)
    assert "not UTF-8" in skipped["scan.txt"] and skipped["empty.md"] == "empty" and "manual.pdf" in skipped


def test_a_corpus_file_takes_text_id_and_title_columns(tmp_path):
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": "k1", "title": "Kettle", "text": "Warranty 33 months."},
            {"text": "No id here."},
            {"id": "e", "text": ""},
        ],
    )
    corpus = read_corpus(path)
    assert [(d.id, d.title) for d in corpus.documents] == [("k1", "Kettle"), ("row-1", None)]
    assert corpus.skipped == [("row 2", "`text` is empty or not text")]


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "does not exist"),
        ("empty-folder", "holds no readable document"),
        ("binary-only", "not UTF-8"),
        ("no-text-column", "needs a `text` column"),
        ("duplicate-id", "used by an earlier"),
    ],
)
def test_bad_corpora_are_refused_with_the_file_named(tmp_path, case, expect):
    path = tmp_path / case
    if case == "empty-folder":
        path.mkdir()
    elif case == "binary-only":
        path.mkdir()
        (path / "a.txt").write_bytes(b"\xff\xfe\xfa")
    elif case == "no-text-column":
        path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "x"}])
    elif case == "duplicate-id":
        path = write_jsonl(tmp_path / "docs.jsonl", [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}])
    with pytest.raises(TunerError, match=expect) as error:
        read_corpus(path)
    assert str(path) in str(error.value)


def test_chunks_have_the_size_and_overlap_asked_and_stable_ids(tokenizer, tmp_path):
    text = " ".join(f"Fact {n}: the part numbered {n} weighs {3 * n} grams." for n in range(60))
    corpus = read_corpus(write_corpus(tmp_path / "c", {"long.md": text, "short.md": "One short line."}))
    chunks = chunk_documents(corpus.documents, tokenizer, size=40, overlap=8)
    long = [c for c in chunks if c.document == "long.md"]
    assert [c.id for c in long] == [f"long.md#{n}" for n in range(len(long))] and len(long) > 5
    assert all(c.tokens <= 40 for c in chunks) and long[0].tokens == 40
    for first, second in zip(long, long[1:]):  # consecutive passages share text (the overlap)
        assert first.text[-12:].split()[-1] in second.text[:80]
    assert long[0].text.startswith("Fact 0") and long[-1].text.endswith("grams.")
    again = chunk_documents(corpus.documents, tokenizer, size=40, overlap=8)
    assert [(c.id, c.digest) for c in again] == [(c.id, c.digest) for c in chunks]
    with pytest.raises(TunerError, match="overlap"):
        chunk_documents(corpus.documents, tokenizer, size=8, overlap=8)


# ---- the index ----


def test_the_index_is_built_reused_and_updated_only_where_the_corpus_changed(tokenizer, tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    first = build_index(folder, tokenizer, chunk_size=32, chunk_overlap=4)
    assert first.report["status"] == "built" and first.report["passages"] == 4
    assert first.search("How long is the Aurora Kettle warranty?", k=1)[0].document == "kettle.md"
    again = build_index(folder, tokenizer, chunk_size=32, chunk_overlap=4)
    assert again.report["status"] == "reused" and again.folder == first.folder

    (folder / "kettle.md").write_text("# Aurora Kettle\n\nThe Aurora Kettle carries a warranty of 48 months.")
    (folder / "offices.md").unlink()
    (folder / "lamp.md").write_text("# Cinder Lamp\n\nThe Cinder Lamp runs for 19 hours.")
    updated = build_index(folder, tokenizer, chunk_size=32, chunk_overlap=4)
    report = updated.report
    assert (report["status"], report["added"], report["changed"], report["removed"]) == ("updated", 1, 1, 1)
    hit = updated.search("Aurora Kettle warranty months", k=1)[0]
    assert "48 months" in hit.text and hit.id == "kettle.md#0"
    # Other chunking settings are another index, in another folder.
    assert build_index(folder, tokenizer, chunk_size=16, chunk_overlap=2).folder != first.folder


def test_a_reused_index_keeps_its_own_passage_order(tokenizer, tmp_path):
    # The same documents in another row order are the same corpus (reused), and BM25's rows still point at the
    # passages they were built from.
    rows = [{"id": name, "text": text} for name, text in FACTS.items()]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    build_index(path, tokenizer, chunk_size=32, chunk_overlap=4)
    write_jsonl(path, list(reversed(rows)))
    again = build_index(path, tokenizer, chunk_size=32, chunk_overlap=4)
    assert again.report["status"] == "reused"
    assert again.search("Aurora Kettle warranty", 1)[0].document == "kettle.md"
    with pytest.raises(TunerError, match="retriever 'tfidf' is not one of bm25, dense, hybrid"):
        again.search("x", 1, "tfidf")


def test_an_index_folder_is_never_half_written(tokenizer, tmp_path, monkeypatch):
    import tuner.index

    folder = write_corpus(tmp_path / "corpus")
    built = build_index(folder, tokenizer, chunk_size=32, chunk_overlap=4)
    before = {p.relative_to(built.folder): p.read_bytes() for p in built.folder.rglob("*") if p.is_file()}
    (folder / "kettle.md").write_text("The Aurora Kettle carries a warranty of 12 months.")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner.index, "_write_bm25", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(folder, tokenizer, chunk_size=32, chunk_overlap=4)
    after = {p.relative_to(built.folder): p.read_bytes() for p in built.folder.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in built.folder.parent.iterdir()] == [built.folder.name]  # no staging folder left


def test_hybrid_fuses_by_reciprocal_rank(tmp_path, monkeypatch):
    def hits(*ids):
        return [Hit(id=i, document=i, title=None, text=i, score=1.0) for i in ids]

    index = Index(tmp_path, {}, [], {})
    monkeypatch.setattr(index, "_bm25_hits", lambda question, k, mask=None: hits("a", "b", "c"))
    monkeypatch.setattr(index, "_dense_hits", lambda question, k, mask=None: hits("d", "b", "a"))
    index._by_id = {
        h.id: type("C", (), {"id": h.id, "document": h.id, "title": None, "text": h.id, "section": None})()
        for h in hits("a", "b", "c", "d")
    }
    fused = index.search("q", k=3, retriever="hybrid")
    # a: 1/61 + 1/63, b: 2/62, d: 1/61, c: 1/63
    assert [h.id for h in fused] == ["a", "b", "d"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 63, abs=1e-4)


@pytest.fixture(scope="module")
def dense_corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("dense") / "corpus")


def test_dense_retrieval_round_trips_through_the_vector_store_and_embeds_only_what_changed(
    dense_corpus, tokenizer, tmp_path
):
    corpus = tmp_path / "corpus"
    shutil.copytree(dense_corpus, corpus)
    store = tmp_path / "index"
    built = build_index(corpus, tokenizer, retriever="dense", chunk_size=32, chunk_overlap=4, folder=store)
    assert built.report["embedded"] == 4 and (store / "vectors").is_dir()
    # A paraphrase shares few words with the passage: the embedding finds it.
    assert built.search("When may I send back something I bought?", 1, "dense")[0].document == "policies/returns.txt"
    expected = [h.id for h in built.search("who leads the toaster product", 4, "dense")]
    built.close()
    reopened = build_index(corpus, tokenizer, retriever="dense", chunk_size=32, chunk_overlap=4, folder=store)
    assert reopened.report["status"] == "reused"
    assert [h.id for h in reopened.search("who leads the toaster product", 4, "dense")] == expected
    reopened.close()
    (corpus / "toaster.md").write_text("# Brisk Toaster\n\nThe Brisk Toaster's product lead is Edda Voss.")
    updated = build_index(corpus, tokenizer, retriever="hybrid", chunk_size=32, chunk_overlap=4, folder=store)
    assert updated.report["embedded"] == 1 and updated.report["changed"] == 1
    top = updated.search("Who is the product lead of the Brisk Toaster?", 2, "hybrid")
    assert "Edda Voss" in top[0].text
    updated.close()
    # Vectors of another model cannot be searched with these.
    other = tmp_path / "other-model"
    shutil.copytree(_packaged_model_folder(), other)
    with pytest.raises(TunerError, match="built with the embedding model 'all-MiniLM-L6-v2'"):
        build_index(
            corpus,
            tokenizer,
            retriever="dense",
            chunk_size=32,
            chunk_overlap=4,
            folder=store,
            embedding_model=str(other),
        )


def test_a_dense_index_is_searched_by_several_processes_and_a_held_store_is_waited_for(
    dense_corpus, tokenizer, tmp_path, monkeypatch
):
    # Review M7: Qdrant's embedded store locks its folder (one client at a time): two runs on one corpus, or the ranks
    # of a launched run, failed. Each now reads the points into its own in-memory copy and lets the folder go.
    import threading

    from qdrant_client import QdrantClient

    from tuner import index as index_module

    store = tmp_path / "index"
    build_index(dense_corpus, tokenizer, retriever="dense", chunk_size=32, chunk_overlap=4, folder=store).close()
    first, second = (
        build_index(dense_corpus, tokenizer, retriever="dense", chunk_size=32, chunk_overlap=4, folder=store)
        for _ in range(2)
    )
    assert [hit.id for hit in first.search("returns", 2, "dense")] == [
        hit.id for hit in second.search("returns", 2, "dense")
    ]
    holder = QdrantClient(path=str(store / "vectors"))  # another process building or reading it now
    threading.Timer(1.0, holder.close).start()
    third = build_index(dense_corpus, tokenizer, retriever="dense", chunk_size=32, chunk_overlap=4, folder=store)
    assert third.search("returns", 1, "dense")  # waited for the holder, then searched
    holder = QdrantClient(path=str(store / "vectors"))
    monkeypatch.setattr(index_module, "STORE_WAIT_SECONDS", 0.5)
    try:
        fourth = build_index(dense_corpus, tokenizer, retriever="dense", chunk_size=32, chunk_overlap=4, folder=store)
        with pytest.raises(TunerError, match="in use by another process.*its own `rag.store.path`"):
            fourth.search("returns", 1, "dense")
    finally:
        holder.close()
    for index in (first, second, third):
        index.close()


def _packaged_model_folder() -> Path:
    from tuner.embedder import resolve_embedding_model

    return Path(resolve_embedding_model("all-MiniLM-L6-v2"))


def test_embeddings_use_bf16_only_where_the_hardware_computes_it(monkeypatch):
    # A GPU that only emulates bf16 (T4, V100) counts as bf16-capable for torch's default check; the shared probe
    # in hardware.py does not, and the embedder now asks it.
    import torch

    import tuner.embedder as embedder

    monkeypatch.setattr(embedder, "device_kind", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert embedder.embedding_precision() == "fp32"
    monkeypatch.setattr(embedder, "device_kind", lambda: "cpu")
    monkeypatch.setattr(embedder, "cpu_bf16_speedup_here", lambda: 2.0)
    assert embedder.embedding_precision() == "bf16"
    monkeypatch.setattr(embedder, "cpu_bf16_speedup_here", lambda: 0.6)  # native bf16 that measured slower
    assert embedder.embedding_precision() == "fp32"


def test_an_embedding_model_that_cannot_be_found_is_named(tmp_path):
    from tuner.embedder import resolve_embedding_model

    with pytest.raises(TunerError, match="key `rag.embedding_model`: ./no/such/model does not exist"):
        resolve_embedding_model("./no/such/model")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(TunerError, match="not a sentence-transformers model folder"):
        resolve_embedding_model(str(tmp_path / "not-a-model"))


# ---- prompts with passages ----


def test_rows_carry_their_passages_and_too_long_prompts_name_the_limit(tokenizer, tmp_path):
    from tuner.rag_config import RagConfig
    from tuner.retrieval import with_passages

    index = build_index(write_corpus(tmp_path / "corpus"), tokenizer, chunk_size=32, chunk_overlap=4)
    rows = [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How long is the Aurora Kettle warranty?"},
            ],
            "completion": "33 months",
            "source": "kettle.md",
        },
        {
            "prompt": [{"role": "user", "content": "Who leads the Brisk Toaster?"}],
            "completion": "Bram Sorrel",
            "source": "offices.md",
        },
    ]
    config = RagConfig(corpus=str(tmp_path / "corpus"), k=1)
    prepared, retrieval = with_passages(rows, index, config, tokenizer, context_tokens=2048)
    first = prepared[0]
    assert first["prompt"][0] == rows[0]["prompt"][0] and first["base_prompt"] == rows[0]["prompt"]
    content = first["prompt"][-1]["content"]
    assert "[kettle.md#0]" in content and "warranty of 33 months" in content
    assert content.endswith("Question: How long is the Aurora Kettle warranty?")
    assert first["passages"][0]["id"] == "kettle.md#0"
    figures = retrieval.metrics(1)
    assert figures["recall_at_1"] == 0.5  # the second row names the wrong source on purpose
    assert figures["answer_in_passages_rate"] == 1.0
    three = [{**rows[0], "completion": "3"}]  # found as a whole number only: "3" is not in "33 months"
    assert with_passages(three, index, config, tokenizer, 2048)[1].answer_in_passages == [False]
    # Slots are filled once: text that looks like a slot stays as written.
    odd = [{"prompt": "Is {passages} a {question}?", "completion": "no"}]
    assert with_passages(odd, index, config, tokenizer, 2048)[0][0]["prompt"].endswith(
        "Question: Is {passages} a {question}?"
    )
    with pytest.raises(
        TunerError, match="eval row 0: its prompt with 1 passages is .* Lower `rag.k` or `rag.chunk.size`"
    ):
        with_passages(rows, index, config, tokenizer, context_tokens=80)


# ---- recipes on the tiny model ----


def _knowledge_files(tmp_path):
    rows = [
        {
            "prompt": "How long is the Aurora Kettle warranty?",
            "completion": "33 months",
            "choices": ["33 months", "12 months"],
            "source": "kettle.md",
        },
        {
            "prompt": "What does the Brisk Toaster cost?",
            "completion": "106 crowns",
            "choices": ["106 crowns", "90 crowns"],
            "source": "toaster.md",
        },
        {
            "prompt": "How many days do I have to return a product?",
            "completion": "41 days",
            "choices": ["41 days", "30 days"],
            "source": "policies/returns.txt",
        },
    ]
    return write_jsonl(tmp_path / "train.jsonl", rows * 4), write_jsonl(tmp_path / "test.jsonl", rows)


def _rag_document(tiny_model_dir, tmp_path, method="rag", **rag):
    train, test = _knowledge_files(tmp_path)
    document = recipe_document(
        tiny_model_dir,
        train,
        test,
        tmp_path / "run",
        method=method,
        rag={"corpus": str(write_corpus(tmp_path / "corpus")), "k": 2, "chunk": {"size": 32, "overlap": 4}, **rag},
        eval={"task": "choice"},
    )
    document["data"].update(format="prompt_completion", choices_column="choices", source_column="source")
    document["data"].pop("prompt_template")
    if method == "rag":
        document.pop("train"), document.pop("adapter")
    return document


def test_a_rag_run_records_passages_recall_and_the_latency_split(tiny_model_dir, tmp_path):
    from tuner import recipe_from_dict, run

    result = run(recipe_from_dict(_rag_document(tiny_model_dir, tmp_path)))
    scores = result.metrics["eval"]
    assert result.metrics["method"] == "rag" and scores["recall_at_2"] == 1.0
    assert scores["latency_ms_per_example"] == pytest.approx(
        scores["retrieval_ms_per_example"] + scores["generation_ms_per_example"], abs=0.02
    )
    assert result.metrics["index"]["status"] == "built" and result.metrics["phases"]["index"]["wall_seconds"] > 0
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    # BM25 gives at most k passages: none that shares no word with the question.
    assert all(1 <= len(p["passages"]) <= 2 and "score" in p["passages"][0] for p in predictions)
    assert "[kettle.md#0]" in predictions[0]["prompt"]
    # The same rows and rendering as a zero-shot run: compare sets them side by side.
    zero = recipe_document(
        tiny_model_dir,
        *_knowledge_files(tmp_path),
        tmp_path / "zero",
        method="fewshot",
        fewshot={"k": 0},
        eval={"task": "choice"},
    )
    zero["data"].update(format="prompt_completion", choices_column="choices", source_column="source")
    zero["data"].pop("prompt_template"), zero.pop("train"), zero.pop("adapter")
    zero_result = run(recipe_from_dict(zero))
    assert zero_result.metrics["eval"]["rows_fingerprint"] == scores["rows_fingerprint"]
    assert zero_result.metrics["eval"]["prompt_fingerprint"] == scores["prompt_fingerprint"]
    assert scores["prompt_tokens_per_example"] > zero_result.metrics["eval"]["prompt_tokens_per_example"] + 20


def test_retrieval_aware_sft_trains_on_prompts_with_passages(tiny_model_dir, tmp_path, monkeypatch):
    import tuner.recipes.sft as sft
    from tuner import recipe_from_dict

    seen = {}
    build = sft.build_trainer

    def spy(recipe, loaded, rows, run_dir):
        seen["rows"] = list(rows)
        return build(recipe, loaded, rows, run_dir)

    monkeypatch.setattr(sft, "build_trainer", spy)
    document = _rag_document(tiny_model_dir, tmp_path, method="sft")
    document["train"]["max_length"] = 256
    document["data"]["drop_eval_overlap"] = False  # the tiny set trains on the questions it scores
    result = sft.run(recipe_from_dict(document))
    assert all("Answer the question using the passages below" in row["prompt"][-1]["content"] for row in seen["rows"])
    assert "passages" not in seen["rows"][0] and result.metrics["retriever"] == "bm25"
    assert result.metrics["eval"]["recall_at_2"] == 1.0 and "index" in result.metrics["phases"]


def test_compare_labels_retrieval_rows_and_counts_index_hours(tiny_model_dir, tmp_path):
    from tuner import compare, recipe_from_dict, run

    rag = run(recipe_from_dict(_rag_document(tiny_model_dir, tmp_path)))
    comparison = compare([str(rag.run_dir)])
    row = comparison.table.iloc[0]
    assert row["method"] == "RAG (BM25)" and row["index_hours"] > 0 and row["retrieval_ms"] >= 0
    text = comparison.markdown()
    assert "index hours" in text and "ms/example (retrieval)" in text and "prompt tokens" in text
    assert len(comparison.figure.axes) == 2  # against one-off cost, and against latency


def test_method_labels_of_the_four_corners():
    from tuner.comparison import method_label

    assert method_label({"method": "rag", "retriever": "dense"}, {}) == "RAG (dense)"
    assert (
        method_label({"method": "rag", "retriever": "bm25", "adapter_run": "runs/sft", "upstream_method": "sft"}, {})
        == "SFT+RAG (BM25)"
    )
    assert (
        method_label(
            {
                "method": "rag",
                "retriever": "bm25",
                "adapter_run": "runs/x",
                "upstream_method": "sft",
                "upstream_retrieval_aware": True,
            },
            {},
        )
        == "retrieval-aware SFT (BM25)"
    )
    assert method_label({"method": "sft", "retriever": "hybrid"}, {}) == "retrieval-aware SFT (hybrid)"


def test_tuner_rag_refuses_an_empty_corpus_before_loading_the_model(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from tuner.cli import cli

    document = _rag_document(tiny_model_dir, tmp_path)
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    (empty / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xd8")
    document["rag"]["corpus"] = str(empty)
    recipe = write_recipe(tmp_path / "rag.yaml", document)
    result = CliRunner().invoke(cli, ["rag", str(recipe)])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "holds no readable document (photo.txt: not UTF-8 text" in result.stderr
    assert not (tmp_path / "run").exists()  # no run folder for a run that never started


def test_a_server_store_keeps_the_vectors_there_and_the_passages_in_the_folder(
    dense_corpus, tokenizer, tmp_path, monkeypatch
):
    # No Qdrant server runs here: an in-memory Qdrant stands in for it behind the same client API.
    import qdrant_client

    server = qdrant_client.QdrantClient(location=":memory:")
    opened = []

    def client(url=None, api_key=None, path=None, **kwargs):
        assert path is None, "with rag.store.url the vectors must not go into the index folder"
        opened.append((url, api_key))
        return type(
            "Shared",
            (),
            {
                name: getattr(server, name)
                for name in (
                    "collection_exists",
                    "create_collection",
                    "delete_collection",
                    "delete",
                    "upsert",
                    "query_points",
                )
            }
            | {"close": lambda self: None},
        )()

    monkeypatch.setattr(qdrant_client, "QdrantClient", client)
    monkeypatch.setenv("QDRANT_TEST_KEY", "s3cret-key-value")
    from tuner.rag_config import StoreConfig

    store = StoreConfig(url="http://qdrant.internal:6333", api_key_env="QDRANT_TEST_KEY")
    index = build_index(
        dense_corpus,
        tokenizer,
        retriever="dense",
        chunk_size=32,
        chunk_overlap=4,
        folder=tmp_path / "index",
        store=store,
    )
    assert opened[0] == ("http://qdrant.internal:6333", "s3cret-key-value")
    assert not (tmp_path / "index" / "vectors").exists() and (tmp_path / "index" / "passages.jsonl").is_file()
    collection = index.manifest["collection"]
    assert collection.startswith("tuner-") and server.count(collection).count == 4
    assert index.search("When may I send back something I bought?", 1, "dense")[0].document == "policies/returns.txt"
    assert "s3cret-key-value" not in (tmp_path / "index" / "index.json").read_text()
    with pytest.raises(TunerError, match="QDRANT_MISSING is not set"):
        build_index(
            dense_corpus,
            tokenizer,
            retriever="dense",
            chunk_size=32,
            chunk_overlap=4,
            folder=tmp_path / "other",
            store=StoreConfig(url="http://x", api_key_env="QDRANT_MISSING"),
        )


def test_the_handbook_data_is_what_make_handbook_writes(tmp_path, monkeypatch, capsys):
    import importlib.util

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("make_handbook", ROOT / "examples" / "make_handbook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path / "handbook")
    module.main()
    shipped = ROOT / "examples" / "data" / "handbook"
    written = sorted(p.relative_to(tmp_path / "handbook") for p in (tmp_path / "handbook").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    for path in written:
        assert (tmp_path / "handbook" / path).read_bytes() == (shipped / path).read_bytes(), path
    updated = [json.loads(line) for line in (shipped / "updated.jsonl").read_text().splitlines()]
    # Each changed fact offers its stale answer among the choices, so a model that kept the old fact is caught.
    assert len(updated) == 12 and all(len(set(row["choices"])) == 4 for row in updated)


def test_the_dry_run_of_retrieval_aware_sft_shows_and_counts_the_passages(tiny_model_dir, tmp_path):
    from tuner import dry_run, recipe_from_dict

    document = _rag_document(tiny_model_dir, tmp_path, method="sft")
    document["data"]["drop_eval_overlap"] = False  # the tiny set trains on the questions it scores
    with_passages_estimate = dry_run(recipe_from_dict(document))
    document.pop("rag")
    plain = dry_run(recipe_from_dict(document))
    shown = with_passages_estimate.rows[0]["answers"][0]["prompt"]
    assert "Answer the question using the passages below" in shown and "[kettle.md#0]" in shown
    assert with_passages_estimate.batch_tokens > plain.batch_tokens


def test_tuner_rag_dry_run_shows_the_prompts_with_their_passages_and_scores_nothing(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from tuner.cli import cli

    recipe = write_recipe(tmp_path / "rag.yaml", _rag_document(tiny_model_dir, tmp_path))
    result = CliRunner().invoke(cli, ["rag", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "(rag; no weights loaded, nothing scored)" in result.stdout and "eval prompts:" in result.stdout
    assert "retrieval (k " in result.stdout and "recall at" in result.stdout
    row = result.stdout.split("  row 0: ")[1].split("  row 1: ")[0]
    assert "Question:" in row and ".md#0]" in row and "[[" in row  # a passage's id, the question, the gold answer
    assert not (tmp_path / "run").exists()  # a dry run writes no run folder


def test_a_store_path_holding_the_users_own_files_is_refused_and_left_as_it_was(tokenizer, tmp_path):
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "plan.txt").write_text("my own file", encoding="utf-8")
    with pytest.raises(TunerError, match=r"key `rag.store.path`: .*my-notes holds files but no tuner index"):
        build_index(write_corpus(tmp_path / "corpus"), tokenizer, chunk_size=32, chunk_overlap=4, folder=mine)
    assert [p.name for p in mine.iterdir()] == ["plan.txt"] and (mine / "plan.txt").read_text() == "my own file"
    # An index folder tuner wrote is still rebuilt in place when the corpus changes.
    index = build_index(
        write_corpus(tmp_path / "corpus"), tokenizer, chunk_size=32, chunk_overlap=4, folder=tmp_path / "index"
    )
    index.close()
    (tmp_path / "corpus" / "new.md").write_text("The Osprey Lamp ships from Elmsworth.", encoding="utf-8")
    again = build_index(tmp_path / "corpus", tokenizer, chunk_size=32, chunk_overlap=4, folder=tmp_path / "index")
    assert again.report["status"] == "updated"
    again.close()


def test_a_rag_recipe_needs_no_train_rows(tiny_model_dir, tmp_path):
    from tuner import recipe_from_dict, run

    document = _rag_document(tiny_model_dir, tmp_path)
    del document["data"]["train"]  # retrieval trains nothing: the eval rows are its questions
    result = run(recipe_from_dict(document))
    assert result.metrics["eval"]["rows"] > 0 and result.metrics["eval"]["accuracy"] is not None
    assert json.loads((result.run_dir / "manifest.json").read_text())["data"]["train_rows"] == 0


def test_grounding_shows_an_answer_retrieval_found_and_the_model_did_not_use():
    from tuner.retrieval import Retrieval, grounding

    passages = "The Platform team is led by Ingrid Solvang. The warehouse is called Fjord. 13 teams report to her."
    retrieval = Retrieval(
        seconds=[0.001] * 3,
        answer_in_passages=[True, True, False],  # the third gold answer, "3", is not in "13 teams"
        evidence=[f"{passages}\nWho leads the Platform team?"] * 3,
    )
    predictions = [
        {"prediction": "The Platform team is led by Ingrid Solvang.", "correct": True},
        {"prediction": "The warehouse is called Glacier, built in 1999.", "correct": False},
        {"prediction": "", "correct": False},
    ]
    figures = grounding("generate", predictions, retrieval)
    assert figures == {"groundedness": pytest.approx(1 / 3, abs=1e-4), "answer_found_not_used_rate": 0.3333}
    assert [p["grounded"] for p in predictions] == [True, False, False]
    assert predictions[0]["supported_share"] == 1.0 and predictions[2]["supported_share"] is None
    # A choice task's replies are labels, not sentences to look up: only the unused answers are counted.
    assert (
        grounding("choice", [{"prediction": "billing", "correct": False}], Retrieval(answer_in_passages=[True]))[
            "groundedness"
        ]
        is None
    )
