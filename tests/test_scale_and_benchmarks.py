"""The shipped accelerate configs parse as accelerate reads them, the GPU MFU benchmark runs on a CPU with a tiny
model, and FLOPs are counted by the written formula (benchmarks/ceiling.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import needs_shared_data

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_one_accelerate_launch_accepts(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))  # raises on keys accelerate does not know
    assert config.num_processes >= 2 and config.mixed_precision == "no"
    launch_options = {action.dest for action in launch_command_parser()._actions}
    document = yaml.safe_load(path.read_text())
    for section in ("fsdp_config", "deepspeed_config"):
        for key in document.get(section) or {}:
            assert key in launch_options, f"{path.name}: {section}.{key} is not an accelerate launch option"
    assert f"--config_file recipes/accelerate/{path.name}" in path.read_text()  # the comment shows how to use it


def test_accelerate_configs_cover_ddp_fsdp_and_deepspeed():
    assert {p.name for p in CONFIGS} == {"ddp.yaml", "fsdp.yaml", "deepspeed_zero3.yaml"}


@pytest.mark.integration  # a benchmark script run whole: the end-to-end tier
def test_gpu_mfu_benchmark_runs_on_cpu_and_counts_flops_by_the_formula():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_mfu.py"), "--tiny", "--steps", "1", "--arms", "tuner"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"arm"')))
    # The tiny model: 2 layers, width 64, MLP 128, 4 heads of 16, 2 key/value heads; LM head 64 x vocabulary.
    layer = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128
    lm_head = result["frozen_linear_parameters"] - 2 * layer
    assert lm_head % 64 == 0 and lm_head // 64 >= 49152
    adapter = 2 * 16 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 2 + (128 + 64))  # r 16 on every linear
    assert result["adapter_parameters"] == adapter
    assert result["attention_flops_per_token"] == 6 * 2 * 64 * 64
    assert result["flops_per_token"] == (
        4 * result["frozen_linear_parameters"] + 6 * adapter + result["attention_flops_per_token"]
    )
    assert result["tokens"] == 2 * 64 and result["achieved_tflops"] > 0 and result["mfu"] is None


@needs_shared_data("sst2", "dev.jsonl")
@pytest.mark.integration  # the GPU check run whole (100 s on 2 cores): the end-to-end tier
def test_gpu_check_runs_end_to_end_on_a_cpu_with_a_tiny_model(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    summary = json.loads((out / "gpu_check.json").read_text())
    by_name = {result["workload"]: result for result in summary["workloads"]}
    assert list(by_name) == [
        "sft_lora_smollm2",
        "sft_lora_0.5b",
        "sft_qlora_0.5b",
        "dpo_smollm2",
        "packing_smollm2",
        "eval_sst2",
        "mfu",
    ]
    assert [name for name, result in by_name.items() if "error" in result] == [], done.stdout[-3000:]
    for name in ("sft_lora_smollm2", "sft_lora_0.5b", "sft_qlora_0.5b", "dpo_smollm2", "packing_smollm2"):
        result = by_name[name]
        assert result["checks"] == {"loss finite": True, "loss falling": True, "adapter saved": True}, name
        assert result["tokens_per_second"] > 0 and result["peak_memory_mb"] > 0 and result["estimated_peak_mb"] > 0
        assert result["precision"] in ("bf16", "fp32") and result["attention"] == "sdpa"
    assert by_name["packing_smollm2"]["batches"] == "packed rows (block-diagonal causal mask per row)"
    assert by_name["eval_sst2"]["rows"] == 16 and 0 <= by_name["eval_sst2"]["accuracy"] <= 1
    assert by_name["mfu"]["arms"][0]["flops_per_token"] > 0
    assert done.returncode == 0 and summary["passed"] is True
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("# GPU check: cpu") and table.count("\n| ") == 9  # header, separator and seven workloads


def test_the_ceiling_counts_useful_flops_by_its_formula_and_measures_matmuls(tiny_model_dir, monkeypatch):
    from peft import get_peft_model

    from tuner.adapters import build_peft_config
    from tuner.models import load_model
    from tuner.schema import AdapterConfig, ModelConfig

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import ceiling

    loaded = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    model = get_peft_model(loaded.model, build_peft_config(AdapterConfig(r=4, alpha=8, dropout=0.0)))
    frozen, adapter = ceiling.linear_parameters(model)
    layers, width = ceiling.attention_dim(model.config)
    assert adapter == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Two rows, 10 and 30 tokens: the linear work per token, and attention growing with each row's square.
    expected = (40 * (4 * frozen + 6 * adapter)) + 6 * layers * width * (10**2 + 30**2)
    assert ceiling.training_flops(model, [10, 30]) == expected
    assert ceiling.forward_flops(model, [10]) == 10 * 2 * (frozen + adapter) + 2 * layers * width * 100
    # Scoring: the LM head only at the scored position; a shared prefix counts once, however many rows follow it.
    head = model.config.vocab_size * model.config.hidden_size
    assert ceiling.scoring_flops(model, 0, [10]) == ceiling.forward_flops(model, [10]) - 9 * 2 * head
    assert ceiling.scoring_flops(model, 20, [5]) == ceiling.scoring_flops(model, 0, [25])
    once = 20 * 2 * (frozen + adapter - head) + 2 * layers * width * 20**2
    assert ceiling.scoring_flops(model, 20, [5, 5]) == ceiling.scoring_flops(model, 0, [25, 25]) - once
    measured = ceiling.matmul_ceiling(model.config, tokens=64, dtype="fp32", seconds=0.05)
    assert set(measured) == {"q/o projection", "k/v projection", "mlp up/gate", "mlp down", "lm head", "ceiling"}
    assert measured["ceiling"] == max(v for k, v in measured.items() if k != "ceiling") > 0
