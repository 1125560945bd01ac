"""How long the `tuner` command takes to start: `tuner --help` and `tuner validate` against a bare
`python -c "import click"` (the floor: Python and click, which every click command pays).

    python benchmarks/cli_start.py [RECIPE] [--repeats 10]

Each arm runs as a fresh process, the arms alternating within each repeat (a noisy machine slows all of them
alike); prints each arm's median seconds and its ratio to the floor of the same invocation.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="recipes/quickstart/sft.yaml")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    arms = {
        "python -c 'import click' (floor)": [sys.executable, "-c", "import click"],
        "tuner --help": [sys.executable, "-m", "tuner", "--help"],
        "tuner sft --help": [sys.executable, "-m", "tuner", "sft", "--help"],
        f"tuner validate {args.recipe}": [sys.executable, "-m", "tuner", "validate", args.recipe],
    }
    for command in arms.values():  # warm the file cache and tuner's cache of TRL's field names
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, command in arms.items():
            times[name].append(seconds(command))
    floor = statistics.median(next(iter(times.values())))
    print(f"| command | seconds (median of {args.repeats}) | ratio to the floor |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / floor:.2f}x |")


if __name__ == "__main__":
    main()
