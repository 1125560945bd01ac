"""`tuner compare`: the prompting, retrieval and fine-tuning trade-off as one table, read from run folders.

One row per run: method, base model, accuracy with its 95% interval and row count per task, the change against a
baseline row, training, indexing and evaluation device-hours, latency with retrieval's share, prompt tokens, peak
memory, trainable parameters, the requests after which a tuned model's one-off cost is paid back, and, given a price,
cost. Runs scored on other eval rows or prompt rendering than the baseline are flagged and get no change figure.
Under the table: what differs between runs beyond the method, read from each run's manifest.

    from tuner import compare
    result = compare(["runs/quickstart"])        # a parent folder, or run folders
    result.table, result.figure                   # a pandas DataFrame (one row per run), the plot (matplotlib)
    result.write("runs/quickstart/comparison")    # Markdown, CSV, JSON, PNG and report.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .costs import add_break_even, cost_per_1k_requests, is_prompt_side, phase_hours, run_cost, upstream_train_hours
from .defaults import METHOD_NAMES
from .errors import TunerError
from .files import write_json, write_text
from .intervals import bootstrap_interval, wilson_interval
from .plot import accuracy_vs_training
from .provenance import differences
from .report import report_html
from .runs import predictions_file, read_predictions, rewritable_folder
from .seeds import SEED_FOLDER, group_key, group_name, groups, merge, seed_of
from .table import markdown
from .trackers import log_comparison
from .verdict import group as group_rows
from .verdict import judge

RUN_FILES = ("recipe.yaml", "metrics.json", "manifest.json")
WHAT_A_RUN_HOLDS = (
    "a run folder is what `tuner sft`, `tuner dpo`, `tuner kto`, `tuner reward`, `tuner fewshot`, "
    "`tuner rag` or `tuner eval` wrote: it holds recipe.yaml, metrics.json and manifest.json"
)
# Method order of rows found in a parent folder: cheapest first, so the default baseline is the zero-shot run.
RANK = {
    "fewshot": 0,
    "base": 1,
    "rag": 2,
    "sft": 3,
    "dpo": 5,
    "kto": 6,
    "grpo": 7,
    "rloo": 7,
    "sft+dpo": 8,
    "sft+kto": 9,
    "sft+grpo": 10,
    "sft+rloo": 10,
    "reward": 11,
}
# What `verdict.py` fills in per task: the change against the group's baseline and its test, the group, the best.
JUDGED = (
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "delta_p",
    "delta_distinguishable",
    "group",
    "group_baseline",
    "best",
    "tied_with_best",
)
ADAPTER_NAMES = {"lora": "", "dora": "DoRA ", "rslora": "rsLoRA "}
RETRIEVERS = {"bm25": "BM25", "dense": "dense", "hybrid": "hybrid"}


def _rank(metrics: dict[str, Any]) -> float:
    """Rows in a parent folder: prompting, retrieval, tuning, tuning with retrieval, feedback tuning."""
    if metrics.get("method") == "rag" and metrics.get("adapter_run"):
        return 4.5 if metrics.get("upstream_retrieval_aware") else 4
    if metrics.get("method") == "sft" and metrics.get("retriever"):
        return 4.5
    return RANK.get(metrics.get("method"), 9)


@dataclass
class RunRecord:
    """One run folder as read: its metrics and manifest (None when missing or unreadable) and what went wrong."""

    path: Path
    name: str
    metrics: dict[str, Any] | None
    manifest: dict[str, Any] | None
    recipe: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """The result of `compare`: `table` (a pandas DataFrame, one row per run, raw numbers), `figure` (matplotlib),
    the `baseline` run's name, the `tasks` compared, `differences` between runs beyond the method, `problems`
    (runs whose files were missing or unreadable; their rows are marked), and per task the `groups` of rows (indices
    into the table, each group's baseline first) scored on the same eval rows and compared among themselves.
    `table, figure = comparison` also works."""

    table: Any
    figure: Any
    baseline: str | None
    tasks: list[str]
    differences: dict[str, Any]
    problems: list[str]
    units: str
    groups: dict[str, list[list[int]]] = field(default_factory=dict)
    requests_per_month: int | None = None
    prices: tuple[float | None, float | None] = (None, None)

    def __iter__(self):
        return iter((self.table, self.figure))

    def markdown(self) -> str:
        """The table as Markdown, with the notes and the reproducibility section under it."""
        return markdown(self)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def write(self, folder: str | Path, report_to: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """Write comparison.md, .csv, .json, .png and report.html into `folder`: an earlier comparison there is
        replaced, said in one line; a folder holding anything else is left alone and `folder-2`... is used. Trackers
        in `report_to` (tensorboard, mlflow) get each run's numbers and the table (`tracked`: where each went)."""
        out = rewritable_folder(folder, COMPARISON_FILES, "an earlier comparison")
        paths = {kind: out / f"comparison.{kind}" for kind in ("md", "csv", "json", "png")}
        paths["html"] = out / "report.html"
        write_text(paths["md"], self.markdown())
        write_text(paths["csv"], self.table.to_csv(index=False))
        write_json(
            paths["json"],
            {
                "baseline": self.baseline,
                "tasks": self.tasks,
                "units": self.units,
                "runs": json.loads(self.table.to_json(orient="records")),
                "differences": self.differences,
                "problems": self.problems,
            },
        )
        self.figure.savefig(paths["png"], dpi=130, bbox_inches="tight")
        write_text(paths["html"], report_html(self))
        if report_to:
            runs = json.loads(self.table.to_json(orient="records"))
            return {**paths, "tracked": log_comparison(list(report_to), out, runs, self.markdown())}
        return paths


COMPARISON_FILES = {
    "comparison.md",
    "comparison.csv",
    "comparison.json",
    "comparison.png",
    "report.html",
    "learning_curve.png",
    "learning_curve.md",
    "tensorboard",
}  # a sweep's comparison adds its learning curve


def find_runs(paths: list[str | Path]) -> list[list[Path]]:
    """The run folders named, or found in the folders named: one level down, or two where a folder holds runs
    (the `seed-<n>` runs of `--seeds`, the points of a sweep); one group per path given."""
    if not paths:
        raise TunerError(
            "no runs to compare: name run folders, or a folder holding them (for example "
            "`tuner compare runs/quickstart`)."
        )
    groups = []
    for given in map(Path, paths):
        if not given.exists():
            raise TunerError(
                f"{given}: no such folder. Name run folders, or a folder holding them; {WHAT_A_RUN_HOLDS}."
            )
        if given.is_dir() and _is_run(given):
            groups.append([given])
            continue
        found = (
            sorted(
                run
                for child in given.iterdir()
                if child.is_dir()
                for run in ([child] if _is_run(child) else _runs_in(child))
            )
            if given.is_dir()
            else []
        )
        finished = [run for run in found if not _unfinished(run)]
        if found and not finished:
            raise TunerError(f"{given}: every run it holds is unfinished (no metrics.json): run them again first.")
        if not found:
            raise TunerError(
                f"{given}: not a run folder, and it holds none: {WHAT_A_RUN_HOLDS}. Name such folders, "
                f"or the folder holding them."
            )
        groups.append(finished)
    return groups


def _unfinished(run: Path) -> bool:
    """A run folder found in a parent that never finished (stopped, killed, its scoring failed): left out, and said,
    so the comparison of the others still prints. Named directly, it is marked in the table instead."""
    if (run / "metrics.json").is_file() or not (run / "recipe.yaml").is_file():
        return False
    if (run / "manifest.json").is_file() and not (run / "evaluation_error.json").is_file():
        return False  # a finished run that lost its metrics: damaged, marked in the table
    if (run / "evaluation_error.json").is_file():
        how = "its training finished but scoring did not: `tuner eval RECIPE --adapter` scores it"
    elif (run / "checkpoints").is_dir():
        how = "its training stopped: the recipe with `--resume` continues it"
    else:
        how = "it stopped before training or scoring ended: run it again"
    print(f"tuner: left out {run}: unfinished (no metrics.json); {how}")
    return True


def _is_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_FILES)


def _runs_in(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if child.is_dir() and _is_run(child)]


def _read_json(path: Path, record: RunRecord, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        record.problems.append(f"{path} is missing ({what}); the run may have stopped before it finished: run it again")
        record.notes.append(f"{path.name} missing")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        record.problems.append(f"{path} is unreadable ({exc}); the run folder is damaged: run it again")
        record.notes.append(f"{path.name} unreadable")
        return None
    return data


def read_run(path: Path) -> RunRecord:
    """Read one run folder's metrics.json and manifest.json, noting what is missing or unreadable."""
    record = RunRecord(path=path, name=path.name, metrics=None, manifest=None)
    record.metrics = _read_json(path / "metrics.json", record, "the run's scores")
    record.manifest = _read_json(path / "manifest.json", record, "the run's model, data and versions")
    try:
        recipe = yaml.safe_load((path / "recipe.yaml").read_text(encoding="utf-8"))
        record.recipe = recipe if isinstance(recipe, dict) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        record.recipe = None  # without its recipe a run is compared alone, never grouped with other seeds
    return record


def method_label(metrics: dict[str, Any], manifest: dict[str, Any]) -> str:
    """A run's method as a reader names it: zero-shot, 5-shot (similar), SFT, QLoRA SFT, DPO, SFT+DPO...; a served
    model's run says so: zero-shot (served)."""
    label = _method_label(metrics, manifest)
    return f"{label} (served)" if (manifest.get("model") or {}).get("endpoint") else label


def _method_label(metrics: dict[str, Any], manifest: dict[str, Any]) -> str:
    method = metrics.get("method") or manifest.get("method")
    if method == "fewshot":
        k = metrics.get("k", manifest.get("fewshot", {}).get("k"))
        return "zero-shot" if k == 0 else f"{k}-shot ({metrics.get('select', '?')})"
    if method == "base":
        return "base model (tuner eval)"
    retriever = RETRIEVERS.get(metrics.get("retriever"), metrics.get("retriever"))
    if method == "rag" and metrics.get("rerank"):
        retriever = f"{retriever}, reranked"
    if method == "rag":
        if metrics.get("retrieval_only"):
            return f"retrieval only ({retriever})"
        if metrics.get("upstream_retrieval_aware"):
            return f"retrieval-aware SFT ({retriever})"
        upstream = METHOD_NAMES.get(metrics.get("upstream_method"))
        return f"{upstream}+RAG ({retriever})" if metrics.get("adapter_run") else f"RAG ({retriever})"
    adapter = ADAPTER_NAMES.get((manifest.get("adapter") or {}).get("type", "lora"), "")
    quantized = (manifest.get("model") or {}).get("quantize")
    name = METHOD_NAMES.get(method, str(method))
    label = f"{'QLoRA ' if quantized else adapter}{name}"
    if method == "sft" and retriever:
        label = f"retrieval-aware {label} ({retriever})"
    if metrics.get("adapter"):
        label += " (tuner eval)"
    return label


def evaluations(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's scores by task (choice, generate, preference), from its `eval` and `eval_NAME` entries."""
    found = {}
    for key in sorted(metrics, key=lambda k: (k != "eval", k)):
        scores = metrics[key]
        if key.startswith("eval") and isinstance(scores, dict) and "task" in scores and "accuracy" in scores:
            found.setdefault(scores["task"], scores)
    return found


def _identity(scores: dict[str, Any], manifest: dict[str, Any]) -> dict[str, str | None]:
    """What an evaluation scored: fingerprints of its rows and rendering, and (for runs written before tuner recorded
    those) the manifest's eval data fingerprint and eval settings."""
    # The batch size changes speed, not scores; the trackers, where the scores are logged.
    settings = {k: v for k, v in (manifest.get("eval_settings") or {}).items() if k not in ("batch_size", "report_to")}
    return {
        "rows": scores.get("rows_fingerprint"),
        "prompt": scores.get("prompt_fingerprint"),
        "data": (manifest.get("data") or {}).get("eval_fingerprint"),
        "settings": json.dumps(settings, sort_keys=True) if settings else None,
    }


def _mismatch(identity: dict[str, str | None], reference: dict[str, str | None]) -> str | None:
    """'other eval rows', 'other prompt rendering', or None when two evaluations can be compared."""
    if identity["rows"] and reference["rows"]:
        pairs = [("other eval rows", "rows"), ("other prompt rendering", "prompt")]
    else:
        # Older runs: the manifest's eval data fingerprint covers the rows as rendered (system prompt, template).
        pairs = [("other eval rows or prompt rendering", "data"), ("other scoring settings", "settings")]
    return next((what for what, key in pairs if identity[key] != reference[key]), None)


def _row(record: RunRecord, tasks: list[str]) -> dict[str, Any]:
    metrics, manifest = record.metrics or {}, record.manifest or {}
    phases = metrics.get("phases") or {}
    scores = evaluations(metrics)
    notes: list[str] = []
    train_hours, unit = phase_hours(phases, ["train"])
    train_hours += upstream_train_hours(record.path, manifest, notes)
    dropped = (manifest.get("data") or {}).get("train_rows_dropped_as_eval_questions")
    if dropped:
        notes.append(f"{dropped} train rows asking eval questions dropped")
    eval_hours, eval_unit = phase_hours(phases, [name for name in phases if name.startswith("eval")])
    index_build = (metrics.get("index") or {}).get("build") or {}
    row: dict[str, Any] = {
        "run": record.name,
        "method": method_label(metrics, manifest) if metrics else None,
        "model": _model_name(manifest),
    }
    for task in tasks:
        task_scores = scores.get(task, {})
        # Wilson's interval from the score and its rows, so runs scored before tuner used it compare alike.
        low, high = (
            wilson_interval(task_scores["accuracy"], task_scores["rows"]) if task_scores.get("rows") else [None, None]
        )
        row.update(
            {
                f"{task}_accuracy": task_scores.get("accuracy"),
                f"{task}_metric": task_scores.get("metric", "accuracy" if task_scores else None),
                f"{task}_other_metrics": {
                    name: found["mean"]
                    for name, found in (task_scores.get("metrics") or {}).items()
                    if name != task_scores.get("metric")
                },
                f"{task}_truncated_share": task_scores.get("truncated_share"),
                f"{task}_ci_low": low,
                f"{task}_ci_high": high,
                f"{task}_rows": task_scores.get("rows"),
                **dict.fromkeys(f"{task}_{key}" for key in JUDGED),
                f"{task}_macro_f1": task_scores.get("macro_f1"),
            }
        )
    main = metrics.get("eval") or {}
    latency = latency_interval(record, main.get("task")) or [None, None]
    peaks = [record.get("peak_memory_mb") for record in phases.values() if record.get("peak_memory_mb") is not None]
    row.update(
        {
            "train_hours": train_hours if metrics else None,
            # Indexing is retrieval's one-off cost, as training is tuning's: the build's hours, also when reused.
            "index_hours": index_build.get("gpu_hours", index_build.get("cpu_hours")) if index_build else None,
            "eval_hours": eval_hours if metrics else None,
            "hours_unit": "GPU" if "GPU" in (unit, eval_unit) else "CPU",
            "task": main.get("task"),
            "latency_ms": main.get("latency_ms_per_example"),
            # A served model's price per row at the recipe's token prices (None: a local model, priced per hour; 0:
            # a server the recipe gives no price, which no tuned run can undercut).
            "price_per_request": (main.get("served") or {}).get("price_per_row"),
            "served_p95_ms": (main.get("served") or {}).get("latency_ms_p95"),
            "scored_rows": main.get("rows"),
            "latency_ci_low": latency[0],
            "latency_ci_high": latency[1],
            "groundedness": main.get("groundedness"),
            "answer_found_not_used_rate": main.get("answer_found_not_used_rate"),
            "retrieval_ms": main.get("retrieval_ms_per_example"),
            "prompt_tokens": main.get("prompt_tokens_per_example"),
            "peak_memory_mb": max(peaks) if peaks else None,
            "memory_kind": "GPU" if (manifest.get("hardware") or {}).get("device") == "cuda" else "RSS",
            "trainable_parameters": metrics.get("trainable_parameters"),
            "notes": record.notes + notes,
            "path": str(record.path),
        }
    )
    return row


def _model_name(manifest: dict[str, Any]) -> str | None:
    endpoint = (manifest.get("model") or {}).get("endpoint")
    if endpoint:  # the model the server serves, where it serves it
        return f"{endpoint['model']} at {endpoint['base_url'].split('://')[-1].split('/')[0]}"
    name = (manifest.get("model") or {}).get("name_or_path")
    return name.rstrip("/").split("/")[-1] if name else None


def _predictions(record: RunRecord, task: str) -> list[dict[str, Any]] | None:
    """The run's predictions for `task`; None when the file is missing, unreadable or holds another number of rows
    than the run scored."""
    metrics = record.metrics or {}
    path = predictions_file(record.path, metrics, task)
    if path is None:
        return None
    try:
        found = list(read_predictions(path))
    except (OSError, ValueError):
        return None
    return found if found and len(found) == evaluations(metrics)[task].get("rows") else None


def outcomes(record: RunRecord, task: str) -> list[float] | None:
    """Each eval row's score in row order (1.0 or 0.0 for right or wrong; a graded metric's value where the run's
    primary metric is graded), from the run's predictions file for `task`; None when it cannot be read whole."""
    found = _predictions(record, task)
    try:
        return None if found is None else [float(p.get("score", bool(p["correct"]))) for p in found]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def latency_interval(record: RunRecord, task: str | None) -> list[float] | None:
    """The 95% interval of a run's ms per request: as its evaluation recorded it, else by bootstrap over its
    predictions' per-row latencies (runs scored before tuner recorded one); None without either."""
    scores = (record.metrics or {}).get("eval") or {}
    if scores.get("latency_ms_ci95"):
        return scores["latency_ms_ci95"]
    found = _predictions(record, task) if task else None
    try:
        latencies = [float(p["latency_ms"]) for p in found or []]
    except (KeyError, TypeError, ValueError):
        return None
    return bootstrap_interval(latencies) if latencies else None


def _outcome_matrix(members: list[RunRecord], task: str) -> list[list[float]] | None:
    """Each seed's row scores for `task` (`outcomes`), or None when a seed's predictions are missing."""
    found = [outcomes(member, task) for member in members]
    return None if any(correct is None for correct in found) else found


def _judge(rows: list[dict[str, Any]], members: list[list[RunRecord]], tasks: list[str], baseline: int | None):
    """Per task: the rows grouped by the eval rows and rendering they were scored on, and each group judged within
    itself (`verdict.group`, `verdict.judge`): changes against its baseline with paired intervals and exact tests,
    the most accurate run and its ties. Returns each task's groups (row indices, the reference first)."""
    found = {}
    for task in tasks:
        identities = [
            _identity(evaluations(group[0].metrics or {})[task], group[0].manifest or {})
            if task in evaluations(group[0].metrics or {})
            else None
            for group in members
        ]
        found[task] = group_rows(rows, task, identities, baseline, _mismatch)
        matrices = [_outcome_matrix(group, task) if identities[n] else None for n, group in enumerate(members)]
        for indices in found[task]:
            judge(rows, task, indices, matrices)
    return found


def compare(
    paths: list[str | Path],
    baseline: str | None = None,
    price_per_gpu_hour: float | None = None,
    price_per_cpu_hour: float | None = None,
    requests_per_month: int | None = None,
) -> Comparison:
    """Read run folders (or folders holding them) and build the comparison table and plot.

    `baseline`: the run (folder name) that changes in accuracy are measured against; default the first row (runs
    found in a parent folder are ordered zero-shot, few-shot, SFT, DPO, SFT+DPO). `price_per_gpu_hour` (and
    `price_per_cpu_hour` for CPU runs) add a `cost` column, (training + indexing + evaluation hours) x price, and
    `cost_per_1k_requests`. Runs with a one-off cost get `break_even_requests` against the most accurate prompt-side
    run (few-shot or retrieval) scored on the same rows: the requests after which their faster requests have paid
    for it, where the latency difference is beyond its noise. Runs are compared per task within groups scored on the
    same eval rows and prompts (`verdict.py`); `requests_per_month` adds each group's recommendation at that volume.
    Raises TunerError for paths that are not run folders; runs with missing or unreadable files stay in the table,
    marked, and are listed in `problems`.
    """
    import pandas as pd

    if requests_per_month is not None and requests_per_month < 1:
        raise TunerError(
            f"--requests-per-month {requests_per_month}: give the requests a month the model would serve, a whole "
            f"number of at least 1 (e.g. 100000)."
        )
    records = []
    for group in find_runs(paths):
        read = [read_run(path) for path in group]
        if len(group) > 1:
            read.sort(key=lambda r: (_rank(r.metrics or {}), (r.metrics or {}).get("k", 0), str(r.path)))
        records.extend(read)
    records = list({record.path.resolve(): record for record in records}.values())
    for record in records:
        if SEED_FOLDER.match(record.name):
            record.name = f"{record.path.parent.name}/{record.name}"
    record_names = [record.name for record in records]
    for record in records:
        if record_names.count(record.name) > 1:
            record.name = str(record.path)
    tasks = list(dict.fromkeys(task for r in records for task in evaluations(r.metrics or {})))
    # Runs that differ only by seed are one row.
    seeds = [seed_of(record.recipe, record.manifest) for record in records]
    keys = [group_key(r.recipe, r.metrics) for r in records]
    indices = groups(keys, seeds, [r.path for r in records])
    members = [[records[i] for i in group] for group in indices]
    # Seeds of one recipe scored on other rows stay apart (their keys differ by the rows alone): their rows say so.
    recipe_keys = [group_key(r.recipe, r.metrics, scored=False) for r in records]
    for group in indices:
        mine = group[0]
        apart = [
            records[other[0]].name
            for other in indices
            if recipe_keys[mine] is not None
            and recipe_keys[other[0]] == recipe_keys[mine]
            and keys[other[0]] != keys[mine]
        ]
        if apart:
            records[mine].notes.append(f"same recipe as {', '.join(apart)} but scored on other eval rows: not averaged")
    rows = []
    for group in members:
        name, folder = group_name([record.path for record in group])
        rows.append(
            merge(
                [_row(record, tasks) for record in group],
                [seed_of(r.recipe, r.manifest) for r in group],
                tasks,
                {task: _outcome_matrix(group, task) for task in tasks},
                name,
                folder,
            )
        )
    for longer in (lambda row, group: group[0].name if len(group) == 1 else row["run"], lambda row, group: row["path"]):
        names = [row["run"] for row in rows]
        for row, group in zip(rows, members):
            if names.count(row["run"]) > 1:
                row["run"] = longer(row, group)

    base_index = _baseline_index(rows, members, baseline)
    judged = _judge(rows, members, tasks, base_index)
    add_break_even(
        rows, [is_prompt_side(group[0].metrics or {}) for group in members], price_per_gpu_hour, price_per_cpu_hour
    )
    if price_per_gpu_hour is not None or price_per_cpu_hour is not None or any(r["price_per_request"] for r in rows):
        for row in rows:
            row["cost"] = run_cost(row, price_per_gpu_hour, price_per_cpu_hour)
            row["cost_per_1k_requests"] = cost_per_1k_requests(row, price_per_gpu_hour, price_per_cpu_hour)
    for row in rows:
        row["notes"] = "; ".join(row["notes"])
    table = pd.DataFrame(rows)
    units = _units(rows)
    problems = [problem for record in records for problem in record.problems]

    figure = accuracy_vs_training(rows, tasks[0] if tasks else None, units)
    return Comparison(
        table=table,
        figure=figure,
        baseline=rows[base_index]["run"] if base_index is not None else None,
        tasks=tasks,
        differences=differences({record.name: record.manifest for record in records}),
        problems=problems,
        units=units,
        groups=judged,
        requests_per_month=requests_per_month,
        prices=(price_per_gpu_hour, price_per_cpu_hour),
    )


def _baseline_index(rows: list[dict[str, Any]], members: list[list[RunRecord]], baseline: str | None) -> int | None:
    if baseline is None:
        return next((i for i, group in enumerate(members) if group[0].metrics), None)
    for index, (row, group) in enumerate(zip(rows, members)):
        if baseline in (row["run"], row["path"], Path(row["path"]).name) or any(
            baseline in (record.name, str(record.path)) for record in group
        ):
            return index
    raise TunerError(
        f"--baseline {baseline!r} is not one of the runs compared ({', '.join(r['run'] for r in rows)}). "
        f"Name one of them."
    )


def _units(rows: list[dict[str, Any]]) -> str:
    kinds = {row["hours_unit"] for row in rows if row["train_hours"] is not None}
    return kinds.pop() if len(kinds) == 1 else "GPU or CPU"
