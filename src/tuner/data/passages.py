"""Corpus documents cut into passages (`rag.chunk.strategy`), sized in tokens of the model's tokenizer, each with an
id (`faq.md#2`) stable while the document and the chunking stay the same, and the heading path it starts under.

    passages = chunk_documents(corpus.documents, tokenizer, size=128, overlap=16, strategy="sections")

- tokens: windows of `size` tokens, `overlap` shared, cut wherever the count falls.
- sentences: whole sentences (and lines, paragraphs) packed into passages of up to `size` tokens; a sentence
  longer than `size` is cut at words.
- recursive: the text split at paragraphs, then lines, then sentences, then words, only as far as a piece needs
  to fit `size`; pieces packed back up to `size` (the RAG tools' recursive splitter).
- sections: the recursive cut inside each section of the document's headings; no passage spans two sections.

In every strategy but tokens, consecutive passages of a section share whole pieces of up to `overlap` tokens.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import TunerError
from .corpus import Document


@dataclass(frozen=True)
class Chunk:
    """One passage: `id` is the document's id and the passage's number (`faq.md#2`), stable while the document and
    chunking stay the same; `section`, the heading path where it starts; `tags`, its document's; `digest` is the
    SHA-256 of what it holds, for telling what changed."""

    id: str
    document: str
    title: str | None
    text: str
    tokens: int
    section: str | None = None
    tags: tuple[str, ...] | list[str] = ()

    @property
    def digest(self) -> str:
        extra = [self.section, list(self.tags)] if self.section or self.tags else []
        return hashlib.sha256(json.dumps([self.title, self.text, *extra]).encode()).hexdigest()[:32]


PARAGRAPH, LINE, SENTENCE, WORD = r"\n[ \t]*\n\s*", r"\n\s*", r"(?<=[.!?])\s+", r"\s+"
SEPARATORS = [PARAGRAPH, LINE, SENTENCE, WORD]
# How many of SEPARATORS cut every piece whatever its size; the rest cut only a piece still over `size`.
ALWAYS = {"sentences": 3, "recursive": 0, "sections": 0}


class _Counter:
    """Tokens of any span of one text, from one tokenization of the whole."""

    def __init__(self, text: str, tokenizer):
        offsets: list[Any] = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        self.offsets = offsets
        self.starts = [start for start, _ in offsets]

    def __call__(self, begin: int, end: int) -> int:
        return bisect.bisect_left(self.starts, end) - bisect.bisect_left(self.starts, begin)

    def windows(self, begin: int, end: int, size: int) -> list[tuple[int, int]]:
        """A span cut into runs of `size` tokens (a piece no separator could cut small enough)."""
        first, last = bisect.bisect_left(self.starts, begin), bisect.bisect_left(self.starts, end)
        cuts = [self.offsets[i][0] for i in range(first + size, last, size)]
        return list(zip([begin, *cuts], [*cuts, end]))


def _pieces(text: str, begin: int, end: int, separators: list[str], count: _Counter, size: int, always: int):
    """Spans of text[begin:end] of at most `size` tokens, cut at the first separator that cuts it; the first
    `always` separators apply whatever the size (sentences), the others only where a piece is still too long."""
    fits = count(begin, end) <= size
    if not separators or (fits and always <= 0):
        return [(begin, end)] if fits else count.windows(begin, end, size)
    cuts = [m.end() for m in re.finditer(separators[0], text[begin:end]) if 0 < m.end() < end - begin]
    bounds = [begin, *(begin + cut for cut in cuts), end]
    spans: list[tuple[int, int]] = []
    for first, last in zip(bounds, bounds[1:]):
        spans += _pieces(text, first, last, separators[1:], count, size, always - 1)
    return spans


def _packed(spans: list[tuple[int, int]], count: _Counter, size: int, overlap: int) -> list[tuple[int, int]]:
    """Consecutive pieces joined into passages of at most `size` tokens; each passage after the first begins with
    the last pieces of the one before, up to `overlap` tokens."""
    passages, current = [], []
    for span in spans:
        if current and count(current[0][0], span[1]) > size:
            passages.append((current[0][0], current[-1][1]))
            kept: list[tuple[int, int]] = []
            for piece in reversed(current[1:]):  # never the whole passage again: each one moves on
                if count(piece[0], current[-1][1]) > overlap or count(piece[0], span[1]) > size:
                    break
                kept.insert(0, piece)
            current = kept
        current.append(span)
    if current:
        passages.append((current[0][0], current[-1][1]))
    return passages


def _token_windows(document: Document, tokenizer, size: int, overlap: int) -> list[tuple[int, int, int]]:
    encoded = tokenizer(document.text, add_special_tokens=False, return_offsets_mapping=True)
    offsets: list[Any] = encoded["offset_mapping"]
    step = size - overlap
    starts = range(0, max(1, len(offsets) - overlap), step) if len(offsets) > size else [0]
    windows = []
    for first in starts:
        window = offsets[first : first + size]
        begin = window[0][0] if first else 0
        end = window[-1][1] if first + size < len(offsets) else len(document.text)
        windows.append((begin, end, len(window)))
    return windows


def _spans(document: Document, tokenizer, size: int, overlap: int, strategy: str) -> list[tuple[int, int, int]]:
    """(begin, end, tokens) of each passage of the document."""
    if strategy == "tokens":
        return _token_windows(document, tokenizer, size, overlap)
    text, count = document.text, _Counter(document.text, tokenizer)
    if strategy == "sections":
        starts = sorted({0, *(offset for offset, _ in document.sections)} - {len(text)})
        regions = list(zip(starts, [*starts[1:], len(text)]))
    else:
        regions = [(0, len(text))]
    spans = []
    for begin, end in regions:
        pieces = _pieces(text, begin, end, SEPARATORS, count, size, ALWAYS[strategy])
        pieces = [p for p in pieces if text[p[0] : p[1]].strip()]
        spans += [(first, last, count(first, last)) for first, last in _packed(pieces, count, size, overlap)]
    return spans


def _section(document: Document, offset: int) -> str | None:
    """The heading path the text at `offset` sits under (None before the first heading)."""
    position = bisect.bisect_right([start for start, _ in document.sections], offset) - 1
    return document.sections[position][1] if position >= 0 else None


def chunk_documents(
    documents: list[Document], tokenizer, size: int, overlap: int, strategy: str = "tokens"
) -> list[Chunk]:
    """Cut documents into passages of at most `size` tokens by `strategy` (tokens, sentences, recursive, sections),
    consecutive passages sharing up to `overlap` tokens. Passages are the document's own text between the cuts."""
    if overlap >= size:
        raise TunerError(f"rag.chunk.overlap ({overlap}) must be smaller than rag.chunk.size ({size}).")
    chunks = []
    for document in documents:
        for number, (begin, end, tokens) in enumerate(_spans(document, tokenizer, size, overlap, strategy)):
            text = document.text[begin:end]
            chunks.append(
                Chunk(
                    id=f"{document.id}#{number}",
                    document=document.id,
                    title=document.title,
                    text=text.strip(),
                    tokens=tokens,
                    section=_section(document, begin + len(text) - len(text.lstrip())),
                    tags=document.tags,
                )
            )
    return chunks
