"""The recipe's `eval.judge`: the model behind metric `llm_judge` (local or served, a `model:` section) and the rubric
it is asked with. No torch; the judging is `judge.py`."""

from __future__ import annotations

import string

from pydantic import Field, field_validator

from .model_config import ModelConfig
from .section import Section as _Section

# The judge's instruction unless the recipe gives its own: a yes/no question, so its verdict is read from the
# likelihood of the two words (or, on a server without prompt log-probabilities, from its reply).
DEFAULT_RUBRIC = (
    "You grade answers to questions against a reference answer.\n\nQuestion:\n{question}\n\nReference answer:\n"
    "{gold}\n\nAnswer to grade:\n{reply}\n\nDoes the answer to grade say what the reference answer says (wording, "
    "length and extra correct detail aside)? Reply with one word: yes or no."
)
RUBRIC_FIELDS = {"question", "gold", "reply"}


class JudgeConfig(_Section):
    """The model behind `eval.metrics: [llm_judge]`: it reads each reply with its question and gold answer and says
    yes (right) or no."""

    model: ModelConfig = Field(
        description="The judge, as a `model:` section: a local model (`name_or_path`) or a served one "
        "(`endpoint`, with `name_or_path` naming its tokenizer)."
    )
    rubric: str = Field(
        DEFAULT_RUBRIC,
        description="The judge's instruction, {question}, {gold} and {reply} filled in per row; it must ask for a "
        "yes or a no.",
    )
    cache: bool = Field(True, description="Keep each verdict in $TUNER_CACHE/judge, keyed by judge, rubric and row.")

    @field_validator("rubric")
    @classmethod
    def _fields(cls, value: str) -> str:
        try:
            named = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
        except ValueError as exc:
            raise ValueError(f"is not a template ({exc}); write literal braces as {{{{ and }}}}") from None
        if not {"reply", "gold"} <= named or not named <= RUBRIC_FIELDS:
            raise ValueError(
                f"must name {{reply}} and {{gold}} (and may name {{question}}), no other field (it names "
                f"{sorted(named) or 'none'})"
            )
        return value
