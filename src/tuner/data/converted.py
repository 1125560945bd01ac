"""A data file's converted rows, kept in tuner's cache: read and converted once, then memory-mapped by every later run
of the same file (by content, wherever it lies), the same data section and the same tuner code.

An entry is a folder `$TUNER_CACHE/data/<key>/` holding the canonical rows as an Arrow stream (`rows.arrow`, the file
format `datasets` memory-maps) and what converting found (`converted.json`: format, skipped rows, raw columns). Work
that `datasets` derives from these rows later (TRL's tokenized rows, whose fingerprint follows from the file's) is
cached by `datasets` in the same folder, so a second run of the same data and tokenizer tokenizes nothing again.
Deleting `$TUNER_CACHE/data` (or any entry) costs one conversion; `data.cache: false` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import cache_dir, write_json

# The keys of a data section that act after conversion (which rows are kept, held out or capped): a sweep over them
# reads one entry.
AFTER_CONVERSION = {
    "train",
    "eval",
    "max_train_samples",
    "max_eval_samples",
    "eval_fraction",
    "split_seed",
    "drop_eval_overlap",
    "cache",
}
# The modules whose code decides the converted rows: a change to any of them is a new entry.
CONVERTING_CODE = ("sources.py", "messages.py", "formats.py", "rows.py", "converted.py")
FOLDER = "data"
# The data sets `converted` returned, each to its entry: only that very object (no selection of it) holds every row
# the entry does, so only it may take the fingerprint kept there.
_RETURNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def entry_key(path: Path, data_config) -> str:
    """The entry of a file converted by a data section: SHA-256 of the file's bytes, its suffix (which reader), the
    section's converting keys and tuner's converting code."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    digest.update(path.suffix.lower().encode())
    settings = data_config.model_dump(mode="json", exclude=AFTER_CONVERSION)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    here = Path(__file__).parent
    for name in CONVERTING_CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:32]


def converted(path: Path, data_config, convert: Callable[[], tuple]) -> tuple[Any, str, list, list[str]]:
    """`convert()`'s (rows, format, bad rows, raw columns) for the file at `path`, from the cache where an entry
    exists (the rows memory-mapped), else converted now and kept. Rows Arrow cannot hold as one table (`Rows`) are
    converted every time."""
    import datasets
    import pyarrow

    folder = cache_dir() / FOLDER / entry_key(path, data_config)
    try:
        found = json.loads((folder / "converted.json").read_text(encoding="utf-8"))
        rows = datasets.Dataset.from_file(str(folder / "rows.arrow"))
        _RETURNED[rows] = folder
        return rows, found["format"], [tuple(one) for one in found["bad"]], found["columns"]
    except (OSError, ValueError, KeyError, TypeError, pyarrow.ArrowInvalid):
        # No entry, or a damaged one (a disk that filled, a hand that edited it): convert again and replace it.
        shutil.rmtree(folder, ignore_errors=True)
    rows, fmt, bad, columns = convert()
    if isinstance(rows, list):
        return rows, fmt, bad, columns
    try:
        _keep(folder, rows, {"format": fmt, "bad": bad, "columns": columns, "file": str(path)})
        rows = datasets.Dataset.from_file(str(folder / "rows.arrow"))
        _RETURNED[rows] = folder
    except OSError as exc:  # a full or read-only cache costs the next run a conversion, not this run
        print(f"tuner: could not keep the converted rows of {path} in {folder.parent} ({exc.strerror or exc})")
    return rows, fmt, bad, columns


def kept_fingerprint(rows, compute: Callable[[Any], str]) -> str:
    """`compute(rows)`, the fingerprint of every row (JSON of each, 7 s a million), kept in the entry of rows that
    `converted` returned whole, so later runs of the same file read it; other rows (a selection of them, rows not
    from the cache) are fingerprinted every time."""
    folder = _RETURNED.get(rows) if not isinstance(rows, list) else None
    if folder is None:
        return compute(rows)
    record = folder / "converted.json"
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return compute(rows)
    if isinstance(found.get("fingerprint"), str):
        return found["fingerprint"]
    found["fingerprint"] = compute(rows)
    try:
        write_json(record, found)
    except OSError:
        pass  # the next run computes it again
    return found["fingerprint"]


def _keep(folder: Path, rows, found: dict[str, Any]) -> None:
    """Write an entry whole into a new folder beside it, then rename it into place: a run stopped halfway, or
    another process converting the same file, never leaves half an entry."""
    import pyarrow

    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        arrow = rows.with_format("arrow")[:]
        with pyarrow.OSFile(str(building / "rows.arrow"), "wb") as sink:
            with pyarrow.ipc.new_stream(sink, arrow.schema) as writer:
                writer.write_table(arrow, max_chunksize=10_000)
        write_json(building / "converted.json", found)
        try:
            os.replace(building, folder)
        except OSError:
            if not (folder / "converted.json").is_file():
                raise
            # another process kept the same rows first
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
