"""The typed recipe: its sections, defaults and validation, and `load_recipe(path, overrides)`.

Everything here runs before any model loads. A recipe that passes `load_recipe` has known keys of the right types,
data files that exist, and `train:` keys that the method's TRL config accepts.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import TunerError

METHODS = ("sft", "dpo", "fewshot")
FORMATS = ("auto", "messages", "prompt_completion", "alpaca", "sharegpt", "classification", "preference")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which base model to load and how."""

    name_or_path: str = Field(description="Hub id, local folder, a .gguf file, or pkg://DIST/FILE for a file inside "
                                          "an installed Python package (the offline SmolLM2 GGUF).")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPUs.")
    quantize: Literal["4bit", "8bit"] | None = Field(
        None, description="Load the base weights with bitsandbytes (4bit = NF4, QLoRA with an adapter).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with a hub model. Off unless asked; "
                                    "a warning is printed when on.")
    allow_pickle: bool = Field(False, description="Load pickled (.bin) weights when a model has no safetensors. "
                               "Off: unpickling can run code.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    adapter: str | None = Field(None, description="DPO: a `tuner sft` run folder whose adapter training continues "
                                                  "from (the SFT policy is then the reference).")


class SourceConfig(_Section):
    """One data source: a local file, a hub data set, or rows in memory (a list of dicts or a datasets.Dataset)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: str | None = Field(None, description="Local JSON, JSONL, CSV, TSV or Parquet file.")
    hub: str | None = Field(None, description="Hub data set name, loaded with datasets.load_dataset.")
    subset: str | None = Field(None, description="Hub data set configuration name.")
    split: str = Field("train", description="Split of a hub data set.")
    rows: Any = Field(None, exclude=True, description="In-memory rows (notebooks): a list of dicts or a Dataset.")

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, value: Any) -> Any:
        # `train: data/train.jsonl` is shorthand for `train: {path: data/train.jsonl}`; a list or Dataset given
        # from a notebook is shorthand for `{rows: ...}`.
        if isinstance(value, str):
            return {"path": value}
        if isinstance(value, list) or type(value).__name__ == "Dataset":
            return {"rows": value}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SourceConfig:
        given = [name for name in ("path", "hub", "rows") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `path` (a local file), `hub` (a hub data set name) or `rows` "
                             "(in-memory rows)")
        return self

    def describe(self) -> str:
        """A short name for messages: the file, the hub name, or 'in-memory rows'."""
        if self.path is not None:
            return self.path
        if self.hub is not None:
            return f"hub data set {self.hub}" + (f" ({self.subset})" if self.subset else "") + f" split {self.split}"
        return "in-memory rows"


class DataConfig(_Section):
    """Where the rows come from and how they become prompts and targets."""

    train: SourceConfig = Field(description="Training rows (and the pool few-shot examples are drawn from).")
    eval: SourceConfig | None = Field(None, description="Held-out rows; if absent, `eval_fraction` of train.")
    format: Literal[FORMATS] = Field("auto", description="Row format; auto detects it from the columns.")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Seeded share of train held out when no eval file.")
    max_train_samples: int | None = Field(None, gt=0, description="Cap on training rows, for quick runs.")
    max_eval_samples: int | None = Field(None, gt=0, description="Cap on eval rows, for quick runs.")
    text_column: str | None = Field(None, description="Classification: the text column (detected if absent).")
    label_column: str = Field("label", description="Classification: the label column.")
    label_names: list[str] | None = Field(None, description="Classification: names for integer labels 0, 1, ...")
    prompt_template: str = Field("{text}", description="Classification: prompt built from the text, `{text}` "
                                                       "marks where it goes.")
    choices_column: str | None = Field(None, description="Multiple choice: a column holding each row's allowed "
                                                          "answers (kept as `choices`).")
    system_prompt: str | None = Field(None, description="System message put before every chat prompt.")
    chat: bool = Field(True, description="Render rows through the model's chat template (false: plain text).")

    @field_validator("prompt_template")
    @classmethod
    def _has_text_slot(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("must contain `{text}`, where the row's text goes")
        return value


class AdapterConfig(_Section):
    """The LoRA-family adapter trained on top of the frozen base model."""

    type: Literal["lora", "dora", "rslora"] = Field("lora", description="lora, dora (weight-decomposed) or rslora "
                                                                        "(rank-stabilised scaling).")
    r: int = Field(16, gt=0, description="Rank of the update matrices.")
    alpha: float = Field(32, gt=0, description="Scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt: all-linear or a list of "
                                                                      "module names.")
    modules_to_save: list[str] | None = Field(None, description="Modules trained in full and saved with the adapter.")


class EvalConfig(_Section):
    """How held-out rows are scored (used by the evaluator)."""

    task: Literal["choice", "generate", "preference"] | None = Field(None, description="Scoring task.")
    choices: list[str] | None = Field(None, description="Allowed answers for task: choice.")
    max_new_tokens: int = Field(32, gt=0, description="Generation cap for task: generate.")
    answer_regex: str | None = Field(None, description="Regex whose first group is the answer (generate).")
    batch_size: int = Field(16, gt=0, description="Rows scored per forward pass (sorted by length first).")

    @field_validator("answer_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression ({exc})") from None
        return value


class FewshotConfig(_Section):
    """In-context examples for method fewshot, drawn from the train split only."""

    k: int = Field(5, ge=0, description="Examples per prompt; 0 is the zero-shot baseline.")
    select: Literal["random", "first", "similar"] = Field("random", description="random (seeded), first, or the "
                                                                                "most similar by BM25.")
    seed: int = Field(0, description="Seed of the random selection.")
    as_chat: bool = Field(True, description="Examples as earlier chat turns (true) or one plain-text prompt.")


DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


class PreferenceConfig(_Section):
    """Method dpo's own settings, handed to TRL's DPOConfig."""

    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    loss_type: Literal[DPO_LOSSES] | list[Literal[DPO_LOSSES]] = Field(
        "sigmoid", description="DPO loss (sigmoid is the paper's); a list combines several with `loss_weights`.")
    loss_weights: list[float] | None = Field(None, description="Weights of combined losses.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust DPO / EXO label smoothing.")
    ld_alpha: float | None = Field(None, ge=0, le=1, description="LD-DPO weight of verbose tokens.")
    f_divergence_type: Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"] = Field(
        "reverse_kl", description="f-DPO regulariser.")
    use_weighting: bool = Field(False, description="WPO weighting of pairs.")
    precompute_ref_log_probs: bool = Field(False, description="Score the reference once before training.")


class Recipe(_Section):
    """One run: a method and the sections every method shares."""

    method: Literal[METHODS] = Field(description="sft, dpo or fewshot.")
    model: ModelConfig
    data: DataConfig
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: dict[str, Any] = Field(default_factory=dict, description="Keys of TRL's SFTConfig / DPOConfig.")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    fewshot: FewshotConfig = Field(default_factory=FewshotConfig, description="Used by method fewshot.")
    dpo: PreferenceConfig = Field(default_factory=PreferenceConfig, description="Used by method dpo.")
    output_dir: str = Field(description="Run folder; a new suffix is added if it already holds a run.")
    seed: int = Field(0, description="Seed for data splits, adapter init and training.")
    resume: str | None = Field(None, description="sft/dpo: continue an interrupted run from a checkpoint: `auto` "
                               "(the newest unfinished run of output_dir) or a checkpoint or run folder.")

    # Where the recipe came from, for messages; not a YAML key.
    source: str = Field("<recipe>", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _adapter_present(cls, data: Any) -> Any:
        if isinstance(data, dict) and "adapter" in data and data["adapter"] is None:
            quantized = isinstance(data.get("model"), dict) and data["model"].get("quantize")
            raise ValueError(f"`adapter` is empty{' while `model.quantize` is set' if quantized else ''}: tuner "
                             f"trains adapters only (with `model.quantize` that is QLoRA, a quantised base cannot "
                             f"be trained without one). Remove the `adapter:` line to use the defaults, or give "
                             f"its keys")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.model.adapter is not None and self.method != "dpo":
            raise ValueError("`model.adapter` (continue from a run's adapter) is for method dpo; for scoring an "
                             "adapter use `tuner eval --adapter`")
        if self.model.adapter is not None and "adapter" in self.model_fields_set:
            raise ValueError("`adapter` would be ignored: with `model.adapter` the run's own adapter trains on, with "
                             "its rank and targets. Remove the `adapter` section")
        if self.resume is not None and self.method == "fewshot":
            raise ValueError("`resume` is for training methods (sft, dpo); method fewshot has nothing to resume")
        if self.method == "fewshot" and self.eval.task is None:
            raise ValueError("method fewshot only evaluates: set `eval.task` (choice, generate or preference)")
        if self.eval.task == "choice" and not (self.eval.choices or self.data.label_names or self.data.choices_column):
            raise ValueError("eval.task choice needs the allowed answers: set `eval.choices`, `data.label_names` or "
                             "`data.choices_column`")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data, as written to the run folder."""
        return self.model_dump(mode="json")


# Keys set by tuner itself; a recipe that sets them would be silently overridden, so they are refused.
_RESERVED_TRAIN_KEYS = {"output_dir", "seed", "bf16", "fp16"}


def trl_config_class(method: str):
    """The TRL config class whose fields the `train:` section may set."""
    if method == "dpo":
        from trl import DPOConfig
        return DPOConfig
    from trl import SFTConfig
    return SFTConfig


# Sizes TRL would accept and then fail on (or silently misuse) deep inside training.
_POSITIVE_TRAIN_KEYS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                        "num_train_epochs", "logging_steps", "save_steps", "per_device_eval_batch_size")


def _check_train_values(recipe: Recipe) -> None:
    for key in _POSITIVE_TRAIN_KEYS:
        value = recipe.train.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TunerError(f"{recipe.source}: key `train.{key}` must be a number (got {value!r}). Fix the recipe.")
        if value <= 0:
            raise TunerError(f"{recipe.source}: key `train.{key}` must be greater than 0 (got {value!r}). Fix the "
                             f"recipe.")
    max_steps = recipe.train.get("max_steps")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps == 0
                                  or max_steps < -1):
        raise TunerError(f"{recipe.source}: key `train.max_steps` must be a positive whole number (or -1 for "
                         f"epochs; got {max_steps!r}). Fix the recipe.")


def trl_fields(method: str) -> tuple[str, set[str]]:
    """The name and field names of the TRL config class for `method`.

    Importing TRL takes seconds (it imports torch and transformers), so the names are cached per TRL and
    transformers version under the tuner cache: `tuner validate` then answers without importing either.
    """
    from importlib import metadata

    from .models import cache_dir

    try:
        tag = f"trl-{metadata.version('trl')}-transformers-{metadata.version('transformers')}"
    except metadata.PackageNotFoundError:
        tag = None
    cache = cache_dir() / "trl-fields" / f"{tag}.json"
    if tag and cache.is_file():
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if method in cached:
                return cached[method]["class"], set(cached[method]["fields"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache is rebuilt below
    import dataclasses

    fields = {}
    for name in ("sft", "dpo"):
        cls = trl_config_class(name)
        fields[name] = {"class": cls.__name__, "fields": sorted(f.name for f in dataclasses.fields(cls) if f.init)}
    if tag:
        try:
            from .runs import write_json

            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, fields)
        except OSError:
            pass  # a read-only cache only costs speed
    return fields[method]["class"], set(fields[method]["fields"])


def _check_train_keys(recipe: Recipe) -> None:
    if recipe.method == "fewshot":
        if recipe.train:
            raise TunerError(f"{recipe.source}: key `train` is set, but method fewshot does no training. Remove the "
                             f"`train:` section or use method sft.")
        return
    class_name, known = trl_fields(recipe.method)
    for key in recipe.train:
        if key in PreferenceConfig.model_fields:
            raise TunerError(f"{recipe.source}: key `train.{key}` belongs in the `dpo:` block, where it is checked; "
                             f"move it to `dpo.{key}`.")
        if key in _RESERVED_TRAIN_KEYS:
            where = {"output_dir": "the top-level `output_dir`", "seed": "the top-level `seed`"}.get(
                key, "`model.dtype` (auto picks the precision from the hardware)")
            raise TunerError(f"{recipe.source}: key `train.{key}` is set by tuner; use {where} instead.")
        if key == "packing" and recipe.method == "dpo":
            raise TunerError(f"{recipe.source}: key `train.packing`: DPO does not pack sequences (each row is a "
                             f"chosen/rejected pair scored side by side); packing is for method sft. Remove it.")
        if key not in known:
            raise TunerError(f"{recipe.source}: key `train.{key}` is not a field of TRL's {class_name}."
                             f"{_did_you_mean(key, known)} Fix or remove it (see the {class_name} documentation "
                             f"for the accepted keys).")


# Names users bring from peft, other tools or older TRL, which spelling distance alone would not find.
_ALIASES = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "torch_dtype": "dtype",
            "model_name": "name_or_path", "model_name_or_path": "name_or_path", "lr": "learning_rate",
            "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
            "max_seq_length": "max_length", "max_seq_len": "max_length"}


def _did_you_mean(key: str, known) -> str:
    if _ALIASES.get(str(key)) in known:
        return f" Did you mean `{_ALIASES[str(key)]}`?"
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def _section_fields(path: tuple) -> set[str]:
    """Field names allowed at a key path, for did-you-mean suggestions."""
    model: type[BaseModel] | None = Recipe
    for part in path:
        field = model.model_fields.get(str(part)) if model else None
        if field is None:
            return set()
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return {n for n, f in model.model_fields.items() if not f.exclude} if model else set()


_UNION_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "SourceConfig", "ModelConfig", "DataConfig",
               "AdapterConfig", "EvalConfig", "FewshotConfig", "PreferenceConfig", "Recipe"}


def _explain(error: ValidationError, source: str) -> TunerError:
    lines = []
    for item in error.errors():
        # pydantic names the union member it tried (SourceConfig, str, list[str]); drop those from the key path.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden" and loc:
            hint = _did_you_mean(loc[-1], _section_fields(loc[:-1]))
            allowed = ", ".join(sorted(_section_fields(loc[:-1])))
            lines.append(f"key `{path}` is not a known key.{hint} Known keys here: {allowed}.")
        elif item["type"] == "missing":
            lines.append(f"key `{path}` is required but missing.")
        else:
            got = item.get("input")
            got_text = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"key `{path}`: {message}{got_text}." if loc else f"{message}.")
    unique = list(dict.fromkeys(lines))
    return TunerError(f"{source}: " + " ".join(unique) + " Fix the recipe and run again.")


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TunerError(f"--set {text}: expected KEY.PATH=VALUE, for example --set train.max_steps=2.")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TunerError(f"--set {text}: the key path is empty; expected KEY.PATH=VALUE.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(document: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of a recipe document with `KEY.PATH=VALUE` overrides applied (values parsed as YAML)."""
    document = copy.deepcopy(document)
    for text in overrides:
        parts, value = _parse_override(text)
        node = document
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("train", "eval") and parts[0] == "data":
                child = {"path": child}  # data.train=path shorthand being refined with data.train.split=...
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return document


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file with YAML safe loading; errors name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise TunerError(f"{path}: recipe file not found. Check the path (it is relative to the current folder "
                         f"{Path.cwd()}).")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TunerError(f"{path}: not valid YAML{where}: {problem}. Fix the syntax and run again.") from None
    except UnicodeDecodeError:
        raise TunerError(f"{path}: not UTF-8 text. Save the recipe as UTF-8 and run again.") from None
    if document is None:
        raise TunerError(f"{path}: the recipe is empty. Start from one in recipes/ and edit it.")
    if not isinstance(document, dict):
        raise TunerError(f"{path}: a recipe is a YAML mapping of sections (method, model, data, ...), "
                         f"not a {type(document).__name__}.")
    return document


def recipe_from_dict(document: dict[str, Any], source: str = "<recipe>", check_files: bool = True) -> Recipe:
    """Validate a recipe given as a dict (a notebook's way in); same checks as `load_recipe`."""
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as exc:
        raise _explain(exc, source) from None
    recipe.source = source
    _check_train_keys(recipe)
    _check_train_values(recipe)
    if check_files:
        _check_files(recipe)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file; raises TunerError with the file and key path on any problem.

    `overrides` are `KEY.PATH=VALUE` strings, as given to the CLI's `--set`, applied before validation.
    """
    document = apply_overrides(read_yaml(path), overrides)
    return recipe_from_dict(document, source=str(path))


def _check_files(recipe: Recipe) -> None:
    for name in ("train", "eval"):
        source = getattr(recipe.data, name)
        if source is not None and source.path is not None and not Path(source.path).is_file():
            raise TunerError(f"{recipe.source}: key `data.{name}.path`: data file {source.path} does not exist "
                             f"(paths are relative to the current folder {Path.cwd()}). Fix the path or create "
                             f"the file.")
    from .models import resolve_model_path  # light: checks paths, loads nothing
    resolve_model_path(recipe.model.name_or_path, recipe.source)
    if recipe.model.adapter is not None:
        from .runs import read_adapter_run
        read_adapter_run(recipe.model.adapter, recipe.model, recipe.source)
