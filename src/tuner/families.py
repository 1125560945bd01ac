"""What differs between model families and that tuner must know by name: the end-of-turn tokens generation stops
at, the reasoning blocks some templates open an answer with, and the chat templates tuner ships for base models
that have none (named by `model.chat_template`).

Everything else a family varies in (where its template puts the answer, how its tokenizer splits a rendering) is
read from the model's own template and tokenizer at run time, never from a table (see `rendering.py`).
"""

from __future__ import annotations

import re

# Tokens that close an assistant turn in the families tuner has been checked on (ChatML: SmolLM2, Qwen; Llama 3;
# Phi-3; Gemma), beside the tokenizer's own end-of-text token.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

# A reasoning block some templates and models put before the answer (Qwen3's `<think>`, DeepSeek-R1-style
# distillations); an unclosed block at the end of a reply (cut by the token cap) counts too.
REASONING = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|$)", re.DOTALL)


def without_reasoning(text: str) -> str:
    """A reply with its reasoning blocks removed: the answer a user reads."""
    return REASONING.sub("", text).strip()


# Chat templates for base models that ship none, by the family whose turn format they write. Gemma's has no system
# role (a system message opens the first user turn, as Gemma's instruction-tuned template does); ChatML is the
# format most small instruct models use.
CHAT_TEMPLATES = {
    "gemma": (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}"
        "{% set messages = messages[1:] %}{% else %}{% set first = '' %}{% endif %}"
        "{% for message in messages %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + message['content'] | trim "
        "+ '<end_of_turn>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}
