"""The reranking stage of retrieval (`rag.rerank`): the retriever's first candidates scored again against the
question by a finer model, best first.

- `late-interaction` (the offline default): the embedding model's token vectors, each question token matched to the
  passage token closest to it and the similarities summed (ColBERT's MaxSim), so a passage that names what the
  question names, word for word or close, rises above one that only shares its topic. No download, no training.
- a sentence-transformers cross-encoder (a local folder or hub id): question and passage read together.

    reranker = load_reranker(recipe.rag.rerank, recipe.rag.embedding_model)
    best = reranker.rerank(question, index.search(question, 20))[:3]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .embedder import Embedder, load_embedder
from .errors import TunerError
from .index import Hit

LATE_INTERACTION = "late-interaction"


@dataclass
class Reranker:
    """A loaded reranker: `name` as the recipe gave it; `rerank(question, hits)` the hits rescored, best first."""

    name: str
    embedder: Embedder | None = None
    cross_encoder: Any = None

    def scores(self, question: str, hits: list[Hit]) -> list[float]:
        """One relevance score per hit (higher is more relevant; the scale is the model's own)."""
        if not hits:
            return []
        texts = [f"{hit.title}\n{hit.text}" if hit.title else hit.text for hit in hits]
        if self.cross_encoder is not None:
            return [float(s) for s in self.cross_encoder.predict([(question, text) for text in texts])]
        query, *passages = self.embedder.token_vectors([question, *texts])
        # Each question token's best match among the passage's tokens, averaged so long questions weigh alike.
        return [float((query @ passage.T).max(axis=1).mean()) for passage in passages]

    def rerank(self, question: str, hits: list[Hit]) -> list[Hit]:
        """The hits best first by this reranker, each carrying its reranker score."""
        scored = sorted(zip(self.scores(question, hits), range(len(hits))), key=lambda pair: (-pair[0], pair[1]))
        return [replace(hits[number], score=round(score, 4)) for score, number in scored]


def load_reranker(config, embedding_model: str, where: str = "<recipe>") -> Reranker:
    """The recipe's `rag.rerank` loaded: late interaction over `embedding_model`'s token vectors, or the
    cross-encoder it names (safetensors only, no remote code)."""
    if config.model == LATE_INTERACTION:
        return Reranker(name=config.model, embedder=load_embedder(embedding_model, where))
    from sentence_transformers import CrossEncoder

    if not Path(config.model).exists() and "/" not in config.model:
        raise TunerError(
            f"{where}: key `rag.rerank.model`: {config.model!r} is neither {LATE_INTERACTION} nor a folder. Give "
            f"{LATE_INTERACTION} (offline), a local sentence-transformers cross-encoder folder, or a hub id."
        )
    try:
        model = CrossEncoder(config.model, trust_remote_code=False, model_kwargs={"use_safetensors": True})
    except (OSError, ValueError) as exc:
        raise TunerError(
            f"{where}: key `rag.rerank.model`: could not load the cross-encoder {config.model}: "
            f"{str(exc).splitlines()[0]} No model can be downloaded without network access; give a local "
            f"cross-encoder folder, or {LATE_INTERACTION} (offline)."
        ) from None
    return Reranker(name=config.model, cross_encoder=model)
