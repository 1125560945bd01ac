"""Checks before a run, with no weights loaded: `tuner validate` (recipe, files and data rows), the dry run of a
training recipe (`tuner sft|dpo --dry-run`: parameters and peak memory on the meta device) and of a prompt recipe
(`tuner fewshot|rag --dry-run`: the prompts as the model will read them, their tokens, the index)."""

from __future__ import annotations

from typing import Any

from ..data.corpus import read_corpus
from ..data.formats import FORMATS
from ..data.rows import answer_text, prompt_rows, scoring_rows
from ..data.splits import load_data, require_feedback, require_preference, require_train_rows
from ..defaults import TRAINING_METHODS
from ..embedder import resolve_embedding_model
from ..errors import TunerError
from ..estimate import Estimate, estimate
from ..evaluator import check_rows
from ..models import check_chat_template, load_config_and_tokenizer
from ..rendering import render_prompt
from ..retrieval import context_length, open_index, retrieval_aware_rows, sourced_rows, with_passages
from ..rewards import NEEDS_GOLD, reward_functions
from ..selection import fewshot_rows
from ..speed import checkpointing, decide_precision, micro_batches, quantization_note


def check_data(recipe, splits) -> None:
    """Every check of a recipe's rows that its run makes before a model loads, in one place, so `tuner validate`
    and the dry run refuse what the run would: the checks every method shares (rows left to train on, answers
    where the method needs them), then the method's own (`METHOD_CHECKS`: pairs for DPO and reward models, thumbs
    for KTO, rewards for GRPO, examples for few-shot), which include the eval rows its task scores."""
    if recipe.method in TRAINING_METHODS:
        require_train_rows(splits, recipe.source)
    if recipe.method != "grpo" and FORMATS[splits.format].family == "prompts":
        raise TunerError(
            f"{recipe.source}: data.train holds prompts alone (no answers), which only `tuner grpo` "
            f"trains on (its rewards judge the answers it samples). Give rows with answers for method "
            f"{recipe.method}."
        )
    METHOD_CHECKS.get(recipe.method, check_scoring)(recipe, splits)


def check_scoring(recipe, splits) -> None:
    """Eval rows the recipe's task can score (gold answers among the choices, labels to choose from)."""
    if recipe.eval.task:
        check_rows(scoring_rows(splits.eval), recipe.eval, splits.labels, recipe.source)


def check_pairs(recipe, splits) -> None:
    """DPO and reward models: preference pairs to train on; feedback runs score held-out pairs as preferences
    always, so only another task is checked beside."""
    require_preference(splits, recipe.source, recipe.method)
    if recipe.method == "reward" or recipe.eval.task != "preference":  # a reward run's task is its own score
        check_scoring(recipe, splits)


def check_feedback(recipe, splits) -> None:
    """KTO: thumbs of both kinds, and held-out rows something can score (pairs, or answers marked good)."""
    require_feedback(splits, recipe.source, recipe.kto.unpair)
    if not held_out_pairs(splits) and recipe.eval.task in (None, "feedback"):
        return  # held-out thumbs are scored as feedback: any mix of good and bad answers will do
    if not held_out_pairs(splits) and recipe.eval.task == "preference":
        raise TunerError(
            f"{recipe.source}: `eval.task` is preference, but the held-out rows of this KTO run are feedback, not "
            f"preference pairs. Leave `eval.task` out (held-out thumbs are scored as feedback), set choice or "
            f"generate (the answers marked good are the gold answers), or give `data.eval` preference pairs."
        )
    if not held_out_pairs(splits) and not scoring_rows(splits.eval):
        raise TunerError(
            f"{recipe.source}: none of the {len(splits.eval)} held-out feedback rows is marked good, "
            f"so no row has a gold answer to score. Give `data.eval` (task rows or preference "
            f"pairs)."
        )
    if recipe.eval.task != "preference":
        check_scoring(recipe, splits)


def check_examples(recipe, splits) -> None:
    """Few-shot: enough train rows for `fewshot.k` examples, and each eval prompt with its examples scoreable."""
    check_rows(fewshot_rows(splits.train, splits.eval, recipe.fewshot), recipe.eval, splits.labels, recipe.source)


def check_rewards(recipe, splits) -> None:
    """A GRPO run's rewards against its rows, before a model loads: gold answers for the rewards that compare with
    them, choices for `choice`, and the user's functions imported and tried on the first rows (their gold answers,
    or a stand-in text, as completions) so that a missing function or a wrong return shape stops the run here."""
    rows = prompt_rows(splits.train, recipe.eval.choices or splits.labels)
    needs_gold = [spec.type for spec in recipe.grpo.rewards if spec.type in NEEDS_GOLD]
    if needs_gold and any(row["gold"] is None for row in rows):
        raise TunerError(
            f"{recipe.source}: the `{needs_gold[0]}` reward compares each answer with the row's gold "
            f"answer, but data.train holds prompts alone. Give rows with answers (prompt/completion, "
            f"classification...), or use rewards that need none (regex, length, model, function)."
        )
    if "choice" in needs_gold and any(not row["choices"] for row in rows):
        raise TunerError(
            f"{recipe.source}: the `choice` reward needs the answers to choose from: set `eval.choices`, "
            f"or give classification rows (their labels are the choices) or `data.choices_column`."
        )
    functions = reward_functions(recipe, None, None, load_models=False)
    sample = rows[:4]
    completions = [
        [{"role": "assistant", "content": row["gold"] or "ok"}]
        if isinstance(row["prompt"], list)
        else row["gold"] or "ok"
        for row in sample
    ]
    extras = {key: [row[key] for row in sample] for key in ("gold", "choices")}
    for function in functions:
        function(
            prompts=[row["prompt"] for row in sample],
            completions=completions,
            completion_ids=[[0] for _ in sample],
            **extras,
        )
    if recipe.eval.task and any(row["gold"] is None for row in prompt_rows(splits.eval)):
        raise TunerError(
            f"{recipe.source}: `eval.task` {recipe.eval.task} scores answers against gold ones, but "
            f"the held-out rows are prompts alone. Remove `eval.task` (the run reports its mean "
            f"reward on them) or give `data.eval` rows with answers."
        )
    check_scoring(recipe, splits)


def check_retrieval(recipe, splits) -> None:
    """Rag: with `rag.retrieval_only`, eval rows naming their sources (retrieval is scored against them, and no
    answer is); else what the task scores."""
    if recipe.rag is not None and recipe.rag.retrieval_only:
        sourced_rows(splits.eval, recipe.source)
    else:
        check_scoring(recipe, splits)


# Each method's own checks of its rows (the others check what their task scores, `check_scoring`).
METHOD_CHECKS = {
    "dpo": check_pairs,
    "reward": check_pairs,
    "kto": check_feedback,
    "grpo": check_rewards,
    "fewshot": check_examples,
    "rag": check_retrieval,
}


def held_out_pairs(splits) -> bool:
    """Whether a run's eval rows are preference pairs (scored as preferences by DPO and KTO runs)."""
    return "chosen" in splits.eval.column_names


def validate(recipe) -> dict[str, Any]:
    """Read the recipe's data (and a retrieval corpus) and make every check its run makes before a model loads;
    returns the data report (formats, row counts, skipped rows, corpus documents). Raises TunerError on any
    problem."""
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    check_data(recipe, splits)
    report = dict(splits.report)
    if recipe.rag is not None:
        corpus = read_corpus(recipe.rag.corpus, recipe.source)
        report["corpus"] = {"documents": len(corpus.documents), "skipped": [f"{n}: {r}" for n, r in corpus.skipped]}
        if recipe.rag.retriever != "bm25":
            resolve_embedding_model(recipe.rag.embedding_model, recipe.source)
    return report


def dry_run(recipe) -> Estimate:
    """Validate the recipe, read the data and the model's config (no weights), and estimate the run as it would go:
    the same precision and gradient-checkpointing decision as the run itself."""
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    check_data(recipe, splits)
    config, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
    check_chat_template(tokenizer, recipe)
    train = splits.train
    if recipe.method == "grpo":  # GRPO trains on prompts alone, as the run does: its answers are sampled
        train = prompt_rows(splits.train, recipe.eval.choices or splits.labels)
    if recipe.rag:  # retrieval-aware SFT trains on prompts with passages: estimate and show those
        train = retrieval_aware_rows(recipe, config, tokenizer, splits.train, scoring_rows(splits.eval), {})[0]
    precision = decide_precision(recipe.model)
    if note := quantization_note(recipe.model):
        print(note)
    on, _ = checkpointing(recipe, precision, config, tokenizer, train)
    micro = micro_batches(recipe, tokenizer, train).get("micro_batch")
    return estimate(recipe, train, config, tokenizer, precision, checkpointing=on, micro_batch=micro)


def prompt_dry_run(recipe, shown: int = 2) -> dict[str, Any]:
    """The dry run of a prompt recipe (fewshot, rag): the checks of `validate`, then every eval prompt built as the
    run builds it (its examples, or its retrieved passages: the index is built or reused, as the run would, and the
    run then reuses it) and rendered by the model's template, with no weights loaded. Returns the first `shown`
    prompts with their gold answers, prompt tokens over all rows (mean, largest) and retrieval's figures."""
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    if recipe.method == "rag":  # few-shot's own check builds its prompts: they are built once, below
        check_data(recipe, splits)
    config, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
    check_chat_template(tokenizer, recipe)
    retrieval = None
    if recipe.method == "rag":
        index = open_index(recipe.rag, tokenizer, context_length(config), recipe.source)
        rows, found = with_passages(scoring_rows(splits.eval), index, recipe.rag, tokenizer, context_length(config))
        index.close()
        retrieval = found.metrics(recipe.rag.k)
    else:
        rows = fewshot_rows(splits.train, splits.eval, recipe.fewshot)
        check_rows(rows, recipe.eval, splits.labels, recipe.source)  # `check_examples`, on the rows built once
    rendered = [render_prompt(row["prompt"], tokenizer, row.get("tools")) for row in rows]
    tokens = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]
    return {
        "rows": [
            {"prompt": rendered[n], "answer": answer_text(rows[n]), "tokens": tokens[n]}
            for n in range(min(shown, len(rows)))
        ],
        "eval_rows": len(rows),
        "mean_prompt_tokens": sum(tokens) / max(len(tokens), 1),
        "max_prompt_tokens": max(tokens, default=0),
        "context_tokens": context_length(config),
        "retrieval": retrieval,
    }


def describe_prompts(preview: dict[str, Any], recipe) -> str:
    """A prompt recipe's dry run as text: token counts, retrieval's figures, the first prompts as the model reads
    them with the gold answer after each."""
    context = f" (the model reads {preview['context_tokens']:,})" if preview["context_tokens"] else ""
    lines = [
        f"tuner dry run of {recipe.source} ({recipe.method}; no weights loaded, nothing scored)",
        f"  {preview['eval_rows']} eval prompts: {preview['mean_prompt_tokens']:,.0f} tokens on average, "
        f"{preview['max_prompt_tokens']:,} the longest{context}",
    ]
    if preview["retrieval"]:
        found = {k: v for k, v in preview["retrieval"].items() if v is not None and k != "k"}
        lines.append(
            f"  retrieval (k {recipe.rag.k}): " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in found.items())
        )
    for number, row in enumerate(preview["rows"]):
        lines.append(f"  row {number}: {row['tokens']} prompt tokens, the gold answer after them between [[ ]]:")
        lines.extend("    | " + line for line in (row["prompt"] + "[[" + row["answer"] + "]]").splitlines())
    return "\n".join(lines)
