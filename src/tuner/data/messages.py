"""One chat message as data sets write it: OpenAI style (`{role, content}`, `tool_calls`) or ShareGPT style
(`{from, value}`), content given as typed parts, per-message loss switches, and a row's tool schemas."""

from __future__ import annotations

import json
from typing import Any

from ..errors import TunerError

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}


def content_text(value: Any, what: str) -> str:
    """A message's text, refused when empty or not a string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty or not a string")
    return value


def tools_json(value: Any) -> str | None:
    """A row's tool schemas (a list, or the JSON text of one, as ShareGPT files keep them) as JSON text: one type
    for every row, whatever the schemas hold."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"`tools` is not valid JSON ({exc})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise ValueError("`tools` is not a list of function schemas (JSON objects)")
    return json.dumps(value, ensure_ascii=False)


def _parts(value: Any, what: str) -> Any:
    """Message content given as typed parts (OpenAI's `[{"type": "text", "text": ...}]`, LLaMA-Factory's
    `{"type": "text", "value": ...}`) as one text, parts joined by a new line; text stays as it is. A part that is
    not text (an image, audio) stops the data: tuner tunes text models."""
    if not isinstance(value, list):
        return value
    texts = []
    for number, part in enumerate(value):
        kind = part.get("type", "text") if isinstance(part, dict) else "text" if isinstance(part, str) else None
        if kind != "text":
            kind = f"of type {kind!r}" if kind else "not a typed part"
            raise TunerError(
                f"{what} part {number} is {kind}: tuner "
                f"tunes text models, and a message may hold text parts only. Remove the other parts "
                f"(or the rows that need them), or use a tool built for multimodal models."
            )
        texts.append(part if isinstance(part, str) else part.get("text", part.get("value")))
    if not all(isinstance(text, str) for text in texts):
        raise ValueError(f"{what} has a text part without a `text` (or `value`) string")
    return "\n".join(texts)


# Per-message loss switches, as data sets write them: LLaMA-Factory's `loss_weight`, Axolotl's `weight` and `train`.
LOSS_KEYS = ("loss_weight", "weight", "train")


def _trained(turn: dict[str, Any], what: str) -> bool | None:
    """Whether a message asks to be trained on (True/False), or None when it does not say."""
    for key in LOSS_KEYS:
        value = turn.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return bool(value)
        raise ValueError(
            f"{what} has `{key}: {value!r}`; tuner trains a message or not, so give 0 or 1 (false or true)"
        )
    return None


def message(turn: Any, what: str) -> dict[str, Any]:
    """One message from OpenAI style ({role, content}) or ShareGPT style ({from, value}); content parts joined, a
    loss switch kept as `train: false`, a tool call (OpenAI's `tool_calls`, ShareGPT's `function_call` turn) kept as
    an assistant turn marked `call` whose content is the call's JSON."""
    if isinstance(turn, dict) and turn.get("tool_calls"):
        calls = [call.get("function", call) if isinstance(call, dict) else call for call in turn["tool_calls"]]
        out = {
            "role": "assistant",
            "content": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False),
            "call": True,
        }
    elif isinstance(turn, dict) and "role" in turn and "content" in turn:
        out = {"role": str(turn["role"]), "content": content_text(_parts(turn["content"], what), f"{what} content")}
    elif isinstance(turn, dict) and "from" in turn and "value" in turn:
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise ValueError(f"{what} has unknown speaker {turn['from']!r} (known: {', '.join(SHAREGPT_ROLES)})")
        out = {"role": role, "content": content_text(_parts(turn["value"], what), f"{what} value")}
        if str(turn["from"]).lower() == "function_call":
            out["call"] = True
    else:
        raise ValueError(f"{what} is not a message ({{role, content}} or {{from, value}})")
    if _trained(turn, what) is False:
        out["train"] = False
    return out
