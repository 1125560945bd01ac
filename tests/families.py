"""Tiny random models of the families teams tune, each with a tokenizer of its family's kind and a chat template with
its family's quirks, for the conformance matrix (tests/test_families.py).

| family | config class | tokenizer | template quirks |
| llama | LlamaConfig | byte-level BPE, BOS added | Llama 3 headers, `<|eot_id|>`, BOS in the template |
| mistral | MistralConfig (sliding window) | SentencePiece-style (Metaspace), BOS added | `[INST]`, no system role, a space opens the answer, `</s>` |
| qwen2 | Qwen2Config | byte-level BPE | ChatML with a default system turn |
| qwen3 | Qwen3Config (head_dim 128, as Qwen3's, not hidden / heads) | byte-level BPE | ChatML, an empty `<think>` block opening the last answer, `enable_thinking` |
| gemma3 | Gemma3TextConfig (sliding window) | SentencePiece-style, no word-start marker | tuner's `gemma` template: `model` role, system folded into the first turn |
| phi3 | Phi3Config (sliding window) | SentencePiece-style, BOS added | `<|user|>`/`<|end|>`, EOS closing a whole chat (no cut into turns) |
"""

from __future__ import annotations

from pathlib import Path

WINDOW = 24  # sliding windows this short make the matrix's contexts outgrow them

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' "
    "+ m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% elif m['role'] == 'user' %}"
    "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
QWEN2 = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN3 = (
    "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% set content = m['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}"
    "{% if loop.index0 > ns.last %}{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' + content + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}{% endif %}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)
PHI3 = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# family: (config class, model class, tokenizer kind, special tokens (bos, eos, pad, others), template, extra config)
FAMILIES = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "bytelevel",
        (
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|end_of_text|>",
            ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        ),
        LLAMA3,
        {},
    ),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        "metaspace",
        ("<s>", "</s>", "</s>", []),
        MISTRAL,
        {"sliding_window": WINDOW},
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        "bytelevel",
        (None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"]),
        QWEN2,
        {},
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        "bytelevel",
        (None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"]),
        QWEN3,
        {"head_dim": 128},
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        "gemma",
        ("<bos>", "<eos>", "<pad>", ["<start_of_turn>", "<end_of_turn>"]),
        "gemma",
        {"sliding_window": WINDOW, "head_dim": 16, "layer_types": ["sliding_attention", "full_attention"]},
    ),
    "phi3": (
        "Phi3Config",
        "Phi3ForCausalLM",
        "metaspace",
        ("<s>", "<|endoftext|>", "<|endoftext|>", ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]),
        PHI3,
        {"sliding_window": WINDOW},
    ),
}

CORPUS = [
    "Team for this ticket (billing, shipping, returns, technical or account)? My card was charged twice.",
    "The parcel never arrived and tracking shows nothing. I want to send the boots back for a refund.",
    "The app crashes when I log in to my account. Hello there, how are you? Fine, thanks: 2+2 is 4.",
    "billing shipping returns technical account Capital of France? Paris. You are a helpful assistant.",
    "You route Northwind Gear support tickets. Order 1042 needs help with billing; order 7 with returns.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]{}<>/\\|-_+=*&^%$#@~`\n",
]


def _backend(kind: str, specials: list[str]):
    """A small trained tokenizer of the family's kind: byte-level BPE (GPT-2, Llama 3, Qwen), or SentencePiece-style
    BPE with a word-start marker `▁` put before the first word (Llama 2, Mistral, Phi-3) or never (Gemma)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bytelevel":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        scheme = "never" if kind == "gemma" else "first"
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
        alphabet = sorted(set("".join(CORPUS).replace(" ", "▁")) | {"▁", "\n"})
        specials = ["<unk>", *specials]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    return tokenizer


def build(family: str, folder: Path) -> Path:
    """Save a tiny random model of `family` with its tokenizer and template into `folder`."""
    import torch
    import transformers
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from tuner.families import CHAT_TEMPLATES

    config_class, model_class, kind, (bos, eos, pad, others), template, extra = FAMILIES[family]
    specials = [token for token in dict.fromkeys([bos, eos, pad, *others]) if token]
    backend = _backend(kind, specials)
    if family in ("llama", "mistral", "phi3"):  # their tokenizers put the BOS before every encoding
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>" if kind != "bytelevel" else None,
        additional_special_tokens=others,
        chat_template=CHAT_TEMPLATES.get(template, template),
    )
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    model = getattr(transformers, model_class)(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
