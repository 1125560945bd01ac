"""Library output a user cannot act on, kept off tuner's output: which known warnings and log lines are filtered, and
which library bars stay off when nobody watches them.

A line from inside transformers, TRL, peft, torch or bitsandbytes that names a renamed argument or an optional
kernel tells the user of tuner nothing they can change: tuner is the caller, and its pinned range of each library
(`pyproject.toml`) is what decides. Everything else a library says (a real warning about the user's model or data)
still prints. `filter_known()` is called when `tuner` is imported, so a notebook sees the same quiet output as the
command; `quiet_libraries()` is `tuner --quiet`'s stronger form: libraries say errors only.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# Deprecation notices raised inside these packages: they name an argument tuner (or TRL for tuner) passes, renamed in
# a later version of the same pinned range; the user has nothing to change.
LIBRARIES = ("transformers", "trl", "peft", "torch", "accelerate", "datasets", "bitsandbytes", "sentence_transformers")

# Log records known to be noise, by the logger that writes them and a piece of their message, each with its reason.
KNOWN_RECORDS = {
    # bitsandbytes looks for an optional CPU kernel package on every import (even for LoRA runs, which use no 4-bit
    # layer) and asks the user to `pip install kernels`, which reaches the Hub at run time: tuner's 4-bit note says
    # what 4-bit on a CPU costs instead (speed.py).
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # transformers 5.x renamed `past_key_values` to `cache`; the range tuner supports spans both names, and TRL's
    # own wrappers pass the old one.
    "transformers.utils.generic": ("`past_key_values`/`cache_params` are deprecated",),
}


class _KnownRecords(logging.Filter):
    def __init__(self, pieces: tuple[str, ...]):
        super().__init__()
        self.pieces = pieces

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(piece in message for piece in self.pieces)


def filter_known() -> None:
    """Filter the known noise (idempotent): deprecation warnings raised inside the libraries tuner drives, and the
    log records of `KNOWN_RECORDS`."""
    pattern = rf"({'|'.join(LIBRARIES)})(\.|$)"
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=pattern)
    # A warning whose stack level points past the library (into torch's module call) is known by its text.
    warnings.filterwarnings("ignore", category=FutureWarning, message=re.escape("`past_key_values` is deprecated"))
    for name, pieces in KNOWN_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _KnownRecords) for existing in logger.filters):
            logger.addFilter(_KnownRecords(pieces))


def unwatched_bars_off(watched: bool) -> None:
    """Turn the bars datasets and transformers draw while preparing a run (TRL's four tokenizing passes, weight
    loading) off when nobody watches them: in a log file each is one line of carriage returns. Set through their
    environment variables, read when they are first imported."""
    if not watched:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_libraries() -> None:
    """`tuner --quiet`: the libraries' own loggers say errors only (transformers, datasets and TRL read their
    verbosity from these variables when imported; the rest log through Python's logging)."""
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["DATASETS_VERBOSITY"] = "error"
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
