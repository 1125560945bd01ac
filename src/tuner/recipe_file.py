"""Reading a recipe: the YAML file, `--set` overrides, messages with key paths and did-you-mean, and the checks the
schema cannot make alone: `train:` keys against the method's TRL config, the data format's name, files that must
exist. `load_recipe` and `recipe_from_dict` return a `schema.Recipe` that passed all of them; no model loads here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .adapters import read_adapter_run
from .data.formats import FORMATS
from .defaults import RESERVED_TRAIN_KEYS, TRAINING_METHODS
from .errors import TunerError
from .files import cache_dir, write_json
from .index import check_store_folder
from .models import chat_template_text, no_template, resolve_model_path, ships_chat_template
from .schema import FeedbackConfig, GroupPolicyConfig, PreferenceConfig, Recipe
from .trackers import PACKAGES, installed, named_in_train

# The TRL config class of each training method (read by name, so validating a recipe imports no TRL), and the
# recipe block holding the method's own settings, whose keys do not go under `train:`.
TRL_CONFIGS = {
    "sft": "SFTConfig",
    "dpo": "DPOConfig",
    "kto": "KTOConfig",
    "reward": "RewardConfig",
    "grpo": "GRPOConfig",
    "rloo": "RLOOConfig",
}
METHOD_BLOCKS = {"dpo": PreferenceConfig, "kto": FeedbackConfig, "grpo": GroupPolicyConfig}


def trl_method(recipe: Recipe) -> str:
    """The TRL trainer a training recipe runs, by name: its method, or `rloo` for method grpo with
    `grpo.algorithm: rloo`."""
    return recipe.grpo.algorithm if recipe.method == "grpo" and recipe.grpo is not None else recipe.method


def trl_config_class(method: str):
    """The TRL config class whose fields the `train:` section may set."""
    import trl

    return getattr(trl, TRL_CONFIGS[method])


# Sizes TRL would accept and then fail on (or silently misuse) deep inside training.
_POSITIVE_TRAIN_KEYS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "num_train_epochs",
    "logging_steps",
    "save_steps",
    "per_device_eval_batch_size",
)


def _check_groups(recipe: Recipe) -> None:
    """A GRPO batch must hold whole groups of sampled answers, or TRL stops after the model loaded."""
    if recipe.grpo is None:
        return
    train = recipe.train_settings()
    batch = train["per_device_train_batch_size"] * train.get("gradient_accumulation_steps", 1)
    if isinstance(batch, int) and batch % recipe.grpo.num_generations:
        raise TunerError(
            f"{recipe.source}: key `train.per_device_train_batch_size`: a GRPO batch ({batch} answers) "
            f"must hold whole groups of `grpo.num_generations` ({recipe.grpo.num_generations}) answers "
            f"to one prompt. Make the batch a multiple of it."
        )


def _check_train_values(recipe: Recipe) -> None:
    for key in _POSITIVE_TRAIN_KEYS:
        value = recipe.train.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TunerError(f"{recipe.source}: key `train.{key}` must be a number (got {value!r}). Fix the recipe.")
        if value <= 0:
            raise TunerError(
                f"{recipe.source}: key `train.{key}` must be greater than 0 (got {value!r}). Fix the recipe."
            )
    max_steps = recipe.train.get("max_steps")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps == 0 or max_steps < -1
    ):
        raise TunerError(
            f"{recipe.source}: key `train.max_steps` must be a positive whole number (or -1 for "
            f"epochs; got {max_steps!r}). Fix the recipe."
        )


def trl_fields(method: str) -> tuple[str, set[str]]:
    """The name and field names of the TRL config class for `method`.

    Importing TRL takes seconds (it imports torch and transformers), so the names are cached per TRL and
    transformers version under the tuner cache: `tuner validate` then answers without importing either.
    """
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
    fields = {}
    for name in TRL_CONFIGS:
        cls = trl_config_class(name)
        fields[name] = {"class": cls.__name__, "fields": sorted(f.name for f in dataclasses.fields(cls) if f.init)}
    if tag:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, fields)
        except OSError:
            pass  # a read-only cache only costs speed
    return fields[method]["class"], set(fields[method]["fields"])


def _check_format(recipe: Recipe) -> None:
    if recipe.data.format != "auto" and recipe.data.format not in FORMATS:
        raise TunerError(
            f"{recipe.source}: key `data.format`: {recipe.data.format!r} is not a known format."
            f"{_did_you_mean(recipe.data.format, FORMATS)} Known formats: auto, "
            f"{', '.join(FORMATS)}. Fix the recipe and run again."
        )


def _check_trackers(recipe: Recipe) -> None:
    """A tracker named for tuner's results or for training must be installed before any model loads (transformers
    would refuse it only once the trainer is built, tuner after the run)."""
    named = [("eval.report_to", name) for name in recipe.eval.report_to or []]
    named += [("train.report_to", name) for name in named_in_train(recipe) if name in PACKAGES]
    for key, name in named:
        if not installed(name):
            raise TunerError(
                f"{recipe.source}: key `{key}` names {name}, but its package is not installed in this "
                f"environment. Install it (`pip install {PACKAGES[name][1]}`, or tuner's `track` extra: `pip install "
                f"'tuner[track]'`) or remove {name} from `{key}`."
            )


def _check_train_keys(recipe: Recipe) -> None:
    if recipe.method not in TRAINING_METHODS:
        if recipe.train:
            raise TunerError(
                f"{recipe.source}: key `train` is set, but method {recipe.method} does no training. "
                f"Remove the `train:` section or use method sft."
            )
        return
    class_name, known = trl_fields(trl_method(recipe))
    for key in recipe.train:
        # The method's own block first (`beta` is DPO's and KTO's), else the block that has the key.
        own = {recipe.method: METHOD_BLOCKS[recipe.method]} if recipe.method in METHOD_BLOCKS else METHOD_BLOCKS
        block = next((name for name, section in own.items() if key in section.model_fields), None)
        if block is not None:
            raise TunerError(
                f"{recipe.source}: key `train.{key}` belongs in the `{block}:` block, where it is "
                f"checked; move it to `{block}.{key}`."
            )
        if key in RESERVED_TRAIN_KEYS:
            raise TunerError(
                f"{recipe.source}: key `train.{key}` is set by tuner; use {RESERVED_TRAIN_KEYS[key]} instead."
            )
        if key == "eval_strategy" and recipe.train[key] != "no":
            raise TunerError(
                f"{recipe.source}: key `train.eval_strategy` is {recipe.train[key]!r}, but tuner does not "
                f"evaluate during training: it scores the eval rows with its evaluator when training "
                f"ends (and `tuner eval --adapter RUN` scores any run later). Remove the key."
            )
        if key == "packing" and recipe.method in METHOD_BLOCKS:
            raise TunerError(
                f"{recipe.source}: key `train.packing`: {recipe.method.upper()} does not pack sequences "
                f"(each row's answers are scored side by side); packing is for method sft. Remove it."
            )
        if key not in known:
            raise TunerError(
                f"{recipe.source}: key `train.{key}` is not a field of TRL's {class_name}."
                f"{_did_you_mean(key, known)} Fix or remove it (see the {class_name} documentation "
                f"for the accepted keys)."
            )


# Names users bring from peft, other tools or older TRL, which spelling distance alone would not find.
_ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "torch_dtype": "dtype",
    "model_name": "name_or_path",
    "model_name_or_path": "name_or_path",
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "max_seq_length": "max_length",
    "max_seq_len": "max_length",
}


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


def _other_section(loc: tuple) -> str:
    """ " It belongs in `data.max_eval_samples`." for a key given in the wrong section (or at the top level) that is
    a key of another section: the recipe's sections, and TRL's `train:` keys for a top-level one."""
    key = str(loc[-1])
    homes = [
        f"{name}.{key}"
        for name in Recipe.model_fields
        if name != (loc[0] if len(loc) > 1 else None) and key in _section_fields((name,))
    ]
    if not homes and len(loc) == 1:
        try:
            if key in trl_fields("sft")[1]:
                homes = [f"train.{key}"]
        except Exception:  # noqa: BLE001 (TRL unimportable: the hint is a courtesy)
            homes = []
    return f" It is a key of another section: did you mean `{homes[0]}`?" if homes else ""


_UNION_TAGS = {
    "str",
    "int",
    "float",
    "bool",
    "dict",
    "list",
    "none",
    "SourceConfig",
    "ModelConfig",
    "DataConfig",
    "AdapterConfig",
    "EvalConfig",
    "FewshotConfig",
    "PreferenceConfig",
    "FeedbackConfig",
    "GroupPolicyConfig",
    "RewardSpec",
    "Recipe",
}


def _explain(error: ValidationError, source: str) -> TunerError:
    lines = []
    for item in error.errors():
        # pydantic names the union member it tried (SourceConfig, str, list[str]); drop those from the key path.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden" and loc:
            hint = _did_you_mean(loc[-1], _section_fields(loc[:-1])) or _other_section(loc)
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
        raise TunerError(
            f"{path}: recipe file not found. Check the path (it is relative to the current folder {Path.cwd()})."
        )
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
        raise TunerError(
            f"{path}: a recipe is a YAML mapping of sections (method, model, data, ...), "
            f"not a {type(document).__name__}."
        )
    return document


def recipe_from_dict(document: dict[str, Any], source: str = "<recipe>", check_files: bool = True) -> Recipe:
    """Validate a recipe given as a dict (a notebook's way in); same checks as `load_recipe`."""
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as exc:
        raise _explain(exc, source) from None
    recipe.source = source
    _check_format(recipe)
    _check_train_keys(recipe)
    _check_train_values(recipe)
    _check_trackers(recipe)
    _check_groups(recipe)
    if check_files:
        _check_files(recipe)
        _decide_chat(recipe)
    elif recipe.data.chat is None:  # a recipe read back records its decision; one without chats as before
        recipe.data = recipe.data.model_copy(update={"chat": True})
    return recipe


def _decide_chat(recipe: Recipe) -> None:
    """`data.chat` left unset becomes chat where the model has a template (its own or `model.chat_template`) and
    plain text where it has none, said once here; set true for a model with none, the recipe is refused here, before
    `tuner validate` says ok to a run that would stop."""
    named = chat_template_text(recipe.model, recipe.source) is not None
    ships = None if named else ships_chat_template(recipe.model, recipe.source)
    if recipe.data.chat is None:
        chat = named or ships is not False
        recipe.data = recipe.data.model_copy(update={"chat": chat})
        if not chat:
            print(
                f"tuner: {recipe.model.name_or_path} has no chat template (a base model), so rows are rendered as "
                f"plain text (`data.chat: false`); name one with `model.chat_template` (gemma, chatml, or a Jinja "
                f"file) to render them as chats."
            )
    elif recipe.data.chat and ships is False:
        raise TunerError(no_template(recipe))


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file; raises TunerError with the file and key path on any problem.

    `overrides` are `KEY.PATH=VALUE` strings, as given to the CLI's `--set`, applied before validation.
    """
    document = apply_overrides(read_yaml(path), overrides)
    try:
        return recipe_from_dict(document, source=str(path))
    except TunerError as error:
        raise _from_overrides(error, overrides) from None


def _from_overrides(error: TunerError, overrides) -> TunerError:
    """An error about a key that a `--set` gave says so, and how its value was read (YAML: a value with a colon is a
    mapping unless quoted), instead of sending the user to fix the recipe file."""
    message = str(error)
    blamed = []
    for text in overrides:
        parts, value = _parse_override(text)
        key = ".".join(parts)
        if f"`{key}`" not in message and f"`{key}." not in message:
            continue
        read = (
            f", read as YAML, which gave a {'mapping' if isinstance(value, dict) else 'list'}: quote the value, "
            f"e.g. --set '{key}=\"...\"'"
            if isinstance(value, dict | list)
            else ""
        )
        blamed.append(f"`{key}` came from `--set {text}`{read}.")
    if not blamed:
        return error
    return TunerError(
        message.replace(" Fix the recipe and run again.", "")
        + " "
        + " ".join(blamed)
        + " Fix the --set value and run again."
    )


def _check_files(recipe: Recipe) -> None:
    sources = [
        (f"train[{n}]" if isinstance(recipe.data.train, list) else "train", one)
        for n, one in enumerate(recipe.data.train_sources())
    ] + [("eval", recipe.data.eval)]
    for name, source in sources:
        if source is not None and source.path is not None and not Path(source.path).is_file():
            raise TunerError(
                f"{recipe.source}: key `data.{name}.path`: data file {source.path} does not exist "
                f"(paths are relative to the current folder {Path.cwd()}). Fix the path or create "
                f"the file."
            )
    if recipe.rag is not None and not Path(recipe.rag.corpus).exists():
        raise TunerError(
            f"{recipe.source}: key `rag.corpus`: {recipe.rag.corpus} does not exist (paths are relative "
            f"to the current folder {Path.cwd()}). Point it at a folder of .txt/.md files or a data "
            f"file with a `text` column."
        )
    if recipe.rag is not None and recipe.rag.store.path:
        check_store_folder(recipe.rag.store.path, recipe.source)
    resolve_model_path(recipe.model.name_or_path, recipe.source)  # checks paths, loads nothing
    if recipe.eval.judge is not None:
        try:
            resolve_model_path(recipe.eval.judge.model.name_or_path, recipe.source)
        except TunerError as error:
            raise TunerError(str(error).replace("key `model.", "key `eval.judge.model.", 1)) from None
    if recipe.model.adapter is not None:
        for adapter in adapter_runs(recipe):
            read_adapter_run(adapter, recipe.model, recipe.source)
    for spec in recipe.grpo.rewards if recipe.grpo else []:
        if spec.type == "model":
            read_adapter_run(spec.run, recipe.model, recipe.source, kind="reward")


def adapter_runs(recipe: Recipe) -> list[Path]:
    """The run folders `model.adapter` names: with `seeds`, a folder holding `seed-<n>` runs for every seed names
    each of them (a DPO recipe continues each SFT seed); otherwise the folder itself."""
    given = Path(recipe.model.adapter)
    per_seed = [given / f"seed-{seed}" for seed in recipe.seeds or []]
    return per_seed if per_seed and all(folder.is_dir() for folder in per_seed) else [given]
