"""The GGUF file: a Hugging Face causal LM of a llama-family architecture written as one GGUF file (f32, f16, bf16
or q8_0) with its tokenizer and chat template in the metadata, as llama.cpp, Ollama and transformers' GGUF loader read
it. Architectures the writer cannot lay out are refused by name before anything is written.

Tensor names come from the `gguf` package's own HF-to-GGUF name map; llama and mistral attention weights are
permuted the way llama.cpp's converter permutes them (and transformers' loader reverses). A base model that came from
a GGUF file keeps that file's tokenizer metadata word for word (its pre-tokenizer name included); any other base's
byte-level BPE tokenizer is written from its `tokenizer.json`, with llama.cpp's name for its word-splitting rule
(`PRE_TOKENIZERS`) and whether it puts a BOS first. SentencePiece tokenizers (Llama 2, Mistral, Gemma), Gemma's and
Phi-3's layouts are refused by name, with the merged export and llama.cpp's converter as the way out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import TunerError
from .rendering import bos_text

# transformers model_type -> GGUF architecture; whether q/k weights take llama.cpp's rotary permutation.
ARCHITECTURES = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}

# The word-splitting rule (`tokenizer.ggml.pre`) llama.cpp applies before a byte-level BPE, by the pre-tokenizer a
# tokenizer.json declares: without one, llama.cpp and Ollama fall back to their default rule and split digits and
# punctuation otherwise than the model was trained on. Each regex is the tokenizer family's own.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    (("ByteLevel", True),): "gpt-2",
    (("Digits", True), ("ByteLevel", True)): "smollm",
    (("Split", _LLAMA3_SPLIT), ("ByteLevel", False)): "llama-bpe",
    (("Split", _QWEN2_SPLIT), ("ByteLevel", False)): "qwen2",
}
# Tensor types by --quant; 1-D tensors (norms, biases) stay f32 in every one, as llama.cpp writes them.
QUANTS = ("f32", "f16", "bf16", "q8_0")
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}


def check_architecture(model_type: str, what: str) -> None:
    """Refuse a model the writer has no layout for, naming it and what is supported."""
    if model_type not in ARCHITECTURES:
        raise TunerError(
            f"{what}: the base model's architecture is {model_type!r}, and tuner writes GGUF for "
            f"{', '.join(sorted(ARCHITECTURES))} only. Export `--to merged` and convert that folder with "
            f"llama.cpp's convert_hf_to_gguf.py, or `--to adapter` to serve the adapter as it is."
        )


def _permute(weights, heads: int):
    # llama.cpp's LlamaModel.permute: each head's rotary halves interleaved, as its rope kernel reads them.
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensor_kind(array, quant: str):
    """The stored array and its GGML type: 1-D tensors in f32; q8_0 where rows split into blocks of 32."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if array.ndim == 1 or quant == "f32":
        return array.astype(np.float32), None
    if quant == "q8_0" and array.shape[-1] % 32 == 0:
        return quantize(array.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    if quant == "bf16":
        return quantize(array.astype(np.float32), GGMLQuantizationType.BF16), GGMLQuantizationType.BF16
    return array.astype(np.float16), None


def _copy_tokenizer(writer, source_gguf: Path) -> None:
    """Every tokenizer.* key of the base's own GGUF file, as it is."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(source_gguf)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        kind = field.types[0]
        sub = field.types[1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub)


def _bpe_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer from its tokenizer.json: tokens by id, merges, token types, special ids."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise TunerError(
            f"the tokenizer is {model.get('type')!r} without byte-level pre-tokenization; tuner writes "
            f"GGUF tokenizers of byte-level BPE models only. Export `--to merged` and convert it with "
            f"llama.cpp's convert_hf_to_gguf.py."
        )
    by_id = {index: token for token, index in model["vocab"].items()}
    special = {}
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        special[added["id"]] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    tokens, types = [], []
    for index in range(max(vocab_size, len(by_id))):
        tokens.append(by_id.get(index, f"[PAD{index}]"))
        types.append(special.get(index, TokenType.NORMAL if index in by_id else TokenType.UNUSED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        token_id = getattr(tokenizer, f"{token}_token_id")
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(bool(bos_text(tokenizer)))  # Llama 3 puts its BOS before every text; SmolLM2 none


def _steps(pre: dict[str, Any] | None) -> tuple:
    """A tokenizer.json pre-tokenizer as its steps: (kind, the setting that tells rules apart)."""
    if not pre:
        return ()
    if pre.get("type") == "Sequence":
        return tuple(step for part in pre.get("pretokenizers", []) for step in _steps(part))
    setting = {
        "ByteLevel": lambda: pre.get("use_regex", True),
        "Digits": lambda: pre.get("individual_digits"),
        "Split": lambda: (pre.get("pattern") or {}).get("Regex"),
    }.get(pre.get("type"), lambda: None)()
    return ((pre.get("type"), setting),)


def pre_tokenizer(spec: dict[str, Any]) -> str:
    """llama.cpp's name for the word-splitting rule of a byte-level BPE tokenizer.json (`PRE_TOKENIZERS`); a rule
    it has no name for here is refused, since llama.cpp would split text otherwise than the model was trained on."""
    steps = _steps(spec.get("pre_tokenizer"))
    if steps not in PRE_TOKENIZERS:
        raise TunerError(
            f"the tokenizer splits words with a rule tuner cannot name for llama.cpp ({steps}); written "
            f"without it, llama.cpp and Ollama would tokenize otherwise than the model was trained on. "
            f"Export `--to merged` and convert it with llama.cpp's convert_hf_to_gguf.py, which knows more "
            f"tokenizers."
        )
    return PRE_TOKENIZERS[steps]


def _hyperparameters(writer, config, name: str, quant: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(
        float(
            getattr(config, "rope_theta", None)
            or (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        )
    )
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:  # Qwen3, Mistral-Nemo: llama.cpp reads it here
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(2)


def write_gguf(model, tokenizer, path: Path, quant: str, name: str, source_gguf: Path | None = None) -> dict[str, Any]:
    """Write a (merged, peft-free) model as one GGUF file at `path`; returns what was written (tensor count,
    types, bytes)."""
    import numpy as np
    from gguf import MODEL_ARCH_NAMES, GGUFWriter, get_tensor_name_map

    config = model.config
    check_architecture(config.model_type, str(path))
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type") not in (None, "default"):
        raise TunerError(
            f"{path}: the model scales its rotary embeddings ({rope.get('rope_type')}), which tuner's "
            f"GGUF writer does not lay out. Export `--to merged` and convert it with llama.cpp's "
            f"convert_hf_to_gguf.py."
        )
    arch_name, permuted = ARCHITECTURES[config.model_type]
    arch = next(a for a, n in MODEL_ARCH_NAMES.items() if n == arch_name)
    names = get_tensor_name_map(arch, config.num_hidden_layers)
    writer = GGUFWriter(path, arch_name)
    _hyperparameters(writer, config, name, quant)
    if source_gguf is not None:
        _copy_tokenizer(writer, source_gguf)
    else:
        _bpe_tokenizer(writer, tokenizer, config.vocab_size)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    types: dict[str, int] = {}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads the embedding matrix as the output layer when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TunerError(
                f"{path}: no GGUF name for the tensor {hf_name} of this {config.model_type} model; "
                f"export `--to merged` and convert it with llama.cpp's convert_hf_to_gguf.py."
            )
        array = tensor.detach().float().cpu().numpy()
        if permuted and hf_name.endswith("q_proj.weight"):
            array = _permute(array, config.num_attention_heads)
        elif permuted and hf_name.endswith("k_proj.weight"):
            array = _permute(array, config.num_key_value_heads)
        stored, raw_type = _tensor_kind(np.ascontiguousarray(array), quant)
        writer.add_tensor(gguf_name, stored, raw_dtype=raw_type)
        kind = raw_type.name if raw_type is not None else {np.float32: "F32", np.float16: "F16"}[stored.dtype.type]
        types[kind] = types.get(kind, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "file": path.name,
        "quant": quant,
        "tensors": sum(types.values()),
        "tensor_types": types,
        "bytes": path.stat().st_size,
    }
