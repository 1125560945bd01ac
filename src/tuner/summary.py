"""A finished run as `tuner` prints it after a command: the run folder, its files and its figures."""

from __future__ import annotations

import click

from .hardware import is_main_process


def report_run(result) -> None:
    """A finished run as the CLI prints it: its folder, what it holds, training figures, each score with its
    interval, latency, the other metrics and retrieval's figures (rank 0 alone)."""
    if not is_main_process():
        return  # rank 0 reports for every process
    click.echo(f"\nRun folder: {result.run_dir}")
    click.echo("  holds: " + ", ".join(result.files()))
    summary = {
        k: result.metrics[k]
        for k in ("train_loss", "train_tokens", "train_tokens_per_second")
        if result.metrics.get(k) is not None
    }
    if summary:
        click.echo("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    for key in ("eval_preference", "eval"):
        scores = result.metrics.get(key)
        if scores:
            low, high = scores["accuracy_ci95"]
            split = (
                f" ({scores['retrieval_ms_per_example']:.1f} retrieval + {scores['generation_ms_per_example']} model)"
                if scores.get("generation_ms_per_example") is not None
                else ""
            )
            metric = scores.get("metric", "accuracy")
            click.echo(
                f"  eval ({scores['task']}): {metric} {scores['accuracy']:.4f} [95% CI {low:.4f}-{high:.4f}] "
                f"on {scores['rows']} rows, {scores['latency_ms_per_example']} ms per example{split}"
            )
            others = {name: m for name, m in (scores.get("metrics") or {}).items() if name != metric}
            if others:
                click.echo("  also: " + ", ".join(f"{name} {m['mean']:.4f}" for name, m in others.items()))
            if judge := scores.get("judge"):
                said = [
                    f"{name} on {found['agreement']:.0%} of rows (kappa "
                    f"{'n/a' if found['kappa'] is None else format(found['kappa'], '.2f')})"
                    for name, found in judge["agreement"].items()
                ]
                click.echo(
                    f"  judge {judge['model']}: agrees with {', '.join(said)}; {judge['asked']} rows asked, "
                    f"{judge['cached']} from the cache"
                )
            if scores.get("truncated_share"):
                click.echo(f"  replies cut at eval.max_new_tokens: {scores['truncated_share']:.1%}")
            found = {
                k: v
                for k, v in scores.items()
                if k.startswith("recall_at_")
                or k in ("answer_in_passages_rate", "groundedness", "answer_found_not_used_rate")
            }
            if any(v is not None for v in found.values()):
                click.echo(
                    "  retrieval: "
                    + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in found.items() if v is not None)
                )
