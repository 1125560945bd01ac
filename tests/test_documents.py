"""A corpus as teams keep it: PDF, HTML, Word and Markdown files read into text, titles, sections and tags (files
made here with the formats' own libraries, or by hand for PDF), unreadable files named and skipped; the chunking
strategies on three tokenizer kinds (byte-level BPE, SentencePiece with and without the word-start marker)."""

from __future__ import annotations

import pytest

from tuner.data.corpus import read_corpus
from tuner.data.passages import chunk_documents
from tuner.index import build_index

from families import build


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A PDF with one line of Helvetica text per entry, one page per list (pypdf writes no text, so by hand)."""
    objects: list = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        None,
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for lines in pages:
        shown = " ".join("(" + line.replace("(", r"\(").replace(")", r"\)") + ") Tj T*" for line in lines)
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {len(objects)} 0 R >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    info = ""
    if title:
        objects.append(f"<< /Title ({title}) >>")
        info = f" /Info {len(objects)} 0 R"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + (body if isinstance(body, bytes) else body.encode()) + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_docx(path, title: str, sections: dict[str, list[str]], table: list[list[str]] | None = None) -> None:
    from docx import Document

    document = Document()
    document.add_heading(title, level=0)  # the Title style
    for heading, paragraphs in sections.items():
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table):
            for cell, value in zip(row.cells, values):
                cell.text = value
    document.save(str(path))


HTML = """<!doctype html><html><head><title>Returns policy</title><style>p {color: red}</style>
<script>var secret = "not text";</script></head><body><nav><ul><li><a href="/">Home</a></li></ul></nav>
<h1>Returns</h1><p>Products may be returned within <b>41 days</b> of delivery.</p>
<h2>Refunds</h2><p>Refunds reach the card in 6 working days.</p><ul><li>Keep the receipt.</li></ul>
<footer><p>Copyright Quillfeather</p></footer></body></html>"""

MARKDOWN = """---
title: Brindleton office
tags: [offices, north]
---
# Brindleton office

The Brindleton office opens at 7:40.

## Staff

It employs 52 people. Its manager is Ada Quill.

```bash
# not a heading: a comment in a code block
```
"""


@pytest.fixture
def mixed_corpus(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "manuals").mkdir(parents=True)
    (folder / "manuals" / "kettle.pdf").write_bytes(
        make_pdf([["Aurora Kettle manual", "The warranty lasts 33 months."], ["Descale it every 40 days."]], "Kettle")
    )
    (folder / "policies").mkdir()
    (folder / "policies" / "returns.html").write_text(HTML, encoding="utf-8")
    make_docx(
        folder / "policies" / "leave.docx",
        "Leave policy",
        {"Annual leave": ["Staff take 27 days of leave a year."], "Carry-over": ["Up to 5 days carry over."]},
        table=[["Grade", "Days"], ["Senior", "30"]],
    )
    (folder / "offices.md").write_text(MARKDOWN, encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    (folder / "scan.pdf").write_bytes(make_pdf([[]]))
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n")
    return folder


def test_a_mixed_folder_is_read_with_titles_sections_and_tags_and_unreadable_files_named(mixed_corpus):
    corpus = read_corpus(mixed_corpus)
    documents = {d.id: d for d in corpus.documents}
    assert sorted(documents) == ["manuals/kettle.pdf", "offices.md", "policies/leave.docx", "policies/returns.html"]

    pdf = documents["manuals/kettle.pdf"]
    assert pdf.title == "Kettle" and "warranty lasts 33 months" in pdf.text and "40 days" in pdf.text
    assert [path for _, path in pdf.sections] == ["page 1", "page 2"] and "page 1" not in pdf.text

    html = documents["policies/returns.html"]
    assert html.title == "Returns policy" and "41 days of delivery" in html.text
    assert "secret" not in html.text and "color" not in html.text and "Keep the receipt." in html.text
    assert "Home" not in html.text and "Copyright" not in html.text  # navigation and footer are not the page
    assert [path for _, path in html.sections] == ["Returns", "Returns > Refunds"]
    assert html.text[html.sections[1][0] :].startswith("Refunds")

    word = documents["policies/leave.docx"]
    assert word.title == "Leave policy" and "27 days of leave" in word.text and "Senior | 30" in word.text
    assert [path for _, path in word.sections] == [
        "Leave policy",
        "Leave policy > Annual leave",
        "Leave policy > Carry-over",
    ]

    markdown = documents["offices.md"]
    assert markdown.title == "Brindleton office" and markdown.tags == ("offices", "north")
    assert not markdown.text.startswith("---") and "tags:" not in markdown.text
    assert [path for _, path in markdown.sections] == ["Brindleton office", "Brindleton office > Staff"]

    skipped = dict(corpus.skipped)
    assert set(skipped) == {"broken.pdf", "broken.docx", "scan.pdf", "logo.png"}
    assert "pypdf" in skipped["broken.pdf"] and "python-docx" in skipped["broken.docx"]
    assert "text layer" in skipped["scan.pdf"] and "not a" in skipped["logo.png"]


def test_an_index_of_the_mixed_folder_keeps_text_titles_and_sections_on_its_passages(
    mixed_corpus, smollm2_tokenizer_dir
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    index = build_index(mixed_corpus, tokenizer, chunk_size=48, chunk_overlap=4, chunk_strategy="sections")
    assert index.report["documents"] == 4 and len(index.report["skipped"]) == 4
    hit = index.search("How many days of leave do staff take?", k=1)[0]
    assert hit.document == "policies/leave.docx" and hit.title == "Leave policy"
    assert hit.section == "Leave policy > Annual leave" and "27 days" in hit.text
    refund = index.search("How long until refunds reach the card?", k=1)[0]
    assert refund.document == "policies/returns.html" and refund.section == "Returns > Refunds"


TEXT = (
    "# Aurora Kettle\n\nThe Aurora Kettle carries a warranty of 33 months. It is made in Larkspur. "
    "Its price is 463 crowns, and the product lead is Mira Holt.\n\n## Care\n\n"
    + " ".join(f"Step {n}: rinse the kettle with {n} cups of water and let it dry for {n} minutes." for n in range(12))
    + "\n\n## Warranty claims\n\nClaims go to the Larkspur service desk. A claim takes 9 days to settle."
)


@pytest.fixture(params=["smollm2", "mistral", "gemma3"])
def any_tokenizer(request, smollm2_tokenizer_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    if request.param == "smollm2":
        return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    return AutoTokenizer.from_pretrained(build(request.param, tmp_path_factory.mktemp(request.param)))


@pytest.mark.parametrize("strategy", ["tokens", "sentences", "recursive", "sections"])
def test_each_chunking_strategy_keeps_passages_within_size_in_order_with_stable_ids(strategy, any_tokenizer, tmp_path):
    (tmp_path / "kettle.md").write_text(TEXT, encoding="utf-8")
    documents = read_corpus(tmp_path).documents
    chunks = chunk_documents(documents, any_tokenizer, size=40, overlap=8, strategy=strategy)
    assert [c.id for c in chunks] == [f"kettle.md#{n}" for n in range(len(chunks))] and len(chunks) > 3
    # A passage's count is its own text's; cuts at whole pieces may merge a token across a boundary.
    assert all(c.tokens <= 40 for c in chunks)
    assert all(c.text and c.text in TEXT for c in chunks)
    assert TEXT.index(chunks[0].text) == 0 and TEXT.endswith(chunks[-1].text)
    again = chunk_documents(documents, any_tokenizer, size=40, overlap=8, strategy=strategy)
    assert [(c.id, c.digest) for c in again] == [(c.id, c.digest) for c in chunks]
    if strategy != "tokens":  # cuts fall between words, even where a sentence is longer than a passage
        for chunk in chunks:
            begin = TEXT.index(chunk.text)
            end = begin + len(chunk.text)
            assert (begin == 0 or TEXT[begin - 1].isspace()) and (end == len(TEXT) or TEXT[end].isspace())
        # where every sentence fits, each passage ends where one does
        roomy = chunk_documents(documents, any_tokenizer, size=72, overlap=8, strategy=strategy)
        assert all(c.text.endswith((".", "Kettle", "Care", "claims")) for c in roomy)
    if strategy == "sections":  # no passage reaches across a heading
        for chunk in chunks:
            assert chunk.text.count("\n#") == 0 and chunk.text.count("## ") <= int(chunk.text.startswith("## "))
        assert {c.section for c in chunks} == {
            "Aurora Kettle",
            "Aurora Kettle > Care",
            "Aurora Kettle > Warranty claims",
        }
        claims = [c for c in chunks if c.section.endswith("Warranty claims")]
        assert claims and claims[0].text.startswith("## Warranty claims")


def test_the_strategy_is_part_of_the_index_identity(tmp_path, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "kettle.md").write_text(TEXT, encoding="utf-8")
    tokens = build_index(tmp_path / "docs", tokenizer, chunk_size=40, chunk_overlap=8)
    sections = build_index(tmp_path / "docs", tokenizer, chunk_size=40, chunk_overlap=8, chunk_strategy="sections")
    assert tokens.folder != sections.folder and sections.report["status"] == "built"
    again = build_index(tmp_path / "docs", tokenizer, chunk_size=40, chunk_overlap=8, chunk_strategy="sections")
    assert again.report["status"] == "reused"
