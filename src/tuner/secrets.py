"""Keeping secrets out of what tuner writes and prints.

A secret is the value of an environment variable whose name says it holds one (HF_TOKEN, WANDB_API_KEY,
AWS_SECRET_ACCESS_KEY, DB_PASSWORD...), or a value under such a key in a recipe or a record. Every file of a run
folder is written through `runs.write_text`, and every error through the CLI, and both pass through `redact`.
"""

from __future__ import annotations

import os
import re
from typing import Any

# The name ends in a word that says "secret": HF_TOKEN, hub_token, WANDB_API_KEY, SECRET(S), DB_PASSWORD, DB_PASS,
# DB_PWD, GITHUB_PAT, AWS_ACCESS_KEY_ID, ...
SECRET_NAME = re.compile(
    r"(^|[_\-.])(token|secrets?|password|passwd|pass|pwd|pat|key|apikey|key_id|credentials?|auth)$", re.IGNORECASE
)
# Tokenizer and generation settings whose names end in "token" but hold vocabulary entries, never secrets
# (TRL's SFTConfig has `eos_token` and `pad_token`): masking them would break a saved recipe.
# The shell's PWD and OLDPWD are the current and previous folders, not passwords: masking them garbled every path.
NOT_SECRETS = {
    "eos_token",
    "pad_token",
    "bos_token",
    "unk_token",
    "sep_token",
    "cls_token",
    "mask_token",
    "pwd",
    "oldpwd",
}
# user:password@ in a URL (a database or proxy address): the password is a secret wherever it appears.
URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:)([^\s@/]+)(@)", re.IGNORECASE)
# Shorter values ("1", "true") are settings, not secrets, and replacing them would garble ordinary text.
MIN_SECRET_LENGTH = 8
MASK = "***"


def is_secret_name(name: str) -> bool:
    """Whether a variable or key named `name` holds a secret (by its last word)."""
    return str(name).lower() not in NOT_SECRETS and bool(SECRET_NAME.search(str(name)))


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the environment's secret-named variables, longest first (so a secret inside another goes too)."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if is_secret_name(name) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every environment secret, and every password inside a URL, replaced by ***."""
    for value in secret_values():
        text = text.replace(value, MASK)
    return URL_CREDENTIALS.sub(lambda match: match.group(1) + MASK + match.group(3), text)


def redact_data(data: Any) -> Any:
    """A copy of nested dicts/lists with values under secret-named keys masked and environment secrets removed
    from every string."""
    if isinstance(data, dict):
        return {
            key: (MASK if is_secret_name(key) and data[key] not in (None, "") else redact_data(value))
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_data(value) for value in data]
    if isinstance(data, str):
        return redact(data)
    return data
