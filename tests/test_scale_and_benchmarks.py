"""The shipped accelerate configs parse as accelerate reads them, the GPU MFU benchmark runs on a CPU with a tiny
model, and FLOPs are counted by the written formula (benchmarks/ceiling.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _offline() -> list[str]:
    """A command prefix that runs with no network (a user and network namespace), where the kernel allows one."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


@pytest.mark.integration  # the kit built (a package index reached) and the GPU check run whole: the end-to-end tier
def test_gpu_check_rehearses_on_a_cpu_from_its_kit_alone_with_no_index_or_network(tmp_path):
    kit_script, check_script = ROOT / "benchmarks" / "gpu_kit.py", ROOT / "benchmarks" / "gpu_check.py"
    kit = tmp_path / "kit"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"  # the rehearsal installs on this Python
    built = subprocess.run(
        [sys.executable, str(kit_script), "build", "--out", str(kit), "--python-version", here],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = json.loads((kit / "kit.json").read_text())
    assert manifest["bytes"] < 60 * 2**20
    listed = [path for path in kit.rglob("*") if path.is_file() and path.name != "kit.json"]
    assert manifest["bytes"] == sum(path.stat().st_size for path in listed)
    wheels = {path.name.split("-")[0].lower() for path in (kit / "wheels").glob("*.whl")}
    assert {"trl", "datasets", "pydantic", "pydantic_core", "dill", "multiprocess", "xxhash"} <= wheels
    assert (kit / "tokenizer" / "tokenizer.json").is_file() and "bitsandbytes" in manifest["left_out"]

    # This machine's packages less what the GPU machine lacks (trl, datasets, pydantic, bitsandbytes, the offline
    # GGUF model, tuner's own install), so the rehearsal must install from the kit and read nothing else.
    base = subprocess.run(
        [sys.executable, str(kit_script), "device-like", "--out", str(tmp_path / "base")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    venv = tmp_path / "env"
    command = [*_offline(), sys.executable, str(kit_script), "install", "--kit", str(kit), "--env", str(venv)]
    installed = subprocess.run(
        command + [option for folder in base for option in ("--base", folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert "Successfully installed" in installed.stdout and "trl-" in installed.stdout

    out = tmp_path / "check"
    done = subprocess.run(
        [*_offline(), str(venv / "bin" / "python"), str(check_script), "--cpu", "--kit", str(kit), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT / "src")},
        timeout=1500,
    )
    summary = json.loads((out / "gpu_check.json").read_text())
    by_name = {result["workload"]: result for result in summary["workloads"]}
    assert list(by_name) == [
        "sft_lora_135m",
        "sft_lora_0.5b",
        "sft_lora_1.5b",
        "sft_packing_0.5b",
        "sft_checkpointing_0.5b",
        "sft_qlora_0.5b",
        "dpo_135m",
        "choice_135m",
        "mfu_0.5b",
    ]
    assert [name for name, result in by_name.items() if "error" in result] == [], done.stdout[-3000:]
    assert summary["imported_from"]["trl"].startswith(str(venv))  # from the kit's wheels
    assert summary["imported_from"]["tuner"].startswith(str(ROOT / "src"))  # from the tree
    assert "bitsandbytes" in by_name["sft_qlora_0.5b"]["skipped"]  # the kit does not carry it: said, not failed
    for name in ("sft_lora_135m", "sft_lora_0.5b", "sft_lora_1.5b", "sft_packing_0.5b", "sft_checkpointing_0.5b"):
        result = by_name[name]
        assert result["checks"] == {"loss finite": True, "loss falling": True, "adapter saved": True}, name
        assert result["tokens_per_second"] > 0 and result["peak_memory_mb"] > 0 and result["estimated_peak_mb"] > 0
        assert result["precision"] in ("bf16", "fp32") and result["attention"] == "sdpa"
    assert by_name["sft_packing_0.5b"]["batches"] == "packed rows (block-diagonal causal mask per row)"
    assert by_name["sft_checkpointing_0.5b"]["gradient_checkpointing"] is True
    assert by_name["sft_lora_0.5b"]["gradient_checkpointing"] is False
    assert by_name["dpo_135m"]["checks"]["adapter saved"] is True
    choice = by_name["choice_135m"]
    assert choice["rows"] == 16 and choice["parity_pairs"] == 48 and choice["tree_vs_whole_max_gap_fp32"] < 1e-3
    assert by_name["mfu_0.5b"]["arms"][0]["flops_per_token"] > 0
    assert done.returncode == 0 and summary["passed"] is True
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("# GPU check: cpu") and table.count("\n| ") == 11  # header, separator, nine workloads
    assert "| sft_qlora_0.5b | | | | | | | skipped: bitsandbytes" in table


def test_the_gpu_check_kit_stays_under_its_limit_by_its_listing_and_names_every_wheel_once():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_kit

    pins = gpu_kit.pins()
    assert len(pins) == len({pin.split("==")[0].lower() for pin in pins}) == len(gpu_kit.WHEELS)
    # the check's requirements carry pyproject's ranges, and none of them is a package the kit leaves out
    assert "transformers>=5.0,<5.40" in gpu_kit.requirements()
    assert not {gpu_kit.canonical(name) for name in gpu_kit.LEFT_OUT} & {
        gpu_kit.canonical(name) for name in gpu_kit.NEEDED
    }


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


def test_the_data_scale_benchmark_prints_each_arm_with_its_ratio_to_the_cold_one(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_scale.py"), "--sizes", "300"],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "cores, native bf16:" in lines[0] and "pyarrow" in lines[0]
    arms = {line.split("|")[3].strip(): line for line in lines if line.startswith("| 300 |")}
    assert set(arms) == {"cold", "cached"} and arms["cold"].rstrip().endswith("| 1.00x |")
    for line in arms.values():  # the memory the process held itself, sampled while it ran, below its whole RSS
        cells = [cell.strip().replace(",", "") for cell in line.split("|")]
        assert 0 < float(cells[7]) <= float(cells[5])
    assert any("rows/s, whole command" in line for line in lines)


def test_the_data_scale_benchmark_runs_a_baseline_and_a_held_out_split(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_scale.py"), "--sizes", "300", "--held-out"]
        + ["--baseline-src", str(ROOT / "src")],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    arms = {line.split("|")[3].strip() for line in done.stdout.splitlines() if line.startswith("| 300 |")}
    assert arms == {"baseline (cold)", "baseline (cached)", "cold", "cached"}
