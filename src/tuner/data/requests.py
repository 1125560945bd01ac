"""Requests: rows a trained or prompted model is asked to answer (`tuner predict`), in the format of the run's data,
with or without their answers.

A request needs only the columns that put the question: a classification row its text, an Alpaca row its
instruction, a chat its turns up to the last user turn. The answer, when given, is kept as the gold answer; when
absent, a stand-in takes its place so the row passes the same converter as training data, and it is never shown to the
model (scoring reads the prompt alone) nor reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TunerError
from ..schema import SourceConfig
from .formats import FORMATS, renamed, to_canonical
from .rows import scoring_rows
from .sources import as_table, read_source

STAND_IN = "?"


@dataclass
class Requests:
    """Request rows as the evaluator scores them (prompt/completion), and which of them came with an answer."""

    rows: list[dict[str, Any]]
    answered: list[bool]
    format: str


def _answer_columns(fmt: str, data_config) -> list[str]:
    return {
        "classification": [data_config.label_column],
        "alpaca": ["output"],
        "prompt_completion": ["completion"],
        "preference": [],
    }.get(fmt, [])


def _stand_in_label(data_config, choices: list[str] | None) -> str:
    names = data_config.label_names or choices
    return names[0] if names else STAND_IN


def _with_stand_in(row: dict[str, Any], fmt: str, data_config, choices: list[str] | None) -> tuple[dict, bool]:
    """The row with a stand-in answer where it has none, and whether it had one."""
    if fmt in ("messages", "sharegpt"):
        column = "messages" if fmt == "messages" else "conversations"
        turns = row.get(column)
        if not isinstance(turns, list) or not turns:
            return row, True  # the converter names what is wrong
        last = turns[-1] if isinstance(turns[-1], dict) else {}
        speaker = str(last.get("role", last.get("from", ""))).lower()
        if speaker in ("assistant", "gpt", "model", "bot"):
            return row, True
        stand_in = (
            {"role": "assistant", "content": STAND_IN} if fmt == "messages" else {"from": "gpt", "value": STAND_IN}
        )
        return {**row, column: [*turns, stand_in]}, False
    missing = [c for c in _answer_columns(fmt, data_config) if row.get(c) is None or row.get(c) == ""]
    if not missing:
        return row, True
    if fmt == "classification":
        return {**row, data_config.label_column: _stand_in_label(data_config, choices)}, False
    if fmt == "prompt_completion" and isinstance(row.get("prompt"), list):
        return {**row, "completion": [{"role": "assistant", "content": STAND_IN}]}, False
    return {**row, **{column: STAND_IN for column in missing}}, False


def read_requests(path: str | Path, data_config, fmt: str, eval_config, labels: list[str] | None = None) -> Requests:
    """Read a file of requests (JSON, JSONL, CSV, TSV or Parquet) in format `fmt` (the run's data format; `labels`:
    its label set); every row must convert, or the first bad rows are named."""
    where = f"--input {path}"
    raw = renamed(read_source(SourceConfig(path=str(path)), where), data_config, where)
    given = list(raw.column_names)
    if fmt == "classification" and data_config.label_column not in raw.column_names:
        raw = as_table([{**row, data_config.label_column: None} for row in raw])
    config = data_config.model_copy(update={"format": fmt, "columns": None})  # renamed above
    first = FORMATS[fmt].required(list(raw.column_names), config)
    asked = [c for c in first if c not in _answer_columns(fmt, config)]
    missing = [c for c in asked if c not in raw.column_names]
    if missing:
        raise TunerError(
            f"{where}: the run was trained on {fmt} rows, which put their question in {asked}, but the "
            f"file has the columns {given}. Give rows in the run's format (the answer column "
            f"may be left out)."
        )
    filled = [_with_stand_in(row, fmt, config, eval_config.choices or labels) for row in raw]
    dataset, _, bad = to_canonical(as_table([row for row, _ in filled]), config, where)
    if bad:
        raise TunerError(
            f"{where}: {len(bad)} row(s) cannot be read as {fmt} rows: "
            + "; ".join(f"row {n}: {reason}" for n, reason in bad[:3])
            + ". Fix those rows; every request is answered or none is."
        )
    rows = scoring_rows(dataset)
    answered = [had for _, had in filled]
    for row, had in zip(rows, answered):
        if not had and row.get("choices"):
            row["label"] = row["choices"][0]  # a stand-in among the row's own choices
    return Requests(rows=rows, answered=answered, format=fmt)
