"""Speed settings on a tiny random model: packed rows keep sequences apart, batches are length-grouped where packing
does not apply, what was chosen reaches the manifest, and the dry run's counts and memory estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner import dry_run, recipe_from_dict
from tuner.cli import cli
from tuner.recipes import sft
from tuner.trainers import build_trainer

from helpers import dpo_document, recipe_document, write_recipe


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    return recipe_from_dict(recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "tiny"))


def _with_train(recipe, **train):
    return recipe.model_copy(update={"train": {**recipe.train, **train}})


def test_packed_rows_score_each_sequence_as_if_it_were_alone(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tuner.trainers import packed_rows_collator

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    first, second, short = list(range(100, 107)), list(range(200, 211)), list(range(300, 305))
    collator = packed_rows_collator(pad_token_id=0)
    batch = collator([{"input_ids": first + second, "seq_lengths": [7, 11]}, {"input_ids": short, "seq_lengths": [5]}])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 18)
    assert batch["position_ids"][0].tolist() == list(range(7)) + list(range(11))
    assert (batch["labels"][1, 5:] == -100).all()  # padding is never a target
    with torch.no_grad():
        # No cache, as in training: transformers reads packed boundaries only when no KV cache is in play.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([second])).logits
        shorter = model(input_ids=torch.tensor([short])).logits
    # The second sequence of the packed row sees nothing of the first: same logits as when scored alone.
    torch.testing.assert_close(packed[0, 7:], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed[1, :5], shorter[0], atol=1e-4, rtol=1e-4)
    # Without the position ids the model attends across the boundary and the logits differ: the check can fail.
    with torch.no_grad():
        leaked = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
    assert not torch.allclose(leaked[0, 7:], alone[0], atol=1e-3)


def test_sft_groups_rows_by_length_without_flash_attention(tiny_recipe, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tuner.data.splits import load_data
    from tuner.models import load_model

    loaded = load_model(tiny_recipe.model)
    rows = load_data(tiny_recipe.data).train
    trainer, speed = build_trainer(tiny_recipe, loaded, rows, tmp_path)
    assert not trainer.args.packing and speed.batches == "length-grouped padded rows"
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)

    off, speed = build_trainer(
        _with_train(tiny_recipe, train_sampling_strategy="random"), load_model(tiny_recipe.model), rows, tmp_path
    )
    assert speed.batches == "padded rows" and not isinstance(off._get_train_sampler(), LengthGroupedSampler)


def test_gradient_checkpointing_turns_on_only_when_the_gpu_estimate_does_not_fit(tiny_recipe, monkeypatch):
    import tuner.speed
    from tuner.data.splits import load_data
    from tuner.models import load_model
    from tuner.speed import checkpointing

    loaded = load_model(tiny_recipe.model)
    rows = load_data(tiny_recipe.data).train

    def decide(recipe, free_mb):
        monkeypatch.setattr(tuner.speed, "device_kind", lambda: "cuda")
        monkeypatch.setattr(tuner.speed, "available_memory_mb", lambda device: free_mb)
        decision = checkpointing(recipe, loaded.precision, loaded.model.config, loaded.tokenizer, rows)
        monkeypatch.undo()
        return decision

    on, reason = decide(tiny_recipe, free_mb=1.0)
    assert on and "memory needs it" in reason and "1 MB free" in reason
    assert decide(tiny_recipe, free_mb=80_000.0) == (False, None)
    # The recipe's own choice stands, whatever the estimate says; and a CPU never turns it on by itself.
    assert decide(_with_train(tiny_recipe, gradient_checkpointing=False), free_mb=1.0) == (False, None)
    assert decide(_with_train(tiny_recipe, activation_checkpointing=True), free_mb=80_000.0) == (True, None)
    assert checkpointing(tiny_recipe, loaded.precision, loaded.model.config, loaded.tokenizer, rows) == (False, None)


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_the_checkpointing_decision_reaches_the_model(method, tiny_recipe, tmp_path, tiny_model_dir, pair_files):  # noqa: F811
    import dataclasses

    from tuner.data.splits import load_data
    from tuner.models import load_model
    from tuner.speed import decide
    from tuner.trainers import dpo_trainer, sft_trainer

    recipe = (
        tiny_recipe if method == "sft" else recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo"))
    )
    build = {"sft": sft_trainer, "dpo": dpo_trainer}[method]
    rows = load_data(recipe.data).train
    checkpointed = []
    for on in (True, False):
        loaded = load_model(recipe.model)
        speed = dataclasses.replace(decide(recipe, loaded, rows), gradient_checkpointing=on)
        trainer = build(recipe, speed, loaded, rows, tmp_path / f"{method}-{on}")
        assert trainer.args.activation_checkpointing is on and trainer.args.gradient_checkpointing is on
        trainer.train()  # transformers switches checkpointing on in the model as training starts
        checkpointed.append(trainer.model.base_model.model.is_gradient_checkpointing)
    assert checkpointed == [True, False]


def test_packing_asked_for_trains_on_packed_rows_and_is_recorded(tiny_recipe):
    result = sft.run(_with_train(tiny_recipe, packing=True, max_steps=2))
    speed = json.loads((result.run_dir / "manifest.json").read_text())["speed"]
    assert speed["batches"] == "packed rows (block-diagonal causal mask per row)"
    assert speed["gradient_checkpointing"] is False and speed["attention"] in ("sdpa", "eager")
    assert result.metrics["train_steps"] == 2 and result.metrics["train_loss"] > 0


def test_micro_batches_are_the_largest_divisor_of_the_batch_within_the_token_budget():
    from tuner.speed import micro_batch

    assert micro_batch(8, 750, 2048) == 2  # long alpaca rows: 1,500 tokens at a time
    assert micro_batch(8, 62, 2048) == 8  # short ticket rows stay one batch
    assert micro_batch(6, 1000, 2048) == 2  # a divisor, so every optimizer step sees the whole batch
    assert micro_batch(8, 3000, 2048) == 1  # a row longer than the budget trains alone
    assert micro_batch(1, 50, 2048) == 1


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_micro_batches_take_the_same_step_as_the_whole_batch(
    method, tiny_recipe, tmp_path, tiny_model_dir, pair_files, monkeypatch
):  # noqa: F811
    import torch

    import tuner.speed
    from tuner.data.splits import load_data
    from tuner.models import load_model

    recipe = tiny_recipe if method == "sft" else recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path))
    # fp32 and plain SGD at rate 1, so the update is the gradient itself (Adam's first step is about the gradient's
    # sign, and would hide a gradient scaled wrongly); rows in file order, so both runs see the same four rows (pairs).
    fp32 = recipe.model_copy(update={"model": recipe.model.model_copy(update={"dtype": "fp32"})})
    recipe = _with_train(
        fp32, max_steps=1, optim="sgd", learning_rate=1.0, train_sampling_strategy="sequential", warmup_steps=0
    )
    rows = load_data(recipe.data).train
    monkeypatch.setattr(tuner.speed, "MICRO_BATCH_TOKENS", 1)  # the tiny rows are short: every row alone

    def one_step(recipe):
        torch.manual_seed(0)
        trainer, speed = build_trainer(recipe, load_model(recipe.model), rows, tmp_path)
        loss = trainer.train().training_loss
        weights = {name: value.detach().clone() for name, value in trainer.model.named_parameters() if "lora_B" in name}
        return speed, trainer.args, loss, weights

    speed, args, loss, weights = one_step(recipe)
    assert (speed.micro_batch, speed.accumulation) == (1, 4)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 4)
    assert speed.manifest()["micro_batches"].startswith("4 of 1 rows per optimizer step of 4")
    whole_speed, whole_args, whole_loss, whole = one_step(_with_train(recipe, gradient_accumulation_steps=1))
    assert whole_speed.micro_batch is None and whole_args.per_device_train_batch_size == 4
    assert max(value.abs().max() for value in whole.values()) > 1e-4  # the step moved the adapter
    assert loss == pytest.approx(whole_loss, rel=1e-5)
    for name, value in whole.items():
        torch.testing.assert_close(weights[name], value, atol=1e-7, rtol=1e-4)
    # The dry run estimates the micro-batch, not the whole batch.
    assert dry_run(recipe).batch_tokens * 4 == dry_run(_with_train(recipe, gradient_accumulation_steps=1)).batch_tokens


def test_a_dpo_loss_over_the_whole_batch_keeps_the_batch_whole(tmp_path, tiny_model_dir, pair_files, monkeypatch):  # noqa: F811
    import tuner.speed
    from tuner.data.splits import load_data
    from tuner.models import load_config_and_tokenizer

    monkeypatch.setattr(tuner.speed, "MICRO_BATCH_TOKENS", 1)
    recipe = recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path))
    _, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
    rows = load_data(recipe.data).train
    assert tuner.speed.micro_batches(recipe, tokenizer, rows) == {"micro_batch": 1, "accumulation": 4}
    # AOT sorts the log-ratios of the whole batch: a micro-batch would sort fewer.
    aot = recipe.model_copy(update={"dpo": recipe.dpo.model_copy(update={"loss_type": ["sigmoid", "aot"]})})
    assert tuner.speed.micro_batches(aot, tokenizer, rows) == {}


KEPT_MEMORY = """
import os, sys, torch
from tuner.speed import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = resident()
step = torch.ones(64 * 2**20)  # 256 MiB of activations, freed at the end of a step
del step
print((resident() - before) // 2**20)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_a_cpu_run_keeps_freed_memory_for_the_next_step(tiny_recipe, monkeypatch):
    import subprocess
    import sys

    from tuner.speed import MALLOC_ENV, decide_allocator

    # What glibc does by itself: the freed 256 MiB go back to the system (and are faulted in again next step).
    kept = {
        mode: int(
            subprocess.run([sys.executable, "-c", KEPT_MEMORY, mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("system", "keep")
    }
    assert kept["system"] < 64 and kept["keep"] >= 200
    # A CPU run asks for it before training and records it (here without changing this test process's allocator:
    # conftest keeps the suite on glibc's own behaviour).
    import tuner.speed

    asked = []
    monkeypatch.delenv(MALLOC_ENV, raising=False)
    monkeypatch.setattr(tuner.speed, "keep_freed_memory", lambda: asked.append(True))
    result = sft.run(_with_train(tiny_recipe, max_steps=1))
    speed = json.loads((result.run_dir / "manifest.json").read_text())["speed"]
    assert asked == [True] and speed["allocator"] == "glibc keeps freed memory (mmap and trimming off)"
    monkeypatch.setenv(MALLOC_ENV, "system")
    assert decide_allocator() is None


def test_dpo_batches_pairs_of_similar_length(tmp_path, tiny_model_dir, pair_files):  # noqa: F811
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tuner.data.splits import load_data
    from tuner.models import load_model

    recipe = recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo"))
    trainer, speed = build_trainer(recipe, load_model(recipe.model), load_data(recipe.data).train, tmp_path)
    assert speed.batches == "length-grouped padded pairs"
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    # Each pair is measured as TRL tokenized it: prompt plus its longer answer.
    assert sampler.lengths == [
        len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) for row in trainer.train_dataset
    ]
    batch = next(iter(trainer.get_train_dataloader()))  # the length column survives to the sampler, not the model
    assert "length" not in batch and batch["input_ids"].shape[0] == 2 * trainer.args.per_device_train_batch_size


def test_dry_run_counts_the_adapter_exactly_and_scales_memory_with_the_batch(tiny_recipe, tmp_path):
    from tuner.adapters import parameter_counts
    from tuner.data.splits import load_data
    from tuner.models import load_model

    estimate = dry_run(tiny_recipe)
    loaded = load_model(tiny_recipe.model)
    real = parameter_counts(build_trainer(tiny_recipe, loaded, load_data(tiny_recipe.data).train, tmp_path)[0].model)
    assert estimate.trainable_parameters == real["trainable_parameters"]
    assert estimate.total_parameters == real["total_parameters"]
    assert estimate.memory_mb["optimizer"] == pytest.approx(2 * estimate.memory_mb["adapter"])
    doubled = dry_run(_with_train(tiny_recipe, per_device_train_batch_size=8))
    assert doubled.memory_mb["activations"] == pytest.approx(2 * estimate.memory_mb["activations"])
    checkpointed = dry_run(_with_train(tiny_recipe, gradient_checkpointing=True))
    assert checkpointed.memory_mb["activations"] < estimate.memory_mb["activations"]
    assert estimate.fits is True and len(estimate.rows) == 2
    answer = estimate.rows[0]["answers"][0]
    assert answer["answer_tokens"] > 0 and answer["prompt_tokens"] > answer["answer_tokens"]


def test_dry_run_of_dpo_counts_both_answers_and_their_logits(tmp_path, tiny_model_dir, pair_files):  # noqa: F811
    recipe = recipe_from_dict(dpo_document(tiny_model_dir, pair_files, tmp_path / "dpo"))
    estimate = dry_run(recipe)
    assert estimate.memory_mb["logits"] > 0
    assert [len(row["answers"]) for row in estimate.rows] == [2, 2]  # chosen and rejected, each with its mask


def test_cli_dry_run_prints_the_estimate_and_writes_nothing(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    output = tmp_path / "runs" / "dry"
    path = write_recipe(tmp_path / "recipe.yaml", recipe_document(tiny_model_dir, train, test, output))
    result = CliRunner().invoke(cli, ["sft", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "trainable parameters:" in result.output and "fits: yes" in result.output
    assert "[[" in result.output and "answer tokens (loss)" in result.output
    assert not output.exists()
