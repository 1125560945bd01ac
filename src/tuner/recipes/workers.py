"""Runs of a sweep or of seeds dispatched to Ray: a local cluster of N workers started for the sweep (`--workers N`),
or a running cluster's address (`--cluster ray://host:10001`, or `auto` for the one `ray start` made here). Ray
schedules; tuner adds no scheduler of its own. Each run is one Ray task holding one worker slot (one GPU where the
cluster has GPUs, so each run has its device alone), and writes its run folder where a serial run would, so the
folders must be on storage every node sees; the caller compares the runs once all are done.

    from tuner import load_recipe, sweep
    sweep(load_recipe("recipes/quickstart/sft.yaml"), {"data.max_train_samples": [50, 100, 200]}, seeds=[0, 1],
          workers=2)
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import TunerError
from ..runs import RunResult
from ..schema import Recipe
from . import module_for

# Ray's shared-memory store holds the recipes and results passed to and from runs (kilobytes): its floor, rather than
# Ray's default of 30% of RAM, which a machine training models needs for them.
OBJECT_STORE_BYTES = 80 * 2**20


def one_run(recipe: Recipe, threads: int | None) -> RunResult:
    """A Ray task: run one planned recipe in this worker, with `threads` CPU threads (the machine's cores shared
    among a local cluster's workers, so two runs do not each take every core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    return module_for(recipe.method).run(recipe)


def run_on_workers(recipes: list[Recipe], workers: int | None = None, cluster: str | None = None) -> list[RunResult]:
    """Run `recipes` as Ray tasks, in the order given, and return their results once all are done: on a local
    cluster of `workers` processes started now (and stopped after), or on the cluster at `cluster`. A run's one-
    paragraph error stops the sweep with that paragraph; runs finished before it keep their folders."""
    try:
        import ray
    except ImportError:
        raise TunerError(
            "--workers and --cluster dispatch runs to Ray, which is not installed. Install it with "
            "`pip install 'ray>=2.40'` (or tuner's `cluster` extra), or leave both out to run one run after another."
        ) from None
    if workers is not None and workers < 1:
        raise TunerError(f"--workers {workers}: give a number of workers of 1 or more (for example --workers 2).")
    if not recipes:
        return []  # every run was finished and kept: no cluster to start
    started = not ray.is_initialized()
    if started:
        _start(ray, workers, cluster)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        threads = max(1, (os.cpu_count() or 1) // workers) if cluster is None and workers else None
        task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(one_run)
        futures = [task.remote(recipe, threads) for recipe in recipes]
        return [_result(ray, future) for future in futures]
    finally:
        if started:
            ray.shutdown()


def _start(ray, workers: int | None, cluster: str | None) -> None:
    """Connect to `cluster`, or start a local cluster of `workers` worker slots (no dashboard)."""
    settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    try:
        if cluster is not None:
            _reachable(cluster)
            ray.init(address=cluster, **settings)
        else:
            ray.init(num_cpus=workers or 1, num_gpus=None, object_store_memory=OBJECT_STORE_BYTES, **settings)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {cluster}" if cluster else "a local Ray cluster"
        raise TunerError(
            f"--cluster {cluster}: could not connect to {where}: {str(exc).strip().splitlines()[0]} Check that "
            f"`ray start --head` runs there and the address (ray://HOST:10001, or auto on its head node), or use "
            f"--workers N for a local cluster."
            if cluster
            else f"could not start {where}: {str(exc).strip().splitlines()[0]}"
        ) from None


def _reachable(cluster: str) -> None:
    """Refuse an address nothing answers at within seconds: Ray itself retries a missing head node for ever."""
    import socket

    if cluster in ("auto", "local"):
        return  # Ray reads the address `ray start` wrote on this machine, and says at once when there is none
    host, _, port = cluster.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {host or cluster}:{port} ({exc}).") from None


def _result(ray, future) -> RunResult:
    """A task's result; a run's TunerError raised again as itself (its paragraph), not as Ray's wrapper."""
    try:
        return ray.get(future)
    except ray.exceptions.RayTaskError as failed:
        if isinstance(failed.cause, TunerError):
            raise failed.cause from None
        raise
