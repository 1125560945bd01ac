"""What a team's data holds, read by tuner's own loader: each data file's format and kind of rows (labelled rows,
free-form answers, chats, preference pairs, thumbs up/down), its row count and label set, which files are held-out
rows, and a folder of documents to retrieve from. `tuner decide` plans its arms from this."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunerError
from ..schema import DataConfig
from .document_files import SUFFIXES as DOCUMENT_SUFFIXES
from .formats import FORMATS
from .sources import READERS, column_values
from .splits import load_split

# A file whose name holds one of these words holds held-out rows (test.jsonl, test_pairs.jsonl, dev.csv).
EVAL_WORDS = ("test", "eval", "dev", "valid", "validation", "heldout", "holdout")
# Columns that hold a thumbs up/down beside prompt and completion, read as feedback's `label`.
THUMBS_COLUMNS = ("thumbs_up", "thumbs", "liked", "helpful", "good")
# Kinds of rows by their format's family, as the plan and the summary name them.
KINDS = {
    "prompt_completion": "answers",
    "messages": "chats",
    "preference": "pairs",
    "feedback": "thumbs",
    "prompts": "prompts",
}


@dataclass
class DataFile:
    """One data file: its path, format, kind (answers, chats, pairs, thumbs, prompts), rows, whether it holds eval
    rows, and what its rows carry (labels, per-row choices, the source document of each answer)."""

    path: Path
    format: str
    kind: str
    rows: int
    eval: bool
    labels: list[str] | None = None
    label_counts: dict[str, int] | None = None
    choices_column: str | None = None
    source_column: str | None = None
    columns: dict[str, str] | None = None

    def source(self) -> dict[str, Any]:
        """The file as a recipe's data source."""
        return {"path": str(self.path), **({"columns": self.columns} if self.columns else {})}


@dataclass
class Inventory:
    """A team's data as `tuner decide` found it: the files it uses (`train`, `eval` by kind), the ones it leaves
    aside with why, and the corpus folder (None without documents)."""

    train: dict[str, DataFile] = field(default_factory=dict)
    eval: dict[str, DataFile] = field(default_factory=dict)
    corpus: Path | None = None
    corpus_files: int = 0
    notes: list[str] = field(default_factory=list)
    prompt_template: str | None = None

    @property
    def task(self) -> str:
        """The task the answers are scored by: `choice` for labelled rows or rows with their own choices, else
        `generate` (free-form answers, chats)."""
        main = self.train.get("answers") or self.eval.get("answers")
        return "choice" if main is not None and (main.labels or main.choices_column) else "generate"

    def lines(self) -> list[str]:
        """What was found, one line per file and corpus, then the notes."""
        found = []
        for role, files in (("train", self.train), ("eval", self.eval)):
            for kind, item in files.items():
                labels = ""
                if item.labels:
                    shown = ", ".join(f"{name} {item.label_counts.get(name, 0)}" for name in item.labels[:12])
                    labels = f"; {len(item.labels)} labels ({shown}{', ...' if len(item.labels) > 12 else ''})"
                elif item.choices_column:
                    labels = f"; each row's own choices (`{item.choices_column}`)"
                source = f"; answer sources in `{item.source_column}`" if item.source_column else ""
                found.append(f"{role} {kind}: {item.path} ({item.format}, {item.rows} rows{labels}{source})")
        if self.corpus is not None:
            found.append(f"documents: {self.corpus} ({self.corpus_files} files)")
        return found + self.notes


def inventory(paths: list[str | Path], eval_path: str | Path | None = None, corpus: str | Path | None = None):
    """Read each data file under `paths` (files, or folders whose data files and document folders are read) with
    tuner's loader. `eval_path` names the held-out file (else a file named test/eval/dev... of the same kind, else
    the plan holds rows out); `corpus` names the documents (else a folder of .md/.txt files beside the data)."""
    files, folders = [], []
    for given in [Path(p) for p in paths]:
        if given.is_dir():
            files += sorted(p for p in given.iterdir() if p.is_file() and p.suffix in READERS)
            folders += sorted(p for p in given.iterdir() if p.is_dir() and _documents(p))
        elif given.is_file():
            files.append(given)
        else:
            raise TunerError(
                f"{given}: no such file or folder. Give `tuner decide` a data file or a folder of them (JSONL, "
                f"JSON, CSV, TSV or Parquet), for example examples/data/tickets."
            )
    found = Inventory()
    read = [_read(path, eval=_is_eval(path)) for path in files]
    if eval_path is not None:
        read.append(_read(Path(eval_path), eval=True))
    unreadable = [entry for entry in read if isinstance(entry, str)]
    for entry in read:
        if isinstance(entry, str):
            continue
        role = found.eval if entry.eval else found.train
        if entry.kind in role:
            kept = _preferred(role[entry.kind], entry, explicit=eval_path is not None and entry.eval)
            other = entry if kept is role[entry.kind] else role[entry.kind]
            found.notes.append(f"left aside: {other.path} ({entry.kind} again; using {kept.path})")
            role[entry.kind] = kept
        else:
            role[entry.kind] = entry
    found.notes += [f"unreadable, left aside: {line}" for line in unreadable]
    if not found.train and not found.eval:
        named = "; ".join(unreadable) or f"no data files ({', '.join(sorted(READERS))}) in {', '.join(map(str, paths))}"
        raise TunerError(
            f"tuner decide found no rows it can use: {named}. Give a folder or files of labelled rows (a `text` and "
            f"a `label` column), prompt/completion answers, chats (`messages`), preference pairs (`chosen`/"
            f"`rejected`) or thumbs up/down feedback; `tuner validate` on a recipe names what a file lacks."
        )
    found.prompt_template = _template_of_feedback(found)
    if found.prompt_template is not None:
        found.notes.append(
            f"labelled rows asked as the pairs and thumbs ask them: {found.prompt_template!r} (so every arm is "
            f"scored on the same prompts)"
        )
    chosen = Path(corpus) if corpus is not None else (folders[0] if folders else None)
    if corpus is None and len(folders) > 1:
        found.notes.append(
            f"{len(folders)} document folders ({', '.join(p.name for p in folders)}): retrieving from "
            f"{folders[0].name}; --corpus chooses another"
        )
    if chosen is not None:
        if not chosen.is_dir() or not _documents(chosen):
            raise TunerError(
                f"--corpus {chosen}: not a folder of documents ({', '.join(DOCUMENT_SUFFIXES)} files). Name the folder "
                f"that holds them."
            )
        found.corpus, found.corpus_files = chosen, len(_documents(chosen))
    return found


def _template_of_feedback(found: Inventory, sample: int = 50) -> str | None:
    """The prompt the team's own pairs or thumbs wrap each labelled text in (`Team for this ticket?\\n{text}`),
    where their prompts end with the labelled rows' texts and all wrap them alike; None otherwise."""
    answers = found.train.get("answers")
    others = [found.train.get("pairs"), found.train.get("thumbs")]
    if answers is None or answers.format != "classification" or not any(others):
        return None
    texts = {row.get("text") for row in _first_rows(answers.path, 10 * sample) if isinstance(row.get("text"), str)}
    wraps = Counter()
    for other in filter(None, others):
        for row in _first_rows(other.path, sample):
            prompt = row.get("prompt")
            if isinstance(prompt, str):
                wraps.update(prompt[: -len(text)] for text in texts if text and prompt.endswith(text))
    if not wraps:
        return None
    wrap, count = wraps.most_common(1)[0]
    return wrap + "{text}" if wrap and count >= 0.8 * sum(wraps.values()) and "{" not in wrap else None


def _first_rows(path: Path, count: int) -> list[dict[str, Any]]:
    if path.suffix != ".jsonl":
        return []
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line, _ in zip(handle, range(count)):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
    except (OSError, ValueError):
        return rows
    return rows


def _documents(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES]


def _is_eval(path: Path) -> bool:
    return any(word in EVAL_WORDS for word in re.split(r"[^a-z]+", path.stem.lower()))


def _preferred(first: DataFile, second: DataFile, explicit: bool) -> DataFile:
    """Of two files of one kind and role: the one given as --eval, else one named train/test, else the larger."""
    if explicit:
        return second
    named = [item for item in (first, second) if re.split(r"[^a-z]+", item.path.stem.lower())[0] in ("train", "test")]
    if len(named) == 1:
        return named[0]
    return max((first, second), key=lambda item: item.rows)


def _read(path: Path, eval: bool) -> DataFile | str:
    """One file through the loader as a recipe would read it; a file it cannot read as the reason, in one line."""
    columns = _columns(path)
    config: dict[str, Any] = {"train": {"path": str(path)}}
    if "choices" in columns:
        config["choices_column"] = "choices"
    if "source" in columns:
        config["source_column"] = "source"
    thumbs = next((name for name in THUMBS_COLUMNS if name in columns), None)
    if thumbs and "label" not in columns and {"prompt", "completion"} <= set(columns):
        config["train"]["columns"] = {"label": thumbs}
    try:
        data_config = DataConfig.model_validate(config)
        with contextlib.redirect_stdout(io.StringIO()):  # its skipped-row notices belong to the runs
            dataset, fmt, _, _ = load_split(data_config.train, data_config, str(path))
    except (TunerError, ValueError, OSError) as error:
        return f"{path}: {str(error).splitlines()[0]}"
    if len(dataset) == 0:
        return f"{path}: no usable rows"
    labels = counts = None
    if fmt == "classification" and "label" in dataset.column_names:
        counts = dict(Counter(str(label) for label in column_values(dataset, "label") if label is not None))
        labels = sorted(counts)
    return DataFile(
        path=path,
        format=fmt,
        kind=KINDS.get(FORMATS[fmt].family, FORMATS[fmt].family),
        rows=len(dataset),
        eval=eval,
        labels=labels,
        label_counts=counts,
        choices_column=config.get("choices_column"),
        source_column=config.get("source_column"),
        columns=config["train"].get("columns"),
    )


def _columns(path: Path) -> list[str]:
    """The first row's columns of a JSON Lines file (the others are read whole by the loader)."""
    first = _first_rows(path, 1)
    return list(first[0]) if first else []
