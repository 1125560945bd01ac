"""Resource faults, simulated on the tiny model: out of memory in evaluation (smaller batches, same scores) and in
training (a message naming the settings; the last checkpoint kept), the disk full while saving, secrets kept out
of every file a run writes."""

from __future__ import annotations

import errno

import pytest
import torch

from tuner import recipe_from_dict
from tuner.checkpoints import MARKER
from tuner.errors import TunerError
from tuner.evaluator import evaluate
from tuner.recipes import sft

from helpers import recipe_document


def test_evaluator_halves_its_batch_when_out_of_memory(tiny_model_dir, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuner.schema import EvalConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": f"Ticket {i}: where is my parcel?", "label": ["billing", "shipping"][i % 2]} for i in range(8)]
    config = EvalConfig(task="choice", choices=["billing", "shipping"], batch_size=8)
    expected = evaluate(model, tokenizer, rows, config)
    forward = model.forward

    def small_batches_only(*args, **kwargs):
        batch = (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[0]
        if batch > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    model.forward = small_batches_only
    scored = evaluate(model, tokenizer, rows, config)
    assert scored.metrics["accuracy"] == expected.metrics["accuracy"]
    assert [p["scores"] for p in scored.predictions] == [p["scores"] for p in expected.predictions]
    assert "retrying with 4" in capsys.readouterr().out


def _recipe(tiny_model_dir, ticket_files, output_dir, **train):
    train_file, test_file = ticket_files
    document = recipe_document(tiny_model_dir, train_file, test_file, output_dir)
    document["train"].update(max_steps=4, save_strategy="steps", save_steps=1, **train)
    return recipe_from_dict(document)


def test_out_of_memory_in_training_names_the_settings_and_keeps_the_checkpoint(
    tiny_model_dir, ticket_files, tmp_path, monkeypatch
):
    from trl import SFTTrainer

    original = SFTTrainer.training_step

    def step(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", step)
    with pytest.raises(TunerError) as caught:
        sft.run(_recipe(tiny_model_dir, ticket_files, tmp_path / "oom"))
    message = str(caught.value)
    assert "out of memory while training at step 2" in message
    for setting in (
        "train.per_device_train_batch_size` (now 4",
        "train.max_length",
        "gradient_checkpointing",
        "model.quantize: 4bit",
        "checkpoint-2",
        "--resume",
    ):
        assert setting in message, setting
    assert (tmp_path / "oom" / "checkpoints" / "checkpoint-2" / MARKER).is_file()

    # A batch tuner split into micro-batches is named as the recipe gave it, with the split.
    import tuner.speed

    monkeypatch.setattr(tuner.speed, "MICRO_BATCH_TOKENS", 1)
    with pytest.raises(TunerError) as caught:
        sft.run(_recipe(tiny_model_dir, ticket_files, tmp_path / "oom-micro"))
    assert "`train.per_device_train_batch_size` (now 4, which tuner runs as 4 micro-batches of 1;" in str(caught.value)


def test_disk_full_while_saving_says_how_much_space_is_needed(tiny_model_dir, ticket_files, tmp_path, monkeypatch):
    import tuner.training

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tuner.training, "save_adapter", full)
    with pytest.raises(TunerError) as caught:
        sft.run(_recipe(tiny_model_dir, ticket_files, tmp_path / "full"))
    message = str(caught.value)
    assert "the disk is full while saving" in message and "MB are free" in message
    assert "a checkpoint needs about" in message and "checkpoint-4" in message
    assert (tmp_path / "full" / "checkpoints" / "checkpoint-3" / MARKER).is_file()  # earlier checkpoints intact


def test_secrets_never_reach_a_run_folder(tiny_model_dir, ticket_files, tmp_path, monkeypatch, capsys):
    secrets = {
        "HF_TOKEN": "hf_SeCrEtToKeN123456",
        "WANDB_API_KEY": "wandb-key-abcdef987654",
        "DB_PASSWORD": "pa55word-very-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    train_file, test_file = ticket_files
    document = recipe_document(tiny_model_dir, train_file, test_file, tmp_path / "run")
    # A token pasted into a recipe (TRL's hub_token) and into the data's system prompt.
    document["train"].update(max_steps=2, hub_token=secrets["HF_TOKEN"])
    document["data"]["system_prompt"] = f"Key is {secrets['WANDB_API_KEY']}."
    result = sft.run(recipe_from_dict(document))
    written = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert len(written) >= 6
    for path in written:
        content = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in content, (path, value)
    assert "***" in (result.run_dir / "recipe.yaml").read_text()
    printed = capsys.readouterr()
    for value in secrets.values():
        assert value not in printed.out + printed.err


def test_secret_names_and_values_that_were_missed_and_tokenizer_fields_that_were_masked(monkeypatch):
    from tuner.secrets import is_secret_name, redact, redact_data

    for name in ("DB_PASS", "MYSQL_PWD", "GITHUB_PAT", "AWS_ACCESS_KEY_ID", "APP_SECRETS", "HF_TOKEN", "hub_token"):
        assert is_secret_name(name), name
    for name in ("eos_token", "pad_token", "max_new_tokens", "patience", "passes"):
        assert not is_secret_name(name), name
    # TRL's SFTConfig fields stay readable in a saved recipe, so the recipe still loads.
    assert redact_data({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}) == {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    }
    monkeypatch.setenv("MYSQL_PWD", "hunter2-but-longer")
    text = "db at postgres://app:s3cr3t-pw@db.internal:5432/x, pwd hunter2-but-longer, https://example.org/a:b"
    assert redact(text) == "db at postgres://app:***@db.internal:5432/x, pwd ***, https://example.org/a:b"


def test_bf16_is_native_only_from_compute_capability_8(monkeypatch):
    import torch

    import tuner.speed
    from tuner.schema import ModelConfig
    from tuner.speed import decide_precision

    # A T4 or V100: torch counts emulated bf16 as supported unless asked for native support only.
    monkeypatch.setattr(tuner.speed, "device_kind", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert decide_precision(ModelConfig(name_or_path="m")).compute == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100, H100
    assert decide_precision(ModelConfig(name_or_path="m")).compute == "bf16"


def test_the_shells_current_folder_is_not_a_secret(monkeypatch, tmp_path):
    # PWD matched the `pwd` (password) suffix, so the current folder was masked in every path tuner wrote.
    from tuner.secrets import is_secret_name, redact

    monkeypatch.setenv("PWD", str(tmp_path / "project-folder"))
    monkeypatch.setenv("OLDPWD", str(tmp_path / "previous-folder"))
    assert not is_secret_name("PWD") and not is_secret_name("OLDPWD") and is_secret_name("DB_PWD")
    path = f"{tmp_path}/project-folder/runs/sft"
    assert redact(path) == path
