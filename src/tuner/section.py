"""The base of every recipe section: keys it does not know are refused, and assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section: a typo in a key is an error naming it, never a setting silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
