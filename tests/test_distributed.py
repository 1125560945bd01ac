"""`tuner sft` under `torchrun` with 2 processes on CPU (gloo), on the tiny model: both ranks train, rank 0 alone
writes the run folder, and the accounting counts both processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import recipe_document, write_recipe


def _sft(recipe, processes: int, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # torchrun (torch.distributed.run) on one machine: --standalone picks a free port for the rendezvous.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                "-m", "tuner"] if processes > 1 else [sys.executable, "-m", "tuner"]
    return subprocess.run([*launcher, "sft", str(recipe)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def test_two_processes_train_one_run_folder_and_count_both(tiny_model_dir, ticket_files, tmp_path):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "ddp")
    document["train"].update(max_steps=2, per_device_train_batch_size=4)
    recipe = write_recipe(tmp_path / "ddp.yaml", document)
    single = write_recipe(tmp_path / "single.yaml", {**document, "output_dir": str(tmp_path / "runs" / "one")})

    done = _sft(recipe, 2, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    one = _sft(single, 1, tmp_path)
    assert one.returncode == 0, one.stderr[-4000:]

    # One run folder (rank 1 did not make ddp-2), reported once.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp", "one"]
    assert done.stdout.count("Run folder:") == 1
    metrics = json.loads((tmp_path / "runs" / "ddp" / "metrics.json").read_text())
    manifest = json.loads((tmp_path / "runs" / "ddp" / "manifest.json").read_text())
    alone = json.loads((tmp_path / "runs" / "one" / "metrics.json").read_text())
    assert manifest["world_size"] == 2 and manifest["engine"] == "torchrun"
    train_phase = metrics["phases"]["train"]
    assert train_phase["world_size"] == 2
    # Device-hours count both processes: wall time x 2.
    assert abs(train_phase["cpu_hours"] - 2 * train_phase["wall_seconds"] / 3600) < 1e-6
    # Both ranks trained: 2 steps of 4 rows on each rank, so twice the tokens of one process's 2 steps of 4 rows.
    assert metrics["train_steps"] == alone["train_steps"] == 2
    assert metrics["train_tokens"] > 1.5 * alone["train_tokens"]
    assert (tmp_path / "runs" / "ddp" / "adapter" / "adapter_model.safetensors").is_file()
    assert metrics["eval"]["rows"] == 10
