"""A retrieval corpus: documents read from a folder of .txt/.md files or from a data file with a `text` column, and
cut into passages of a set number of tokens of the model's tokenizer, each with an id that is stable across runs.

    corpus = read_corpus("examples/data/handbook/v1")       # documents, and the files skipped with the reason
    passages = chunk_documents(corpus.documents, tokenizer, size=128, overlap=16)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunerError
from ..schema import SourceConfig
from .sources import READERS, read_source

TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    """One corpus document: its id (the file's path inside the corpus folder, or the row's `id`), title and text."""

    id: str
    title: str | None
    text: str


@dataclass(frozen=True)
class Chunk:
    """One passage: `id` is the document's id and the passage's number (`faq.md#2`), stable while the document and
    chunking stay the same; `digest` is the SHA-256 of its text, for telling what changed."""

    id: str
    document: str
    title: str | None
    text: str
    tokens: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.title, self.text]).encode()).hexdigest()[:32]


@dataclass
class Corpus:
    """The documents read, and the files or rows skipped with the reason (undecodable, empty, not text)."""

    path: Path
    documents: list[Document]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of every document's id, title and text."""
        digest = hashlib.sha256()
        for document in self.documents:
            digest.update(json.dumps([document.id, document.title, document.text], ensure_ascii=False).encode())
        return digest.hexdigest()


def _title(text: str, fallback: str) -> str:
    """A Markdown file's first heading, else the file name."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip() or fallback
        if line.strip():
            break
    return fallback


def _read_folder(folder: Path) -> Corpus:
    corpus = Corpus(path=folder, documents=[])
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = path.relative_to(folder).as_posix()
        if path.suffix.lower() not in TEXT_SUFFIXES:
            corpus.skipped.append((name, f"not a {' or '.join(TEXT_SUFFIXES)} file"))
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            corpus.skipped.append((name, "not UTF-8 text (a binary file, or another encoding: re-save it as UTF-8)"))
            continue
        if "\x00" in text:
            corpus.skipped.append((name, "holds NUL bytes (a binary file)"))
        elif not text.strip():
            corpus.skipped.append((name, "empty"))
        else:
            corpus.documents.append(Document(id=name, title=_title(text, path.stem), text=text.strip()))
    return corpus


def _read_file(path: Path) -> Corpus:
    dataset = read_source(SourceConfig(path=str(path)), where=str(path))
    if "text" not in dataset.column_names:
        raise TunerError(
            f"{path}: a corpus file needs a `text` column (optional `id` and `title`); its columns are "
            f"{dataset.column_names}. Rename the column holding the documents to `text`."
        )
    corpus, seen = Corpus(path=path, documents=[]), set()
    for number, row in enumerate(dataset):
        doc_id = str(row["id"]) if row.get("id") is not None else f"row-{number}"
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            corpus.skipped.append((f"row {number}", "`text` is empty or not text"))
            continue
        if doc_id in seen:
            raise TunerError(
                f"{path}: row {number}: the id {doc_id!r} is used by an earlier row. Give each document "
                f"its own `id` (or drop the column to number the rows)."
            )
        seen.add(doc_id)
        title = row.get("title")
        corpus.documents.append(Document(id=doc_id, title=str(title) if title else None, text=text.strip()))
    return corpus


def read_corpus(path: str | Path, where: str = "<recipe>") -> Corpus:
    """Read a corpus folder (every .txt and .md file below it, in path order) or file (JSON, JSONL, CSV, TSV or
    Parquet with a `text` column). Files that cannot be read as text are skipped and listed in `skipped`, not
    fatal; a corpus with no document at all is."""
    path = Path(path)
    if not path.exists():
        raise TunerError(
            f"{where}: key `rag.corpus`: {path} does not exist. Point it at a folder of .txt/.md files "
            f"or a data file with a `text` column."
        )
    if path.is_dir():
        corpus = _read_folder(path)
    elif path.suffix.lower() in READERS:
        corpus = _read_file(path)
    elif path.suffix.lower() in TEXT_SUFFIXES:
        corpus = _read_folder(path.parent)
        corpus.documents = [d for d in corpus.documents if d.id == path.name]
        corpus.skipped = [s for s in corpus.skipped if s[0] == path.name]
    else:
        raise TunerError(
            f"{where}: key `rag.corpus`: {path} is a {path.suffix or 'suffix-less'} file. A corpus is a "
            f"folder of .txt/.md files, or a JSON, JSONL, CSV, TSV or Parquet file with a `text` column."
        )
    if not corpus.documents:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in corpus.skipped[:3])
        raise TunerError(
            f"{where}: key `rag.corpus`: {path} holds no readable document"
            f"{f' ({reasons})' if reasons else ''}. Add .txt or .md files (UTF-8), or rows with text."
        )
    return corpus


def chunk_documents(documents: list[Document], tokenizer, size: int, overlap: int) -> list[Chunk]:
    """Cut documents into passages of at most `size` tokens, consecutive passages sharing `overlap` tokens. Cuts
    fall on token boundaries of the model's tokenizer and passages are the document's own text between them."""
    if overlap >= size:
        raise TunerError(f"rag.chunk.overlap ({overlap}) must be smaller than rag.chunk.size ({size}).")
    chunks = []
    step = size - overlap
    for document in documents:
        encoded = tokenizer(document.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets: list[Any] = encoded["offset_mapping"]
        starts = range(0, max(1, len(offsets) - overlap), step) if len(offsets) > size else [0]
        for number, first in enumerate(starts):
            window = offsets[first : first + size]
            begin = window[0][0] if first else 0
            end = window[-1][1] if first + size < len(offsets) else len(document.text)
            chunks.append(
                Chunk(
                    id=f"{document.id}#{number}",
                    document=document.id,
                    title=document.title,
                    text=document.text[begin:end].strip(),
                    tokens=len(window),
                )
            )
    return chunks
