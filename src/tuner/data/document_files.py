"""One corpus file read as people keep documents: plain text, Markdown (with YAML front matter), HTML, PDF and Word
(.docx), into its text, title, section headings and tags. Each format goes through a well-kept library (pypdf,
BeautifulSoup, python-docx); a file one cannot read raises `Unreadable` with the reason, which the corpus reports
and skips.

    parsed = read_document(Path("policies/leave.html"))
    parsed.title, parsed.sections[:2]      # 'Leave policy', [(0, 'Leave policy'), (412, 'Leave policy > Carry-over')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class Unreadable(Exception):
    """A corpus file that holds no text tuner can read; the message says why, in words a user can act on."""


@dataclass
class Parsed:
    """A document's text; its title (None: the caller's fallback); `sections`, where each heading's section starts
    in the text and its heading path (`Warranty > Returns`), in order; `tags` from front matter."""

    text: str
    title: str | None = None
    sections: list[tuple[int, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def _decoded(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text (a binary file, or another encoding: re-save it as UTF-8)") from None
    if "\x00" in text:
        raise Unreadable("holds NUL bytes (a binary file)")
    return text


class _Outline:
    """Heading paths from headings met in order: a level-2 heading under a level-1 one reads `One > Two`."""

    def __init__(self):
        self.stack: list[tuple[int, str]] = []

    def enter(self, level: int, heading: str) -> str:
        self.stack = [(lvl, text) for lvl, text in self.stack if lvl < level] + [(level, heading)]
        return " > ".join(text for _, text in self.stack)


def _joined(blocks: list[tuple[int | None, str]]) -> tuple[str, list[tuple[int, str]]]:
    """Blocks (heading level or None, text) as one text, paragraphs apart, and the offset where each section starts."""
    outline, parts, sections, offset = _Outline(), [], [], 0
    for level, text in blocks:
        text = text.strip()
        if not text:
            continue
        if level is not None:
            sections.append((offset, outline.enter(level, text)))
        parts.append(text)
        offset += len(text) + 2
    return "\n\n".join(parts), sections


FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)---[ \t]*\r?\n", re.DOTALL)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)


def _tags(value) -> list[str]:
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    return [str(tag) for tag in value] if isinstance(value, list) else []


def _markdown(path: Path) -> Parsed:
    text, title, tags = _decoded(path), None, []
    found = FRONT_MATTER.match(text)
    if found:
        try:
            meta = yaml.safe_load(found.group(1))
        except yaml.YAMLError:
            meta = None  # a rule line at the top, not front matter: the text stays as written
        if isinstance(meta, dict):
            text, title, tags = text[found.end() :], meta.get("title"), _tags(meta.get("tags"))
    text = text.strip()
    fenced = [(m.start(), m.end()) for m in FENCE.finditer(text)]
    outline, sections = _Outline(), []
    for heading in HEADING.finditer(text):
        if any(start <= heading.start() < end for start, end in fenced):
            continue  # a comment line in a code block, not a heading
        sections.append((heading.start(), outline.enter(len(heading.group(1)), heading.group(2).strip())))
    if title is None and sections and sections[0][0] == 0:
        title = sections[0][1]
    return Parsed(text=text, title=str(title) if title else None, sections=sections, tags=tags)


def _plain(path: Path) -> Parsed:
    return Parsed(text=_decoded(path).strip())


HTML_BLOCKS = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "caption"]


def _html(path: Path) -> Parsed:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decoded(path), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    # Menus, footers and sidebars repeat on every page of a site; they are not what the page says.
    for hidden in soup(["script", "style", "noscript", "template", "title", "nav", "footer", "aside"]):
        hidden.decompose()
    body = soup.body or soup
    blocks: list[tuple[int | None, str]] = []
    for element in body.find_all(HTML_BLOCKS):
        if element.find_parent(HTML_BLOCKS) is not None:
            continue  # its text is read with the block that holds it
        level = int(element.name[1]) if re.fullmatch(r"h[1-6]", element.name) else None
        blocks.append((level, element.get_text(" ", strip=True)))
    if not any(text for _, text in blocks):  # text in bare <div>s: read it line by line
        blocks = [(None, line) for line in body.get_text("\n", strip=True).splitlines()]
    text, sections = _joined(blocks)
    heading = next((path for offset, path in sections if offset == 0), None)
    return Parsed(text=text, title=title or heading, sections=sections)


def _pdf(path: Path) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("an encrypted PDF: save a copy without its password")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata or {}).get("/Title")
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise Unreadable(f"not a PDF pypdf can read ({exc})") from None
    if not any(page.strip() for page in pages):
        raise Unreadable("a PDF without a text layer (scanned pages: run OCR on it first)")
    # Each page is a section (`page 3`, what a reader of the PDF can cite); the label is not put into the text.
    parts, sections, offset = [], [], 0
    for number, page in enumerate(pages, start=1):
        if page.strip():
            sections.append((offset, f"page {number}"))
            parts.append(page.strip())
            offset += len(parts[-1]) + 2
    return Parsed(text="\n\n".join(parts), title=str(title) if title else None, sections=sections)


def _docx(path: Path) -> Parsed:
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = Document(str(path))
    except (PackageNotFoundError, ValueError, KeyError, OSError) as exc:
        raise Unreadable(f"not a Word .docx file python-docx can read ({exc})") from None
    title = document.core_properties.title or None
    blocks: list[tuple[int | None, str]] = []
    for item in document.iter_inner_content():
        if hasattr(item, "rows"):  # a table: one line per row, cells apart
            blocks += [(None, " | ".join(cell.text.strip() for cell in row.cells)) for row in item.rows]
            continue
        style = (item.style.name if item.style is not None else "") or ""
        if style == "Title":
            title = title or item.text.strip()
            blocks.append((0, item.text))  # above Heading 1, so the headings nest under the title
        elif style.startswith("Heading") and style[7:].strip().isdigit():
            blocks.append((int(style[7:]), item.text))
        else:
            blocks.append((None, item.text))
    text, sections = _joined(blocks)
    return Parsed(text=text, title=title, sections=sections)


READERS = {
    ".txt": _plain,
    ".md": _markdown,
    ".markdown": _markdown,
    ".html": _html,
    ".htm": _html,
    ".pdf": _pdf,
    ".docx": _docx,
}


SUFFIXES = tuple(READERS)


def read_document(path: Path) -> Parsed:
    """The document in `path`, by its suffix. Raises Unreadable (with the reason) for a file of another kind, one
    the format's library cannot read, or one without text."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise Unreadable(f"not a {', '.join(sorted(READERS))} file")
    parsed = reader(path)
    if not parsed.text.strip():
        raise Unreadable("empty")
    return parsed
