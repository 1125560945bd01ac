"""Canonical rows, the one shape every method reads, and what is asked of them: the question and gold answer as text,
a chat split at its last answer, fingerprints of what was trained or scored.

Canonical rows use TRL's column names and are one of:
- `messages`: a chat, a list of `{role, content}`;
- `prompt` / `completion`: strings (plain text) or message lists (chat); classification rows also carry `label`, the
  gold answer as a label name, and multiple-choice rows `choices`;
- `prompt` / `chosen` / `rejected`: preference pairs;
- `prompt` / `completion` / `desirable`: feedback, one answer marked good (true) or bad (false);
- `prompt` alone: prompts for GRPO, whose rewards judge sampled answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable
from typing import Any

from .sources import records


def join_answer(prompt: str, answer: str) -> str:
    """Plain-text prompt and answer as one string: one space between them unless the prompt ends in whitespace."""
    return prompt + ("" if prompt[-1:].isspace() else " ") + answer


def fingerprint(dataset) -> str:
    """SHA-256 of the canonical rows, so runs can tell whether they saw the same data."""
    digest = hashlib.sha256()
    digest_rows(digest, records(dataset))
    return digest.hexdigest()


def digest_rows(digest, rows: Iterable[dict[str, Any]]) -> None:
    """Feed rows, in order, to a `fingerprint` digest: one batch at a time gives the fingerprint of all of them."""
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())


def prompt_text(row: dict[str, Any]) -> str:
    """The question of a row as text: a plain prompt, or the content of a chat prompt's last user turn."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def question(row: dict[str, Any]) -> str:
    """The question of any canonical row (a chat's last user turn before its last answer)."""
    return prompt_text(last_turn_as_completion(row) if "messages" in row else row)


def asked(row: dict[str, Any]) -> str:
    """What a row asks, whole: the conversation before its (last) answer, system turns left out (two files may
    frame the same question with different system prompts), as one text; a plain prompt as it is. Two rows asking
    the same thing have the same `asked`, however generic their last user turn ("thanks!")."""
    prompt = last_turn_as_completion(row)["prompt"] if "messages" in row else row["prompt"]
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m.get('content')}" for m in prompt if m.get("role") != "system")


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
    settings = {
        "task": eval_config.task,
        "choices": eval_config.choices,
        "answer_regex": eval_config.answer_regex,
        "max_new_tokens": eval_config.max_new_tokens if eval_config.task == "generate" else None,
    }
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
    """Eval rows as prompt/completion, the form the evaluator scores (chats are split at the last answer; of
    feedback rows, the answers marked good, each the gold answer of its prompt)."""
    rows = [row for row in records(dataset) if row.get("desirable") is not False]
    return [last_turn_as_completion(row) if "messages" in row else row for row in rows]


def last_turn_as_completion(row: dict[str, Any]) -> dict[str, Any]:
    """A `messages` row as prompt/completion: everything before the last assistant turn, and that turn.

    Used when the chat template cannot mark assistant turns for loss masking: the model then learns the last answer
    with the earlier turns as context.
    """
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {
        "prompt": messages[:last],
        "completion": [messages[last]],
        **({"tools": row["tools"]} if row.get("tools") else {}),
    }


def prompt_rows(dataset, choices: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows as GRPO samples answers to them: each prompt with its gold answer beside it (None for a prompt alone) and
    the answers allowed (the row's own choices, else `choices`), for the rewards."""
    rows = []
    for row in scoring_rows(dataset):
        gold = answer_text(row) if any(row.get(key) is not None for key in ("completion", "chosen", "label")) else None
        rows.append({"prompt": row["prompt"], "gold": gold, "choices": row.get("choices") or choices})
    return rows


# A number as written: its sign, decimal point, fraction bar and thousands commas are part of it ("-3" is not "3",
# "3.5" is not "35"); a sentence's full stop after it is not.
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,/]\d+)*")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation outside numbers, single spaces: the form exact match compares. Within a number,
    its sign, decimal point and fraction bar stay, and thousands commas go (1,000 is 1000)."""
    text, pieces, last = text.lower(), [], 0
    for number in NUMBER.finditer(text):
        value = number.group(0)
        if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", value):
            value = value.replace(",", "")
        pieces += [text[last : number.start()].translate(PUNCTUATION), value.replace(",", " ")]
        last = number.end()
    pieces.append(text[last:].translate(PUNCTUATION))
    return " ".join("".join(pieces).split())


def extract_answer(generated: str, pattern: re.Pattern | None) -> str:
    """The answer in a generation: the regex's first group (or whole match), else the first non-empty line."""
    if pattern is not None:
        match = pattern.search(generated)
        if not match:
            return ""
        return match.group(1) if match.groups() else match.group(0)
    lines = [line for line in generated.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""
