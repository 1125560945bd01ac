"""A data file's converted rows, kept in tuner's cache: read and converted once, then memory-mapped by every later run
of the same file (by content, wherever it lies), the same data section and the same tuner code.

An entry is a folder `$TUNER_CACHE/data/<key>/` holding the canonical rows as an Arrow stream (`rows.arrow`, the file
format `datasets` memory-maps, written a batch at a time while converting) and what converting found
(`converted.json`: format, skipped rows, raw columns, the rows' fingerprint). Work that `datasets` derives from these
rows later (TRL's tokenized rows, whose fingerprint follows from the file's) is cached by `datasets` in the same
folder, so a second run of the same data and tokenizer tokenizes nothing again.
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
from .digest import Digest
from .formats import Parts

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
CONVERTING_CODE = ("sources.py", "messages.py", "formats.py", "rows.py", "converted.py", "digest.py")
FOLDER = "data"
# The data sets `converted` returned, each to its entry: only that very object (no selection of it) holds every row
# the entry does, so only it may take the fingerprint kept there.
_RETURNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Selections of those drawn the same way every time (`drawn`), each to (its entry, how it was drawn).
_DRAWN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def converted(path: Path, data_config, convert: Callable[[Any], tuple]) -> tuple[Any, str, list, list[str]]:
    """`convert(parts)`'s (rows, format, bad rows, raw columns) for the file at `path`, from the cache where an entry
    exists (the rows memory-mapped), else converted now into a new entry (`Entry`, a batch at a time) and kept.
    `convert` hands its converted rows to `parts` (None: in memory, for a cache that cannot be written)."""
    import pyarrow

    folder = cache_dir() / FOLDER / entry_key(path, data_config)
    try:
        return _read(folder)
    except (OSError, ValueError, KeyError, TypeError, pyarrow.ArrowInvalid):
        # No entry, or a damaged one (a disk that filled, a hand that edited it): convert again and replace it.
        shutil.rmtree(folder, ignore_errors=True)
    try:
        entry = Entry(folder)
    except OSError as exc:  # a full or read-only cache costs the next run a conversion, not this run
        _unkept(path, folder, exc)
        return convert(None)
    try:
        _, fmt, bad, columns = convert(entry)
        entry.finish({"format": fmt, "bad": bad, "columns": columns, "file": str(path)})
    except OSError as exc:  # the disk filled halfway: what was written is gone, the rows are converted in memory
        entry.discard()
        _unkept(path, folder, exc)
        return convert(None)
    finally:
        entry.discard()
    return _read(folder)


def _read(folder: Path) -> tuple[Any, str, list, list[str]]:
    import datasets

    found = json.loads((folder / "converted.json").read_text(encoding="utf-8"))
    rows = datasets.Dataset.from_file(str(folder / "rows.arrow"))
    _RETURNED[rows] = folder
    return rows, found["format"], [tuple(one) for one in found["bad"]], found["columns"]


def _unkept(path: Path, folder: Path, exc: OSError) -> None:
    print(f"tuner: could not keep the converted rows of {path} in {folder.parent} ({exc.strerror or exc})")


class Entry:
    """A new entry, written while the rows are converted: each batch goes to `rows.arrow` in a folder beside the
    entry's as it comes, so the converted rows are never all in memory, and to a helper process that fingerprints
    them on the other core (`Digest`: the fingerprint `kept_fingerprint` reads back, without reading every row
    again). `finish` renames the folder into place: a run stopped halfway, or another process converting the same
    file, never leaves half an entry. A batch whose columns differ from the first's (a field only later rows have)
    turns the entry into an in-memory one, joined and written whole at the end."""

    def __init__(self, folder: Path) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        self.batches, self.writer, self.digest, self.memory = 0, None, None, None

    def add(self, table) -> None:
        """Write one batch of converted rows (a `pyarrow.Table`)."""
        import pyarrow

        self.batches += 1
        if self.memory is not None:
            self.memory.add(table)
            return
        if self.writer is None:
            self.sink = pyarrow.OSFile(str(self.building / "rows.arrow"), "wb")
            self.writer = pyarrow.ipc.new_stream(self.sink, table.schema)
            self.schema = table.schema
            try:
                self.digest = Digest(table.schema)
            except OSError:  # no helper process: fingerprinted on first use instead
                self.digest = None
        elif not table.schema.equals(self.schema):
            self._close()
            self._stop_digest()
            self.memory = Parts()
            with pyarrow.OSFile(str(self.building / "rows.arrow")) as source:  # read, not mapped: the file goes
                self.memory.add(pyarrow.ipc.open_stream(source).read_all())
            self.memory.add(table)
            return
        self.writer.write_table(table, max_chunksize=10_000)
        if self.digest is not None:
            self.digest.add(table)

    def rows(self) -> None:
        """None: the rows are read back from the entry once it is in place."""
        return None

    def finish(self, found: dict[str, Any]) -> None:
        """Close the rows, record what converting found (and the rows' fingerprint) and move the entry into place."""
        self._close()
        if self.memory is not None:
            _write(self.building / "rows.arrow", self.memory.joined())
        elif self.digest is not None:
            digest, self.digest = self.digest, None
            fingerprint = digest.hexdigest()
            found = {**found, **({"fingerprint": fingerprint} if fingerprint else {})}
        write_json(self.building / "converted.json", found)
        try:
            os.replace(self.building, self.folder)
        except OSError:
            if not (self.folder / "converted.json").is_file():
                raise
            # another process kept the same rows first

    def discard(self) -> None:
        """Remove what is left of the folder being built (nothing once `finish` moved it into place)."""
        self._close()
        self._stop_digest()
        if self.building.exists():
            shutil.rmtree(self.building, ignore_errors=True)

    def _stop_digest(self) -> None:
        if self.digest is not None:
            digest, self.digest = self.digest, None
            digest.cancel()

    def _close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
            self.sink.close()


def drawn(selection, whole, how: dict[str, Any]):
    """`selection`, marked as drawn from `whole` (rows `converted` returned) by `how` (a seeded split: its settings),
    so that its fingerprint is kept in the entry too. `how` must decide the selection given the rows: the version of
    `datasets`, whose draw it is, is added to it. Returns `selection`."""
    import datasets

    folder = _RETURNED.get(whole) if not isinstance(whole, list) else None
    if folder is not None and not isinstance(selection, list):
        key = json.dumps({**how, "datasets": datasets.__version__}, sort_keys=True)
        _DRAWN[selection] = (folder, hashlib.sha256(key.encode()).hexdigest()[:16])
    return selection


def kept_fingerprint(rows, compute: Callable[[Any], str]) -> str:
    """`compute(rows)`, the fingerprint of every row (JSON of each, about 11 s a million on 2 cores), kept in the
    entry of rows that `converted` returned whole or that were `drawn` from them, so later runs of the same file read
    it; other rows (a selection made otherwise, rows not from the cache) are fingerprinted every time."""
    if isinstance(rows, list):
        return compute(rows)
    folder, split = (_RETURNED[rows], None) if rows in _RETURNED else _DRAWN.get(rows, (None, None))
    if folder is None:
        return compute(rows)
    record = folder / "converted.json"
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return compute(rows)
    kept = found if split is None else found.setdefault("splits", {})
    name = "fingerprint" if split is None else split
    if isinstance(kept.get(name), str):
        return kept[name]
    kept[name] = compute(rows)
    try:
        write_json(record, found)
    except OSError:
        pass  # the next run computes it again
    return kept[name]


def _write(path: Path, table) -> None:
    import pyarrow

    with pyarrow.OSFile(str(path), "wb") as sink:
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=10_000)
