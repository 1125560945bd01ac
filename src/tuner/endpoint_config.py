"""The recipe's `model.endpoint`: an OpenAI-compatible server (a hosted API, llama.cpp's or vLLM's server) that
answers in place of local weights, for the methods that only score (fewshot, rag) and for `tuner eval` and
`tuner predict`. No torch; the client is `endpoint.py`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .section import Section as _Section

# An environment variable's name, so that a key pasted into `api_key_env` is refused rather than written anywhere.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EndpointConfig(_Section):
    """Where the served model is, what it costs and how to talk to it. `model.name_or_path` stays the model whose
    tokenizer and chat template render prompts for prompt log-probabilities and size passages (the served model's
    own where you have it: its GGUF or Hugging Face folder)."""

    base_url: str = Field(
        description="The server's OpenAI-compatible base URL, up to and including /v1 (http://127.0.0.1:8000/v1)."
    )
    model: str = Field(description="The model name the server serves (its /v1/models lists them).")
    api_key_env: str | None = Field(
        None,
        description="The environment variable holding the API key (sent as a Bearer token); never the key "
        "itself, which is never written to a run folder or cache.",
    )
    input_price_per_million: float = Field(
        0.0, ge=0, description="Price of a million prompt tokens, for the comparison's cost per request."
    )
    output_price_per_million: float = Field(0.0, ge=0, description="Price of a million generated tokens.")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for one response before trying again.")
    retries: int = Field(
        5, ge=0, le=20, description="Tries again after a timeout, 429 or 5xx, waiting 1, 2, 4... s (Retry-After)."
    )
    choice_method: Literal["auto", "logprobs", "generation"] = Field(
        "auto",
        description="How `choice` and `preference` are scored: logprobs (prompt log-probabilities from the "
        "completions API with echo, as llama.cpp's Python server and vLLM return them), generation (the reply "
        "matched to the choices; choice only), auto (logprobs where the server returns them).",
    )
    cache: bool = Field(
        True,
        description="Keep every response in tuner's cache keyed by its request, so a rerun or a resumed run "
        "pays nothing twice and reproduces exactly.",
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000/v1)")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(
                "names the environment variable that holds the key (e.g. OPENAI_API_KEY), not the key itself: "
                "export the key in that variable and put its name here"
            )
        return value
