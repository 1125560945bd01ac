"""The options and examples that tuner's commands share: `--set`, `--seeds` with `--workers` and `--cluster` (given
to a command as one `spread`), `--resume`, the two `--dry-run`s, and each command's one-line example."""

from __future__ import annotations

import functools

import click

# One line of each command's --help that runs as written from the repository's root (after the quickstart, for the
# commands that read its runs); `tests/test_cli.py` checks each names a recipe that exists.
EXAMPLES = {
    "validate": "tuner validate recipes/quickstart/sft.yaml --set data.max_train_samples=100",
    "sft": "tuner sft recipes/quickstart/sft.yaml --set train.max_steps=20 --dry-run",
    "dpo": "tuner dpo recipes/quickstart/sft_then_dpo.yaml --seeds 0,1,2",
    "kto": "tuner kto recipes/quickstart/kto.yaml",
    "reward": "tuner reward recipes/quickstart/reward.yaml",
    "grpo": "tuner grpo recipes/quickstart/grpo.yaml --set train.max_steps=10",
    "fewshot": "tuner fewshot recipes/quickstart/fewshot.yaml --set fewshot.k=3 --dry-run",
    "rag": "tuner rag recipes/knowledge/rag_bm25.yaml --set rag.k=5",
    "eval": "tuner eval recipes/quickstart/sft.yaml --adapter runs/quickstart-sft",
    "compare": "tuner compare runs/quickstart --price-per-cpu-hour 0.05",
    "export": "tuner export runs/quickstart-sft --to gguf --quant q8_0",
    "predict": "tuner predict runs/quickstart-sft --input examples/data/tickets/test.jsonl --output answers.jsonl",
    "chat": "tuner chat runs/quickstart-sft",
    "sweep": "tuner sweep recipes/quickstart/sft.yaml --grid data.max_train_samples=50,100,200 --seeds 0,1",
    "decide": "tuner decide examples/data/tickets --budget 2h --requests-per-month 100000",
}


def example(command: str) -> str:
    """The epilog of a command's --help: its example, kept on one line (click's \\b)."""
    return f"\b\nExample:\n  {EXAMPLES[command]}"


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe value, e.g. --set data.max_eval_samples=20 (repeatable; the value is read "
    "as YAML: quote one holding a colon, --set 'key=\"a: b\"').",
)


dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Validate, build the model on the meta device and "
    "estimate peak memory (weights, adapter, optimizer, activations); train nothing.",
)
prompt_dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and build every eval prompt as the "
    "run would (examples or retrieved passages; the index is built or reused), "
    "then print their tokens and the first two prompts as the model reads them; "
    "load no weights, score nothing.",
)
seeds_option = click.option(
    "--seeds",
    metavar="N,N,...",
    help="Run the recipe once per seed into "
    "<output_dir>/seed-<n>/ (same as `seeds:` in the recipe); compare shows them as one row "
    "with their spread. Finished seeds of the same recipe are kept.",
)


cluster_option = click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Dispatch the runs of --seeds (or the sweep) to the Ray cluster at ADDRESS (ray://HOST:10001, or auto on "
    "its head node); run folders must be on storage every node sees.",
)
workers_option = click.option(
    "--workers",
    type=int,
    metavar="N",
    help="Dispatch the runs of --seeds (or the sweep) to a local Ray cluster of N workers, each run with its share "
    "of the cores (or its own GPU); finished runs are kept, the comparison waits for all.",
)


def spread_options(command):
    """--seeds, --workers and --cluster, given to the command as one `spread`: (seeds, workers, cluster)."""

    @functools.wraps(command)
    def spread(*args, seeds=None, workers=None, cluster=None, **kwargs):
        return command(*args, spread=(seeds, workers, cluster), **kwargs)

    return seeds_option(workers_option(cluster_option(spread)))


resume_option = click.option(
    "--resume",
    is_flag=True,
    help="Continue the newest interrupted run of this recipe "
    "from its last whole checkpoint (same as `resume: auto` in the recipe).",
)
