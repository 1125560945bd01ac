"""A retrieval corpus: documents read from a folder of text, Markdown, HTML, PDF and Word files (`document_files.py`)
or from a data file with a `text` column, each with its title, section headings and front-matter tags. Cutting them
into passages is `passages.py`.

    corpus = read_corpus("examples/data/handbook/v1")       # documents, and the files skipped with the reason
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TunerError
from ..schema import SourceConfig
from .document_files import SUFFIXES as DOCUMENT_SUFFIXES
from .document_files import Unreadable, read_document
from .sources import READERS, read_source


@dataclass(frozen=True)
class Document:
    """One corpus document: its id (the file's path inside the corpus folder, or the row's `id`), title and text;
    `sections`, where each heading's section starts in the text and its heading path; `tags` from front matter."""

    id: str
    title: str | None
    text: str
    sections: tuple[tuple[int, str], ...] = ()
    tags: tuple[str, ...] = ()


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
            # Tags only where a document has them, so a corpus without front matter keeps its fingerprint.
            fields = [document.id, document.title, document.text] + ([list(document.tags)] if document.tags else [])
            digest.update(json.dumps(fields, ensure_ascii=False).encode())
        return digest.hexdigest()


def _read_folder(folder: Path) -> Corpus:
    corpus = Corpus(path=folder, documents=[])
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = path.relative_to(folder).as_posix()
        try:
            parsed = read_document(path)
        except Unreadable as exc:
            corpus.skipped.append((name, str(exc)))
            continue
        corpus.documents.append(
            Document(
                id=name,
                title=parsed.title or path.stem,
                text=parsed.text,
                sections=tuple(parsed.sections),
                tags=tuple(parsed.tags),
            )
        )
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
    """Read a corpus folder (every .txt, .md, .html, .pdf and .docx file below it, in path order), one such file,
    or a data file (JSON, JSONL, CSV, TSV or Parquet with a `text` column). Files that cannot be read are skipped
    and listed in `skipped` with the reason, not fatal; a corpus with no document at all is."""
    path = Path(path)
    if not path.exists():
        raise TunerError(
            f"{where}: key `rag.corpus`: {path} does not exist. Point it at a folder of documents (.txt, .md, "
            f".html, .pdf, .docx) or a data file with a `text` column."
        )
    if path.is_dir():
        corpus = _read_folder(path)
    elif path.suffix.lower() in READERS:
        corpus = _read_file(path)
    elif path.suffix.lower() in DOCUMENT_SUFFIXES:
        corpus = _read_folder(path.parent)
        corpus.documents = [d for d in corpus.documents if d.id == path.name]
        corpus.skipped = [s for s in corpus.skipped if s[0] == path.name]
    else:
        raise TunerError(
            f"{where}: key `rag.corpus`: {path} is a {path.suffix or 'suffix-less'} file. A corpus is a folder "
            f"of documents (.txt, .md, .html, .pdf, .docx), one such file, or a JSON, JSONL, CSV, TSV or Parquet "
            f"file with a `text` column."
        )
    if not corpus.documents:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in corpus.skipped[:3])
        raise TunerError(
            f"{where}: key `rag.corpus`: {path} holds no readable document"
            f"{f' ({reasons})' if reasons else ''}. Add documents with text (.txt, .md, .html, .pdf, .docx), or rows "
            f"with text."
        )
    return corpus
