"""The recipe's `model:` section: which model to load (or which served model to ask) and how. No torch; the loading is
`models.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .endpoint_config import EndpointConfig
from .section import Section as _Section


class ModelConfig(_Section):
    """Which base model to load and how."""

    name_or_path: str = Field(
        description="Hub id, local folder, a .gguf file, or pkg://DIST/FILE for a file inside "
        "an installed Python package (the offline SmolLM2 GGUF)."
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="auto: bf16 on GPUs that support it, fp16 on older GPUs; on CPUs, training in bf16 autocast "
        "where the CPU computes bf16 natively (fp32 elsewhere) and scoring in fp32, the precision the exports "
        "serve in. A set value is used for training and scoring alike.",
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None, description="Load the base weights with bitsandbytes (4bit = NF4, QLoRA with an adapter)."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = Field(
        "auto",
        description="The attention kernel. auto: flash_attention_2 where the flash-attn package and a GPU of "
        "compute capability 8+ allow it (SFT then packs rows padding-free), sdpa elsewhere.",
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with a hub model. Off unless asked; a warning is printed when on."
    )
    allow_pickle: bool = Field(
        False, description="Load pickled (.bin) weights when a model has no safetensors. Off: unpickling can run code."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    chat_template: str | None = Field(
        None,
        description="A chat template for a model that ships none (a base model "
        "such as Gemma 3 270M), or in place of its own: `gemma` or "
        "`chatml` (tuner's own), or the path of a Jinja file.",
    )
    adapter: str | None = Field(
        None,
        description="A `tuner sft` run folder: DPO, KTO and GRPO continue training its "
        "adapter (the SFT policy is then the reference); RAG retrieves for "
        "it (SFT+RAG).",
    )
    endpoint: EndpointConfig | None = Field(
        None,
        description="An OpenAI-compatible server that answers in place of local weights (methods fewshot and "
        "rag, `tuner eval`, `tuner predict`); `name_or_path` then names the tokenizer prompts are rendered with.",
    )
