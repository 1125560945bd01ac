"""`tuner chat`: talk to a run's model in the terminal, tokens printed as they are generated, the run's system prompt
applied; `/reset` starts the conversation over, `/exit` (or end of input) ends it.

`chat(target)` reads top to bottom: the run (or a recipe for its base model), the model with the run's adapter, then
one turn per line read: the conversation through the chat template, greedy generation streamed out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from ..adapters import read_adapter_run, with_run_adapter
from ..errors import TunerError
from ..evaluator import stop_token_ids
from ..models import load_model
from ..speed import Precision
from .predict import model_target

COMMANDS = {"/reset": "start the conversation over", "/exit": "end the chat"}


def _reply(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int, out: TextIO) -> str:
    """Generate the assistant's next turn greedily, writing each piece of text as soon as it is decoded."""
    from threading import Thread

    import torch
    from transformers import TextIteratorStreamer

    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    settings = dict(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        streamer=streamer,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    worker = Thread(target=torch.inference_mode()(model.generate), kwargs=settings)
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        out.write(piece)
        out.flush()
    worker.join()
    out.write("\n")
    return "".join(pieces).strip()


def chat(
    target: str | Path, lines: TextIO | None = None, out: TextIO | None = None, max_new_tokens: int = 256
) -> list[dict[str, Any]]:
    """Chat with the model of `target` (a run folder, or a recipe file for its base model), reading one user turn
    per line of `lines` (default: standard input); returns the conversation as it stands at the end."""
    lines, out = lines or sys.stdin, out or sys.stdout
    recipe, adapter, _ = model_target(target)
    if adapter is not None:
        read_adapter_run(adapter, recipe.model, recipe.source)
    # fp32 on every device kind a chat runs on here: one conversation is small, and fp32 needs no autocast.
    loaded = load_model(recipe.model, recipe.source, Precision(compute="fp32", weights="fp32"))
    model = (with_run_adapter(loaded.model, adapter) if adapter is not None else loaded.model).eval()
    if not loaded.tokenizer.chat_template:
        raise TunerError(
            f"{recipe.source}: {recipe.model.name_or_path} has no chat template, so there is no chat "
            f"to have with it. Use `tuner predict` on plain-text rows, or an instruct model."
        )
    start = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
    messages = list(start)
    interactive = lines.isatty() if hasattr(lines, "isatty") else False
    out.write(
        f"Chatting with {recipe.model.name_or_path}"
        + (f" + {adapter}" if adapter else "")
        + ". "
        + ", ".join(f"{c} to {what}" for c, what in COMMANDS.items())
        + ".\n"
    )
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = lines.readline()
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if text == "/reset":
            messages = list(start)
            out.write("(conversation reset)\n")
        elif text:
            messages.append({"role": "user", "content": text})
            messages.append(
                {"role": "assistant", "content": _reply(model, loaded.tokenizer, messages, max_new_tokens, out)}
            )
    return messages
