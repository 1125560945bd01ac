"""The retrieval index of a corpus: its passages, a BM25 index and (for dense and hybrid retrieval) their vectors in
a Qdrant store, persisted on disk and reused while corpus, chunking, tokenizer and embedding model stay the same.

    from tuner.index import build_index
    index = build_index("examples/data/handbook/v1", tokenizer, retriever="hybrid")
    index.search("How long is the Aurora kettle's warranty?", k=3)    # [Hit(id, document, title, text, score)]
    index.report                                                     # built, reused or updated; counts; seconds

The folder (tuner's cache, keyed by what the index depends on, or `store.path`) holds `passages.jsonl`, `bm25/`,
`vectors/` (Qdrant's embedded store; with `store.url` the vectors live on that server instead) and `index.json`, the
manifest. A changed corpus is re-indexed in a copy of the folder, embedding only the passages that changed, and the
copy replaces the folder when it is complete: an index folder is never half-written.
"""

from __future__ import annotations

import atexit
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .accounting import phase
from .data.corpus import Corpus, read_corpus
from .data.passages import Chunk, chunk_documents
from .embedder import DEFAULT, Embedder, load_embedder
from .errors import TunerError
from .files import cache_dir, write_json, write_jsonl

VERSION = 1
COLLECTION = "passages"
# Reciprocal-rank fusion's constant (Cormack et al. 2009): damps the weight of the very first ranks.
RRF_K = 60
MAX_CHUNK = 256


@dataclass(frozen=True)
class Hit:
    """One retrieved passage: its id, document, title, text and score (BM25, cosine, or fused rank score)."""

    id: str
    document: str
    title: str | None
    text: str
    score: float
    section: str | None = None


def chunk_settings(rag_config, context_tokens: int | None) -> tuple[int, int]:
    """Passage size and overlap in tokens: the recipe's, else a size that fits `k` passages and the question into
    the model's context (at most 256) and an eighth of it as overlap."""
    size = rag_config.chunk.size
    if size is None:
        room = (context_tokens or 2048) - 512  # the question, the template and the answer
        size = max(32, min(MAX_CHUNK, room // rag_config.k))
    overlap = rag_config.chunk.overlap if rag_config.chunk.overlap is not None else size // 8
    return size, overlap


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def tokenizer_identity(tokenizer) -> str:
    """What chunk boundaries depend on: the tokenizer's name and vocabulary size."""
    return f"{getattr(tokenizer, 'name_or_path', '?')}:{len(tokenizer)}"


def _point_id(chunk_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"tuner-passage:{chunk_id}"))


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Index:
    """A built or reused index: `passages` (Chunk objects), `report` (what the build did), `search(question, k)`."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        passages: list[Chunk],
        report: dict[str, Any],
        store_url: str | None = None,
        api_key: str | None = None,
        embedder: Embedder | None = None,
    ):
        self.folder, self.manifest, self.passages, self.report = folder, manifest, passages, report
        self._store_url, self._api_key, self._embedder = store_url, api_key, embedder
        self._bm25 = self._client = None
        self._by_id = {chunk.id: chunk for chunk in passages}
        self._masks: dict[str, Any] = {}

    @property
    def has_vectors(self) -> bool:
        return bool(self.manifest.get("vectors"))

    def warm(self, retriever: str = "bm25") -> None:
        """Load what `retriever` searches with (the BM25 index; the embedding model and vector store), so the first
        question's time is a search's, as on a server that keeps them loaded."""
        self._bm25_index()
        if retriever in ("dense", "hybrid"):
            self._dense_hits("warm-up", 1)

    def _bm25_index(self):
        import bm25s

        if self._bm25 is None:
            self._bm25 = bm25s.BM25.load(self.folder / "bm25", show_progress=False)
        return self._bm25

    def allowed(self, documents: list[str] = (), tags: list[str] = ()) -> Any:
        """Which passages a filter lets through, as a 0/1 array in passage order: those of a document whose id
        matches one of the glob patterns `documents` (all, if none), carrying one of `tags` (any, if none)."""
        key = json.dumps([list(documents), list(tags)])
        if key not in self._masks:
            import numpy

            wanted = set(tags)
            self._masks[key] = numpy.array(
                [
                    (not documents or any(fnmatch.fnmatchcase(chunk.document, pattern) for pattern in documents))
                    and (not wanted or bool(wanted & set(chunk.tags)))
                    for chunk in self.passages
                ],
                dtype=numpy.float32,
            )
        return self._masks[key]

    def _bm25_hits(self, question: str, k: int, mask=None) -> list[Hit]:
        import bm25s

        query = bm25s.tokenize([question], stopwords="en", show_progress=False)
        if not query.vocab:
            return []  # a question of stop words only: BM25 has nothing to match
        indices, scores = self._bm25_index().retrieve(
            query, k=min(k, len(self.passages)), show_progress=False, n_threads=1, weight_mask=mask
        )
        return [self._hit(self.passages[int(i)].id, float(s)) for i, s in zip(indices[0], scores[0]) if s > 0]

    def _dense_hits(self, question: str, k: int, mask=None) -> list[Hit]:
        if not self.has_vectors:
            raise TunerError(f"{self.folder}: this index has no vectors; build it with retriever dense or hybrid.")
        if self._embedder is None:
            self._embedder = load_embedder(self.manifest["embedding_model"])
        if self._client is None:
            self._client = (
                _client(self.folder, self._store_url, self._api_key)
                if self._store_url
                else _searchable_copy(self.folder, self.manifest["collection"])
            )
            # Closed before the interpreter tears its modules down: Qdrant's own finaliser fails that late.
            atexit.register(self.close)
        vector = self._embedder.encode([question])[0]
        where = None
        if mask is not None:
            from qdrant_client import models

            ids = [_point_id(chunk.id) for chunk, keep in zip(self.passages, mask) if keep]
            where = models.Filter(must=[models.HasIdCondition(has_id=ids)])
        points = self._client.query_points(
            self.manifest["collection"],
            query=vector.tolist(),
            limit=min(k, len(self.passages)),
            with_payload=True,
            query_filter=where,
        ).points
        return [self._hit(point.payload["passage"], float(point.score)) for point in points]

    def _hit(self, chunk_id: str, score: float) -> Hit:
        chunk = self._by_id[chunk_id]
        return Hit(
            id=chunk.id,
            document=chunk.document,
            title=chunk.title,
            text=chunk.text,
            score=round(score, 4),
            section=chunk.section,
        )

    def search(self, question: str, k: int = 3, retriever: str = "bm25", where=None) -> list[Hit]:
        """The `k` passages most relevant to `question`, best first: by BM25, by cosine similarity of embeddings
        (dense), or both fused by reciprocal rank (hybrid: each passage scores the sum of 1 / (60 + its rank)).
        `where` (a `rag.filter`: document globs, tags) limits the search to the passages it lets through."""
        if k < 1:
            raise TunerError(f"k is {k}: ask for at least one passage.")
        searches = {"bm25": self._bm25_hits, "dense": self._dense_hits, "hybrid": self._hybrid_hits}
        if retriever not in searches:
            raise TunerError(f"retriever {retriever!r} is not one of {', '.join(searches)}.")
        mask = self.allowed(where.documents, where.tags) if where is not None else None
        if mask is not None and not mask.any():
            return []
        return searches[retriever](question, k, mask)

    def _hybrid_hits(self, question: str, k: int, mask=None) -> list[Hit]:
        depth = max(4 * k, 20)
        fused: dict[str, float] = {}
        for hits in (self._bm25_hits(question, depth, mask), self._dense_hits(question, depth, mask)):
            for rank, hit in enumerate(hits, start=1):
                fused[hit.id] = fused.get(hit.id, 0.0) + 1 / (RRF_K + rank)
        best = sorted(fused, key=lambda chunk_id: -fused[chunk_id])[:k]
        return [self._hit(chunk_id, fused[chunk_id]) for chunk_id in best]

    def close(self) -> None:
        """Release the vector store (Qdrant's embedded store locks its folder while open)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            atexit.unregister(self.close)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# How long a process waits for another to release the embedded store's folder lock before it gives up.
STORE_WAIT_SECONDS = 120.0


def _client(folder: Path, url: str | None, api_key: str | None, wait: float = 0.0):
    from qdrant_client import QdrantClient

    if url:
        return QdrantClient(url=url, api_key=api_key)
    deadline = time.monotonic() + wait
    while True:
        try:
            return QdrantClient(path=str(folder / "vectors"))
        except RuntimeError as exc:  # the embedded store allows one client per folder at a time
            if time.monotonic() >= deadline:
                raise TunerError(
                    f"{folder}: the index's vector store is in use by another process ({exc}). Wait for it "
                    f"to finish, or give this run its own `rag.store.path`."
                ) from None
            time.sleep(0.2)


def _searchable_copy(folder: Path, collection: str):
    """The embedded store's points copied into an in-memory Qdrant, to search: the store on disk admits one
    process at a time (its folder lock), held here only while its points are read, so several processes (the ranks
    of a launched run, two runs on one corpus) search one index side by side. Qdrant's embedded mode holds every
    point in memory anyway; the copy is what it would hold."""
    from qdrant_client import QdrantClient, models

    disk = _client(folder, None, None, wait=STORE_WAIT_SECONDS)
    try:
        memory = QdrantClient(":memory:")
        memory.create_collection(collection, vectors_config=disk.get_collection(collection).config.params.vectors)
        offset = None
        while True:
            points, offset = disk.scroll(collection, limit=1024, offset=offset, with_vectors=True, with_payload=True)
            if points:
                memory.upsert(
                    collection, [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points]
                )
            if offset is None:
                return memory
    finally:
        disk.close()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == VERSION else None


def _read_passages(folder: Path) -> list[Chunk]:
    lines = (folder / "passages.jsonl").read_text(encoding="utf-8").splitlines()
    return [Chunk(**json.loads(line)) for line in lines if line.strip()]


def _api_key(store) -> str | None:
    if store is None or not store.api_key_env:
        return None
    key = os.environ.get(store.api_key_env)
    if key is None:
        raise TunerError(
            f"key `rag.store.api_key_env`: the environment variable {store.api_key_env} is not set. "
            f"Export the Qdrant server's API key in it."
        )
    return key


def _write_vectors(
    staging: Path,
    manifest: dict[str, Any],
    old: dict[str, Any] | None,
    passages: list[Chunk],
    old_digests: dict[str, str],
    embedder: Embedder,
    url: str | None,
    api_key: str | None,
) -> int:
    """Bring the vector store up to date with `passages`: only passages new or changed since `old` are embedded,
    and those gone are deleted. Returns how many were embedded."""
    from qdrant_client import models

    client = _client(staging, url, api_key)
    try:
        collection = manifest["collection"]
        reuse = bool(
            old
            and old.get("vectors")
            and old.get("embedding_model") == embedder.name
            and client.collection_exists(collection)
        )
        if not reuse:
            if client.collection_exists(collection):
                client.delete_collection(collection)
            client.create_collection(
                collection,
                vectors_config=models.VectorParams(size=embedder.dimensions, distance=models.Distance.COSINE),
            )
            old_digests = {}
        current = {chunk.id for chunk in passages}
        gone = [chunk_id for chunk_id in old_digests if chunk_id not in current]
        if gone:
            client.delete(collection, points_selector=models.PointIdsList(points=[_point_id(c) for c in gone]))
        todo = [chunk for chunk in passages if old_digests.get(chunk.id) != chunk.digest]
        for start in range(0, len(todo), 256):
            batch = todo[start : start + 256]
            vectors = embedder.encode([_embedded_text(chunk) for chunk in batch])
            client.upsert(
                collection,
                points=[
                    models.PointStruct(id=_point_id(chunk.id), vector=vector.tolist(), payload={"passage": chunk.id})
                    for chunk, vector in zip(batch, vectors)
                ],
            )
        return len(todo)
    finally:
        client.close()


def _embedded_text(chunk: Chunk) -> str:
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def _write_bm25(staging: Path, passages: list[Chunk]) -> None:
    import bm25s

    tokens = bm25s.tokenize([_embedded_text(chunk) for chunk in passages], stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    shutil.rmtree(staging / "bm25", ignore_errors=True)
    retriever.save(staging / "bm25", show_progress=False)


def _replace(staging: Path, folder: Path) -> None:
    """Put a finished index folder in place of the old one (or where none was). When another process building the
    same index put its own in place first, that one stands and this one is dropped."""
    retired: Path | None = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    try:
        os.replace(folder, retired)
    except FileNotFoundError:
        retired = None  # no index yet
    try:
        os.replace(staging, folder)
    except OSError:
        if _read_manifest(folder) is None:  # nothing whole in place: the old index goes back
            if retired is not None:
                os.replace(retired, folder)
            raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def check_store_folder(folder: str | Path, where: str = "<recipe>") -> None:
    """Refuse a `rag.store.path` that holds files but no tuner index: an index folder is replaced whole when it is
    rebuilt, so a folder of the user's own files is never taken for one (`tuner validate` and the build both ask)."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "index.json").is_file():
        raise TunerError(
            f"{where}: key `rag.store.path`: {folder} holds files but no tuner index (no index.json), and an index "
            f"folder is replaced whole when it is built. Give a new or empty folder, or one an earlier run indexed."
        )


def build_index(
    corpus: str | Path | Corpus,
    tokenizer,
    retriever: str = "bm25",
    chunk_size: int = 128,
    chunk_overlap: int = 16,
    embedding_model: str = DEFAULT,
    folder: str | Path | None = None,
    store=None,
    where: str = "<recipe>",
    chunk_strategy: str = "tokens",
) -> Index:
    """Build the index of a corpus, or reuse (and if the corpus changed, update) the one on disk.

    `corpus`: a folder of .txt/.md files, a data file with a `text` column, or a `Corpus`. Passages are
    `chunk_size` tokens of `tokenizer` with `chunk_overlap` shared, cut by `chunk_strategy` (tokens, sentences,
    recursive, sections: `data/passages.py`). `retriever` bm25 needs no vectors; dense and
    hybrid embed the passages with `embedding_model` into Qdrant (embedded in the index folder, or the server at
    `store.url`). `folder`: where the index lives (default: tuner's cache, keyed by corpus path, chunking,
    tokenizer and embedding model). `report` says whether it was built, reused or updated, with counts and times.
    """
    corpus = corpus if isinstance(corpus, Corpus) else read_corpus(corpus, where)
    dense = retriever in ("dense", "hybrid")
    settings = {
        "version": VERSION,
        "corpus": str(corpus.path.resolve()),
        "tokenizer": tokenizer_identity(tokenizer),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "embedding_model": embedding_model,
    }
    if chunk_strategy != "tokens":  # so indexes built before strategies existed keep their folder
        settings["chunk_strategy"] = chunk_strategy
    if folder is not None:
        check_store_folder(folder, where)
    folder = Path(folder) if folder is not None else cache_dir() / "indexes" / _digest(settings)
    url, api_key = (store.url if store is not None else None), _api_key(store)
    old = _read_manifest(folder)
    if old and old.get("vectors") and dense and old.get("embedding_model") != embedding_model:
        raise TunerError(
            f"{where}: the index in {folder} was built with the embedding model "
            f"{old['embedding_model']!r}, not {embedding_model!r}: vectors of two models cannot be "
            f"searched together. Set `rag.embedding_model` back, or give `rag.store.path` a new folder."
        )
    passages = chunk_documents(corpus.documents, tokenizer, chunk_size, chunk_overlap, chunk_strategy)
    digests = {chunk.id: chunk.digest for chunk in passages}
    chunking = _digest(
        [settings[key] for key in ("tokenizer", "chunk_size", "chunk_overlap", "chunk_strategy") if key in settings]
    )
    same_chunking = bool(old) and old.get("chunking") == chunking
    old_digests = old["passages"] if old and same_chunking else {}
    report: dict[str, Any] = {
        "folder": str(folder),
        "corpus_fingerprint": corpus.fingerprint,
        "documents": len(corpus.documents),
        "passages": len(passages),
        "skipped": [f"{name}: {reason}" for name, reason in corpus.skipped],
    }
    if old and old_digests == digests and (old.get("vectors") or not dense):
        report.update(status="reused", embedded=0, build=old.get("build"), size_bytes=_folder_size(folder))
        # The index's own passage order, which its BM25 rows follow (a data file's rows may have been reordered).
        return Index(folder, old, _read_passages(folder), report, url, api_key)

    embedder = load_embedder(embedding_model, where) if dense or (old and old.get("vectors")) else None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
    try:
        if old and old.get("vectors") and not url:
            shutil.copytree(folder / "vectors", staging / "vectors", ignore=shutil.ignore_patterns(".lock"))
        phases: dict[str, Any] = {}
        with phase("build", phases):
            started = time.perf_counter()
            manifest = {
                **settings,
                "chunking": chunking,
                "store_url": url,
                "vectors": embedder is not None,
                "collection": f"tuner-{_digest(settings)}" if url else COLLECTION,
                "embedding_dimensions": embedder.dimensions if embedder else None,
                "corpus_fingerprint": corpus.fingerprint,
                "passages": digests,
            }
            _write_bm25(staging, passages)
            # Vectors of another chunking are not this index's passages: they are replaced, not updated.
            embedded = (
                _write_vectors(
                    staging, manifest, old if same_chunking else None, passages, old_digests, embedder, url, api_key
                )
                if embedder
                else 0
            )
            seconds = time.perf_counter() - started
        added = sum(1 for chunk_id in digests if chunk_id not in old_digests)
        changed = sum(1 for chunk_id, digest in digests.items() if old_digests.get(chunk_id, digest) != digest)
        removed = sum(1 for chunk_id in old_digests if chunk_id not in digests)
        manifest["build"] = {
            **phases["build"],
            "embedded": embedded,
            "passages_per_second": round(len(passages) / seconds, 1) if seconds else None,
        }
        write_jsonl(staging / "passages.jsonl", [chunk.__dict__ for chunk in passages])
        write_json(staging / "index.json", manifest)
        _replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.update(
        status="updated" if old else "built",
        embedded=embedded,
        added=added,
        changed=changed,
        removed=removed,
        build=manifest["build"],
        size_bytes=_folder_size(folder),
    )
    return Index(folder, manifest, passages, report, url, api_key, embedder)


def describe(report: dict[str, Any]) -> str:
    """One line on what happened to the index, for the run's output."""
    if report["status"] == "reused":
        what = "reused (corpus unchanged)"
    elif report["status"] == "updated" and not (report["added"] or report["changed"] or report["removed"]):
        what = f"updated: vectors added ({report['embedded']} passages embedded)"
    elif report["status"] == "updated":
        what = (
            f"updated: the corpus changed ({report['added']} passages new, {report['changed']} changed, "
            f"{report['removed']} gone; {report['embedded']} embedded)"
        )
    else:
        what = f"built ({report['embedded']} passages embedded)" if report["embedded"] else "built"
    skipped = f"; skipped {len(report['skipped'])}: {'; '.join(report['skipped'][:5])}" if report["skipped"] else ""
    return (
        f"tuner: index of {report['documents']} documents, {report['passages']} passages {what}, in "
        f"{report['folder']}{skipped}"
    )
