"""tuner's own files: atomic writes with secrets masked, and the cache folder (converted models, TRL field names).

Every file tuner writes into a run folder, a checkpoint or its cache goes through `write_text`, so a half-written
file is never seen and no environment secret reaches the disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .secrets import redact, redact_data


def cache_dir() -> Path:
    """Where tuner caches what it derives (converted GGUF checkpoints, TRL field names): $TUNER_CACHE, else
    ~/.cache/tuner."""
    return Path(os.environ.get("TUNER_CACHE") or Path.home() / ".cache" / "tuner")


def umask() -> int:
    """The process's umask (read by setting it and putting it back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_allows(*paths: str | Path) -> None:
    """Give files (and folders, recursively) the modes the umask allows a new file, as `open` would: 0644 and 0755
    under the usual umask 022. Temporary files (`mkstemp`) and safetensors' own writes are 0600 whatever the umask,
    and a server running as another user (a container's non-root user, a service account) then cannot read the
    weights or export.json it is given."""
    mask = umask()
    for path in map(Path, paths):
        if path.is_dir():
            os.chmod(path, 0o777 & ~mask)
            as_umask_allows(*path.iterdir())
        elif path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~mask)


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically: to a temporary file beside it, then rename, with the modes the umask allows.
    Environment secrets (tokens, keys, passwords) are masked first: nothing tuner writes holds them."""
    path, text = Path(path), redact(text)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o666 & ~umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """`data` as indented JSON, secret-named keys masked."""
    write_text(path, json.dumps(redact_data(data), indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
