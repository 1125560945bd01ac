"""How long `tuner validate` takes with TRL's field names cached against without (TRL imported to read them).

    python benchmarks/validate_speed.py [RECIPE] [--repeats 3]

Each arm runs `python -m tuner validate RECIPE` as a fresh process (what a user waits for), alternating arms; the
cold arm points TUNER_CACHE at an empty folder each time. Prints median seconds and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def once(recipe: str, cache: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "validate", recipe],
        capture_output=True,
        text=True,
        env={**os.environ, "TUNER_CACHE": cache},
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="recipes/quickstart/sft.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warm_cache = tempfile.mkdtemp()
    once(args.recipe, warm_cache)  # fills the warm arm's cache
    cold, warm = [], []
    for _ in range(args.repeats):
        cold.append(once(args.recipe, tempfile.mkdtemp()))
        warm.append(once(args.recipe, warm_cache))
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print(
        f"tuner validate {args.recipe}: cached TRL fields {warm_s:.2f} s, importing TRL {cold_s:.2f} s "
        f"(median of {args.repeats}); {cold_s / warm_s:.1f}x faster cached"
    )


if __name__ == "__main__":
    main()
