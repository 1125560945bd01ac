"""Shared fixtures: a tiny random Llama model with SmolLM2's real tokenizer, small data files, recipe writers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import OFFLINE_MODEL, pair_rows, ticket_rows, write_jsonl

# Read by huggingface_hub once, when it is first imported (before any fixture runs): TRL's trainers send telemetry
# from a thread, whose network lookup here has no network to reach (and once crashed the test process in getaddrinfo).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_addoption(parser):
    parser.addoption(
        "--e2e",
        action="store_true",
        help="also run the end-to-end tier (tests marked `integration`: "
        "the real offline model, the notebook, a real browser); `-m integration` runs it alone",
    )


def pytest_collection_modifyitems(config, items):
    # The unit tier is the default: `pytest -q` leaves the end-to-end tier out unless asked (--e2e, or any -m).
    if config.getoption("--e2e") or config.getoption("markexpr"):
        return
    left_out = [item for item in items if "integration" in item.keywords]
    if left_out:
        items[:] = [item for item in items if "integration" not in item.keywords]
        config.hook.pytest_deselected(items=left_out)


@pytest.fixture(scope="session", autouse=True)
def _quiet_env():
    # Tests never reach a hub; say so, so a mistake fails fast instead of waiting on the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One test process runs hundreds of trainings: glibc's own allocator hands their memory back between them (a run
    # keeps it by default, speed.decide_allocator; test_speed checks that path).
    os.environ.setdefault("TUNER_MALLOC", "system")


@pytest.fixture(autouse=True)
def _own_data_cache(tmp_path, monkeypatch):
    # Converted rows are cached by content: two tests writing the same rows would share an entry, and the second
    # would not convert what it may be testing. Each test keeps its own (tests of the cache convert twice in one).
    import tuner.data.converted

    monkeypatch.setattr(tuner.data.converted, "cache_dir", lambda: tmp_path / "cache")


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


@pytest.fixture
def smollm2_tokenizer(smollm2_tokenizer_dir):
    """SmolLM2's tokenizer, loaded (retrieval sizes passages in its tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """tuner's cache in the test's own folder: indexes built by one test are not another's."""
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's vocabulary and chat template, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def ticket_files(tmp_path) -> tuple[Path, Path]:
    """Small classification train/test files in the quickstart's shape."""
    return (
        write_jsonl(tmp_path / "data" / "train.jsonl", ticket_rows(24)),
        write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(10, offset=100)),
    )


@pytest.fixture
def signal_at_step(monkeypatch):
    """Make the training process send itself a signal when a given step ends."""
    import signal

    from tuner.checkpoints import StopOnSignal

    def arm(step: int, signum: int = signal.SIGTERM):
        original = StopOnSignal.on_step_end

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step and self.signum is None:
                os.kill(os.getpid(), signum)
            return original(self, args, state, control, **kwargs)

        monkeypatch.setattr(StopOnSignal, "on_step_end", on_step_end)
        return lambda: monkeypatch.setattr(StopOnSignal, "on_step_end", original)

    return arm


@pytest.fixture
def pair_files(tmp_path):
    return (
        write_jsonl(tmp_path / "pairs" / "train.jsonl", pair_rows(24)),
        write_jsonl(tmp_path / "pairs" / "test.jsonl", pair_rows(8, offset=100)),
    )
