"""How close each export is to the run it came from, what it costs to make, and whether llama.cpp reads it the same.

    python benchmarks/exports.py runs/quickstart/sft                        # every format, in a temporary folder
    python benchmarks/exports.py RUN --llama-cpp /tmp/llama/bin/python      # also llama.cpp, through a Python that
                                                                            # has llama-cpp-python (see below)

For each export (merged; GGUF f32, f16, bf16, q8_0; adapter) it prints the seconds `tuner.export` took (writing,
loading back and checking), the size on disk, and the check's figures against the run's base + adapter in fp32 on the
run's first eight eval rows: the largest and mean difference of a next-token log-probability (nats) and the share of
positions where both put the same token first. The baseline is the reference itself (difference 0, same top token
everywhere): every figure says how far from the trained model an export is.

With `--llama-cpp`, each GGUF is also read by llama.cpp (llama-cpp-python, in the Python given: it is built from
source, so it is not one of tuner's dependencies) and the same texts are scored there: tokens must match the
tokenizer's, and the log-probabilities are compared with the reference's. To make that Python:

    python -m venv /tmp/llama && CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \\
        /tmp/llama/bin/pip install llama-cpp-python==0.3.36        # compiles llama.cpp: minutes on two cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

LLAMA_CPP_SCORE = r"""
import json, sys
import numpy as np
import llama_cpp.llama_cpp as low
from llama_cpp import Llama
default_params = low.llama_model_default_params
def no_repack():
    # llama.cpp's AMX kernel segfaults on q8_0 and Q4 weights on Intel Xeons with AMX (upstream files too); repacking
    # into its extra buffers only buys speed, and this script measures agreement (llama-server's --no-repack)
    params = default_params()
    if hasattr(params, "use_extra_bufts"):
        params.use_extra_bufts = False
    return params
low.llama_model_default_params = no_repack
path, texts = sys.argv[1], json.load(open(sys.argv[2]))
llm = Llama(model_path=path, logits_all=True, verbose=False, n_ctx=2048)
out = []
for text in texts:
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(tokens)
    logits = np.array(llm.scores[:len(tokens)], dtype=np.float64)
    top = logits.max(-1, keepdims=True)
    logprobs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    out.append({"tokens": tokens, "logprobs": [float(logprobs[i, tokens[i + 1]]) for i in range(len(tokens) - 1)],
                "top": [int(i) for i in logprobs[:-1].argmax(-1)]})
print(json.dumps(out))
"""


def llama_cpp_agreement(python: str, gguf: Path, texts: list[str], reference, tokenizer) -> dict:
    """Score `texts` with llama.cpp in `python` and compare with the reference's next-token log-probabilities."""
    from tuner.exports import _token_logprobs

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts, handle)
    done = subprocess.run(
        [python, "-c", LLAMA_CPP_SCORE, str(gguf), handle.name], capture_output=True, text=True, check=True
    )
    largest, total, positions, same, same_tokens = 0.0, 0.0, 0, 0, True
    for text, theirs in zip(texts, json.loads(done.stdout)):
        ours, ours_top = _token_logprobs(reference, tokenizer, text)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        same_tokens &= ids == theirs["tokens"]
        for n, value in enumerate(theirs["logprobs"]):
            difference = abs(float(ours[n]) - value)
            largest, total, positions = max(largest, difference), total + difference, positions + 1
            same += int(ours_top[n]) == theirs["top"][n]
    return {"same_tokens": same_tokens, "max": largest, "mean": total / positions, "same_top": same / positions}


def size(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished SFT or DPO run folder")
    parser.add_argument("--llama-cpp", metavar="PYTHON", help="a Python with llama-cpp-python installed")
    parser.add_argument("--out", help="where to write the exports (default: a temporary folder)")
    args = parser.parse_args()

    from tuner import export
    from tuner.exports import check_texts, reference_model
    from tuner.runs import read_run, versions

    out = Path(args.out or tempfile.mkdtemp(prefix="tuner-exports-"))
    arms = [("merged", None), ("gguf", "f32"), ("gguf", "f16"), ("gguf", "bf16"), ("gguf", "q8_0"), ("adapter", None)]
    rows = []
    for to, quant in arms:
        start = time.perf_counter()
        result = export(args.run, to, out / f"{to}-{quant or 'as-is'}", quant)
        seconds = time.perf_counter() - start
        rows.append((to, quant, seconds, size(result.folder), result.info["check"], result.folder))
    reference, tokenizer = reference_model(read_run(args.run))
    texts = check_texts(read_run(args.run), tokenizer)

    print(
        f"run {args.run}; check on {rows[0][4]['rows']} eval rows, {rows[0][4]['positions']} positions; "
        f"torch {versions()['torch']}, transformers {versions()['transformers']}, gguf {versions()['gguf']}"
    )
    print(
        "| export | seconds | MiB | max abs Δ log-prob | mean abs Δ | same top token | tolerance |"
        + (" llama.cpp: same tokens | llama.cpp max Δ | llama.cpp same top |" if args.llama_cpp else "")
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" --- | ---: | ---: |" if args.llama_cpp else ""))
    for to, quant, seconds, mib, check, folder in rows:
        line = (
            f"| {to}{' ' + quant if quant else ''} | {seconds:.1f} | {mib:.0f} | "
            f"{check['max_abs_logprob_difference']:.2e} | {check['mean_abs_logprob_difference']:.2e} | "
            f"{100 * check['same_top_token_share']:.1f}% | {check['tolerance']:g} |"
        )
        if args.llama_cpp:
            if to == "gguf":
                found = llama_cpp_agreement(args.llama_cpp, folder / f"model-{quant}.gguf", texts, reference, tokenizer)
                same = "yes" if found["same_tokens"] else "NO"
                line += f" {same} | {found['max']:.2e} | {100 * found['same_top']:.1f}% |"
            else:
                line += " | | |"
        print(line)
    print(f"exports in {out}")


if __name__ == "__main__":
    main()
