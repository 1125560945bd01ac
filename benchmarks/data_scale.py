"""How `tuner validate` grows with the rows of a data file, cold and with the converted rows cached, and (optionally)
how long a cached second `tuner sft` takes to reach training.

    python benchmarks/data_scale.py [--sizes 10000,100000,1000000] [--baseline-src PATH] [--held-out] [--train-rows N]

For each size it writes a classification JSONL (the quickstart tickets, repeated with a row number so no two rows are
alike) and runs `tuner validate` in fresh processes: cold (an empty cache: read, convert, keep), then cached (the
converted rows memory-mapped). Each prints wall seconds, peak RSS and RSS over the file's size; the cached arm's
ratio is against the cold arm of the same invocation. `--baseline-src` also runs both arms with another checkout's
`src` (say, main before this change: `git worktree add /tmp/before <commit>`), for the ratio against it.
`--held-out` draws the eval rows from the train file (`data.eval_fraction`) rather than reading `data.eval`.
`--train-rows N` runs `tuner sft` with one training step on N rows twice, cold and cached (the second run reuses the
converted and TRL's tokenized rows), and prints both wall times: the difference is what the cache saves before the
first step. The hardware's limit here is reading the file: pyarrow parses JSON at several hundred MB/s, so a cold run
is bound by converting rows in Python (one core), not by the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "examples" / "data" / "tickets"
RECIPE = ROOT / "recipes" / "quickstart" / "sft.yaml"

# Runs the CLI in this process and reports its peak RSS on stderr, whatever the command's exit.
CHILD = """
import resource, sys
try:
    from tuner.cli import cli
    cli(sys.argv[1:], prog_name="tuner")
except SystemExit as stop:
    code = stop.code or 0
else:
    code = 0
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
print("CHILDREN_PEAK_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def write_rows(path: Path, rows: int) -> None:
    tickets = [json.loads(line) for line in (TICKETS / "train.jsonl").read_text().splitlines()]
    draw = random.Random(0)
    with path.open("w", encoding="utf-8") as out:
        for number in range(rows):
            ticket = draw.choice(tickets)
            out.write(
                json.dumps({"id": f"t{number}", "text": f"{ticket['text']} (ref {number})", "label": ticket["label"]})
            )
            out.write("\n")


def write_recipe(folder: Path, train: Path, extra: dict | None = None, held_out: bool = False) -> Path:
    import yaml

    document = yaml.safe_load(RECIPE.read_text())
    document["data"]["train"] = {"path": str(train)}
    if held_out:  # the eval rows drawn from the train file (data.eval_fraction, 10% by default)
        document["data"].pop("eval", None)
    else:
        document["data"]["eval"] = {"path": str(TICKETS / "test.jsonl")}
    document["output_dir"] = str(folder / "runs" / "sft")
    for section, values in (extra or {}).items():
        document[section] = {**document.get(section, {}), **values}
    path = folder / f"recipe-{train.stem}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(args: list[str], cache: Path, src: Path | None = None) -> tuple[float, float, float]:
    """One fresh process of `tuner ARGS`: (wall seconds, peak RSS in MB, peak anonymous RSS in MB), each with the
    processes it starts (the fingerprint's helper): RSS is its own peak plus its largest child's, and counts the pages
    of memory-mapped files read (the converted rows of a cached run), which the kernel may drop and read again; the
    anonymous part, the memory the processes hold themselves, is their sum sampled every 20 ms."""
    env = {**os.environ, "TUNER_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start, anonymous = time.perf_counter(), 0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=out, stderr=err, text=True, env=env)
        while child.poll() is None:
            anonymous = max(anonymous, _anonymous_kb(child.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        sys.exit(f"tuner {' '.join(args)} failed:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    names = ("PEAK_KB ", "CHILDREN_PEAK_KB ")
    peaks = {line.split()[0]: int(line.split()[1]) for line in stderr.splitlines() if line.startswith(names)}
    return seconds, (peaks["PEAK_KB"] + peaks.get("CHILDREN_PEAK_KB", 0)) / 1024, anonymous / 1024


def _anonymous_kb(pid: int) -> int:
    """The anonymous RSS of a process and every process below it, in KB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        tasks = Path(f"/proc/{pid}/task").iterdir()
        children = [int(n) for task in tasks for n in (task / "children").read_text().split()]
    except OSError:
        return 0
    own = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")), 0)
    return own + sum(_anonymous_kb(child) for child in children)


def primed(cache: Path, src: Path | None = None, training: Path | None = None) -> Path:
    """A cache folder holding what commands cache besides data (TRL's field names; with `training`, a one-step run
    folder, the model converted from GGUF) but no converted rows, so a cold arm pays for the data alone."""
    if training is None:
        run(["validate", str(RECIPE)], cache, src)
    else:
        recipe = write_recipe(
            training, TICKETS / "train.jsonl", {"train": {"max_steps": 1}, "data": {"max_eval_samples": 8}}
        )
        run(["--quiet", "sft", str(recipe), "--set", f"output_dir={training / 'runs' / 'prime'}"], cache, src)
    shutil.rmtree(cache / "data", ignore_errors=True)
    return cache


def machine() -> str:
    import datasets
    import pyarrow

    from tuner.hardware import cpu_has_native_bf16, cpu_name

    return (
        f"{cpu_name()} ({os.cpu_count()} cores, native bf16: {'yes' if cpu_has_native_bf16() else 'no'}); Python "
        f"{platform.python_version()}, datasets {datasets.__version__}, pyarrow {pyarrow.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src folder, run cold beside this one")
    parser.add_argument("--train-rows", type=int, default=0, help="also time a cold and a cached `tuner sft` on N rows")
    parser.add_argument(
        "--held-out", action="store_true", help="draw the eval rows from the train file (eval_fraction), not data.eval"
    )
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="tuner-data-scale-"))
    header = "| rows | file MB | arm | wall s | peak RSS MB | RSS / file | peak anon MB | anon / file | vs cold |"
    print(header + "\n|---|---|---|---|---|---|---|---|---|")
    for rows in [int(size) for size in args.sizes.split(",") if size]:
        train = work / f"train-{rows}.jsonl"
        write_rows(train, rows)
        recipe, size = write_recipe(work, train, held_out=args.held_out), train.stat().st_size / 2**20
        arms = []
        if args.baseline_src:
            base = primed(work / f"base-{rows}", args.baseline_src)
            arms.append(("baseline (cold)", run(["validate", str(recipe)], base, args.baseline_src)))
            arms.append(("baseline (cached)", run(["validate", str(recipe)], base, args.baseline_src)))
        cache = primed(work / f"cache-{rows}")
        arms.append(("cold", run(["validate", str(recipe)], cache)))
        arms.append(("cached", run(["validate", str(recipe)], cache)))
        cold = dict(arms)["cold"][0]
        for name, (seconds, peak, anonymous) in arms:
            memory = f"{peak:,.0f} | {peak / size:.1f}x | {anonymous:,.0f} | {anonymous / size:.1f}x"
            print(f"| {rows:,} | {size:.1f} | {name} | {seconds:.1f} | {memory} | {seconds / cold:.2f}x |")
        print(f"|   | | cold: {rows / cold:,.0f} rows/s, whole command | | | | | | |", flush=True)
    if args.train_rows:
        train = work / f"train-{args.train_rows}.jsonl"
        write_rows(train, args.train_rows)
        cache = primed(work / "cache-train", training=work)
        times = []
        for arm in ("cold", "cached"):
            recipe = write_recipe(work, train, {"train": {"max_steps": 1}, "data": {"max_eval_samples": 8}})
            out = f"output_dir={work / 'runs' / arm}"
            times.append(run(["--quiet", "sft", str(recipe), "--set", out], cache))
        (cold_s, cold_mb, _), (warm_s, warm_mb, _) = times
        print(
            f"tuner sft, 1 step on {args.train_rows:,} rows: cold {cold_s:.1f} s ({cold_mb:,.0f} MB), cached "
            f"{warm_s:.1f} s ({warm_mb:,.0f} MB): {cold_s - warm_s:.1f} s less before the first step "
            f"({cold_s / warm_s:.2f}x)"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
