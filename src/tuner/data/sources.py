"""Reading one data source, a local file, a hub data set or rows in memory, into a `datasets.Dataset` as it is.

Errors name the file and the line; converting the rows to canonical form is `formats.py`'s work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import TunerError
from ..progress import tracked

READERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class Rows(list):
    """Rows whose fields hold values of mixed types from row to row (a message's content as text here and as a list
    of parts there), which one Arrow table cannot hold: the list of dicts as read, with the `column_names` the
    converters ask of a data set. Converted rows are uniform and become a `datasets.Dataset` again."""

    @property
    def column_names(self) -> list[str]:
        return list(dict.fromkeys(key for row in self for key in row))


# Rows at a time when a table is walked row by row: datasets' own iterator formats each row alone (about 40 us a
# row), a batch's `to_pylist` costs about 1 us.
BATCH = 10_000


def records(dataset, batch_size: int = BATCH):
    """The rows of a `datasets.Dataset` (its selection and order) or of `Rows`, as dicts, read a batch at a time."""
    if isinstance(dataset, list):
        yield from dataset
        return
    # Arrow's own `to_pylist` rather than datasets' Python formatter: half the time, and plain text rows need no
    # feature decoding.
    for batch in dataset.with_format("arrow").iter(batch_size=batch_size):
        yield from batch.to_pylist()


def column_values(dataset, name: str) -> list[Any]:
    """One column of a `datasets.Dataset` (its selection and order) or of `Rows`, as a list: a data set's own
    column iterates row by row, 25 s for a million rows."""
    if isinstance(dataset, list):
        return [row.get(name) for row in dataset]
    return dataset.with_format("arrow")[name].to_pylist()


def table(rows: list[dict[str, Any]]):
    """A `datasets.Dataset` of the rows with every column any row has, None where a row has none: datasets'
    `from_list` takes the first row's columns alone, so a column row 0 lacks (a chat's tools, Alpaca's `input`)
    would vanish from every row."""
    return in_memory(arrow_table(rows))


def arrow_table(rows: list[dict[str, Any]]):
    """A `pyarrow.Table` of the rows with every column any row has, None where a row has none."""
    import pyarrow

    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pyarrow.Table.from_pylist([{column: row.get(column) for column in columns} for row in rows])


def in_memory(arrow):
    """A `datasets.Dataset` over an Arrow table in memory. Its fingerprint (the key of datasets' own cache, which an
    in-memory data set never writes to) is drawn at random rather than hashed from every row: 5 s a million."""
    import uuid

    import datasets

    return datasets.Dataset(arrow, fingerprint=uuid.uuid4().hex)


def as_table(rows: list[dict[str, Any]]):
    """`table(rows)`, or `Rows` when their fields mix types that Arrow cannot put in one column."""
    import pyarrow

    try:
        return table(rows)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return Rows(rows)


def _read_file(path: Path):
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise TunerError(f"{path}: unsupported file type {path.suffix!r}. Use JSON, JSONL, CSV, TSV or Parquet.")
    if path.stat().st_size == 0:
        raise TunerError(f"{path}: the data file is empty. Add rows or point at another file.")
    if reader == "json":
        arrow = _arrow_jsonl(path) if path.suffix.lower() == ".jsonl" else None
        return in_memory(arrow) if arrow is not None else as_table(_read_json_rows(path))
    # pandas directly rather than datasets' builders: no progress bars or logged tracebacks, and its parser errors
    # name the line.
    import pandas as pd

    try:
        if reader == "csv":
            # Only an empty cell is missing: labels and texts such as "None", "NA" or "null" stay the strings they are.
            frame = pd.read_csv(
                path, sep="\t" if path.suffix.lower() == ".tsv" else ",", keep_default_na=False, na_values=[""]
            )
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # pandas and pyarrow raise many types for a broken file
        raise TunerError(
            f"{path}: could not read it as {path.suffix[1:].upper()}: {str(exc).strip().splitlines()[0]}. "
            f"Check that the file is complete and well formed."
        ) from None
    import pyarrow

    return in_memory(pyarrow.Table.from_pandas(frame, preserve_index=False))


def _arrow_jsonl(path: Path):
    """A JSONL file read by pyarrow's streaming reader (threads, a block at a time: about 1 s and twice the file's
    size in memory for a million rows, where Python's reader takes ten times both), or None where the Python
    reader must do it: a line that is not JSON (its message names the line), fields whose types differ from row to
    row or appear after the first block, dates (pyarrow would read them as timestamps, not the strings they are),
    text that is not UTF-8. Blank lines are skipped by both."""
    import pyarrow
    import pyarrow.json

    try:
        reader = pyarrow.json.open_json(path, read_options=pyarrow.json.ReadOptions(block_size=1 << 22))
        arrow = pyarrow.Table.from_batches(list(reader), schema=reader.schema)
        arrow.validate(full=True)  # pyarrow's parser takes bytes that are not UTF-8: the Python reader names them
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, pyarrow.ArrowTypeError, OSError):
        return None
    if arrow.num_rows == 0 or not all(_json_type(field.type) for field in arrow.schema):
        return None
    return arrow


def _json_type(kind) -> bool:
    """Whether an Arrow type is one a JSON value becomes the same way through Python's reader and `table`."""
    import pyarrow.types as types

    if types.is_struct(kind):
        return all(_json_type(kind.field(n).type) for n in range(kind.num_fields))
    if types.is_list(kind) or types.is_large_list(kind):
        return _json_type(kind.value_type)
    return types.is_string(kind) or types.is_boolean(kind) or types.is_int64(kind) or types.is_float64(kind)


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    # Read JSON here rather than through pyarrow: errors then name the line, and rows whose optional fields differ
    # in type (Alpaca's `input`, ShareGPT's extra keys) load as they are.
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TunerError(f"{path}: not UTF-8 text (byte {exc.start}). Re-save the file as UTF-8.") from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TunerError(
                f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. Fix the "
                f"file (a JSON file holds one list of row objects)."
            ) from None
    else:
        rows = []
        lines = text.splitlines()
        for number, line in tracked(enumerate(lines, start=1), len(lines), f"reading {path.name}", "lines"):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TunerError(
                    f"{path}: line {number} is not valid JSON ({exc.msg}). A JSONL file holds one JSON "
                    f"object per line; fix or remove that line."
                ) from None
    if isinstance(rows, dict):
        rows = [rows]
    bad = [i for i, row in enumerate(rows) if not isinstance(row, dict)]
    if bad:
        raise TunerError(
            f"{path}: row {bad[0]} is a {type(rows[bad[0]]).__name__}, not an object with named "
            f"fields ({len(bad)} such rows). Every row must be a JSON object."
        )
    if not rows:
        raise TunerError(f"{path}: the data file holds no rows. Add rows or point at another file.")
    # Columns missing from some rows become None, as a table would have them.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{column: row.get(column) for column in columns} for row in rows]


def file_lines(path: str | Path, rows: list[int]) -> dict[int, int]:
    """The line of the file each of `rows` (0-based data rows, as messages number them) starts on, for a CSV/TSV
    file (after its header; a quoted cell may span lines) or a JSONL file (blank lines skipped, as they are read);
    empty for other files. Read again only for the few rows a message names."""
    import csv

    path = Path(path)
    suffix, wanted, found = path.suffix.lower(), set(rows), {}
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if suffix in (".csv", ".tsv"):
                reader = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                start = 1
                for number, _ in enumerate(reader, start=-1):  # the header is row -1
                    if number in wanted:
                        found[number] = start
                    start = reader.line_num + 1
            elif suffix == ".jsonl":
                number = 0
                for line_number, line in enumerate(handle, start=1):
                    if line.strip():
                        if number in wanted:
                            found[number] = line_number
                        number += 1
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return found


def read_source(source, where: str = "<recipe>"):
    """Read one `SourceConfig` (file, hub data set or in-memory rows) into a `datasets.Dataset`."""
    import datasets

    if source.rows is not None:
        rows = source.rows
        dataset = rows if isinstance(rows, datasets.Dataset) else as_table(list(rows))
    elif source.hub is not None:
        try:
            dataset = datasets.load_dataset(source.hub, source.subset, split=source.split)
        except Exception as exc:  # hub errors come in many types; the first line says what went wrong
            raise TunerError(
                f"{where}: could not load hub data set {source.hub!r} (split {source.split!r}): "
                f"{str(exc).splitlines()[0]} Check the name and split, or download it and point "
                f"`path` at the file."
            ) from None
    else:
        path = Path(source.path)
        if not path.is_file():
            raise TunerError(f"{where}: data file {path} does not exist. Fix the path (relative to {Path.cwd()}).")
        dataset = _read_file(path)
    if len(dataset) == 0:
        raise TunerError(f"{where}: {source.describe()} holds no rows. Add rows or point at another data set.")
    return dataset
