"""The `tuner` command: parses arguments, calls the Python API, turns known errors into one-paragraph messages."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from .errors import SIGINT_EXIT, TunerError
from .hardware import is_main_process
from .noise import quiet_libraries, unwatched_bars_off
from .options import (
    dry_run_option,
    example,
    prompt_dry_run_option,
    resume_option,
    set_option,
    spread_options,
)
from .progress import QUIET_VARIABLE
from .secrets import redact
from .summary import report_run

# The API (recipes, schema, data, models) is imported inside each command, where it runs: `tuner --help`, a
# command's --help and a mistyped option then cost Python and click alone (they cost 4.4x `import click` when
# this module imported the API at its top).


def _load(path: str, overrides: tuple[str, ...], method: str | None = None):
    from .recipe_file import load_recipe

    recipe = load_recipe(path, overrides)
    if method is not None and recipe.method != method:
        raise TunerError(
            f"{path}: key `method` is {recipe.method!r}, but this is `tuner {method}`. Run "
            f"`tuner {recipe.method} {path}` or change the recipe's method."
        )
    return recipe


def _fail(error: TunerError) -> None:
    # A stop the user asked for (a signal: exit 128 + its number) is not an error of theirs.
    click.echo(redact(f"{'stopped' if error.exit_code > 128 else 'error'}: {error}"), err=True)
    sys.exit(error.exit_code)


class Commands(click.Group):
    """tuner's command group: Ctrl-C anywhere outside the training loop (which saves a checkpoint and says how to
    resume) ends with one paragraph and exit code 130, not click's "Aborted!" and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(
                "stopped: Ctrl-C before the command finished. A run folder it made holds no metrics.json, so it "
                "is unfinished and `tuner compare` leaves it out; run the command again (`--resume` continues "
                "training from its last checkpoint where one was saved).",
                err=True,
            )
            sys.exit(SIGINT_EXIT)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tuner")
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Results and errors only: no progress (tuner's, training's, data loading's) and no library warnings.",
)
def cli(quiet: bool) -> None:
    """Few-shot, retrieval, SFT, DPO, KTO, reward models and GRPO on your data, measured the same way."""
    # A log file gets tuner's lines (a long phase's tenths included), not the bars libraries draw while preparing.
    unwatched_bars_off(sys.stderr.isatty())
    if quiet:
        quiet_libraries()
        # Read by tuner's progress and by tqdm itself (TRL's and transformers' training bars, datasets' bars).
        os.environ[QUIET_VARIABLE] = "1"
        os.environ["TQDM_DISABLE"] = "1"


@cli.command(epilog=example("validate"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
def validate(recipe_path: str, overrides: tuple[str, ...]) -> None:
    """Check a recipe (keys, types, files, TRL keys, data rows) without loading any model."""
    from .recipes import preflight

    try:
        recipe = _load(recipe_path, overrides)
        report = preflight.validate(recipe)
    except TunerError as error:
        _fail(error)
    skipped = report["skipped_train_rows"]["count"] + report["skipped_eval_rows"]["count"]
    skipped_text = f" ({skipped} bad {'row' if skipped == 1 else 'rows'} skipped)" if skipped else ""
    click.echo(
        f"{recipe_path}: ok. method {recipe.method}, model {recipe.model.name_or_path}, data "
        f"{report['format']} with {report['train_rows']} train and {report['eval_rows']} eval rows"
        f"{skipped_text}, output {recipe.output_dir}{_taken(recipe.output_dir)}"
    )
    if report.get("labels"):
        labels = report["labels"]
        click.echo(f"  {len(labels)} labels: {', '.join(map(str, labels[:20]))}{' ...' if len(labels) > 20 else ''}")
    if "corpus" in report:
        corpus = report["corpus"]
        click.echo(
            f"  corpus {recipe.rag.corpus}: {corpus['documents']} documents"
            + (f"; skipped {len(corpus['skipped'])}: {'; '.join(corpus['skipped'][:5])}" if corpus["skipped"] else "")
        )


def _taken(output_dir: str) -> str:
    from .runs import next_run_dir

    free = next_run_dir(output_dir)
    return f" (it holds files: this run will be {free})" if free != Path(output_dir) else ""


@cli.command(epilog=example("sft"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@resume_option
@dry_run_option
def sft(recipe_path: str, overrides: tuple[str, ...], spread: tuple, resume: bool, dry_run: bool) -> None:
    """Supervised fine-tuning of a LoRA/QLoRA adapter (TRL SFTTrainer)."""
    _train(recipe_path, overrides, spread, resume, dry_run, "sft")


@cli.command(epilog=example("dpo"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@resume_option
@dry_run_option
def dpo(recipe_path: str, overrides: tuple[str, ...], spread: tuple, resume: bool, dry_run: bool) -> None:
    """Preference tuning (DPO) of a LoRA/QLoRA adapter (TRL DPOTrainer), new or continuing an SFT run (with seeds,
    each seed continues the same seed of the SFT run when `model.adapter` holds seed-<n> folders)."""
    _train(recipe_path, overrides, spread, resume, dry_run, "dpo")


@cli.command(epilog=example("kto"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@resume_option
@dry_run_option
def kto(recipe_path: str, overrides: tuple[str, ...], spread: tuple, resume: bool, dry_run: bool) -> None:
    """Feedback tuning (KTO) of a LoRA/QLoRA adapter on answers marked good or bad (TRL KTOTrainer), new or
    continuing an SFT run."""
    _train(recipe_path, overrides, spread, resume, dry_run, "kto")


@cli.command(epilog=example("reward"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@resume_option
@dry_run_option
def reward(recipe_path: str, overrides: tuple[str, ...], spread: tuple, resume: bool, dry_run: bool) -> None:
    """A reward model from preference pairs: a LoRA adapter and a score head on the base (TRL RewardTrainer), scored
    by how often it ranks held-out chosen answers first."""
    _train(recipe_path, overrides, spread, resume, dry_run, "reward")


@cli.command(epilog=example("grpo"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@resume_option
@dry_run_option
def grpo(recipe_path: str, overrides: tuple[str, ...], spread: tuple, resume: bool, dry_run: bool) -> None:
    """Reinforcement learning (GRPO, or RLOO with `grpo.algorithm: rloo`; TRL's trainers) of a LoRA/QLoRA adapter
    against the recipe's rewards: built-in checks of the answer, a reward model run, or your function; new or
    continuing an SFT run."""
    _train(recipe_path, overrides, spread, resume, dry_run, "grpo")


@cli.command(epilog=example("fewshot"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@prompt_dry_run_option
def fewshot(recipe_path: str, overrides: tuple[str, ...], spread: tuple, dry_run: bool) -> None:
    """Few-shot prompt baseline: k in-context examples from the train split, no training."""
    _prompt(recipe_path, overrides, spread, dry_run, "fewshot")


@cli.command(epilog=example("rag"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
@spread_options
@prompt_dry_run_option
def rag(recipe_path: str, overrides: tuple[str, ...], spread: tuple, dry_run: bool) -> None:
    """Retrieval into the prompt: k passages from an index of the recipe's corpus before each question (BM25, dense
    or hybrid, optionally reranked), no training; with `model.adapter`, for a tuned adapter (SFT+RAG); with
    `rag.retrieval_only`, retrieval scored alone (recall@k, MRR, nDCG@k) and no model loaded."""
    _prompt(recipe_path, overrides, spread, dry_run, "rag")


@cli.command("eval", epilog=example("eval"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.option("--adapter", metavar="RUN_FOLDER", help="Score the adapter of this run folder (default: the base model).")
@click.option("--output-dir", metavar="FOLDER", help="Where to write (default: the recipe's output_dir + '-eval').")
@set_option
def eval_command(recipe_path: str, adapter: str | None, output_dir: str | None, overrides: tuple[str, ...]) -> None:
    """Score a base model or a trained adapter with the recipe's `eval` section."""
    from .recipes import evaluation

    try:
        recipe = _load(recipe_path, overrides)
        if recipe.eval.task is None:
            raise TunerError(f"{recipe_path}: `eval.task` is not set; set it to choice, generate or preference.")
        result = evaluation.run(recipe, adapter=adapter, output_dir=output_dir)
    except TunerError as error:
        _fail(error)
    report_run(result)


@cli.command("compare", epilog=example("compare"))
@click.argument("paths", metavar="RUN_FOLDER...", nargs=-1)
@click.option(
    "--baseline",
    metavar="RUN",
    help="Run (folder name) that accuracy changes are measured against "
    "(default: the first row; runs in a parent folder are ordered zero-shot, few-shot, RAG, SFT, SFT+RAG, DPO, "
    "SFT+DPO).",
)
@click.option("--price-per-gpu-hour", type=float, metavar="PRICE", help="Add a cost column for GPU runs.")
@click.option("--price-per-cpu-hour", type=float, metavar="PRICE", help="Add a cost column for CPU runs.")
@click.option(
    "--requests-per-month",
    type=int,
    metavar="N",
    help="Recommend, among the runs within noise of the most accurate, the cheapest for a first month at N requests "
    "(one-off hours plus N requests at each run's latency; priced by the price options where given).",
)
@click.option(
    "--output-dir",
    metavar="FOLDER",
    help="Where to write (default: `comparison` beside the runs). An "
    "earlier comparison there is replaced; a folder holding anything else is left alone and FOLDER-2 used.",
)
@click.option(
    "--report-to",
    metavar="TRACKERS",
    default="",
    help="Also log each run's numbers and the table to these trackers, comma-separated: tensorboard "
    "(<output-dir>/tensorboard), mlflow (a run named for the comparison, in MLflow's configured store).",
)
def compare_command(
    paths: tuple[str, ...],
    baseline: str | None,
    price_per_gpu_hour: float | None,
    price_per_cpu_hour: float | None,
    requests_per_month: int | None,
    output_dir: str | None,
    report_to: str,
) -> None:
    """One table of runs: accuracy with intervals, training, indexing and eval hours, latency (retrieval's share),
    prompt tokens, memory, parameters, cost; written as Markdown, CSV, JSON, a PNG plot of accuracy against one-off
    hours and against ms per request, and report.html, the decision report on one page."""
    from .comparison import compare, find_runs
    from .trackers import PACKAGES, installed

    trackers = [name.strip() for name in report_to.split(",") if name.strip()]
    for name in trackers:
        if name not in PACKAGES or not installed(name):
            _fail(
                TunerError(
                    f"--report-to {report_to}: {name} is not a tracker tuner logs to (tensorboard, mlflow). Fix the "
                    f"option."
                    if name not in PACKAGES
                    else f"--report-to {report_to}: {name}'s package is not installed. Install it (`pip install "
                    f"{PACKAGES[name][1]}`, or `pip install 'tuner[track]'`) or leave it out."
                )
            )
    try:
        comparison = compare(list(paths), baseline, price_per_gpu_hour, price_per_cpu_hour, requests_per_month)
    except TunerError as error:
        _fail(error)
    if output_dir is None:
        first = find_runs(list(paths))[0][0]
        output_dir = str(Path(paths[0]) / "comparison" if first != Path(paths[0]) else first.parent / "comparison")
    written = comparison.write(output_dir, trackers)
    click.echo(comparison.markdown())
    click.echo(f"Table: {written['md']} (also {written['csv'].name}, {written['json'].name})")
    click.echo(f"Plot: {written['png']}")
    click.echo(f"Report: {written['html']} (one page: open it in a browser)")
    for name, where in written.get("tracked", {}).items():
        click.echo(f"Tracked in {name}: {where['error'] if isinstance(where, dict) else where}")
    if comparison.problems:
        _fail(
            TunerError(
                f"{len(comparison.problems)} run file(s) could not be read, so their rows are marked: "
                + "; ".join(comparison.problems)
                + "."
            )
        )


@cli.command("export", epilog=example("export"))
@click.argument("run_path", metavar="RUN_FOLDER")
@click.option(
    "--to",
    "to",
    type=click.Choice(["merged", "gguf", "adapter"]),
    default="merged",
    show_default=True,
    help="merged: one Hugging Face folder, base and adapter merged; gguf: one GGUF file for llama.cpp and "
    "Ollama (with a Modelfile); adapter: the PEFT adapter for LoRA serving (vLLM, TGI).",
)
@click.option("--quant", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), help="GGUF tensor type (default f16).")
@click.option(
    "--out",
    metavar="FOLDER",
    help="Where to write (default: RUN_FOLDER/exports/<format>; a folder that holds files is never overwritten).",
)
def export_command(run_path: str, to: str, quant: str | None, out: str | None) -> None:
    """Export a finished SFT or DPO run for deployment, load it back and check its next-token log-probabilities
    against the run's base + adapter; writes export.json and a model card beside it."""
    from .recipes.export import export

    try:
        result = export(run_path, to, out, quant)
    except TunerError as error:
        _fail(error)
    check = result.info["check"]
    click.echo(f"\nExport: {result.folder}")
    click.echo("  holds: " + ", ".join(result.info["files"]))
    click.echo(
        f"  check: next-token log-probabilities within {check['max_abs_logprob_difference']:.2e} of the run's "
        f"base + adapter on {check['rows']} eval rows (tolerance {check['tolerance']:g}), same top token at "
        f"{100 * check['same_top_token_share']:.1f}% of {check['positions']} positions"
    )


@cli.command("predict", epilog=example("predict"))
@click.argument("target", metavar="RUN_FOLDER|RECIPE")
@click.option(
    "--input",
    "input_path",
    required=True,
    metavar="FILE",
    help="Rows to answer (JSONL, JSON, CSV, TSV or "
    "Parquet) in the run's data format; the answer column may be left out.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    metavar="FILE",
    help="JSONL to write, one line per row (a file that exists is never overwritten).",
)
@click.option("--batch-size", type=int, help="Rows per batch (default: the run's eval.batch_size).")
def predict_command(target: str, input_path: str, output_path: str, batch_size: int | None) -> None:
    """Answer a file of rows with a run's model (or a recipe's base model), rendered as the run rendered its eval
    rows: system prompt, template, few-shot examples or retrieved passages. Per row: the answer, the choice scores
    or generated text, and latency."""
    from .recipes.predict import predict

    try:
        result = predict(target, input_path, output_path, batch_size)
    except TunerError as error:
        _fail(error)
    scored = (
        f"; accuracy {result.accuracy:.4f} on the {result.answered} rows that gave an answer"
        if result.accuracy is not None
        else ""
    )
    click.echo(f"Predictions: {result.output} ({len(result.rows)} rows{scored})")


@cli.command("chat", epilog=example("chat"))
@click.argument("target", metavar="RUN_FOLDER|RECIPE")
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Longest reply, in tokens.")
def chat_command(target: str, max_new_tokens: int) -> None:
    """Chat with a run's model (or a recipe's base model) in the terminal, with the run's system prompt; tokens are
    printed as they are generated. /reset starts over, /exit ends."""
    from .recipes.chat import chat

    try:
        chat(target, max_new_tokens=max_new_tokens)
    except TunerError as error:
        _fail(error)


def _train(
    recipe_path: str, overrides: tuple[str, ...], spread: tuple, resume: bool, dry_run: bool, method: str
) -> None:
    if dry_run:
        _dry_run(recipe_path, overrides, method)
    else:
        _run(recipe_path, overrides + (("resume=auto",) if resume else ()), spread, method)


def _prompt(recipe_path: str, overrides: tuple[str, ...], spread: tuple, dry_run: bool, method: str) -> None:
    if not dry_run:
        _run(recipe_path, overrides, spread, method)
        return
    from .recipes import preflight

    try:
        recipe = _load(recipe_path, overrides, method)
        preview = preflight.prompt_dry_run(recipe)
    except TunerError as error:
        _fail(error)
    click.echo(preflight.describe_prompts(preview, recipe))


def _dry_run(recipe_path: str, overrides: tuple[str, ...], method: str) -> None:
    from .estimate import describe
    from .recipes import preflight

    try:
        recipe = _load(recipe_path, overrides, method)
        result = preflight.dry_run(recipe)
    except TunerError as error:
        _fail(error)
    click.echo(describe(result, recipe))


def _run(recipe_path: str, overrides: tuple[str, ...], spread: tuple, method: str) -> None:
    """Run a recipe (once per seed with `--seeds`, on Ray workers with `--workers` or `--cluster`); `spread` is
    (seeds, workers, cluster) as given."""
    from .recipes import module_for
    from .recipes.sweep import run_seeds

    seeds, workers, cluster = spread
    try:
        # --seeds goes into the recipe before it is checked: a `model.adapter` of SFT seeds is checked seed by seed.
        recipe = _load(recipe_path, overrides + _seeds_override(seeds), method)
        chosen = recipe.seeds
        if (workers or cluster) and not chosen:
            raise TunerError(
                f"{recipe_path}: --workers and --cluster dispatch the runs of several seeds (or a sweep), but this "
                f"recipe runs once. Add --seeds 0,1,2 (or `seeds:` in the recipe), or leave them out."
            )
        results = run_seeds(recipe, workers=workers, cluster=cluster) if chosen else [module_for(method).run(recipe)]
    except TunerError as error:
        # Only training raises Interrupted, and then its module is loaded; a bad recipe's error must not load it
        # (and transformers with it) just to be told apart.
        checkpoints = sys.modules.get("tuner.checkpoints")
        if checkpoints is not None and isinstance(error, checkpoints.Interrupted):  # the command that resumes it
            given = [part for item in overrides if item != "resume=auto" for part in ("--set", item)]
            again = shlex.join(
                ["tuner", method, recipe_path, *given, *(["--seeds", seeds] if seeds else []), "--resume"]
            )
            error = checkpoints.Interrupted(f"{error} That is: `{again}`.", error.exit_code - 128)
        _fail(error)
    for result in results:
        report_run(result)
    if chosen and is_main_process():
        click.echo(
            f"\n{len(results)} seeds in {recipe.output_dir}: `tuner compare {recipe.output_dir}` shows them as "
            f"one row with their spread."
        )


def _seeds_override(seeds: str | None) -> tuple[str, ...]:
    from .recipes.sweep import parse_seeds

    chosen = parse_seeds(seeds)
    return (f"seeds={json.dumps(chosen)}",) if chosen else ()


@cli.command("sweep", epilog=example("sweep"))
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    metavar="KEY.PATH=V1,V2,...",
    help="A recipe key and the values to run it at (repeatable: every combination runs), e.g. --grid "
    "data.max_train_samples=50,100,200,400.",
)
@spread_options
@click.option(
    "--against",
    multiple=True,
    metavar="RUN_FOLDER",
    help="Runs to compare the sweep with, drawn as "
    "horizontal lines (prompt baselines such as few-shot; a folder of seeds counts as one); the most "
    "accurate is the baseline of every Δ (repeatable).",
)
@set_option
def sweep_command(
    recipe_path: str, grids: tuple[str, ...], spread: tuple, against: tuple[str, ...], overrides: tuple[str, ...]
) -> None:
    """Run a recipe over a grid of values (and seeds) into <output_dir>/<key>=<value>/, then compare the runs and
    draw the learning curve: accuracy against the first key, with the seed spread and the baselines. Finished runs
    are kept when the sweep runs again, interrupted training resumes."""
    from .recipes.sweep import parse_grid, sweep

    seeds, workers, cluster = spread
    try:
        recipe = _load(recipe_path, overrides + _seeds_override(seeds))
        done = sweep(recipe, parse_grid(grids), recipe.seeds, list(against), workers=workers, cluster=cluster)
    except TunerError as error:
        _fail(error)
    if not is_main_process():
        return
    written = done.write()
    click.echo(done.comparison.markdown())
    click.echo("\n".join(done.passes))
    click.echo(f"Table: {written['md']} (also {written['csv'].name}, {written['json'].name})")
    click.echo(f"Learning curve: {written['curve']}")


@cli.command("decide", epilog=example("decide"))
@click.argument("data", metavar="DATA...", nargs=-1, required=True)
@click.option("--eval", "eval_path", metavar="FILE", help="Held-out rows (default: a test/eval/dev file, else 20%).")
@click.option("--corpus", metavar="FOLDER", help="Documents to retrieve from (default: a .md/.txt folder there).")
@click.option("--model", metavar="MODEL", help="The model of every arm (default: the offline SmolLM2-135M).")
@click.option(
    "--budget", metavar="TIME", help="Device time for all arms (2h, 90m, 0.5gpu-h); what won't fit is skipped."
)
@click.option(
    "--seeds", metavar="N,N,...", help="Training arms' seeds (default: as many of 0,1,2 as the budget allows)."
)
@click.option("--requests-per-month", type=int, metavar="N", help="Recommend for N requests a month.")
@click.option("--price-per-gpu-hour", type=float, metavar="PRICE", help="Price GPU hours.")
@click.option("--price-per-cpu-hour", type=float, metavar="PRICE", help="Price CPU hours.")
@click.option("--out", default="runs/decide", show_default=True, metavar="FOLDER", help="Where it all goes.")
@click.option("--system-prompt", metavar="TEXT", help="Every arm's system prompt.")
@click.option("--prompt-template", metavar="TEXT", help="Labelled rows' prompt, with {text}.")
@click.option("--plan-only", is_flag=True, help="Write the recipes and their estimates; run nothing.")
@set_option
@click.option(
    "--train-set", "train_overrides", multiple=True, metavar="KEY.PATH=VALUE", help="--set, training arms only."
)
def decide_command(
    data: tuple[str, ...], eval_path: str | None, budget: str | None, model: str | None, **options
) -> None:
    """From a folder of your data to the trade-off table: says what the data holds, plans the arms it supports
    (zero-shot, 5-shot, retrieval with documents, SFT at a few sizes, retrieval-aware SFT, DPO on pairs, KTO on
    thumbs), writes each as a recipe in <out>/recipes/, runs them cheapest first within --budget, keeps finished
    runs when run again, and ends with the comparison, the learning curve and the recommendation (<out>/decision.md)."""
    from .arms import DEFAULT_MODEL
    from .recipes.decision import decide, parse_budget

    try:
        done = decide(list(data), eval=eval_path, model=model or DEFAULT_MODEL, budget=parse_budget(budget), **options)
    except TunerError as error:
        _fail(error)
    written = done.write()
    said = done.comparison.markdown() if done.comparison is not None else ""
    click.echo(said)
    click.echo("\n".join(done.passes + [line for line in done.recommendation if line not in said] + done.assumptions))
    click.echo(f"Decision: {written['decision']}" + (f"; report: {written['html']}" if "html" in written else ""))


def main() -> None:
    cli(prog_name="tuner")
