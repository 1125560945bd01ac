"""The SFT recipe module on a tiny random model: the adapter trains, the run folder is complete, loss is masked."""

from __future__ import annotations

import json
import re

import pytest

from tuner import recipe_from_dict
from tuner.errors import TunerError
from tuner.recipes import sft
from tuner.rendering import sft_rows
from tuner.trainers import build_trainer

from helpers import recipe_document, write_jsonl


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    return recipe_from_dict(recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "tiny"))


def _adapter_tensors(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_sft_trains_the_adapter_and_writes_the_run_folder(tiny_recipe):
    result = sft.run(tiny_recipe)
    run_dir = result.run_dir
    assert {"recipe.yaml", "metrics.json", "manifest.json", "adapter/"} <= set(result.files())
    assert not (run_dir / "adapter" / "training_args.bin").exists()  # no pickles in a run folder
    # LoRA B starts at zero: any non-zero B means the optimizer moved the adapter.
    tensors = _adapter_tensors(run_dir)
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["train_tokens"] > 0
    train_phase = metrics["phases"]["train"]
    assert train_phase["wall_seconds"] > 0 and train_phase["device_count"] >= 1
    assert ("cpu_hours" in train_phase) != ("gpu_hours" in train_phase)
    assert train_phase["peak_memory_mb"] > 0
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for package in ("tuner", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes"):
        assert manifest["versions"][package], package
    assert manifest["seed"] == 0 and len(manifest["data"]["train_fingerprint"]) == 64
    assert manifest["precision"] in ("fp32", "bf16", "fp16")


def test_adapter_loads_with_peft_and_changes_outputs(tiny_recipe, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = sft.run(tiny_recipe).run_dir
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert (run_dir / "adapter" / "chat_template.jinja").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("Which team? my order is late", return_tensors="pt").input_ids
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter")
        after = tuned(ids).logits
    assert not torch.allclose(before, after)


def test_loss_only_on_the_answer_and_eos_ends_every_target(tiny_recipe, tmp_path):
    from tuner.data.splits import load_data
    from tuner.models import load_model

    loaded = load_model(tiny_recipe.model)
    splits = load_data(tiny_recipe.data)
    trainer, _ = build_trainer(tiny_recipe, loaded, splits.train, tmp_path)
    eos = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row in trainer.train_dataset.select(range(4)):
        target = [label for label in row["labels"] if label != -100]
        assert 0 < len(target) < len(row["input_ids"])  # the prompt is masked out (-100), the answer is not
        assert eos in target  # the answer ends with the end-of-turn token, so the model learns to stop
        decoded = loaded.tokenizer.decode(target)
        assert any(team in decoded for team in ("billing", "shipping", "returns", "technical", "account"))


def test_every_assistant_turn_of_a_chat_carries_loss_when_the_template_cannot_mark_turns(tiny_model_dir):
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # SmolLM2's ChatML template: no generation markers
    messages = [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "In transit."},
        {"role": "user", "content": "When does it come?"},
        {"role": "assistant", "content": "On Friday."},
    ]
    out = sft_rows(datasets.Dataset.from_list([{"messages": messages}]), tokenizer)
    ids, mask = out[0]["input_ids"], out[0]["assistant_masks"]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained == "In transit.<|im_end|>\nOn Friday.<|im_end|>\n"  # both answers, each with its end of turn


def test_a_template_that_rewrites_earlier_turns_falls_back_to_the_last_answer(tiny_model_dir, capsys):
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Only the last assistant turn is rendered in full (as templates that drop earlier reasoning do).
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' and not loop.last "
        "%}...{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    rows = datasets.Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d"},
                ]
            }
        ]
    )
    [row] = sft_rows(rows, tokenizer)
    # The last answer is trained, the conversation before it is context (rendered as the template renders it).
    trained = tokenizer.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"]) if m])
    context = tokenizer.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"]) if not m])
    assert trained.strip() == "d" and "d" not in context
    assert [context.index(text) < context.index("user: c") for text in ("user: a", "assistant: ...")] == [True, True]
    assert "cannot be rendered turn by turn for 1 of 1 chats" in capsys.readouterr().out


def test_a_multi_turn_chat_trains_every_answer_and_the_dry_run_shows_each(tiny_model_dir, tmp_path):
    from tuner.estimate import describe
    from tuner.recipes.preflight import dry_run

    chats = [
        {
            "messages": [
                {"role": "user", "content": f"Question {n}?"},
                {"role": "assistant", "content": f"One {n}."},
                {"role": "user", "content": f"And then {n}?"},
                {"role": "assistant", "content": f"Two {n}."},
            ]
        }
        for n in range(12)
    ]
    train = write_jsonl(tmp_path / "chats.jsonl", chats)
    document = recipe_document(tiny_model_dir, train, None, tmp_path / "runs" / "chat")
    document["eval"] = {"task": "generate", "max_new_tokens": 4}
    recipe = recipe_from_dict(document)
    shown = describe(dry_run(recipe), recipe)
    assert "answers between [[ ]]" in shown
    assert re.search(r"\| \[\[One (\d+)\.<\|im_end\|>\n.*\| \[\[Two \1\.<\|im_end\|>", shown, re.S)
    result = sft.run(recipe)
    assert result.metrics["train_steps"] == 3 and result.metrics["train_loss"] > 0


def test_existing_run_folder_is_never_overwritten(tiny_recipe):
    first = sft.run(tiny_recipe).run_dir
    marker = first / "metrics.json"
    before = marker.read_text()
    second = sft.run(tiny_recipe).run_dir
    assert second != first and second.name == first.name + "-2"
    assert marker.read_text() == before


def test_sharegpt_messages_train(tmp_path, tiny_model_dir):
    rows = [
        {"conversations": [{"from": "human", "value": f"Say {i}"}, {"from": "gpt", "value": str(i)}]} for i in range(12)
    ]
    train = write_jsonl(tmp_path / "chat.jsonl", rows)
    document = recipe_document(tiny_model_dir, train, None, tmp_path / "chat-run")
    document["data"].pop("prompt_template")
    document["eval"] = {"task": "generate", "max_new_tokens": 3}
    result = sft.run(recipe_from_dict(document))
    assert result.metrics["train_steps"] == 3 and result.metrics["train_loss"] > 0
    # No eval file: a seeded tenth of the 12 chats is held out and scored by generation.
    assert result.metrics["eval"]["rows"] == 2 and result.metrics["eval"]["task"] == "generate"


def test_dora_and_qlora_on_cpu(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "q")
    document["model"]["quantize"] = "4bit"
    document["adapter"]["type"] = "dora"
    document["train"]["max_steps"] = 2
    result = sft.run(recipe_from_dict(document))
    assert result.manifest["model"]["quantize"] == "4bit"
    tensors = _adapter_tensors(result.run_dir)
    assert any("lora_magnitude_vector" in name for name in tensors)
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)


def test_rows_longer_than_max_length_are_counted_and_reported(tiny_model_dir, ticket_files, tmp_path, capsys):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "long")
    document["train"].update(max_steps=1, max_length=54)
    result = sft.run(recipe_from_dict(document))
    long_rows = result.manifest["data"]["rows_longer_than_max_length"]
    # The tickets take 53 to 55 tokens with the chat template and answer: the six of 55 are cut, as TRL does.
    assert long_rows["count"] == 6 and long_rows["max_length"] == 54 and long_rows["policy"] == "truncate"
    assert "6 of 24 train rows are longer than train.max_length (54 tokens" in capsys.readouterr().out


def test_chat_rendering_without_a_chat_template_is_refused_before_training(tiny_model_dir, ticket_files, tmp_path):
    import shutil

    model = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    train, test = ticket_files
    document = recipe_document(model, train, test, tmp_path / "out")
    document["data"]["chat"] = True  # unset, a model without a template renders plain text (test_families)
    with pytest.raises(TunerError, match="`data.chat` is true .* has no chat template"):
        sft.run(recipe_from_dict(document))
    assert not (tmp_path / "out").exists()


def test_run_folders_are_taken_atomically(tmp_path):
    import threading

    from tuner.runs import new_run_dir

    (tmp_path / "made-before").mkdir()  # an empty folder made beforehand is still used, by one run only
    taken: list = []
    threads = [threading.Thread(target=lambda: taken.append(new_run_dir(tmp_path / "made-before"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(taken)) == 8 and tmp_path / "made-before" in taken


def test_two_conversions_of_one_gguf_at_once_keep_the_first(tmp_path):
    from tuner.models import publish

    target = tmp_path / "converted"
    for name in ("first", "second"):
        staging = tmp_path / name
        staging.mkdir()
        (staging / "config.json").write_text(f'{{"by": "{name}"}}')
        publish(staging, target)
    assert (target / "config.json").read_text() == '{"by": "first"}'


def test_sharded_weights_are_scored_as_a_whole_copy_of_base_and_saved_adapter(
    tiny_model_dir, ticket_files, tmp_path, monkeypatch
):
    import tuner.training as training
    from tuner.models import load_model

    whole = sft.run(recipe_from_dict(recipe_document(tiny_model_dir, *ticket_files, tmp_path / "whole")))
    # FSDP / ZeRO-3 (patched: no GPUs here): each rank holds a shard, a forward pass needs every rank, and rank 0
    # scored alone (a hang). The trained model must not be used for scoring; a whole copy is loaded instead.
    loads = []
    monkeypatch.setattr(training, "is_sharded", lambda trainer: True)
    monkeypatch.setattr(training, "gathered_state_dict", lambda trainer: None)
    monkeypatch.setattr(
        training, "load_model", lambda *args, **kwargs: loads.append(args) or load_model(*args, **kwargs)
    )
    sharded = sft.run(recipe_from_dict(recipe_document(tiny_model_dir, *ticket_files, tmp_path / "sharded")))
    assert len(loads) == 1
    assert sharded.metrics["eval"]["accuracy"] == whole.metrics["eval"]["accuracy"]
    scores = [json.loads(line)["scores"] for line in (sharded.run_dir / "predictions.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["scores"] for line in (whole.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(scores) == len(expected)
    for row, wanted in zip(scores, expected):  # the same adapter: the same scores, within fp32 reload noise
        assert row == pytest.approx(wanted, abs=1e-3)


def test_the_whole_copy_after_zero3_training_loads_outside_the_trainers_deepspeed_config(monkeypatch):
    # ZeRO-3 (patched in: no GPUs and no DeepSpeed here): while the trainer's DeepSpeed config is registered,
    # transformers builds every model under `deepspeed.zero.Init`, whose collectives wait on ranks that have left.
    from types import SimpleNamespace

    from transformers.integrations.deepspeed import (
        is_deepspeed_zero3_enabled,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    import tuner.training as training

    class ZeroThree:
        config = {"zero_optimization": {"stage": 3}}

        def is_zero3(self):
            return True

    config = ZeroThree()
    trainer = SimpleNamespace(is_deepspeed_enabled=True, args=SimpleNamespace(hf_deepspeed_config=config))
    loaded = SimpleNamespace(precision="bf16", info={"head": "causal"})
    recipe = SimpleNamespace(model="model", source="recipe.yaml")
    seen = []
    whole = SimpleNamespace(to=lambda device: "whole copy on " + str(device))
    monkeypatch.setattr(training, "is_sharded", lambda trainer: True)
    monkeypatch.setattr(
        training,
        "load_model",
        lambda *args, **kwargs: seen.append(is_deepspeed_zero3_enabled()) or SimpleNamespace(model=whole),
    )
    monkeypatch.setattr(training, "with_run_adapter", lambda model, run_dir: model)
    monkeypatch.setattr(training, "rank_device", lambda: "cuda:0")
    set_hf_deepspeed_config(config)
    try:
        assert is_deepspeed_zero3_enabled()
        assert training.trained_model(trainer, recipe, "run", loaded) == "whole copy on cuda:0"
        assert seen == [False]  # loaded as a plain model on rank 0
        assert is_deepspeed_zero3_enabled()  # and the trainer's config is back for whatever follows
    finally:
        unset_hf_deepspeed_config()
