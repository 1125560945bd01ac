"""Reinforcement learning against rewards (GRPO) of a LoRA/QLoRA adapter with TRL's GRPOTrainer (or RLOOTrainer,
`grpo.algorithm: rloo`: each answer's reward against the mean of the rest of its group).

`run(recipe)` reads top to bottom: seed, data (prompts with their gold answers and choices), model, the recipe's
rewards (a reward model run is loaded here), trainer (with the SFT adapter when continuing), the reward of the
starting policy on held-out prompts, train, save, the reward after, evaluate the recipe's task, write the run folder.
Each held-out prompt gets one greedy answer before and after, rewarded as in training (`rewards.jsonl`).
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..adapters import parameter_counts
from ..checkpoints import resume_point
from ..data.rows import prompt_rows, scoring_rows
from ..data.sources import table
from ..data.splits import load_data
from ..evaluator import evaluate
from ..files import write_jsonl
from ..hardware import is_main_process
from ..intervals import paired_difference_interval
from ..models import check_chat_template, load_model
from ..rewards import mean_reward, reward_functions
from ..runs import RunResult, build_manifest, finish_run, record_evaluation, run_folder, scoring
from ..speed import decide_precision
from ..trainers import build_trainer
from ..training import first_and_last, recorded_args, speed_record, train_and_save, train_metrics, trained_model
from .preflight import check_data

TRAINING_LOGS = ("loss", "reward", "reward_std")


def run(recipe) -> RunResult:
    """Train an adapter against the recipe's rewards and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        check_data(recipe, splits)
        choices = recipe.eval.choices or splits.labels
        train_rows = table(prompt_rows(splits.train, choices))
        held_out = prompt_rows(splits.eval, choices)
    checkpoint = resume_point(recipe, splits.report)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    run_dir = run_folder(recipe, checkpoint)

    functions = reward_functions(recipe, loaded.tokenizer, None, loaded.precision)
    trainer, speed = build_trainer(recipe, loaded, train_rows, run_dir, reward_funcs=functions)
    counts = parameter_counts(trainer.model)
    weights = [spec.weight for spec in recipe.grpo.rewards]
    with phase("reward_before", phases):
        before = mean_reward(
            trainer.model,
            loaded.tokenizer,
            held_out,
            functions,
            weights,
            recipe.grpo.max_completion_length,
            recipe.eval.batch_size,
        )
    output = train_and_save(trainer, speed, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    model = trained_model(trainer, recipe, run_dir, loaded)
    history = trainer.state.log_history
    manifest = build_manifest(
        recipe,
        splits.report,
        loaded.info,
        extra={
            "adapter": recipe.adapter.model_dump(),
            "grpo": recipe.grpo.model_dump(),
            "continued_from": recipe.model.adapter,
            "trl_args": recorded_args(trainer.args, recipe),
            "speed": speed_record(speed, trainer.args),
        },
    )
    with scoring(run_dir, recipe, manifest, history):
        with phase("reward_after", phases):
            after = mean_reward(
                model,
                loaded.tokenizer,
                held_out,
                functions,
                weights,
                recipe.grpo.max_completion_length,
                recipe.eval.batch_size,
            )
        write_jsonl(
            run_dir / "rewards.jsonl",
            [
                {
                    "row": number,
                    "gold": row["gold"],
                    "before": {"answer": before["answers"][number], "reward": before["values"][number]},
                    "after": {"answer": after["answers"][number], "reward": after["values"][number]},
                }
                for number, row in enumerate(held_out)
            ],
        )
        method = f"sft+{recipe.grpo.algorithm}" if recipe.model.adapter else recipe.grpo.algorithm
        metrics = {
            **train_metrics(method, output, phases, counts),
            **first_and_last(history, TRAINING_LOGS),
            "reward_before": {k: before[k] for k in ("mean", "ci95", "rows")},
            "reward_after": {k: after[k] for k in ("mean", "ci95", "rows")},
            "reward_change_ci95": paired_difference_interval(after["values"], before["values"]),
        }
        if recipe.eval.task:
            result = evaluate(
                model, loaded.tokenizer, scoring_rows(splits.eval), recipe.eval, splits.labels, loaded.dtype
            )
            record_evaluation(run_dir, result, metrics, phases)
    return finish_run(run_dir, metrics, manifest, history)
