"""Load any supported data set into canonical rows in TRL's column names.

Canonical rows are one of:
- `messages`: a chat, a list of `{role, content}` (from OpenAI-style `messages` or ShareGPT `conversations`);
- `prompt` / `completion`: strings (plain text) or message lists (chat), from Alpaca, prompt/completion files and
  classification data; classification rows also carry `label`, the gold answer as a label name;
- `prompt` / `chosen` / `rejected`: preference pairs (TRL's own columns, LLaMA-Factory's ShareGPT-style pairs, or
  full transcripts in `chosen` and `rejected` whose shared beginning becomes the prompt, as in HH-RLHF).

Bad rows are reported by row number and reason and counted; they are never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TunerError

_READERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
TEXT_COLUMNS = ("text", "sentence", "content", "input", "question", "review", "document", "body")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "system": "system", "observation": "tool",
                  "tool": "tool", "function_call": "assistant"}
_MAX_REPORTED = 10


@dataclass
class Splits:
    """The train and eval rows of a recipe, their format and what loading them found."""

    train: Any
    eval: Any
    format: str
    report: dict[str, Any] = field(default_factory=dict)


def _read_file(path: Path):
    import datasets

    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise TunerError(f"{path}: unsupported file type {path.suffix!r}. Use JSON, JSONL, CSV, TSV or Parquet.")
    if path.stat().st_size == 0:
        raise TunerError(f"{path}: the data file is empty. Add rows or point at another file.")
    if reader == "json":
        return datasets.Dataset.from_list(_read_json_rows(path))
    # pandas directly rather than datasets' builders: no progress bars or logged tracebacks, and its parser errors
    # name the line.
    import pandas as pd

    try:
        if reader == "csv":
            frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # pandas and pyarrow raise many types for a broken file
        raise TunerError(f"{path}: could not read it as {path.suffix[1:].upper()}: {str(exc).strip().splitlines()[0]}. "
                         f"Check that the file is complete and well formed.") from None
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


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
            raise TunerError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. Fix the "
                             f"file (a JSON file holds one list of row objects).") from None
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TunerError(f"{path}: line {number} is not valid JSON ({exc.msg}). A JSONL file holds one JSON "
                                 f"object per line; fix or remove that line.") from None
    if isinstance(rows, dict):
        rows = [rows]
    bad = [i for i, row in enumerate(rows) if not isinstance(row, dict)]
    if bad:
        raise TunerError(f"{path}: row {bad[0]} is a {type(rows[bad[0]]).__name__}, not an object with named "
                         f"fields ({len(bad)} such rows). Every row must be a JSON object.")
    if not rows:
        raise TunerError(f"{path}: the data file holds no rows. Add rows or point at another file.")
    # Columns missing from some rows become None, as a table would have them.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{column: row.get(column) for column in columns} for row in rows]


def read_source(source, where: str = "<recipe>"):
    """Read one `SourceConfig` (file, hub data set or in-memory rows) into a `datasets.Dataset`."""
    import datasets

    if source.rows is not None:
        rows = source.rows
        dataset = rows if isinstance(rows, datasets.Dataset) else datasets.Dataset.from_list(list(rows))
    elif source.hub is not None:
        try:
            dataset = datasets.load_dataset(source.hub, source.subset, split=source.split)
        except Exception as exc:  # hub errors come in many types; the first line says what went wrong
            raise TunerError(f"{where}: could not load hub data set {source.hub!r} (split {source.split!r}): "
                             f"{str(exc).splitlines()[0]} Check the name and split, or download it and point "
                             f"`path` at the file.") from None
    else:
        path = Path(source.path)
        if not path.is_file():
            raise TunerError(f"{where}: data file {path} does not exist. Fix the path (relative to {Path.cwd()}).")
        dataset = _read_file(path)
    if len(dataset) == 0:
        raise TunerError(f"{where}: {source.describe()} holds no rows. Add rows or point at another data set.")
    return dataset


def detect_format(columns: list[str], data_config) -> str:
    """Name the row format from a data set's columns, or raise listing the columns found."""
    names = set(columns)
    if {"chosen", "rejected"} <= names:
        return "preference"
    if "messages" in names:
        return "messages"
    if "conversations" in names:
        return "sharegpt"
    if {"instruction", "output"} <= names:
        return "alpaca"
    if {"prompt", "completion"} <= names:
        return "prompt_completion"
    if data_config.label_column in names and _text_column(columns, data_config):
        return "classification"
    raise TunerError(
        f"the columns {sorted(names)} fit no known format. tuner reads `messages` (chat), `conversations` "
        f"(ShareGPT), `instruction`/`input`/`output` (Alpaca), `prompt`/`completion`, `chosen`/`rejected` "
        f"(preference pairs, with `prompt` or `conversations`, or as full transcripts), or a text column "
        f"({', '.join(TEXT_COLUMNS)}) with a `{data_config.label_column}` column (classification). Rename the "
        f"columns, or set `data.format`, `data.text_column` and `data.label_column`.")


def _text_column(columns: list[str], data_config) -> str | None:
    if data_config.text_column:
        return data_config.text_column if data_config.text_column in columns else None
    return next((c for c in TEXT_COLUMNS if c in columns), None)


# ---- one converter per format: row -> canonical row, or ValueError with the reason ----

def _content(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty or not a string")
    return value


def _system(data_config) -> list[dict[str, str]]:
    return [{"role": "system", "content": data_config.system_prompt}] if data_config.system_prompt else []


def _check_chat(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn to learn from")
    return messages


def _from_chat(column: str, what: str):
    """Converter for a chat column: OpenAI-style `messages` or ShareGPT `conversations` (optional `system`)."""
    def convert(row, data_config):
        turns = row[column]
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"`{column}` is not a non-empty list")
        out = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        out += [_turn(turn, f"{what} {i}") for i, turn in enumerate(turns)]
        if out[0]["role"] != "system":
            out = _system(data_config) + out
        return {"messages": _check_chat(out)}
    return convert


def join_answer(prompt: str, answer: str) -> str:
    """Plain-text prompt and answer as one string: one space between them unless the prompt ends in whitespace."""
    return prompt + ("" if prompt[-1:].isspace() else " ") + answer


def _pair(prompt: str, answer: str, data_config, system: str | None = None) -> dict[str, Any]:
    """A prompt/completion row, as chat messages or as plain text joined by one space."""
    if data_config.chat:
        system_turn = [{"role": "system", "content": system}] if system else _system(data_config)
        return {"prompt": system_turn + [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": answer}]}
    return {"prompt": prompt, "completion": join_answer(prompt, answer)[len(prompt):]}


def _from_alpaca(row, data_config):
    instruction = _content(row["instruction"], "`instruction`")
    extra = row.get("input")
    prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    return _pair(prompt, _content(row["output"], "`output`"), data_config, system=row.get("system") or None)


def _from_prompt_completion(row, data_config):
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):
        return {"prompt": _system(data_config) + prompt if prompt and prompt[0].get("role") != "system" else prompt,
                "completion": completion}
    prompt, completion = _content(prompt, "`prompt`"), _content(completion, "`completion`")
    return _pair(prompt, completion, data_config) if data_config.chat else {"prompt": prompt,
                                                                            "completion": completion}


def _turn(turn: Any, what: str) -> dict[str, str]:
    """One message from OpenAI style ({role, content}) or ShareGPT style ({from, value})."""
    if isinstance(turn, dict) and "role" in turn and "content" in turn:
        return {"role": str(turn["role"]), "content": _content(turn["content"], f"{what} content")}
    if isinstance(turn, dict) and "from" in turn and "value" in turn:
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise ValueError(f"{what} has unknown speaker {turn['from']!r} (known: {', '.join(SHAREGPT_ROLES)})")
        return {"role": role, "content": _content(turn["value"], f"{what} value")}
    raise ValueError(f"{what} is not a message ({{role, content}} or {{from, value}})")


def _answer(value: Any, what: str) -> list[dict[str, str]] | str:
    """A preference answer: a string, one message, or a list of messages."""
    if isinstance(value, str):
        return _content(value, what)
    if isinstance(value, dict):
        return [_turn(value, what)]
    if isinstance(value, list) and value:
        return [_turn(turn, f"{what} turn {i}") for i, turn in enumerate(value)]
    raise ValueError(f"{what} is empty or not text or messages")


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _split_transcripts(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """Split the shared beginning off two full transcripts: (prompt, chosen, rejected)."""
    if isinstance(chosen, list) and isinstance(rejected, list):
        from trl.data_utils import extract_prompt

        parts = extract_prompt({"chosen": chosen, "rejected": rejected})
        return parts["prompt"], parts["chosen"], parts["rejected"]
    if not (isinstance(chosen, str) and isinstance(rejected, str)):
        raise ValueError("`chosen` and `rejected` are neither both text nor both message lists")
    shared = len(os.path.commonprefix([chosen, rejected]))
    # Cut at the start of the last assistant turn both share (HH-RLHF's "\n\nAssistant:"), else at a space, never
    # inside a word.
    marker = chosen.rfind("Assistant:", 0, shared)
    cut = marker + len("Assistant:") if marker >= 0 else chosen.rfind(" ", 0, shared) + 1
    if cut <= 0:
        raise ValueError("`chosen` and `rejected` share no prompt to split off; give a `prompt` column")
    return chosen[:cut], chosen[cut:].strip(), rejected[cut:].strip()


def _transcript_messages(text: str) -> list[dict[str, str]] | None:
    """HH-RLHF text ("\n\nHuman: ... \n\nAssistant:") as chat messages, or None when it is not in that form."""
    pieces = _HH_TURN.split(text)
    if len(pieces) < 3 or pieces[0].strip():
        return None
    turns = [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
             for who, body in zip(pieces[1::2], pieces[2::2])]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()  # the open "Assistant:" the answers continue
    return turns if turns and all(t["content"] for t in turns) else None


def _as_assistant(answer: list[dict[str, str]] | str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": answer}] if isinstance(answer, str) else answer


def _from_preference(row, data_config):
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(row.get("conversations"), list):  # LLaMA-Factory: the prompt turns, then one message each
        prompt = [_turn(turn, f"conversation turn {i}") for i, turn in enumerate(row["conversations"])]
    elif row.get("prompt") is not None:
        prompt = row["prompt"] if isinstance(row["prompt"], str) else [
            _turn(turn, f"prompt turn {i}") for i, turn in enumerate(row["prompt"])]
    else:
        prompt, chosen, rejected = _split_transcripts(chosen, rejected)
        if isinstance(prompt, str) and data_config.chat:
            prompt = _transcript_messages(prompt) or prompt
    chosen, rejected = _answer(chosen, "`chosen`"), _answer(rejected, "`rejected`")
    if chosen == rejected:
        raise ValueError("`chosen` equals `rejected`, so there is nothing to prefer")
    if isinstance(prompt, str):
        _content(prompt, "`prompt`")
        if data_config.chat:
            prompt = _system(data_config) + [{"role": "user", "content": prompt}]
        elif isinstance(chosen, str):
            return {"prompt": prompt, "chosen": join_answer(prompt, chosen)[len(prompt):],
                    "rejected": join_answer(prompt, rejected)[len(prompt):]}
    elif prompt and prompt[0]["role"] != "system":
        prompt = _system(data_config) + prompt
    if isinstance(prompt, list):
        chosen, rejected = _as_assistant(chosen), _as_assistant(rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def label_name(value: Any, data_config) -> str:
    """The label name of a raw label: integers index `data.label_names`, strings are names already."""
    names = data_config.label_names
    if isinstance(value, bool) or value is None:
        raise ValueError(f"label {value!r} is not an integer or a name")
    if isinstance(value, int | float) and float(value).is_integer():
        if not names:
            raise ValueError(f"label {value!r} is an integer but `data.label_names` is not set")
        if not 0 <= int(value) < len(names):
            raise ValueError(f"label {int(value)} is outside 0..{len(names) - 1} (`data.label_names` has "
                             f"{len(names)} names)")
        return names[int(value)]
    text = _content(str(value), "the label")
    if names and text not in names:
        raise ValueError(f"label {text!r} is not one of data.label_names {names}")
    return text


def _from_classification(row, data_config, text_column: str):
    text = _content(row[text_column], f"`{text_column}`")
    answer = label_name(row[data_config.label_column], data_config)
    prompt = data_config.prompt_template.replace("{text}", text)
    return {**_pair(prompt, answer, data_config), "label": answer}


def _with_choices(row: dict[str, Any], raw: dict[str, Any], data_config) -> dict[str, Any]:
    """Keep a multiple-choice row's own list of allowed answers as `choices`."""
    column = data_config.choices_column
    if column is None:
        return row
    choices = raw.get(column)
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"`{column}` is not a non-empty list of answers")
    return {**row, "choices": choices}


_CONVERTERS = {"messages": _from_chat("messages", "message"), "sharegpt": _from_chat("conversations", "turn"),
               "alpaca": _from_alpaca,
               "prompt_completion": _from_prompt_completion, "preference": _from_preference}
_REQUIRED = {"messages": ["messages"], "sharegpt": ["conversations"], "alpaca": ["instruction", "output"],
             "prompt_completion": ["prompt", "completion"], "preference": ["chosen", "rejected"]}


def to_canonical(dataset, data_config, where: str = "<data>"):
    """Convert a raw data set to canonical rows; returns (dataset, format, bad rows as (row number, reason))."""
    import datasets

    columns = list(dataset.column_names)
    try:
        fmt = data_config.format if data_config.format != "auto" else detect_format(columns, data_config)
    except TunerError as exc:
        raise TunerError(f"{where}: {exc}") from None
    if fmt == "classification":
        text_column = _text_column(columns, data_config)
        required = [text_column or data_config.text_column or "text", data_config.label_column]
    else:
        text_column, required = None, _REQUIRED[fmt]
    missing = [c for c in required if c not in columns]
    if missing:
        raise TunerError(f"{where}: format {fmt} needs the column(s) {missing}, but the columns found are "
                         f"{columns}. Set `data.format: auto` or the right column names.")
    _refuse_mixed_formats(dataset, required, columns, where)
    rows, bad = [], []
    for number, row in enumerate(dataset):
        try:
            if fmt == "classification":
                out = _from_classification(row, data_config, text_column)
            else:
                out = _CONVERTERS[fmt](row, data_config)
            rows.append(_with_choices(out, row, data_config))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            bad.append((number, str(exc)))
    if not rows:
        reasons = "; ".join(f"row {n}: {r}" for n, r in bad[:3])
        raise TunerError(f"{where}: none of its {len(bad)} rows is usable as {fmt} ({reasons}). Fix the rows or "
                         f"the `data` section.")
    return datasets.Dataset.from_list(rows), fmt, bad


def _refuse_mixed_formats(dataset, required: list[str], columns: list[str], where: str) -> None:
    """Rows of one file in two formats (some chats, some text/label rows) are a mistake, not bad rows to skip."""
    others = [c for c in columns if c not in required]
    if not others:
        return
    lacking = next((n for n, row in enumerate(dataset) if all(row[c] is None for c in required)
                    and any(row[c] is not None for c in others)), None)
    if lacking is None or all(all(row[c] is None for c in required) for row in dataset):
        return
    holds = [c for c in others if dataset[lacking][c] is not None]
    raise TunerError(f"{where}: the rows mix formats: row {lacking} has none of {required} but holds {holds}, while "
                     f"other rows have {required}. Put each format in its own file, or convert the rows to one.")


def fingerprint(dataset) -> str:
    """SHA-256 of the canonical rows, so runs can tell whether they saw the same data."""
    digest = hashlib.sha256()
    for row in dataset:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def _describe_bad(bad: list[tuple[int, str]], where: str) -> dict[str, Any]:
    return {"count": len(bad), "first": [f"{where} row {n}: {reason}" for n, reason in bad[:_MAX_REPORTED]]}


def load_split(source, data_config, where: str):
    """Read and convert one source; returns (dataset, format, bad-row report, the raw columns)."""
    where = f"{where} ({source.describe()})"
    raw = read_source(source, where)
    dataset, fmt, bad = to_canonical(raw, data_config, where)
    return dataset, fmt, _describe_bad(bad, source.describe()), list(raw.column_names)


def load_data(data_config, seed: int = 0, source: str = "<recipe>") -> Splits:
    """Load a recipe's train and eval rows as canonical rows.

    The eval rows come from `data.eval`, or from a seeded `eval_fraction` of the train rows. `max_train_samples`
    keeps a seeded random subset of the train rows; `max_eval_samples` keeps the first eval rows, so every method
    and seed is scored on the same rows.
    """
    train, fmt, train_bad, columns = load_split(data_config.train, data_config, f"{source}: data.train")
    if data_config.eval is not None:
        evaluation, eval_fmt, eval_bad, _ = load_split(data_config.eval, data_config, f"{source}: data.eval")
        if _family(eval_fmt) != _family(fmt):
            raise TunerError(f"{source}: data.train is {fmt} but data.eval is {eval_fmt}; both splits must hold the "
                             f"same kind of rows.")
    else:
        if len(train) < 2:
            raise TunerError(f"{source}: data.train has {len(train)} usable row, too few to hold out an eval split. "
                             f"Add rows or give `data.eval`.")
        parts = train.train_test_split(test_size=data_config.eval_fraction, seed=seed)
        train, evaluation, eval_bad = parts["train"], parts["test"], _describe_bad([], "")
    if data_config.max_train_samples and data_config.max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(data_config.max_train_samples))
    if data_config.max_eval_samples and data_config.max_eval_samples < len(evaluation):
        evaluation = evaluation.select(range(data_config.max_eval_samples))
    for bad in (train_bad, eval_bad):
        for line in bad["first"]:
            print(f"tuner: skipped {line}")
        if bad["count"] > len(bad["first"]):
            print(f"tuner: ... {bad['count'] - len(bad['first'])} more rows skipped")
    report = {"format": fmt, "train_columns": columns, "train_rows": len(train), "eval_rows": len(evaluation),
              "train_fingerprint": fingerprint(train), "eval_fingerprint": fingerprint(evaluation),
              "skipped_train_rows": train_bad, "skipped_eval_rows": eval_bad}
    return Splits(train=train, eval=evaluation, format=fmt, report=report)


def _family(fmt: str) -> str:
    return {"messages": "messages", "sharegpt": "messages", "preference": "preference"}.get(fmt, "prompt_completion")


def prompt_text(row: dict[str, Any]) -> str:
    """The question of a row as text: a plain prompt, or the content of a chat prompt's last user turn."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def answer_text(row: dict[str, Any]) -> str:
    """The gold answer of a row as text: its label, else its completion or preferred answer (an assistant
    message's content)."""
    if row.get("label") is not None:
        return str(row["label"])
    completion = row["chosen"] if "chosen" in row else row["completion"]
    if isinstance(completion, list):
        return completion[-1]["content"]
    return completion.lstrip(" ")


def eval_identity(rows, eval_config) -> dict[str, str]:
    """Fingerprints of what an evaluation scored, for telling whether two runs can be compared.

    `rows_fingerprint`: SHA-256 of each row's question and gold answer(s) (for preference rows, both answers).
    `prompt_fingerprint`: SHA-256 of how the questions were put to the model (system prompt, chat or plain text,
    template) and of the scoring settings (task, choices, answer pattern, generation cap). Few-shot examples are the
    method, not the rendering: rows from `fewshot_rows` are fingerprinted by their `base_prompt`.
    """
    rows_digest, prompt_digest = hashlib.sha256(), hashlib.sha256()
    settings = {"task": eval_config.task, "choices": eval_config.choices, "answer_regex": eval_config.answer_regex,
                "max_new_tokens": eval_config.max_new_tokens if eval_config.task == "generate" else None}
    prompt_digest.update(json.dumps(settings, sort_keys=True).encode())
    for row in rows:
        base = {**row, "prompt": row.get("base_prompt", row["prompt"])}
        if eval_config.task == "preference":
            gold: Any = [answer_text({"completion": row[side]}) for side in ("chosen", "rejected")]
        else:
            gold = [answer_text(row), row.get("choices")]
        rows_digest.update(json.dumps([prompt_text(base), gold], ensure_ascii=False).encode())
        prompt_digest.update(json.dumps(base["prompt"], sort_keys=True, ensure_ascii=False).encode())
    return {"rows_fingerprint": rows_digest.hexdigest(), "prompt_fingerprint": prompt_digest.hexdigest()}


def scoring_rows(dataset) -> list[dict[str, Any]]:
    """Eval rows as prompt/completion, the form the evaluator scores (chats are split at the last answer)."""
    rows = list(dataset)
    return [last_turn_as_completion(row) if "messages" in row else row for row in rows]


def _system_turns(prompt: Any) -> list[dict[str, str]]:
    return [m for m in prompt if m["role"] == "system"][:1] if isinstance(prompt, list) else []


def fewshot_rows(train, evaluation, fewshot_config) -> list[dict[str, Any]]:
    """Eval rows whose prompts carry k worked examples from the train split (never from the eval split).

    `select`: `first` k rows, `random` k rows per eval row (seeded), or the k most `similar` by BM25 (most similar
    last, nearest the question). `as_chat`: examples as earlier chat turns; otherwise one plain-text prompt. With
    k = 0 the rows keep their prompts as `data.chat` rendered them.
    """
    evaluation, k = scoring_rows(evaluation), fewshot_config.k
    eval_questions = {prompt_text(row) for row in evaluation}
    # A train row whose question is also an eval question would leak the answer into the prompt.
    pool = [row for row in scoring_rows(train) if prompt_text(row) not in eval_questions]
    if k > len(pool):
        raise TunerError(f"fewshot.k is {k} but the train split has only {len(pool)} rows usable as examples (rows "
                         f"that repeat an eval question are left out). Lower `fewshot.k` or add train rows.")
    picks = _pick_examples(pool, evaluation, fewshot_config)
    # `base_prompt` keeps the question as the data section rendered it, so the evaluator can tell that a few-shot run
    # scored the same rows, rendered the same way, as a fine-tuned one.
    return [{**row, "prompt": _fewshot_prompt(row, [pool[i] for i in chosen], fewshot_config.as_chat),
             "base_prompt": row["prompt"]} for row, chosen in zip(evaluation, picks)]


def _pick_examples(pool, evaluation, fewshot_config) -> list[list[int]]:
    import random

    k = fewshot_config.k
    if k == 0:
        return [[] for _ in evaluation]
    if fewshot_config.select == "first":
        return [list(range(k)) for _ in evaluation]
    if fewshot_config.select == "random":
        rng = random.Random(fewshot_config.seed)
        return [rng.sample(range(len(pool)), k) for _ in evaluation]
    import bm25s

    corpus = bm25s.tokenize([prompt_text(row) for row in pool], stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    queries = bm25s.tokenize([prompt_text(row) for row in evaluation], stopwords="en", show_progress=False)
    indices, _ = retriever.retrieve(queries, k=k, show_progress=False, n_threads=1)
    return [list(reversed(row.tolist())) for row in indices]


def _fewshot_prompt(row, examples, as_chat: bool):
    if not examples:
        return row["prompt"]  # zero-shot: the row as the data section rendered it (chat or plain text)
    if as_chat:
        turns = _system_turns(row["prompt"])
        for example in examples:
            turns += [{"role": "user", "content": prompt_text(example)},
                      {"role": "assistant", "content": answer_text(example)}]
        return turns + [{"role": "user", "content": prompt_text(row)}]
    shots = [join_answer(prompt_text(example), answer_text(example)) for example in examples]
    return "\n\n".join(shots + [prompt_text(row)])


def last_turn_as_completion(row: dict[str, Any]) -> dict[str, Any]:
    """A `messages` row as prompt/completion: everything before the last assistant turn, and that turn.

    Used when the chat template cannot mark assistant turns for loss masking: the model then learns the last answer
    with the earlier turns as context.
    """
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}
