"""The table of row formats: for each, the columns that identify it, how one row becomes a canonical row (see
`rows.py`), and the kind of canonical row it makes. Detection, conversion and the required columns of a format are
all read from its entry in `FORMATS`; a new format is one converter and one entry.

A converter raises ValueError with the reason for a row it cannot use; `to_canonical` reports such rows by number
and never drops them silently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import TunerError
from ..progress import tracked
from .messages import content_text, message, tools_json
from .rows import join_answer
from .sources import BATCH, arrow_table, as_table, in_memory, records

TEXT_COLUMNS = ("text", "sentence", "content", "input", "question", "review", "document", "body")


def text_column(columns, data_config) -> str | None:
    """The classification text column: `data.text_column` when present, else the first usual name found (`columns`:
    the names, or a row, whose keys are its columns)."""
    if data_config.text_column:
        return data_config.text_column if data_config.text_column in columns else None
    return next((c for c in TEXT_COLUMNS if c in columns), None)


# ---- one converter per format: row -> canonical row, or ValueError with the reason ----


def _chats(data_config) -> bool:
    """Whether rows become chat messages: `data.chat` unset counts as chat here (a recipe read by `recipe_file`
    has it decided from the model already; a `DataConfig` made in code keeps the default of chats)."""
    return data_config.chat is not False


def _system(data_config) -> list[dict[str, str]]:
    return [{"role": "system", "content": data_config.system_prompt}] if data_config.system_prompt else []


def _check_chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn to learn from")
    if not any(m["role"] == "assistant" and m.get("train") is not False for m in messages):
        raise ValueError("every assistant turn of the conversation is marked not to be trained on")
    return messages


def _from_chat(column: str, what: str):
    """Converter for a chat column: OpenAI-style `messages` or ShareGPT `conversations` (optional `system`)."""

    def convert(row, data_config):
        turns = row[column]
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"`{column}` is not a non-empty list")
        out = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        out += [message(turn, f"{what} {i}") for i, turn in enumerate(turns)]
        if row.get("system") and out[1]["role"] == "system":
            raise ValueError(f"the row has both a `system` field and a system {what} first; keep one of them")
        if out[0]["role"] != "system":
            out = _system(data_config) + out
        tools = tools_json(row.get("tools"))
        return {"messages": _check_chat(out), **({"tools": tools} if tools else {})}

    return convert


def _pair(prompt: str, answer: str, data_config, system: str | None = None) -> dict[str, Any]:
    """A prompt/completion row, as chat messages or as plain text joined by one space."""
    if _chats(data_config):
        system_turn = [{"role": "system", "content": system}] if system else _system(data_config)
        return {
            "prompt": system_turn + [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": answer}],
        }
    return {"prompt": prompt, "completion": join_answer(prompt, answer)[len(prompt) :]}


def _from_alpaca(row, data_config):
    instruction = content_text(row["instruction"], "`instruction`")
    extra = row.get("input")
    prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    return _pair(prompt, content_text(row["output"], "`output`"), data_config, system=row.get("system") or None)


def _from_prompt_completion(row, data_config):
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):
        return {
            "prompt": _system(data_config) + prompt if prompt and prompt[0].get("role") != "system" else prompt,
            "completion": completion,
        }
    prompt, completion = content_text(prompt, "`prompt`"), content_text(completion, "`completion`")
    return (
        _pair(prompt, completion, data_config) if _chats(data_config) else {"prompt": prompt, "completion": completion}
    )


def _answer(value: Any, what: str) -> list[dict[str, str]] | str:
    """A preference answer: a string, one message, or a list of messages."""
    if isinstance(value, str):
        return content_text(value, what)
    if isinstance(value, dict):
        return [message(value, what)]
    if isinstance(value, list) and value:
        return [message(turn, f"{what} turn {i}") for i, turn in enumerate(value)]
    raise ValueError(f"{what} is empty or not text or messages")


def _without_prompt(answer: list[dict[str, str]] | str, prompt: Any) -> list[dict[str, str]] | str:
    """A chat answer that repeats its prompt first (UltraFeedback-binarized: a string `prompt`, and `chosen` the
    whole conversation, user turn included) less the repeated turns, as TRL's `extract_prompt` takes them; trained
    as given, the pair would read "user Q, user Q, assistant A"."""
    if not isinstance(answer, list) or not isinstance(prompt, str | list):
        return answer
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    asked = [(m["role"], str(m["content"]).strip()) for m in turns if m["role"] != "system"]
    body = [m for m in answer if m["role"] != "system"]
    if (
        asked
        and len(body) > len(asked)
        and [(m["role"], str(m["content"]).strip()) for m in body[: len(asked)]] == asked
    ):
        return body[len(asked) :]
    return answer


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
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": body.strip()}
        for who, body in zip(pieces[1::2], pieces[2::2])
    ]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()  # the open "Assistant:" the answers continue
    return turns if turns and all(t["content"] for t in turns) else None


def _as_assistant(answer: list[dict[str, str]] | str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": answer}] if isinstance(answer, str) else answer


def _from_preference(row, data_config):
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(row.get("conversations"), list):  # LLaMA-Factory: the prompt turns, then one message each
        prompt = [message(turn, f"conversation turn {i}") for i, turn in enumerate(row["conversations"])]
    elif row.get("prompt") is not None:
        prompt = (
            row["prompt"]
            if isinstance(row["prompt"], str)
            else [message(turn, f"prompt turn {i}") for i, turn in enumerate(row["prompt"])]
        )
    else:
        prompt, chosen, rejected = _split_transcripts(chosen, rejected)
        if isinstance(prompt, str) and _chats(data_config):
            prompt = _transcript_messages(prompt) or prompt
    chosen, rejected = _answer(chosen, "`chosen`"), _answer(rejected, "`rejected`")
    chosen, rejected = _without_prompt(chosen, prompt), _without_prompt(rejected, prompt)
    if chosen == rejected:
        raise ValueError("`chosen` equals `rejected`, so there is nothing to prefer")
    if isinstance(prompt, str):
        content_text(prompt, "`prompt`")
        if _chats(data_config):
            prompt = _system(data_config) + [{"role": "user", "content": prompt}]
        elif isinstance(chosen, str):
            return {
                "prompt": prompt,
                "chosen": join_answer(prompt, chosen)[len(prompt) :],
                "rejected": join_answer(prompt, rejected)[len(prompt) :],
            }
    elif prompt and prompt[0]["role"] != "system":
        prompt = _system(data_config) + prompt
    if isinstance(prompt, list):
        chosen, rejected = _as_assistant(chosen), _as_assistant(rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _from_preference_messages(row, data_config):
    """LLaMA-Factory's `chosen_messages` / `rejected_messages`: two whole chats sharing their beginning (split off as
    the prompt), or the two answers after `conversations` / `prompt` turns."""
    sides = {}
    for side in ("chosen", "rejected"):
        turns = row[f"{side}_messages"]
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"`{side}_messages` is not a non-empty list of messages")
        sides[side] = [message(turn, f"`{side}_messages` turn {i}") for i, turn in enumerate(turns)]
    return _from_preference({**row, **sides}, data_config)


_THUMBS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "up": True,
    "down": False,
    "good": True,
    "bad": False,
    "desirable": True,
    "undesirable": False,
    "\U0001f44d": True,
    "\U0001f44e": False,
}


def _thumbs_labels(dataset) -> bool:
    """Whether a data set's `label` column holds thumbs (booleans, 1/0, up/down...) and not class names: only then
    are `messages` or `prompt`/`completion` rows with a `label` feedback."""
    values = [row.get("label") for row in dataset if row.get("label") is not None]
    try:
        return bool(values) and all(_thumbs(value) in (True, False) for value in values)
    except ValueError:
        return False


def _thumbs(value: Any) -> bool:
    """A feedback label as True (thumbs up) or False: a boolean, 1/0, or a word (true/false, up/down, good/bad)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _THUMBS:
        return _THUMBS[value.strip().lower()]
    raise ValueError(f"`label` is {value!r}, not a thumbs up or down (true/false, 1/0, up/down, good/bad)")


def _from_feedback(row, data_config):
    """One answer judged good or bad (TRL's unpaired preference rows: `prompt`, `completion`, boolean `label`)."""
    desirable = _thumbs(row["label"])
    pair = _from_prompt_completion(row, data_config)
    return {"prompt": pair["prompt"], "completion": pair["completion"], "desirable": desirable}


def _from_feedback_chat(column: str, what: str):
    """LLaMA-Factory's KTO rows: a chat (`messages` or ShareGPT `conversations`) whose last answer is judged by
    `label`."""
    chat = _from_chat(column, what)

    def convert(row, data_config):
        desirable = _thumbs(row["label"])
        messages = chat(row, data_config)["messages"]
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"the last {what} is not the assistant's answer that `label` judges")
        return {"prompt": messages[:-1], "completion": messages[-1:], "desirable": desirable}

    return convert


def _from_prompts(row, data_config):
    """A prompt alone, for GRPO, whose rewards judge sampled answers: text, or chat turns ending with the user's."""
    prompt = row["prompt"]
    if isinstance(prompt, list):
        turns = [message(turn, f"prompt turn {i}") for i, turn in enumerate(prompt)]
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("the prompt's turns do not end with a user turn to answer")
        return {"prompt": turns if turns[0]["role"] == "system" else _system(data_config) + turns}
    prompt = content_text(prompt, "`prompt`")
    return {"prompt": _system(data_config) + [{"role": "user", "content": prompt}] if _chats(data_config) else prompt}


def _prompts_alone(dataset) -> bool:
    """Whether a `prompt` column stands alone: beside half of a pair or an answer column it is a broken file of
    another format, named as such."""
    return not {"chosen", "rejected", "completion", "response", "output", "answer"} & set(dataset.column_names)


def unpaired(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A preference pair as two feedback rows: its chosen answer thumbs up, its rejected one thumbs down."""
    return [
        {"prompt": row["prompt"], "completion": row["chosen"], "desirable": True},
        {"prompt": row["prompt"], "completion": row["rejected"], "desirable": False},
    ]


def label_name(value: Any, data_config) -> str:
    """The label name of a raw label: integers index `data.label_names`, strings are names already."""
    names = data_config.label_names
    if value is None or isinstance(value, bool):
        raise ValueError("the label is empty" if value is None else f"label {value!r} is not an integer or a name")
    if isinstance(value, int | float) and float(value).is_integer():
        if not names:
            raise ValueError(f"label {value!r} is an integer but `data.label_names` is not set")
        if not 0 <= int(value) < len(names):
            raise ValueError(
                f"label {int(value)} is outside 0..{len(names) - 1} (`data.label_names` has {len(names)} names)"
            )
        return names[int(value)]
    text = content_text(str(value), "the label")
    if names and text not in names:
        raise ValueError(f"label {text!r} is not one of data.label_names {names}")
    return text


def _options(row, data_config) -> list[str]:
    options = row.get(data_config.choices_column)
    if not isinstance(options, list) or not options or not all(isinstance(o, str) and o for o in options):
        raise ValueError(f"`{data_config.choices_column}` (data.choices_column) is not a non-empty list of answers")
    return options


def _indexed_answer(row, data_config) -> str:
    """The right option of a multiple-choice row, by its index in the row's options (MMLU's `answer`)."""
    column, options = data_config.answer_index_column, _options(row, data_config)
    index = row.get(column)
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(options):
        raise ValueError(
            f"`{column}` (data.answer_index_column) is {index!r}, not an index 0..{len(options) - 1} of "
            f"the row's {len(options)} options"
        )
    return options[index]


def _from_classification(row, data_config):
    column = text_column(row, data_config)
    text = content_text(row[column], f"`{column}`")
    answer = (
        _indexed_answer(row, data_config)
        if data_config.answer_index_column
        else label_name(row[data_config.label_column], data_config)
    )
    prompt = data_config.prompt_template.replace("{text}", text)
    if "{choices}" in prompt:
        prompt = prompt.replace("{choices}", "\n".join(_options(row, data_config)))
    return {**_pair(prompt, answer, data_config), "label": answer}


def _with_row_extras(row: dict[str, Any], raw: dict[str, Any], data_config) -> dict[str, Any]:
    """Keep a multiple-choice row's own list of allowed answers as `choices`, and the corpus document that answers
    it as `source`."""
    if data_config.source_column is not None:
        source = raw.get(data_config.source_column)
        if source is None or str(source) == "":
            raise ValueError(f"`{data_config.source_column}` (data.source_column) is empty")
        row = {**row, "source": str(source)}
    column = data_config.choices_column
    if column is None:
        return row
    choices = raw.get(column)
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"`{column}` is not a non-empty list of answers")
    return {**row, "choices": choices}


@dataclass(frozen=True)
class Format:
    """One row format: the columns that must be present, the converter, and the kind of canonical row it makes
    (`messages`, `prompt_completion`, `preference`, `feedback` or `prompts`; train and eval splits make the same
    kind, except that feedback rows and prompts are scored on any kind)."""

    required: Callable[[list[str], Any], list[str]]
    convert: Callable[[dict[str, Any], Any], dict[str, Any]]
    family: str
    # Detection only: whether the rows' values fit too, when the columns alone do not tell.
    fits: Callable[[Any], bool] | None = None


def _columns(*names: str) -> Callable[[list[str], Any], list[str]]:
    return lambda columns, data_config: list(names)


def _classification_columns(columns: list[str], data_config) -> list[str]:
    return [
        text_column(columns, data_config) or data_config.text_column or "text",
        data_config.answer_index_column or data_config.label_column,
    ]


# In detection order: the first format whose required columns are all present is the data's format.
FORMATS: dict[str, Format] = {
    "preference": Format(_columns("chosen", "rejected"), _from_preference, "preference"),
    "preference_messages": Format(
        _columns("chosen_messages", "rejected_messages"), _from_preference_messages, "preference"
    ),
    "feedback_messages": Format(
        _columns("messages", "label"), _from_feedback_chat("messages", "message"), "feedback", _thumbs_labels
    ),
    "feedback_conversations": Format(
        _columns("conversations", "label"), _from_feedback_chat("conversations", "turn"), "feedback", _thumbs_labels
    ),
    "feedback": Format(_columns("prompt", "completion", "label"), _from_feedback, "feedback", _thumbs_labels),
    "messages": Format(_columns("messages"), _from_chat("messages", "message"), "messages"),
    "sharegpt": Format(_columns("conversations"), _from_chat("conversations", "turn"), "messages"),
    "alpaca": Format(_columns("instruction", "output"), _from_alpaca, "prompt_completion"),
    "prompt_completion": Format(_columns("prompt", "completion"), _from_prompt_completion, "prompt_completion"),
    "classification": Format(_classification_columns, _from_classification, "prompt_completion"),
    "prompts": Format(_columns("prompt"), _from_prompts, "prompts", _prompts_alone),
}


def detect_format(columns: list[str], data_config, dataset=None) -> str:
    """Name the row format from a data set's columns (and, given the `dataset`, its values where a format asks), or
    raise listing the columns found."""
    for name, entry in FORMATS.items():
        if all(column in columns for column in entry.required(columns, data_config)) and (
            entry.fits is None or dataset is None or entry.fits(dataset)
        ):
            return name
    raise TunerError(
        f"the columns {sorted(columns)} fit no known format. tuner reads `messages` (chat), `conversations` "
        f"(ShareGPT), `instruction`/`input`/`output` (Alpaca), `prompt`/`completion`, `chosen`/`rejected` "
        f"(preference pairs, with `prompt` or `conversations`, or as full transcripts), `chosen_messages`/"
        f"`rejected_messages` (two chats), `prompt`/`completion` or `messages` with a boolean `label` (thumbs up/down "
        f"feedback), `prompt` alone (prompts for GRPO), or a text column ({', '.join(TEXT_COLUMNS)}) with a "
        f"`{data_config.label_column}` column (classification). Map your columns to these names with `data.columns`"
        f"{_mapping_example(columns)}, or set `data.format`."
    )


def _mapping_example(columns: list[str], missing: list[str] | None = None) -> str:
    """An example `data.columns` from the columns found (tuner's names in order: `text`, `label` for two unknown
    columns); none where some columns are tuner's already (the fix is the missing one, not a mapping)."""
    known = {
        "prompt",
        "completion",
        "chosen",
        "rejected",
        "messages",
        "conversations",
        "instruction",
        "output",
        "label",
        *TEXT_COLUMNS,
    }
    wanted = missing or (["text", "label"] if len(columns) == 2 and not known & set(columns) else [])
    spare = [column for column in columns if column not in wanted and column not in known]
    pairs = ", ".join(f"{ours}: {theirs}" for ours, theirs in zip(wanted, spare))
    return (
        f" (for these files, e.g. `data.columns: {{{pairs}}}`; check which column is which)"
        if wanted and len(spare) >= len(wanted)
        else ""
    )


def renamed(dataset, data_config, where: str):
    """The data set with the user's column names (`data.columns`: tuner's name -> theirs) read as tuner's."""
    mapping = data_config.columns or {}
    columns = list(dataset.column_names)
    missing = {ours: theirs for ours, theirs in mapping.items() if theirs not in columns}
    if missing:
        ours, theirs = next(iter(missing.items()))
        raise TunerError(
            f"{where}: key `data.columns.{ours}` reads the column `{theirs}`, but the columns are "
            f"{list(dataset.column_names)}. Fix the name in `data.columns`."
        )
    rename = {theirs: ours for ours, theirs in mapping.items() if theirs != ours}
    if not rename:
        return dataset
    names = [rename.get(column, column) for column in columns]
    if not isinstance(dataset, list) and len(set(names)) == len(names):
        return dataset.rename_columns(rename)
    # A name mapped onto a column that stays (or two onto one): each row keeps the value it would as a dict.
    return as_table([{rename.get(key, key): value for key, value in row.items()} for row in records(dataset)])


def to_canonical(dataset, data_config, where: str = "<data>", parts: Parts | None = None):
    """Convert a raw data set to canonical rows; returns (dataset, format, bad rows as (row number, reason)). The
    rows go a batch at a time to `parts` (in memory by default), and the data set is what its `rows()` returns."""

    dataset = renamed(dataset, data_config, where)
    columns = list(dataset.column_names)
    try:
        fmt = data_config.format if data_config.format != "auto" else detect_format(columns, data_config, dataset)
    except TunerError as exc:
        raise TunerError(f"{where}: {exc}") from None
    entry = FORMATS[fmt]
    required = entry.required(columns, data_config)
    missing = [c for c in required if c not in columns]
    if missing:
        raise TunerError(
            f"{where}: format {fmt} needs the column(s) {missing}, but the columns found are "
            f"{columns}. Map your columns to tuner's names with `data.columns`"
            f"{_mapping_example(columns, missing)}."
        )
    _refuse_mixed_formats(dataset, required, columns, where)
    parts = Parts() if parts is None else parts
    rows, bad = [], []
    for number, row in tracked(enumerate(records(dataset)), len(dataset), f"converting {where}"):
        try:
            rows.append(_with_row_extras(entry.convert(row, data_config), row, data_config))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            bad.append((number, str(exc)))
        except TunerError as exc:  # a row that no skipping can fix (an image in a text data set) stops the data
            raise TunerError(f"{where} row {number}: {exc}") from None
        if len(rows) == BATCH:  # a batch at a time into Arrow: a million rows as dicts would hold gigabytes
            parts.add(arrow_table(rows))
            rows = []
    if rows:
        parts.add(arrow_table(rows))
    if not parts.batches:
        reasons = "; ".join(f"row {n}: {r}" for n, r in bad[:3])
        raise TunerError(
            f"{where}: none of its {len(bad)} rows is usable as {fmt} ({reasons}). Fix the rows or the `data` section."
        )
    return parts.rows(), fmt, bad


class Parts:
    """Converted rows as they come, a batch (an Arrow table) at a time, held in memory and joined at the end. Where
    they go is the caller's: the data cache passes its own, which writes each batch to disk as it comes
    (`converted.Entry`)."""

    def __init__(self) -> None:
        self.tables: list = []

    @property
    def batches(self) -> int:
        """How many batches were added."""
        return len(self.tables)

    def add(self, table) -> None:
        """Keep one batch of converted rows."""
        self.tables.append(table)

    def joined(self):
        """The batches as one `pyarrow.Table`: a column or message field that only later rows have (a chat's tools, a
        turn's `train` switch) is null in the rows before."""
        import pyarrow

        tables = self.tables
        return tables[0] if len(tables) == 1 else pyarrow.concat_tables(tables, promote_options="permissive")

    def rows(self):
        """The rows as one `datasets.Dataset`."""
        return in_memory(self.joined())


def _some_lacking(dataset, required: list[str]) -> bool:
    """Whether some row of a data set has none of the `required` columns, counted by Arrow."""
    import pyarrow.compute as pc

    columns = dataset.with_format("arrow").select_columns(required)[:]
    lacking = None
    for name in required:
        empty = pc.is_null(columns[name])
        lacking = empty if lacking is None else pc.and_(lacking, empty)
    return lacking is not None and pc.any(lacking).as_py() is True


def _refuse_mixed_formats(dataset, required: list[str], columns: list[str], where: str) -> None:
    """Rows of one file in two formats (some chats, some text/label rows) are a mistake, not bad rows to skip."""
    others = [c for c in columns if c not in required]
    if not others:
        return
    if not isinstance(dataset, list) and not _some_lacking(dataset, required):
        return
    lacking, holding = None, False
    for number, row in enumerate(records(dataset)):
        if all(row[c] is None for c in required):
            if lacking is None and any(row[c] is not None for c in others):
                lacking, lacking_row = number, row
        else:
            holding = True
        if lacking is not None and holding:
            break
    if lacking is None or not holding:
        return
    holds = [c for c in others if lacking_row[c] is not None]
    raise TunerError(
        f"{where}: the rows mix formats: row {lacking} has none of {required} but holds {holds}, while "
        f"other rows have {required}. Put each format in its own file, or convert the rows to one."
    )
