"""A run's GGUF export scored as it is served: llama.cpp's OpenAI-compatible server (llama-cpp-python's) with the
export, asked through `model.endpoint` on the run's own eval rows, beside the run's in-process scores.

    python benchmarks/served.py runs/quickstart-sft --llama-python .venv-llama/bin/python
    python benchmarks/served.py RUN --llama-python PY --rows 50 --concurrency 1,4 --price-per-cpu-hour 0.05

For each concurrency it prints the served accuracy (choice, scored as the server allows: prompt log-probabilities,
or the greedy reply matched to the choices where they are missing or misaligned), the share of rows answered as the
run answered them in process (its predictions.jsonl, fp32 on a CPU), request latency p50 and p95 and requests per
second, every request sent to the server (the response cache is off, so nothing is replayed). Then `tuner compare`
of the served arm and the run, the served arm priced per token at the recipe's prices (recipes/quickstart/served.yaml)
and the run at `--price-per-cpu-hour`, with the break-even between them. The baseline is the run itself: agreement
1.0 and its own accuracy. `bash install.sh --llama-server` builds the server (it compiles llama.cpp).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

RECIPE = "recipes/quickstart/served.yaml"


def start_server(python: str, gguf: Path, alias: str) -> tuple[str, subprocess.Popen]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias, "--n_ctx", "2048"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--verbose", "false"]
    # passive OpenMP waiting: busy-waiting threads starve each other on a few shared cores
    log = tempfile.TemporaryFile()
    environment = {**os.environ, "OMP_WAIT_POLICY": "passive"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=log)
    base_url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                return base_url, process
        except OSError:
            if process.poll() is not None:
                log.seek(0)
                raise SystemExit(f"llama.cpp's server stopped: {log.read().decode()[-2000:]}") from None
            time.sleep(0.5)
    process.kill()
    raise SystemExit("llama.cpp's server did not answer within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished SFT run folder (its GGUF export is made if absent)")
    parser.add_argument("--llama-python", required=True, help="a Python with llama-cpp-python[server]")
    parser.add_argument("--rows", type=int, default=50, help="the first N of the run's eval rows")
    parser.add_argument("--quant", default="f16")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--price-per-cpu-hour", type=float, default=0.05)
    args = parser.parse_args()

    from tuner import compare, export, load_recipe
    from tuner.recipes import fewshot

    run = Path(args.run)
    gguf = run / "exports" / f"gguf-{args.quant}" / f"model-{args.quant}.gguf"
    if not gguf.is_file():
        gguf = export(run, "gguf", quant=args.quant).folder / f"model-{args.quant}.gguf"
    reported = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()][: args.rows]
    in_process = json.loads((run / "metrics.json").read_text())["eval"]
    own = sum(r["correct"] for r in reported) / len(reported)
    ms = in_process["latency_ms_per_example"]
    print(f"in process: accuracy {own:.3f} on the first {len(reported)} rows, {ms} ms/row (all rows)")
    base_url, server = start_server(args.llama_python, gguf, "tickets")
    out = Path(tempfile.mkdtemp(prefix="served-"))
    print(
        "| concurrency | choice method | served accuracy | same answer as in process | p50 ms | p95 ms | requests/s |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    try:
        last = None
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            recipe = load_recipe(
                RECIPE,
                [
                    f"model.endpoint.base_url={base_url}",
                    f"model.endpoint.concurrency={concurrency}",
                    "model.endpoint.cache=false",
                    f"data.max_eval_samples={args.rows}",
                    f"output_dir={out / f'served-c{concurrency}'}",
                ],
            )
            start = time.perf_counter()
            result = fewshot.run(recipe)
            wall = time.perf_counter() - start
            scored = result.metrics["eval"]
            answered = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
            same = sum(a["prediction"] == r["prediction"] for a, r in zip(answered, reported)) / len(reported)
            served = scored["served"]
            print(
                f"| {concurrency} | {scored.get('choice_method')} | {scored['accuracy']:.3f} | {same:.2f} | "
                f"{served['latency_ms_p50']:.0f} | {served['latency_ms_p95']:.0f} | {served['requests'] / wall:.2f} |"
            )
            last = result.run_dir
    finally:
        server.terminate()
        server.wait(timeout=30)
    comparison = compare([last, run], price_per_cpu_hour=args.price_per_cpu_hour)
    print()
    print(comparison.markdown())


if __name__ == "__main__":
    main()
