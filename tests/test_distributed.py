"""`tuner sft` under `torchrun` with 2 processes on CPU (gloo), on the tiny model: both ranks train, rank 0 alone
writes the run folder, and the accounting counts both processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import recipe_document, write_recipe

# torchrun launching real processes (20 s each on 2 cores): the end-to-end tier.
pytestmark = pytest.mark.integration


def _sft(recipe, processes: int, tmp_path, *options):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # torchrun (torch.distributed.run) on one machine: --standalone picks a free port for the rendezvous.
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "tuner",
        ]
        if processes > 1
        else [sys.executable, "-m", "tuner"]
    )
    return subprocess.run(
        [*launcher, "sft", str(recipe), *options], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )


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


SIGNAL_ONE_RANK = """\
import os, signal, sys
from tuner.checkpoints import StopOnSignal
from tuner.cli import main

original = StopOnSignal.on_step_end


def on_step_end(self, args, state, control, **kwargs):
    # Only rank 1 is signalled (a preempted node, a kill aimed at one worker), at the end of step 2.
    if os.environ["RANK"] == "1" and state.global_step == 2 and self.signum is None:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(self, args, state, control, **kwargs)


StopOnSignal.on_step_end = on_step_end
sys.argv = ["tuner", *sys.argv[1:]]
main()
"""


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tiny_model_dir, ticket_files, tmp_path):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "ddp")
    document["train"].update(max_steps=5, per_device_train_batch_size=4, save_strategy="steps", save_steps=10)
    recipe = write_recipe(tmp_path / "ddp.yaml", document)
    script = tmp_path / "signal_one_rank.py"
    script.write_text(SIGNAL_ONE_RANK, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # Before the ranks agreed, rank 1 stopped after step 2 and rank 0 waited for it in step 3 until the timeout; the
    # launcher and both workers run in a session of their own, so a hang is killed whole, workers included.
    stopped = subprocess.Popen(
        [*launcher, str(script), "sft", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        output, _ = stopped.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(stopped.pid, signal.SIGKILL)
        output, _ = stopped.communicate()
        raise AssertionError(f"the ranks did not stop together (killed after 240 s):\n{output[-4000:]}") from None
    assert stopped.returncode != 0
    assert output.count("interrupted by SIGTERM at step 2 of 5") == 2, output[-4000:]  # both ranks, same step
    run_dir = tmp_path / "runs" / "ddp"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert (run_dir / "checkpoints" / "checkpoint-2" / "tuner_checkpoint.json").is_file()

    resumed = _sft(recipe, 2, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 5
