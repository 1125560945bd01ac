"""The conformance matrix: one row per model family (tests/families.py: Llama 3, Mistral, Qwen2, Qwen3, Gemma 3, Phi-3,
tiny random models with their family's tokenizer kind and template quirks). For each: trained ids are the ids of the
whole rendering, the loss covers the answers and their end of turn and nothing the user wrote, the evaluator scores
exactly the tokens training labelled in the context training saw, choice scores equal one forward pass each (past a
sliding window too), and a trained run scores, exports merged, and writes or refuses GGUF by name."""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import pytest

from tuner import TunerError, export, recipe_from_dict
from tuner.evaluator import evaluate
from tuner.families import without_reasoning
from tuner.likelihood import encode_pair, loglikelihoods, tree_attention
from tuner.models import load_model
from tuner.rendering import continuation, generation_prompt, render_prompt, sft_rows
from tuner.runs import read_run
from tuner.schema import EvalConfig, ModelConfig

from families import FAMILIES, WINDOW, build
from helpers import TEAMS, recipe_document, ticket_rows, write_jsonl

NAMES = sorted(FAMILIES)
PROMPT = [{"role": "user", "content": "My card was charged twice."}]
CHAT = PROMPT + [
    {"role": "assistant", "content": "billing"},
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Fine, thanks"},
]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build(name, root / name) for name in NAMES}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    return {
        name: load_model(ModelConfig(name_or_path=str(folder), dtype="fp32")) for name, folder in family_dirs.items()
    }


def _whole_ids(tokenizer, messages):
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _trainer(family_dirs, loaded, name, method, rows, tmp_path, **sections):
    from tuner.trainers import build_trainer

    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(4))
    document = recipe_document(family_dirs[name], train, None, tmp_path / "run", **sections)
    document["method"] = method
    recipe = recipe_from_dict(document)
    fresh = load_model(ModelConfig(name_or_path=str(family_dirs[name]), dtype="fp32"))  # a trainer wraps its model
    trainer, _ = build_trainer(recipe, fresh, datasets.Dataset.from_list(rows), tmp_path / "run")
    return trainer


@pytest.mark.parametrize("name", NAMES)
def test_a_multi_turn_chat_trains_on_the_ids_of_its_whole_rendering(loaded, name):
    tokenizer = loaded[name].tokenizer
    [row] = sft_rows(datasets.Dataset.from_list([{"messages": CHAT}]), tokenizer)
    assert row["input_ids"] == _whole_ids(tokenizer, CHAT)  # not piece by piece (a `▁` before every piece)
    trained = tokenizer.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"]) if m])
    assert "Fine, thanks" in trained and "charged" not in trained and "Hello there" not in trained
    last = max(n for n, trains in enumerate(row["assistant_masks"]) if trains)
    last_trained = tokenizer.convert_ids_to_tokens(row["input_ids"][last - 2 : last + 1])
    assert any(
        token in last_trained for token in (tokenizer.eos_token, "<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>")
    ), last_trained  # the end of turn is trained too
    # Templates that render each turn as a beginning of the whole train on every answer; the others (Qwen3 renders
    # a think block on the last answer only, Phi-3 closes a whole chat with EOS) on the last, the chat as context.
    assert ("billing" in trained) == (name not in ("qwen3", "phi3"))


@pytest.mark.parametrize("name", NAMES)
def test_the_evaluator_scores_the_tokens_sft_labelled_in_the_context_it_trained_on(family_dirs, loaded, name, tmp_path):
    tokenizer = loaded[name].tokenizer
    trainer = _trainer(
        family_dirs,
        loaded,
        name,
        "sft",
        [{"prompt": PROMPT, "completion": [{"role": "assistant", "content": "billing"}]}],
        tmp_path,
    )
    trained = trainer.train_dataset[0]
    assert trained["input_ids"] == _whole_ids(tokenizer, PROMPT + [{"role": "assistant", "content": "billing"}])
    row = {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "billing"}]}
    context, answer = encode_pair(tokenizer, render_prompt(PROMPT, tokenizer), continuation(row, "billing"))
    assert trained["input_ids"][: len(context) + len(answer)] == context + answer
    labelled = [label != -100 for label in trained["labels"]]  # TRL's labels: -100 where no loss is taken
    assert all(labelled[len(context) : len(context) + len(answer)]) and labelled[-1]  # the end of turn too
    # Nothing up to the assistant header is trained (TRL trains what follows it: a think block a template opens the
    # answer with too, which the evaluator then reads as context, as it is at inference).
    header = tokenizer(generation_prompt(PROMPT, tokenizer), add_special_tokens=False)["input_ids"]
    assert not any(labelled[: len(header)]) and trained["input_ids"][: len(header)] == header


@pytest.mark.parametrize("name", NAMES)
def test_dpo_pairs_train_on_the_whole_rendering_and_are_scored_there(family_dirs, loaded, name, tmp_path):
    tokenizer = loaded[name].tokenizer
    chosen, rejected = [{"role": "assistant", "content": "billing"}], [{"role": "assistant", "content": "returns"}]
    trainer = _trainer(
        family_dirs, loaded, name, "dpo", [{"prompt": PROMPT, "chosen": chosen, "rejected": rejected}], tmp_path
    )
    trained = trainer.train_dataset[0]
    assert trained["prompt_ids"] + trained["chosen_ids"] == _whole_ids(tokenizer, PROMPT + chosen)
    context, answer = encode_pair(tokenizer, render_prompt(PROMPT, tokenizer), "billing")
    assert (trained["prompt_ids"] + trained["chosen_ids"])[: len(context) + len(answer)] == context + answer
    assert len(context) >= len(trained["prompt_ids"])  # the scored answer lies in what DPO trained on


@pytest.mark.parametrize("name", NAMES)
def test_choice_scores_equal_one_forward_pass_each_past_a_sliding_window(loaded, name):
    import torch

    model, tokenizer = loaded[name].model, loaded[name].tokenizer
    long = " ".join(["The parcel never arrived and tracking shows nothing."] * 3)
    contexts = [
        render_prompt([{"role": "user", "content": text}], tokenizer) for text in ("My card was charged twice.", long)
    ]
    pairs = [(context, team) for context in contexts for team in TEAMS]
    assert len(tokenizer(contexts[1], add_special_tokens=False)["input_ids"]) > WINDOW
    scores = loglikelihoods(model, tokenizer, pairs, batch_size=4)
    for (context, answer), score in zip(pairs, scores):
        context_ids, answer_ids = encode_pair(tokenizer, context, answer)
        with torch.no_grad():
            logits = model(torch.tensor([context_ids + answer_ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        direct = sum(float(logprobs[len(context_ids) + i - 1, t]) for i, t in enumerate(answer_ids))
        assert score == pytest.approx(direct, abs=2e-4)


@pytest.mark.parametrize("name", NAMES)
def test_scores_asked_whole_equal_the_tree_attention_scores(loaded, name):
    # `tree=False` is the GPU check's reference: each answer run whole with a padding mask, on any kernel.
    model, tokenizer = loaded[name].model, loaded[name].tokenizer
    context = render_prompt([{"role": "user", "content": "My card was charged twice."}], tokenizer)
    pairs = [(context, answer) for answer in ("billing", "billing dispute", "shipping delay", "shipping")]
    tree = loglikelihoods(model, tokenizer, pairs, batch_size=4)
    whole = loglikelihoods(model, tokenizer, pairs, batch_size=4, tree=False)
    assert whole == pytest.approx(tree, abs=2e-4) and len(set(whole)) == len(pairs)


def test_flash_attention_and_sliding_windows_never_get_the_tree_mask():
    groups = {tuple(range(40)): [(0, [1, 2]), (1, [1, 3])]}
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2", sliding_window=None))
    window = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa", sliding_window=32))
    sdpa = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa", sliding_window=None))
    assert not tree_attention(flash, groups) and not tree_attention(window, groups) and tree_attention(sdpa, groups)


def test_generate_answers_without_the_reasoning_block(loaded, monkeypatch):
    import tuner.evaluator

    model, tokenizer = loaded["qwen3"].model, loaded["qwen3"].tokenizer
    monkeypatch.setattr(
        tuner.evaluator,
        "generate_texts",
        lambda model, tokenizer, prompts, *args, **kwargs: (
            ["<think>\n\n</think>\n\nbilling"] * len(prompts),
            3,
            [False] * len(prompts),
        ),
    )
    rows = [{"prompt": PROMPT, "completion": [{"role": "assistant", "content": "billing"}]}]
    result = evaluate(model, tokenizer, rows, EvalConfig(task="generate"))
    assert result.predictions[0]["prediction"] == "billing" and result.metrics["accuracy"] == 1.0
    assert without_reasoning("<thinking>unfinished") == ""
    # Generation starts where training's answer does: after the template's empty think block.
    assert result.predictions[0]["prompt"].endswith("<think>\n\n</think>\n\n")


@pytest.mark.parametrize("name", NAMES)
def test_a_trained_run_scores_exports_merged_and_writes_or_refuses_gguf(family_dirs, name, tmp_path):
    from tuner.recipes import sft

    train = write_jsonl(tmp_path / "data" / "train.jsonl", ticket_rows(16))
    test = write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(6, offset=100))
    document = recipe_document(family_dirs[name], train, test, tmp_path / "runs" / "sft")
    document["train"]["max_length"] = 128
    result = sft.run(recipe_from_dict(document))
    assert result.metrics["eval"]["rows"] == 6 and 0 <= result.metrics["eval"]["accuracy"] <= 1
    merged = export(result.run_dir, to="merged", out=tmp_path / "merged")
    assert merged.info["check"]["passed"] and merged.info["check"]["max_abs_logprob_difference"] < 1e-4
    if name in ("llama", "qwen2", "qwen3"):
        written = export(result.run_dir, to="gguf", quant="f32", out=tmp_path / "gguf")
        assert written.info["check"]["passed"]
        from gguf import GGUFReader

        fields = GGUFReader(next((tmp_path / "gguf").glob("*.gguf"))).fields
        # the rule of the tokenizer the run trained with: transformers gives a Qwen2 model Qwen2's own splitting rule
        assert fields["tokenizer.ggml.pre"].contents() == {"qwen2": "qwen2"}.get(name, "gpt-2")
        assert fields["tokenizer.ggml.add_bos_token"].contents() == (name == "llama")
    else:  # SentencePiece tokenizers, Gemma's and Phi-3's layouts: refused by name, with the way out
        with pytest.raises(TunerError, match="convert_hf_to_gguf.py") as refused:
            export(result.run_dir, to="gguf", quant="f32", out=tmp_path / "gguf")
        named = {"mistral": "byte-level BPE models only", "gemma3": "'gemma3_text'", "phi3": "'phi3'"}[name]
        assert named in str(refused.value)


def test_plain_text_answers_are_scored_after_the_separator_they_trained_with():
    # TRL trains prompt + completion as the row has them; the evaluator scores the same text.
    for completion in ("positive", " positive", "  positive"):
        row = {"prompt": "Review: great\nSentiment:", "completion": completion}
        assert row["prompt"] + continuation(row, completion.lstrip(" ")) == row["prompt"] + completion
    label_row = {"prompt": "Review: great\nSentiment:", "label": "positive"}  # joined by the data loader
    assert continuation(label_row, "positive") == " positive"


def _without_template(folder):
    import shutil

    target = folder.parent / f"{folder.name}-base"
    shutil.copytree(folder, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    return target


def test_a_base_model_renders_plain_text_unless_the_recipe_names_a_template(family_dirs, tmp_path, capsys):
    base = _without_template(family_dirs["gemma3"])
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(8))
    plain = recipe_from_dict(recipe_document(base, train, None, tmp_path / "run"))
    assert plain.data.chat is False and "has no chat template" in capsys.readouterr().out
    named = recipe_from_dict(
        {
            **recipe_document(base, train, None, tmp_path / "run"),
            "model": {"name_or_path": str(base), "chat_template": "gemma"},
        }
    )
    assert named.data.chat is True
    tokenizer = load_model(named.model).tokenizer
    assert render_prompt(PROMPT, tokenizer).endswith("<start_of_turn>model\n")
    document = recipe_document(base, train, None, tmp_path / "run")
    document["data"]["chat"] = True  # refused when the recipe is read: `tuner validate` says what the run would
    with pytest.raises(TunerError, match="no chat template"):
        recipe_from_dict(document)
    with pytest.raises(TunerError, match="model.chat_template"):
        recipe_from_dict({**document, "model": {"name_or_path": str(base), "chat_template": "nosuch"}})


def test_an_evaluation_that_fails_after_training_keeps_the_run(family_dirs, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import tuner.recipes.sft
    from tuner.cli import cli

    train = write_jsonl(tmp_path / "data" / "train.jsonl", ticket_rows(8))
    test = write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(4, offset=100))
    recipe_path = tmp_path / "sft.yaml"
    recipe_path.write_text(json.dumps(recipe_document(family_dirs["llama"], train, test, tmp_path / "runs" / "sft")))

    def broken(*args, **kwargs):
        raise RuntimeError("index 12 is out of bounds")  # what flash attention's unpadding raised on the tree mask

    monkeypatch.setattr(tuner.recipes.sft, "evaluate", broken)
    failed = CliRunner().invoke(cli, ["sft", str(recipe_path)])
    run_dir = tmp_path / "runs" / "sft"
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    assert "adapter is saved" in failed.output and f"--adapter {run_dir}" in failed.output
    assert (run_dir / "adapter" / "adapter_config.json").is_file() and (run_dir / "manifest.json").is_file()
    assert "out of bounds" in json.loads((run_dir / "evaluation_error.json").read_text())["error"]
    with pytest.raises(TunerError, match="evaluation failed"):
        read_run(run_dir)
    monkeypatch.undo()
    scored = CliRunner().invoke(
        cli, ["eval", str(recipe_path), "--adapter", str(run_dir), "--output-dir", str(tmp_path / "scored")]
    )
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["eval"]["rows"] == 4


def test_a_gguf_that_llama_cpp_tokenizes_otherwise_is_refused(loaded, monkeypatch, tmp_path):
    import importlib.machinery
    import sys
    import types

    from tuner.exports import llama_cpp_tokens

    tokenizer = loaded["llama"].tokenizer
    texts = ["order 1042, 3.5 items!"]

    def fake_llama_cpp(tokenize):
        module = types.ModuleType("llama_cpp")
        module.__spec__ = importlib.machinery.ModuleSpec("llama_cpp", None)
        module.Llama = lambda **kwargs: SimpleNamespace(tokenize=tokenize)
        monkeypatch.setitem(sys.modules, "llama_cpp", module)

    same = lambda data, add_bos, special: tokenizer(data.decode(), add_special_tokens=add_bos)["input_ids"]
    fake_llama_cpp(same)
    assert llama_cpp_tokens(tmp_path / "model.gguf", tokenizer, texts) == {
        "rows": 1,
        "same_tokens": True,
        "same_bos": True,
    }
    fake_llama_cpp(lambda data, add_bos, special: same(data, add_bos, special)[::-1])  # the default split rule, say
    with pytest.raises(TunerError, match="llama.cpp tokenizes check text 0 otherwise"):
        llama_cpp_tokens(tmp_path / "model.gguf", tokenizer, texts)


def test_the_quickstart_is_scored_in_the_contexts_it_always_was(smollm2_tokenizer_dir):
    # ChatML opens an answer with nothing, so SmolLM2's quickstart figures stand: each eval row's scoring context is
    # its generation prompt, as before the evaluator cut the rendered conversation where the answer starts.
    from transformers import AutoTokenizer

    from tuner import load_recipe
    from tuner.data.rows import scoring_rows
    from tuner.data.splits import load_data

    from helpers import ROOT

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    recipe = load_recipe(ROOT / "recipes" / "quickstart" / "sft.yaml")
    rows = scoring_rows(load_data(recipe.data, seed=0).eval)
    assert len(rows) == 150
    assert all(render_prompt(row["prompt"], tokenizer) == generation_prompt(row["prompt"], tokenizer) for row in rows)
