"""Canonical rows as the model reads them: prompts through the chat template (or as plain text), the answer the loss
or the score is on, and token counts. Training, the dry run and the evaluator all render through here, so they
see the same text.
"""

from __future__ import annotations

from typing import Any

from .data.rows import join_answer, last_turn_as_completion
from .errors import TunerError


def render_prompt(prompt: Any, tokenizer) -> str:
    """A prompt as the model sees it: chat messages through the chat template, plain text as it is."""
    if isinstance(prompt, str):
        return prompt
    if not tokenizer.chat_template:
        raise TunerError("the rows are chat messages but the tokenizer has no chat template. Set `data.chat: false` "
                         "to score plain text, or use a model with a chat template.")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def continuation(prompt: Any, answer: str) -> str:
    """The text scored after a prompt: chat answers follow the assistant header directly; plain-text answers are
    joined as the data loader joins them (one space unless the prompt ends in whitespace)."""
    return answer if not isinstance(prompt, str) else join_answer(prompt, answer)[len(prompt):]


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
            prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(row["prompt"] + turns, tokenize=False)
            pairs.append((prompt, full[len(prompt):] if full.startswith(prompt) else full))
        else:
            text = answer if isinstance(answer, str) else answer[-1]["content"]
            pairs.append((row["prompt"], text + (tokenizer.eos_token or "")))
    return pairs


def row_tokens(row: dict[str, Any], tokenizer) -> int:
    """Tokens of a canonical training row as the trainer sees it (for pairs, the longer side); a row tokenized
    already counts its `input_ids`."""
    if "input_ids" in row:
        return len(row["input_ids"])
    return max(len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"])
               for prompt, answer in rendered_pairs(row, tokenizer))


def longest_row_tokens(rows, tokenizer, max_length: int | None, sample: int = 2000) -> int:
    """Tokens of the longest training row (a pair's longer side) among the first `sample`, capped at max_length."""
    longest = max((row_tokens(row, tokenizer) for row in list(rows)[:sample]), default=1)
    return min(longest, max_length) if max_length else longest


def rendered_row(row: dict[str, Any], tokenizer) -> dict[str, Any]:
    """One training row as rendered text, with the answer (the tokens the loss is on) and token counts."""
    parts = []
    for prompt, answer in rendered_pairs(row, tokenizer):
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        answer_tokens = len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]) - prompt_tokens
        parts.append({"prompt": prompt, "answer": answer, "prompt_tokens": prompt_tokens,
                      "answer_tokens": answer_tokens})
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

    Prompt/completion rows train on the completion. Chats keep every assistant turn as a target when the chat
    template can mark assistant turns; otherwise the last assistant turn becomes the completion.
    """
    if "messages" not in dataset.column_names or chat_template_marks_assistant(tokenizer):
        return dataset
    return dataset.map(last_turn_as_completion, remove_columns=["messages"])


def report_long_rows(rows, tokenizer, max_length: int | None, data_report: dict[str, Any]) -> None:
    """Count training rows longer than `train.max_length`, say so, and record it: TRL keeps their first max_length
    tokens, and a row whose whole answer lies beyond is dropped."""
    if not max_length:
        return
    long_rows = [number for number, row in enumerate(rows) if row_tokens(row, tokenizer) > max_length]
    data_report["rows_longer_than_max_length"] = {"count": len(long_rows), "max_length": max_length,
                                                  "first": long_rows[:10], "policy": "truncate"}
    if long_rows:
        print(f"tuner: {len(long_rows)} of {len(rows)} train rows are longer than train.max_length ({max_length} "
              f"tokens; rows {long_rows[:5]}{'...' if len(long_rows) > 5 else ''}): they are cut to their first "
              f"{max_length} tokens, and a row whose answer falls wholly beyond is dropped. Raise "
              f"`train.max_length` to keep them whole.")
