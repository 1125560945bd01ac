"""Exports: a finished run written as something to deploy, and the proof that it is the model the run trained.

- `merged`: base and adapter merged into one Hugging Face folder (safetensors, tokenizer, chat template, generation
  config), in the base checkpoint's own precision; a QLoRA run's adapter goes into the unquantised base.
- `gguf`: the merged model as one GGUF file (`gguf_file.py`) with an Ollama `Modelfile` beside it.
- `adapter`: the run's PEFT adapter as it is, for LoRA serving (vLLM, TGI).

Each export is loaded back the way its users load it, and its next-token log-probabilities on rows of the run's own
eval predictions are compared with the run's base + adapter in fp32 (`agreement`); the largest difference and the
format's tolerance go into `export.json` beside a model card.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .adapters import with_run_adapter
from .errors import TunerError
from .files import write_text
from .gguf_file import check_architecture, write_gguf
from .models import load_config_and_tokenizer, load_model, resolve_model_path
from .rendering import render_prompt
from .runs import versions
from .speed import Precision

FORMATS = ("merged", "gguf", "adapter")
# Largest difference in a next-token log-probability (nats) each export may show against base + adapter in fp32.
# Measured on the quickstart SFT run (BENCHMARKS.md, at most): fp32 8e-5 (float rounding), f16 0.02, bf16 0.2,
# q8_0 0.43; the tolerances leave room above those and still catch a wrong tensor (differences of whole nats).
# fp32 is 1e-3: on a 2-core Intel Xeon with AVX512-BF16 the same check of the same run folder gave 7.5e-4 once and
# 2.9e-5 the next time (fp32 float rounding that varies from process to process there), where 1e-4 refused it.
TOLERANCES = {"fp32": 1e-3, "f32": 1e-3, "f16": 0.1, "fp16": 0.1, "bf16": 0.5, "q8_0": 0.75, "adapter": 1e-6}
BYTES_PER_PARAMETER = {"fp32": 4, "f32": 4, "fp16": 2, "f16": 2, "bf16": 2, "q8_0": 1.07, "adapter": 0}
CHECK_ROWS = 8


def stored_precision(model_config, source: str) -> str:
    """The precision the base checkpoint is stored in (what a merge keeps): fp32, fp16 or bf16."""
    config, _ = load_config_and_tokenizer(model_config, source)
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return {"torch.bfloat16": "bf16", "bfloat16": "bf16", "torch.float16": "fp16", "float16": "fp16"}.get(dtype, "fp32")


def check_disk(folder: Path, parameters: int, kind: str) -> None:
    """Refuse an export that cannot fit on the disk of `folder`, saying how much it needs."""
    needed = int(parameters * BYTES_PER_PARAMETER[kind] * 1.05) + (64 << 20)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise TunerError(
            f"{folder}: the export needs about {needed / 2**30:.2f} GiB and {probe} has "
            f"{free / 2**30:.2f} GiB free. Free some space or give `--out` on a larger disk."
        )


def unquantized(model_config):
    """The base as a merge needs it: never 4-bit or 8-bit (a QLoRA adapter is merged into the full-precision base)."""
    return model_config.model_copy(update={"quantize": None})


def reference_model(run):
    """The run's base + adapter in fp32 (unquantised): what every export is compared with."""
    loaded = load_model(unquantized(run.recipe.model), run.recipe.source, Precision(compute="fp32", weights="fp32"))
    return with_run_adapter(loaded.model, run.run_dir).eval(), loaded.tokenizer


def merged_model(run, precision: str):
    """Base (in `precision`, unquantised) with the run's adapter merged into its weights; no peft left."""
    loaded = load_model(
        unquantized(run.recipe.model), run.recipe.source, Precision(compute=precision, weights=precision)
    )
    return with_run_adapter(loaded.model, run.run_dir).merge_and_unload().eval(), loaded.tokenizer


def check_texts(run, tokenizer) -> list[str]:
    """Up to CHECK_ROWS texts the run scored: each prompt as the model saw it and its gold answer."""
    path = run.run_dir / "predictions.jsonl"
    texts = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines()[:CHECK_ROWS]:
            row = json.loads(line)
            answer = row.get("gold") if run.metrics.get("eval", {}).get("task") != "preference" else ""
            texts.append(str(row.get("prompt", "")) + str(answer or row.get("generated") or ""))
    if not texts:  # a run without eval predictions: a short chat through the model's own template
        texts = [render_prompt([{"role": "user", "content": "Say hello."}], tokenizer) + "Hello!"]
    return texts


def _token_logprobs(model, tokenizer, text: str):
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=ids.to(next(model.parameters()).device)).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
    return logprobs.gather(-1, ids[0, 1:, None].to(logprobs.device))[:, 0].cpu(), logprobs.argmax(-1).cpu()


def agreement(reference, candidate, reference_tokenizer, candidate_tokenizer, texts: list[str]) -> dict[str, Any]:
    """Next-token log-probabilities of two models on the same texts: the largest and mean absolute difference over
    every position, and how often both put the same token first. Both must tokenize each text the same way."""
    compared = []
    for text in texts:
        ours, ours_top = _token_logprobs(reference, reference_tokenizer, text)
        theirs, theirs_top = _token_logprobs(candidate, candidate_tokenizer, text)
        if ours.shape != theirs.shape:
            raise TunerError(
                "the exported tokenizer splits the check text differently from the run's; the export is "
                "not the same model. Report this with the run's base model."
            )
        compared.append((ours, ours_top, theirs, theirs_top))
    return differences(compared)


def differences(compared) -> dict[str, Any]:
    """The check's figures over (reference log-probs, reference top tokens, candidate log-probs, candidate top
    tokens) per text: largest and mean absolute difference, positions, share of the same top token."""
    import torch

    largest, total, positions, same_top = 0.0, 0.0, 0, 0
    for ours, ours_top, theirs, theirs_top in compared:
        difference = (ours - theirs).abs()
        largest = max(largest, float(difference.max()))
        total += float(difference.sum())
        positions += difference.numel()
        same_top += int(torch.eq(ours_top, theirs_top).sum())
    return {
        "rows": len(compared),
        "positions": positions,
        "max_abs_logprob_difference": largest,
        "mean_abs_logprob_difference": total / max(positions, 1),
        "same_top_token_share": round(same_top / max(positions, 1), 4),
    }


def load_merged(folder: Path):
    """A merged export as its users load it: plain transformers, no peft, upcast to fp32 for the check."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", use_safetensors=True)
    return model.float().eval(), AutoTokenizer.from_pretrained(folder)


def load_gguf(path: Path):
    """A GGUF export through transformers' GGUF loader (which dequantises to fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def llama_cpp_tokens(path: Path, tokenizer, texts: list[str]) -> dict[str, Any] | None:
    """Where llama-cpp-python is importable: the GGUF file's vocabulary read by llama.cpp itself, and every check
    text (and "a", for the BOS it puts first) tokenized there as the run's tokenizer does. transformers' GGUF loader
    rebuilds a tokenizer of its own, so a wrong pre-tokenizer or BOS shows only here. None without llama.cpp."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    differing = [
        n
        for n, text in enumerate(texts)
        if vocab.tokenize(text.encode(), add_bos=False, special=True)
        != tokenizer(text, add_special_tokens=False)["input_ids"]
    ]
    bos = vocab.tokenize(b"a", add_bos=True, special=True) == tokenizer("a")["input_ids"]
    if differing or not bos:
        raise TunerError(
            f"{path}: llama.cpp tokenizes {'check text ' + str(differing[0]) if differing else 'a text'} "
            f"otherwise than the run's tokenizer ({'its words' if differing else 'the BOS token'}), so "
            f"llama.cpp and Ollama would serve another model. Export `--to merged` and convert it with "
            f"llama.cpp's convert_hf_to_gguf.py."
        )
    return {"rows": len(texts), "same_tokens": True, "same_bos": True}


# The same check read by llama.cpp itself, which serves GGUF files with an f16 KV cache (and, for q8_0, quantised
# activations): the review measured 1.6-1.9x the error transformers' GGUF reader shows (f32 0.015, f16 0.027, bf16
# 0.51, q8_0 0.71 on 20 quickstart rows); these leave room above those and still catch a wrong tensor.
LLAMA_CPP_TOLERANCES = {"f32": 0.1, "f16": 0.1, "bf16": 0.75, "q8_0": 1.0}
LLAMA_CPP_SCORE = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
path, texts = sys.argv[1], json.load(open(sys.argv[2]))
llm = Llama(model_path=path, logits_all=True, verbose=False, n_ctx=4096)
out = []
for ids in texts:
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
    top = logits.max(-1, keepdims=True)
    logprobs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    out.append({"logprobs": [float(logprobs[i, ids[i + 1]]) for i in range(len(ids) - 1)],
                "top": [int(i) for i in logprobs[:-1].argmax(-1)]})
print(json.dumps(out))
"""


def llama_cpp_agreement(path: Path, reference, tokenizer, texts: list[str], quant: str) -> dict[str, Any] | None:
    """Where llama-cpp-python is importable: the GGUF's next-token log-probabilities computed by llama.cpp (in a
    process of its own, so a crash of llama.cpp is reported, not suffered) against the run's base + adapter, with
    llama.cpp's tolerance. None without llama.cpp."""
    import torch

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-c", LLAMA_CPP_SCORE, str(path), str(Path(scratch) / "ids.json")],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_WAIT_POLICY": "passive"},
        )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"signal {-done.returncode}"]
        return {
            "error": f"llama.cpp could not read the file ({said[0]}); on an Intel Xeon with AMX its AMX kernel "
            f"crashes on q8_0 weights (upstream): serve with --no-repack there",
            "passed": None,
        }
    compared = [
        (*_token_logprobs(reference, tokenizer, text), torch.tensor(found["logprobs"]), torch.tensor(found["top"]))
        for text, found in zip(texts, json.loads(done.stdout))
    ]
    found = differences(compared)
    tolerance = LLAMA_CPP_TOLERANCES[quant]
    return {**found, "tolerance": tolerance, "passed": found["max_abs_logprob_difference"] <= tolerance}


def refusal(folder: Path, kind: str, check: dict[str, Any], served: dict[str, Any]) -> TunerError:
    """The paragraph for an export beyond its tolerance, in transformers or (`served`) in llama.cpp."""
    worst, tolerance, reader = check["max_abs_logprob_difference"], TOLERANCES[kind], ""
    if served.get("passed") is False:
        worst, tolerance, reader = served["max_abs_logprob_difference"], served["tolerance"], " in llama.cpp"
    return TunerError(
        f"{folder}: the export does not reproduce the run{reader}: next-token log-probabilities differ by up to "
        f"{worst:.3g}, above the {kind} tolerance {tolerance:g}. Do not deploy it; export.json holds the check. A "
        f"coarser --quant (f16 rather than q8_0) or `--to merged` stays closer."
    )


def load_adapter(run, folder: Path):
    """An adapter export on the run's base in fp32, the way peft serving loads it."""
    from peft import PeftModel

    loaded = load_model(unquantized(run.recipe.model), run.recipe.source, Precision(compute="fp32", weights="fp32"))
    return PeftModel.from_pretrained(loaded.model, str(folder)).eval(), loaded.tokenizer


# transformers 4 names the tokenizer classes of 5 otherwise; `PreTrainedTokenizerFast` reads tokenizer.json in both.
TOKENIZER_CLASS_BOTH_READ = "PreTrainedTokenizerFast"


def readable_by_transformers_4(folder: Path) -> None:
    """Make a merged folder that transformers 5 wrote read the same in transformers 4 (TGI and older servers):
    transformers 5 writes RoPE's settings only as `rope_parameters` and the tokenizer class as `TokenizersBackend`;
    transformers 4 does not know that class, and without a top-level `rope_theta` it silently takes 10000 (off by
    whole nats for SmolLM2's 100000). The 4.x keys are added beside the 5.x ones, which 5.x reads first."""
    config_file, tokenizer_file = folder / "config.json", folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters") or {}
    # Models with sliding and full attention (Gemma 3) keep one RoPE per kind of layer; 4.x calls the local one
    # `rope_local_base_freq`.
    full, local = (rope, None) if "rope_theta" in rope else (rope.get("full_attention"), rope.get("sliding_attention"))
    if isinstance(full, dict) and "rope_theta" in full:
        config.setdefault("rope_theta", full["rope_theta"])
        if full.get("rope_type", "default") != "default":
            config.setdefault("rope_scaling", {k: v for k, v in full.items() if k != "rope_theta"})
    if isinstance(local, dict) and "rope_theta" in local:
        config.setdefault("rope_local_base_freq", local["rope_theta"])
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer_file.is_file():
        tokenizer_config = json.loads(tokenizer_file.read_text(encoding="utf-8"))
        if tokenizer_config.get("tokenizer_class") == "TokenizersBackend":
            tokenizer_config["tokenizer_class"] = TOKENIZER_CLASS_BOTH_READ
            write_text(tokenizer_file, json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")


def save_merged(model, tokenizer, folder: Path) -> list[str]:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    readable_by_transformers_4(folder)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def copy_adapter(run, folder: Path) -> list[str]:
    for path in sorted(run.adapter.iterdir()):
        if path.is_file() and path.name != "README.md":
            shutil.copy2(path, folder / path.name)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def source_gguf(run) -> Path | None:
    """The base model's own GGUF file, when the run's base came from one (its tokenizer metadata is reused)."""
    name = run.recipe.model.name_or_path
    path = resolve_model_path(name, run.recipe.source)
    return Path(path) if path.endswith(".gguf") else None


def gguf_export(run, model, tokenizer, folder: Path, quant: str) -> tuple[Path, dict[str, Any]]:
    check_architecture(model.config.model_type, str(run.run_dir))
    path = folder / f"model-{quant}.gguf"
    written = write_gguf(model, tokenizer, path, quant, name=run.run_dir.name, source_gguf=source_gguf(run))
    write_text(folder / "Modelfile", modelfile(path.name, tokenizer.chat_template or "", run.recipe.data.system_prompt))
    return path, written


# Ollama reads Go templates, not Jinja: ChatML models (SmolLM2, Qwen2) get this one; for others Ollama falls back on
# the chat template in the GGUF's metadata, which it recognises for the common families.
CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


def modelfile(gguf_name: str, chat_template: str, system_prompt: str | None) -> str:
    """An Ollama Modelfile for the GGUF file beside it: `ollama create NAME -f Modelfile`."""
    lines = ["# ollama create my-model -f Modelfile && ollama run my-model", f"FROM ./{gguf_name}"]
    if "<|im_start|>" in chat_template:
        lines += [f'TEMPLATE """{CHATML}"""', 'PARAMETER stop "<|im_end|>"']
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def record(
    run,
    kind: str,
    quant: str | None,
    files: list[str],
    check: dict[str, Any],
    merged_into: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """export.json: what was exported from which run, how it scored, and how close the export is to it."""
    model = run.manifest.get("model", {})
    return {
        "format": kind,
        "quant": quant,
        "files": files,
        "run": str(run.run_dir),
        "method": run.recipe.method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": {
            k: model.get(k) for k in ("name_or_path", "resolved_path", "gguf_sha256", "model_type", "parameters")
        },
        "quantize_in_training": run.recipe.model.quantize,
        "merged_into": merged_into,
        "eval": run.metrics.get("eval"),
        "data": {
            k: run.manifest.get("data", {}).get(k)
            for k in ("format", "train_rows", "eval_rows", "train_fingerprint", "eval_fingerprint")
        },
        "train_data": ", ".join(one.describe() for one in run.recipe.data.train_sources()),
        "eval_data": (run.recipe.data.eval.path or run.recipe.data.eval.hub) if run.recipe.data.eval else None,
        "check": check,
        "versions": versions(),
        "trained_with_versions": run.manifest.get("versions"),
        **(extra or {}),
    }


def hub_id(name: str) -> bool:
    """Whether a model name is a Hugging Face Hub id (`owner/name`), the only kind a model card's `base_model` may
    hold: a `pkg://` name or a local folder there becomes a broken link on the Hub and in llama.cpp's converter
    (`general.base_model.0.repo_url`)."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not Path(name).exists()


def model_card(info: dict[str, Any]) -> str:
    """README.md of an export: what it is, what it was trained on, how it scored, how close it is to the run."""
    base, check, scores = info["base_model"], info["check"], info.get("eval") or {}
    library = "peft" if info["format"] == "adapter" else "transformers" if info["format"] == "merged" else "gguf"
    score = (
        f"{scores.get('metric', 'accuracy')} {scores['accuracy']:.4f} (95% CI {scores['accuracy_ci95'][0]:.4f}-"
        f"{scores['accuracy_ci95'][1]:.4f}) on {scores['rows']} held-out rows ({scores['task']} task, "
        f"{info['eval_data'] or 'held out from the train data'}"
        + (f", computed in {scores['precision']}" if scores.get("precision") else "")
        + ")"
        if scores
        else "not scored (no `eval.task`)"
    )
    lines = [
        "---",
        *([f"base_model: {base['name_or_path']}"] if hub_id(base["name_or_path"]) else []),
        f"library_name: {library}",
        "tags:",
        "- tuner",
        f"- {info['method']}",
        "---",
        "",
        f"# {Path(info['run']).name} ({info['format']}{', ' + info['quant'] if info['quant'] else ''})",
        "",
        f"Exported by `tuner export` from the {info['method'].upper()} run `{info['run']}`.",
        "",
        f"- Base model: `{base['name_or_path']}` ({base.get('model_type')}, {base.get('parameters')} parameters"
        + (f", GGUF sha256 {base['gguf_sha256'][:16]}…" if base.get("gguf_sha256") else "")
        + ")",
        f"- Trained on: `{info['train_data']}`, {info['data']['train_rows']} rows ({info['data']['format']}, "
        f"fingerprint {str(info['data']['train_fingerprint'])[:16]})",
        f"- Scored: {score}",
    ]
    if info.get("merged_into"):
        lines.append(f"- Merged into: {info['merged_into']}")
    served = info.get("llama_cpp_check") or {}
    if served.get("positions"):
        lines.append(
            f"- Read by llama.cpp itself: at most {served['max_abs_logprob_difference']:.2e} from the run "
            f"(tolerance {served['tolerance']:g}), the same top token at {100 * served['same_top_token_share']:.1f}%."
        )
    elif served.get("error"):
        lines.append(f"- Read by llama.cpp itself: {served['error']}.")
    lines += [
        f"- Checked: next-token log-probabilities on {check['rows']} eval rows ({check['positions']} positions) "
        f"differ from the run's base + adapter (fp32) by at most {check['max_abs_logprob_difference']:.2e} "
        f"(tolerance {check['tolerance']:g}); the same top token at {100 * check['same_top_token_share']:.1f}% "
        f"of positions.",
        "",
        "## Use",
        "",
        "```",
        *USAGE[info["format"]](info),
        "```",
        "",
        "Details: `export.json`.",
    ]
    return "\n".join(lines) + "\n"


def _base_folder(info: dict[str, Any]) -> str:
    return info["base_model"].get("resolved_path") or info["base_model"]["name_or_path"]


# How each export is loaded by the tools it is made for (docs/deploy.md has more).
USAGE = {
    "merged": lambda info: [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained('.')",
        "tokenizer = AutoTokenizer.from_pretrained('.')",
    ],
    "gguf": lambda info: [
        f"llama-server -m {info['files'][0]}           # llama.cpp, OpenAI-compatible server",
        *(
            ["# on an Intel Xeon with AMX add --no-repack: llama.cpp's AMX kernel crashes on q8_0 weights (upstream)"]
            if info["quant"] == "q8_0"
            else []
        ),
        "ollama create my-model -f Modelfile && ollama run my-model",
    ],
    "adapter": lambda info: [
        f"vllm serve {_base_folder(info)} --enable-lora --lora-modules {Path(info['run']).name}=.",
        "# or in Python: PeftModel.from_pretrained(base_model, '.')",
    ],
}
