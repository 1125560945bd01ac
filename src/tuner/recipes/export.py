"""`tuner export`: a finished run as a merged Hugging Face model, a GGUF file (with an Ollama Modelfile) or its
adapter, checked against the run before it is called done.

`export(run, to)` reads top to bottom: read the run, check what can be checked before loading (adapter, format,
architecture, disk), load base + adapter as the reference, write the export into a new folder, load it back, compare
log-probabilities, write export.json and the model card, refuse a result beyond the format's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TunerError
from ..exports import (
    FORMATS,
    TOLERANCES,
    agreement,
    check_disk,
    check_texts,
    copy_adapter,
    gguf_export,
    llama_cpp_agreement,
    llama_cpp_tokens,
    load_adapter,
    load_gguf,
    load_merged,
    merged_model,
    model_card,
    record,
    reference_model,
    refusal,
    save_merged,
    stored_precision,
)
from ..files import as_umask_allows, write_json, write_text
from ..gguf_file import QUANTS, check_architecture
from ..runs import CLAIM, new_run_dir, read_run


@dataclass
class ExportResult:
    """Where an export was written and its export.json (files, check, base model, scores)."""

    folder: Path
    info: dict[str, Any]


def _checked_request(run, to: str, quant: str | None) -> str | None:
    if to not in FORMATS:
        raise TunerError(f"--to {to!r} is not an export format; choose {', '.join(FORMATS)}.")
    run.require_policy("export")
    if run.adapter is None:
        raise TunerError(
            f"{run.run_dir}: this {run.recipe.method} run trained no adapter (it has no "
            f"adapter/adapter_config.json), so there is nothing of its own to export. Export the SFT or "
            f"DPO run it used (`model.adapter`), or train one with `tuner sft`."
        )
    if to != "gguf" and quant is not None:
        raise TunerError(f"--quant {quant} applies to `--to gguf` only; a {to} export keeps the weights as they are.")
    quant = quant or ("f16" if to == "gguf" else None)
    if to == "gguf":
        if quant not in QUANTS:
            raise TunerError(f"--quant {quant!r} is not a GGUF type tuner writes; choose {', '.join(QUANTS)}.")
        check_architecture(str(run.manifest.get("model", {}).get("model_type")), str(run.run_dir))
    return quant


def export(
    run_path: str | Path, to: str = "merged", out: str | Path | None = None, quant: str | None = None
) -> ExportResult:
    """Export a finished SFT or DPO run (`to`: merged, gguf or adapter; `quant` for gguf: f32, f16, bf16, q8_0) into
    `out` (default: `<run>/exports/<format>`; a folder that holds files is never overwritten) and check it."""
    run = read_run(run_path)
    quant = _checked_request(run, to, quant)
    precision = stored_precision(run.recipe.model, run.recipe.source)
    kind = {"merged": precision, "gguf": quant, "adapter": "adapter"}[to]
    target = Path(out) if out else run.run_dir / "exports" / (f"gguf-{quant}" if to == "gguf" else to)
    check_disk(target, int(run.manifest.get("model", {}).get("parameters") or 0), kind)
    reference, tokenizer = reference_model(run)
    texts = check_texts(run, tokenizer)
    folder = new_run_dir(target)

    merged_into, extra = None, {}
    if to == "adapter":
        files = copy_adapter(run, folder)
        candidate, candidate_tokenizer = load_adapter(run, folder)
    else:
        model, model_tokenizer = merged_model(run, precision if to == "merged" else "fp32")
        merged_into = (
            f"the base's {precision} weights"
            if to == "merged"
            else f"the base's weights in fp32, then written as {quant}"
        ) + (
            f" (unquantised: the run trained against {run.recipe.model.quantize} weights, so expect small "
            f"differences from its scores)"
            if run.recipe.model.quantize
            else ""
        )
        if to == "merged":
            files = save_merged(model, model_tokenizer, folder)
            candidate, candidate_tokenizer = load_merged(folder)
        else:
            path, extra["gguf"] = gguf_export(run, model, model_tokenizer, folder, quant)
            extra["llama_cpp"] = llama_cpp_tokens(path, tokenizer, texts)
            extra["llama_cpp_check"] = llama_cpp_agreement(path, reference, tokenizer, texts, quant)
            files = [path.name, "Modelfile"]
            candidate, candidate_tokenizer = load_gguf(path)
        del model

    check = agreement(reference, candidate, tokenizer, candidate_tokenizer, texts)
    served = extra.get("llama_cpp_check") or {}
    check.update(
        tolerance=TOLERANCES[kind],
        # llama.cpp's own reading, where it ran, must be within its tolerance too: it is what llama.cpp serves
        passed=check["max_abs_logprob_difference"] <= TOLERANCES[kind] and served.get("passed") is not False,
        reference="the run's base model (unquantised, fp32) with its adapter, unmerged",
    )
    info = record(run, to, quant, files + ["README.md", "export.json"], check, merged_into, extra)
    write_json(folder / "export.json", info)
    write_text(folder / "README.md", model_card(info))
    (folder / CLAIM).unlink(missing_ok=True)
    as_umask_allows(folder)
    if not check["passed"]:
        raise refusal(folder, kind, check, served)
    return ExportResult(folder=folder, info=info)
