"""Checkpoints and resume on the tiny model: SIGTERM saves and stops, resume restores the run, changes are refused,
a checkpoint cut off mid-write is skipped."""

from __future__ import annotations

import shutil
import signal

import pytest

from tuner import recipe_from_dict
from tuner.checkpoints import MARKER, Interrupted, StopOnSignal
from tuner.errors import TunerError
from tuner.recipes import sft

from helpers import losses, recipe_document, stopped_and_resumed

STEPS = 6


def document(tiny_model_dir, ticket_files, output_dir, **train):
    train_file, test_file = ticket_files
    doc = recipe_document(tiny_model_dir, train_file, test_file, output_dir)
    doc["train"].update(max_steps=STEPS, save_strategy="steps", save_steps=2, logging_steps=1, **train)
    doc["eval"] = {"task": "choice", "choices": doc["eval"]["choices"]}
    return doc


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(
    tiny_model_dir, ticket_files, tmp_path, signal_at_step
):
    whole = sft.run(recipe_from_dict(document(tiny_model_dir, ticket_files, tmp_path / "whole")))

    disarm = signal_at_step(3)
    doc = document(tiny_model_dir, ticket_files, tmp_path / "cut")
    with pytest.raises(Interrupted) as stopped:
        sft.run(recipe_from_dict(doc))
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM at step 3 of 6" in str(stopped.value) and "--resume" in str(stopped.value)
    run_dir = tmp_path / "cut"
    checkpoint = run_dir / "checkpoints" / "checkpoint-3"
    assert (checkpoint / MARKER).is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert not (checkpoint / "training_args.bin").exists()  # no pickled arguments in a run folder
    assert not (run_dir / "metrics.json").exists() and set(losses(run_dir)) == {1, 2, 3}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    disarm()

    resumed = sft.run(recipe_from_dict({**doc, "resume": "auto"}))
    assert resumed.run_dir == run_dir  # the same run folder, continued
    assert resumed.metrics["train_steps"] == STEPS
    assert resumed.metrics["phases"]["train"]["wall_seconds_before_resume"] > 0
    before, after = losses(whole.run_dir), losses(run_dir)
    assert sorted(after) == list(range(1, STEPS + 1))
    for step in range(4, STEPS + 1):  # optimizer, scheduler, RNG and data position restored
        assert after[step] == pytest.approx(before[step], rel=1e-3, abs=1e-4), (step, before, after)


def test_resume_refuses_a_changed_recipe_or_data_and_skips_a_cut_off_checkpoint(
    tiny_model_dir, ticket_files, tmp_path, signal_at_step, capsys
):
    signal_at_step(5)
    doc = document(tiny_model_dir, ticket_files, tmp_path / "run")
    with pytest.raises(Interrupted):
        sft.run(recipe_from_dict(doc))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]

    changed = {**doc, "resume": "auto", "train": {**doc["train"], "learning_rate": 0.5}}
    with pytest.raises(
        TunerError,
        match=r"the recipe changed since it was saved \(train.learning_rate: 0.01 then, "
        r"0.5 now\)",
    ):
        sft.run(recipe_from_dict(changed))

    fewer_rows = {**doc, "resume": "auto", "data": {**doc["data"], "max_train_samples": 12}}
    with pytest.raises(TunerError, match="the recipe changed|the train data changed"):
        sft.run(recipe_from_dict(fewer_rows))

    # A checkpoint cut off while being written (no marker) is skipped for the one before.
    (checkpoints / "checkpoint-5" / MARKER).unlink()
    from tuner.checkpoints import find_checkpoint

    found = find_checkpoint(recipe_from_dict({**doc, "resume": "auto"}))
    assert found == checkpoints / "checkpoint-4"
    assert "skipping" in capsys.readouterr().out
    shutil.rmtree(checkpoints / "checkpoint-4")
    (checkpoints / "checkpoint-2" / "adapter_model.safetensors").unlink()
    with pytest.raises(TunerError, match="nothing to resume"):
        find_checkpoint(recipe_from_dict({**doc, "resume": "auto"}))


def test_resume_with_nothing_to_resume_and_a_bad_path(tiny_model_dir, ticket_files, tmp_path):
    doc = document(tiny_model_dir, ticket_files, tmp_path / "none")
    with pytest.raises(TunerError, match="nothing to resume"):
        sft.run(recipe_from_dict({**doc, "resume": "auto"}))
    with pytest.raises(TunerError, match="is not a whole tuner checkpoint"):
        sft.run(recipe_from_dict({**doc, "resume": str(tmp_path)}))
    assert not (tmp_path / "none").exists()  # refused before any run folder was made


def test_save_steps_alone_saves_checkpoints_and_a_finished_run_is_never_resumed(tiny_model_dir, ticket_files, tmp_path):
    doc = document(tiny_model_dir, ticket_files, tmp_path / "run")
    del doc["train"]["save_strategy"]  # save_steps alone asks for checkpoints every 2 steps
    doc["train"]["max_steps"] = 4
    recipe = recipe_from_dict(doc)
    assert recipe.train_settings()["save_strategy"] == "steps"
    run_dir = sft.run(recipe).run_dir
    assert (run_dir / "checkpoints" / "checkpoint-2" / MARKER).is_file()
    adapter = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    for target in (run_dir, run_dir / "checkpoints" / "checkpoint-2"):
        with pytest.raises(TunerError, match="is a finished run"):
            sft.run(recipe.model_copy(update={"resume": str(target)}))
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == adapter  # left as it was


def test_training_in_a_worker_thread_runs_without_signal_handlers(tiny_model_dir, ticket_files, tmp_path, capsys):
    import threading

    doc = document(tiny_model_dir, ticket_files, tmp_path / "thread")
    doc["train"]["max_steps"] = 2
    recipe = recipe_from_dict(doc)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=sft.run(recipe)))
    worker.start()
    worker.join()
    assert outcome["result"].metrics["train_steps"] == 2
    assert "cannot be caught here" in capsys.readouterr().out


@pytest.mark.parametrize("stop_at", [4, 3])  # mid-way through the second epoch; at the end of the first
def test_resume_in_the_second_epoch_trains_the_rows_of_an_uninterrupted_run(
    tiny_model_dir, ticket_files, tmp_path, signal_at_step, stop_at
):
    def two_epochs(output_dir):
        doc = document(tiny_model_dir, ticket_files, output_dir)
        # 12 rows in batches of 4: 3 steps an epoch, each epoch's rows in a new length-grouped order.
        doc["train"].update(max_steps=-1, num_train_epochs=2)
        doc["data"]["max_train_samples"] = 12
        return doc

    whole, _, before, after = stopped_and_resumed(sft.run, two_epochs, tmp_path, signal_at_step, stop_at, STEPS)
    assert whole.metrics["train_steps"] == STEPS
    for step in range(stop_at + 1, STEPS + 1):  # the second epoch's order drawn again as it was the first time
        assert after[step] == pytest.approx(before[step], rel=1e-3, abs=1e-4), (step, before, after)


def test_a_second_signal_at_once_is_the_same_ctrl_c_under_a_launcher(monkeypatch, capsys):
    import time

    # Ctrl-C under torchrun: the terminal signals the worker, and torchrun forwards the signal again at once.
    several = StopOnSignal(processes=2)
    several._handle(signal.SIGINT, None)
    several._handle(signal.SIGINT, None)  # the forwarded copy: still saving a checkpoint
    assert several.signum == signal.SIGINT
    later = time.monotonic() + StopOnSignal.SAME_SIGNAL_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C a moment later stops at once
        several._handle(signal.SIGINT, None)
    monkeypatch.undo()
    alone = StopOnSignal()
    alone._handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # one process: the second signal always stops at once
        alone._handle(signal.SIGINT, None)
    assert capsys.readouterr().out.count("saving a checkpoint after this step") == 2


def test_ctrl_c_outside_training_ends_in_one_paragraph_and_leaves_a_run_compare_can_use(
    tiny_model_dir, ticket_files, tmp_path, monkeypatch
):
    # Trial point 6: Ctrl-C while loading or scoring gave click's "Aborted!", exit 1, and a half-made run folder that
    # every later `tuner compare runs/` refused.
    from click.testing import CliRunner

    import tuner.recipes.fewshot
    import tuner.recipes.sft
    from tuner.cli import cli

    from helpers import write_recipe

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    runs = tmp_path / "runs"
    train_file, test_file = ticket_files
    sft_recipe = write_recipe(
        tmp_path / "sft.yaml", recipe_document(tiny_model_dir, train_file, test_file, runs / "sft")
    )
    monkeypatch.setattr(tuner.recipes.sft, "evaluate", ctrl_c)  # while scoring, after training
    scoring = CliRunner().invoke(cli, ["sft", str(sft_recipe)])
    assert scoring.exit_code == 130 and "Traceback" not in scoring.output and "Aborted" not in scoring.output
    assert (
        scoring.stderr.strip().splitlines()[-1].startswith("stopped: ")
        and f"tuner eval {sft_recipe} --adapter {runs / 'sft'}" in scoring.stderr
    )
    assert (runs / "sft" / "adapter" / "adapter_config.json").is_file() and (runs / "sft" / "manifest.json").is_file()

    document = recipe_document(tiny_model_dir, train_file, test_file, runs / "fewshot")
    document.update(method="fewshot", train={}, fewshot={"k": 1})
    fewshot_recipe = write_recipe(tmp_path / "fewshot.yaml", document)
    monkeypatch.setattr(tuner.recipes.fewshot, "load_model", ctrl_c)  # while loading the model
    loading = CliRunner().invoke(cli, ["fewshot", str(fewshot_recipe)])
    last = loading.stderr.strip().splitlines()[-1]
    assert loading.exit_code == 130 and last.startswith("stopped: Ctrl-C before the command finished")
    monkeypatch.undo()
    assert CliRunner().invoke(cli, ["fewshot", str(fewshot_recipe)]).exit_code == 0  # runs/fewshot-2... or fewshot
    compared = CliRunner().invoke(cli, ["compare", str(runs)])
    assert compared.exit_code == 0, compared.output
    assert (
        f"left out {runs / 'sft'}: unfinished (no metrics.json); its training finished but scoring" in compared.output
    )
    assert "| fewshot" in compared.output


def test_the_interrupted_message_gives_the_exact_command_that_resumes(
    tiny_model_dir, ticket_files, tmp_path, signal_at_step
):
    # Trial point 22: "with the same --set options" left the user to retype them.
    from click.testing import CliRunner

    from tuner.cli import cli

    from helpers import write_recipe

    recipe = write_recipe(tmp_path / "sft.yaml", document(tiny_model_dir, ticket_files, tmp_path / "run"))
    signal_at_step(2)
    stopped = CliRunner().invoke(cli, ["sft", str(recipe), "--set", "train.learning_rate=0.02", "--set", "seed=3"])
    last = stopped.stderr.strip().splitlines()[-1]
    assert stopped.exit_code == 128 + signal.SIGTERM and last.startswith("stopped: interrupted by SIGTERM at step 2")
    assert f"That is: `tuner sft {recipe} --set train.learning_rate=0.02 --set seed=3 --resume`." in last
