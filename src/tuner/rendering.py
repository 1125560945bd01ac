"""Canonical rows as the model reads them: prompts through the chat template (or as plain text), the answer the loss
or the score is on, and token counts. Training, the dry run and the evaluator all render through here, so they
see the same text.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from .data.rows import join_answer, last_turn_as_completion
from .data.sources import table
from .errors import TunerError

# How tools reach a template that has no `tools` argument (SmolLM2's and most small models'): the schemas in the
# system turn, and a call as the JSON the assistant writes. The same text in training, the dry run and evaluation.
PLAIN_TOOLS = (
    "You can call these functions. To call one, answer with only a JSON object "
    '{"name": <function name>, "arguments": <arguments object>}:\n'
)


def native_tools(tokenizer) -> bool:
    """Whether the model's chat template takes `tools=` (and so renders tool calls its own way)."""
    return bool(tokenizer.chat_template) and "tools" in tokenizer.chat_template


def tool_rendering(tokenizer) -> str:
    return (
        "the chat template's own (tools=, tool_calls)"
        if native_tools(tokenizer)
        else "plain: the schemas in the system turn, calls as JSON in the assistant turn"
    )


def chat_view(messages: list[dict[str, Any]], tools: str | None, tokenizer) -> tuple[list[dict[str, Any]], dict]:
    """Messages and the template's keyword arguments for a chat that may carry tool schemas (`tools`, JSON) and
    calls (assistant turns marked `call`, their content the call's JSON): the template's own tool rendering where it
    has one, else `PLAIN_TOOLS`."""
    calls = any(message.get("call") for message in messages)
    if not tools and not calls:
        return messages, {}
    schemas = json.loads(tools) if tools else None
    if native_tools(tokenizer):
        view = [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": call} for call in _calls(m["content"])],
            }
            if m.get("call")
            else m
            for m in messages
        ]
        return view, ({"tools": schemas} if schemas else {})
    if not schemas:
        return messages, {}
    listing = PLAIN_TOOLS + json.dumps(schemas, ensure_ascii=False)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + listing}, *messages[1:]], {}
    return [{"role": "system", "content": listing}, *messages], {}


def _calls(content: str) -> list[dict[str, Any]]:
    try:
        found = json.loads(content)
    except ValueError:
        return [{"name": content, "arguments": {}}]
    return found if isinstance(found, list) else [found]


@functools.lru_cache(maxsize=16)  # asked once per rendered prompt; a tokenizer's answer never changes
def bos_text(tokenizer) -> str:
    """The BOS token's text when the tokenizer puts one before every encoding (Llama, Mistral, Gemma), else "": TRL
    tokenizes plain-text training rows with it, so they are scored with it too."""
    if not tokenizer.bos_token or tokenizer.bos_token_id is None:
        return ""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token if ids and ids[0] == tokenizer.bos_token_id else ""


# Put in place of an answer to find where the template puts it: private-use characters no template rewrites.
ANSWER_MARK = "\ue000tuner-answer\ue000"


def render_prompt(prompt: Any, tokenizer, tools: str | None = None) -> str:
    """A prompt as the model reads it before its answer: plain text as it is, after the BOS token where the
    tokenizer adds one (as in training); chat messages as the template renders them followed by an assistant turn,
    cut where the answer starts. So text a template opens the assistant turn with (Qwen3's empty `<think>` block, the
    space after Mistral's `[/INST]`) is context, as it is when TRL trains on the whole conversation; a template that
    cannot render an assistant turn after the prompt gives its generation prompt."""
    if isinstance(prompt, str):
        return generation_prompt(prompt, tokenizer)
    if not tokenizer.chat_template:
        raise TunerError(
            "the rows are chat messages but the tokenizer has no chat template. Set `data.chat: false` "
            "to score plain text, name one with `model.chat_template`, or use a model with a chat "
            "template."
        )
    from jinja2 import TemplateError

    view, settings = chat_view(prompt + [{"role": "assistant", "content": ANSWER_MARK}], tools, tokenizer)
    try:
        whole = tokenizer.apply_chat_template(view, tokenize=False, **settings)
    except (ValueError, TypeError, KeyError, TemplateError):
        whole = ""
    if ANSWER_MARK in whole:
        return whole[: whole.index(ANSWER_MARK)]
    return generation_prompt(prompt, tokenizer, tools)


def generation_prompt(prompt: Any, tokenizer, tools: str | None = None) -> str:
    """A prompt with the template's generation prompt (`add_generation_prompt=True`), as TRL's GRPO samples answers
    and a chat continues: the model writes whatever the template leaves open (a reasoning block, say)."""
    if isinstance(prompt, str):
        return bos_text(tokenizer) + prompt
    prompt, settings = chat_view(prompt, tools, tokenizer)
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **settings)


def reward_ids(prompt: Any, answer: Any, tokenizer, tools: str | None = None) -> list[int]:
    """A prompt and answer as the token ids a reward model scores, as TRL's RewardTrainer trains on them: a chat
    through the template (no generation prompt), plain text joined and closed by the end-of-text token."""
    if isinstance(prompt, str):
        text = prompt + (answer if isinstance(answer, str) else answer[-1]["content"])
        return tokenizer(text + tokenizer.eos_token)["input_ids"]
    messages, settings = chat_view(
        prompt + (answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}]), tools, tokenizer
    )
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **settings)["input_ids"])


def continuation(row: dict[str, Any], answer: str) -> str:
    """The text scored after a row's prompt (`render_prompt`): a chat answer as it is (the template's opening of the
    turn is context); a plain-text answer after the separator the row's own answer had in training (its leading
    spaces, which `answer_text` strips), or joined as the data loader joins label rows."""
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        return answer
    given = next((row[key] for key in ("completion", "chosen") if isinstance(row.get(key), str)), None)
    if given is None:
        return join_answer(prompt, answer)[len(prompt) :]
    return given[: len(given) - len(given.lstrip(" "))] + answer


def rendered_pairs(row: dict[str, Any], tokenizer) -> list[tuple[str, str]]:
    """A canonical training row as the text the model reads, split into (prompt, answer) for each answer (two for a
    preference pair): the answer is what the loss is on."""
    if "messages" in row:
        row = last_turn_as_completion(row)
    answers = [row[key] for key in ("completion", "chosen", "rejected") if row.get(key) is not None]
    pairs = []
    for answer in answers:
        if isinstance(row["prompt"], list):
            turns = answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}]
            prompt = render_prompt(row["prompt"], tokenizer, row.get("tools"))
            view, settings = chat_view(row["prompt"] + turns, row.get("tools"), tokenizer)
            full = tokenizer.apply_chat_template(view, tokenize=False, **settings)
            shared = len(prompt) if full.startswith(prompt) else len(os.path.commonprefix([prompt, full]))
            pairs.append((full[:shared], full[shared:]))
        else:
            text = answer if isinstance(answer, str) else answer[-1]["content"]
            pairs.append((row["prompt"], text + (tokenizer.eos_token or "")))
    return pairs


def row_tokens(row: dict[str, Any], tokenizer) -> int:
    """Tokens of a canonical training row as the trainer sees it (for pairs, the longer side); a row tokenized
    already counts its `input_ids`."""
    if "input_ids" in row:
        return len(row["input_ids"])
    return max(
        len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"])
        for prompt, answer in rendered_pairs(row, tokenizer)
    )


def sampled_row(row: dict[str, Any], tokenizer, generated: int) -> dict[str, Any]:
    """A GRPO prompt row as `rendered_row` shows a row: the prompt as the model reads it, and in place of an answer
    the `generated` tokens sampled for it (the loss is on those)."""
    prompt = render_prompt(row["prompt"], tokenizer, row.get("tools"))
    return {
        "answers": [
            {
                "prompt": prompt,
                "answer": f"(up to {generated} sampled tokens)",
                "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
                "answer_tokens": generated,
            }
        ]
    }


def longest_row_tokens(rows, tokenizer, max_length: int | None, sample: int = 2000) -> int:
    """Tokens of the longest training row (a pair's longer side) among the first `sample`, capped at max_length."""
    longest = max((row_tokens(row, tokenizer) for row in list(rows)[:sample]), default=1)
    return min(longest, max_length) if max_length else longest


def chat_segments(messages: list[dict[str, Any]], tokenizer, tools: str | None = None) -> list[tuple[str, bool]] | None:
    """A chat as the template renders it, cut into (text, carries loss) pieces that join to the whole: each
    assistant turn (its content and end-of-turn marker) carries loss, unless the data marked it `train: false`. The
    turns are found by rendering the chat turn by turn, so any template works, with or without generation markers;
    None when the template does not render a chat as the sum of its beginnings (one that rewrites earlier turns),
    refuses a partial chat, or renders no assistant turn."""
    from jinja2 import TemplateError

    def render(turns, opening: bool = False) -> str:
        view, settings = chat_view(turns, tools, tokenizer)
        return tokenizer.apply_chat_template(view, tokenize=False, add_generation_prompt=opening, **settings)

    try:
        whole = render(messages)
        pieces, done = [], 0
        for number, message in enumerate(messages):
            if message["role"] != "assistant" or number == 0:
                continue
            before, through = render(messages[:number], opening=True), render(messages[: number + 1])
            if not (whole.startswith(through) and through.startswith(before) and len(before) >= done):
                return None
            pieces += [
                (whole[done : len(before)], False),
                (whole[len(before) : len(through)], message.get("train") is not False),
            ]
            done = len(through)
    except (ValueError, TypeError, KeyError, TemplateError):  # a template that refuses a partial chat
        return None
    if not pieces:
        return None
    return [piece for piece in pieces + [(whole[done:], False)] if piece[0]]


def pieces_tokens(pieces: list[tuple[str, bool]], tokenizer) -> dict[str, list[int]]:
    """Pieces of one rendering, (text, carries loss), as the token ids of the whole text tokenized once (as TRL and
    inference tokenize it) and a mask that is 1 on each token that ends inside a piece carrying loss. Tokenizing
    piece by piece would put a word-start marker before every piece in SentencePiece-style tokenizers (Llama-2,
    Mistral, Gemma), tokens inference never sees."""
    text = "".join(piece for piece, _ in pieces)
    ends, loss, done = [], [], 0
    for piece, carries in pieces:
        done += len(piece)
        ends.append(done)
        loss.append(carries)
    if tokenizer.is_fast:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        # A token belongs to the piece of its last character: " d" after "assistant:" is the answer's (its
        # prediction is the answer), as the evaluator moves a context's trailing space into the answer.
        pieces_of = [
            next((n for n, end in enumerate(ends) if max(start, stop - 1) < end), len(ends) - 1)
            for start, stop in encoded["offset_mapping"]
        ]
    else:  # no offsets: a token belongs to the first piece whose end the text's tokens up to it reach
        encoded = tokenizer(text, add_special_tokens=False)
        counts = [len(tokenizer(text[:end], add_special_tokens=False)["input_ids"]) for end in ends]
        pieces_of = [
            next((n for n, count in enumerate(counts) if i < count), len(counts) - 1)
            for i in range(len(encoded["input_ids"]))
        ]
    mask = [int(loss[n]) for n in pieces_of]
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": mask}


def every_turn_tokens(row: dict[str, Any], tokenizer) -> dict[str, Any]:
    """A chat row as token ids with a mask that is 1 on every assistant turn (`chat_segments`, tokenized whole by
    `pieces_tokens`). A chat the template cannot cut into turns trains on its last answer, the conversation before
    it as context, in the same form; `whole` says which it was."""
    pieces = chat_segments(row["messages"], tokenizer, row.get("tools"))
    if pieces is not None:
        return {**pieces_tokens(pieces, tokenizer), "whole": True}
    [(prompt, answer)] = rendered_pairs(last_turn_as_completion(row), tokenizer)
    return {**pieces_tokens([(prompt, False), (answer, True)], tokenizer), "whole": False}


def rendered_row(row: dict[str, Any], tokenizer) -> dict[str, Any]:
    """One training row as rendered text, with the answer (the tokens the loss is on) and token counts; a chat shows
    every assistant turn between [[ ]] in `marked`."""
    pieces = chat_segments(row["messages"], tokenizer, row.get("tools")) if "messages" in row else None
    if pieces is not None:
        counts = [(len(tokenizer(text, add_special_tokens=False)["input_ids"]), loss) for text, loss in pieces]
        return {
            "answers": [
                {
                    "prompt": "".join(t for t, loss in pieces if not loss),
                    "answer": "".join(t for t, loss in pieces if loss),
                    "marked": "".join(f"[[{t}]]" if loss else t for t, loss in pieces),
                    "prompt_tokens": sum(n for n, loss in counts if not loss),
                    "answer_tokens": sum(n for n, loss in counts if loss),
                }
            ]
        }
    parts = []
    for prompt, answer in rendered_pairs(row, tokenizer):
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        answer_tokens = len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]) - prompt_tokens
        parts.append(
            {"prompt": prompt, "answer": answer, "prompt_tokens": prompt_tokens, "answer_tokens": answer_tokens}
        )
    return {"answers": parts}


def with_lengths(dataset, tokenizer):
    """Preference rows with a `length` column (prompt plus the longer answer, in tokens), for length-grouped
    batches: TRL's tokenized pairs have no `input_ids` for transformers' sampler to measure."""
    return dataset.map(lambda row: {"length": row_tokens(row, tokenizer)})


def chat_template_marks_assistant(tokenizer) -> bool:
    """Whether TRL can mask every assistant turn of a chat for the loss: the template has generation markers, or
    TRL ships a training template for it."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if tokenizer.chat_template and has_generation_markers(tokenizer.chat_template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except (ValueError, TypeError):
        return False


def sft_rows(dataset, tokenizer):
    """Rows ready for SFTTrainer with loss on the answer only.

    Prompt/completion rows train on the completion. Chats train on every assistant turn: TRL masks them itself when
    the chat template has generation markers (or TRL ships a training template for it); otherwise tuner renders each
    chat turn by turn into token ids with an `assistant_masks` column, which TRL turns into labels. A chat whose
    template cannot be cut into turns trains on its last answer, and the count of such rows is printed.
    """
    if "messages" not in dataset.column_names:
        return dataset
    # Messages marked `train: false`, and chats with tools, take tuner's own masks and rendering: a template's
    # generation markers cover every answer, and TRL would hand the schemas only to templates that take them.
    switched = any(m.get("train") is False or m.get("call") for row in dataset for m in row["messages"]) or any(
        row.get("tools") for row in dataset
    )
    if chat_template_marks_assistant(tokenizer) and not switched:
        return dataset

    rows = [every_turn_tokens(row, tokenizer) for row in dataset]
    cut = [number for number, row in enumerate(rows) if not row.pop("whole")]
    if cut:
        print(
            f"tuner: the chat template cannot be rendered turn by turn for {len(cut)} of {len(rows)} chats (rows "
            f"{cut[:5]}{'...' if len(cut) > 5 else ''}); they train on their last answer only, the others on every "
            f"answer"
        )
    return table(rows)


def report_tools(rows, tokenizer, data_report: dict[str, Any]) -> None:
    """Say, and record in the data report (so in the manifest), how tool schemas and calls are rendered when the
    rows have any: the template's own way, or tuner's plain one for a template without tool support."""
    if not any(row.get("tools") or any(m.get("call") for m in row.get("messages") or []) for row in rows):
        return
    data_report["tools_rendering"] = tool_rendering(tokenizer)
    if not native_tools(tokenizer):
        print(
            f"tuner: the chat template has no tool support, so tools are rendered {tool_rendering(tokenizer)} "
            f"(the same in training and evaluation; docs/data-formats.md)"
        )


def report_long_rows(rows, tokenizer, max_length: int | None, data_report: dict[str, Any]) -> None:
    """Count training rows longer than `train.max_length`, say so, and record it: TRL keeps their first max_length
    tokens, and a row whose whole answer lies beyond is dropped."""
    if not max_length:
        return
    long_rows = [number for number, row in enumerate(rows) if row_tokens(row, tokenizer) > max_length]
    data_report["rows_longer_than_max_length"] = {
        "count": len(long_rows),
        "max_length": max_length,
        "first": long_rows[:10],
        "policy": "truncate",
    }
    if long_rows:
        print(
            f"tuner: {len(long_rows)} of {len(rows)} train rows are longer than train.max_length ({max_length} "
            f"tokens; rows {long_rows[:5]}{'...' if len(long_rows) > 5 else ''}): they are cut to their first "
            f"{max_length} tokens, and a row whose answer falls wholly beyond is dropped. Raise "
            f"`train.max_length` to keep them whole."
        )


def report_long_pairs(rows, tokenizer, max_length: int | None, data_report: dict[str, Any], source: str) -> None:
    """For a reward model: count the pairs with an answer longer than `train.max_length` as its trainer reads them,
    say so and record it (TRL's RewardTrainer leaves such pairs out, where the other trainers cut them), and refuse
    a run that would have none left."""
    if not max_length:
        return
    long_rows = [
        number
        for number, row in enumerate(rows)
        if max(
            len(reward_ids(row["prompt"], row[side], tokenizer, row.get("tools"))) for side in ("chosen", "rejected")
        )
        > max_length
    ]
    data_report["rows_longer_than_max_length"] = {
        "count": len(long_rows),
        "max_length": max_length,
        "first": long_rows[:10],
        "policy": "drop",
    }
    if len(long_rows) == len(rows):
        raise TunerError(
            f"{source}: every one of the {len(rows)} train pairs is longer than train.max_length "
            f"({max_length} tokens) with its prompt, and a reward model leaves such pairs out, so none is "
            f"left to train on. Raise `train.max_length`."
        )
    if long_rows:
        print(
            f"tuner: {len(long_rows)} of {len(rows)} train pairs are longer than train.max_length ({max_length} "
            f"tokens; rows {long_rows[:5]}{'...' if len(long_rows) > 5 else ''}): the reward model trains without "
            f"them. Raise `train.max_length` to keep them."
        )
