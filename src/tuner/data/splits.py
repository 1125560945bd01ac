"""A recipe's train and eval splits: both sources read and converted, the eval split held out when there is no
eval file, sample caps applied, bad rows reported, fingerprints taken."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunerError
from .converted import converted, drawn, kept_fingerprint
from .formats import FORMATS, to_canonical, unpaired
from .rows import asked, fingerprint, scoring_rows
from .sources import column_values, file_lines, read_source, records, table

_MAX_REPORTED = 10


@dataclass
class Splits:
    """The train and eval rows of a recipe, their format and what loading them found."""

    train: Any
    eval: Any
    format: str
    report: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None


def _describe_bad(bad: list[tuple[int, str]], where: str, path: str | None = None) -> dict[str, Any]:
    # Rows are numbered from 0 as in every message; where the file has lines, the line an editor shows is named too.
    lines = file_lines(path, [n for n, _ in bad[:_MAX_REPORTED]]) if path and bad else {}
    return {
        "count": len(bad),
        "first": [
            f"{where} row {n}{f' (line {lines[n]})' if n in lines else ''}: {reason}"
            for n, reason in bad[:_MAX_REPORTED]
        ],
    }


def load_split(source, data_config, where: str, seed: int = 0):
    """Read and convert one source (its own `format` and `columns` over the data section's, its `max_samples` cap
    drawn with `seed`); returns (dataset, format, bad-row report, the raw columns). A file's converted rows come
    from tuner's cache when the same file was converted by the same settings before (`data.cache`)."""
    where = f"{where} ({source.describe()})"
    own = {key: value for key, value in (("format", source.format), ("columns", source.columns)) if value}
    config = data_config.model_copy(update=own) if own else data_config

    def convert(parts=None):
        raw = read_source(source, where)
        return (*to_canonical(raw, config, where, parts), list(raw.column_names))

    if source.path is not None and data_config.cache and Path(source.path).is_file():
        dataset, fmt, bad, columns = converted(Path(source.path), config, convert)
    else:
        dataset, fmt, bad, columns = convert()
    if source.max_samples and source.max_samples < len(dataset):
        dataset = dataset.shuffle(seed=seed, keep_in_memory=True).select(range(source.max_samples))
    return dataset, fmt, _describe_bad(bad, source.describe(), source.path), columns


def _mixture(data_config, seed: int, source: str):
    """`data.train` as one split: each source read in its own format, capped, drawn `weight` times over (seeded),
    all shuffled together; returns (dataset, format, bad-row report, columns, per-source report)."""
    import random

    parts = [
        load_split(one, data_config, f"{source}: data.train[{n}]", seed)
        for n, one in enumerate(data_config.train_sources())
    ]
    if len(parts) == 1:
        return (*parts[0], None)
    families = {FORMATS[fmt].family for _, fmt, _, _ in parts}
    if len(families) > 1:
        found = ", ".join(f"data.train[{n}] {fmt}" for n, (_, fmt, _, _) in enumerate(parts))
        raise TunerError(
            f"{source}: the sources of data.train make different kinds of rows ({found}); a mixture "
            f"must be all chats or prompt/answer rows, or all preference pairs. Split them into runs."
        )
    draw, rows, report = random.Random(seed), [], []
    for one, (dataset, fmt, bad, _) in zip(data_config.train_sources(), parts):
        items = list(records(dataset))
        whole, part = divmod(one.weight, 1)
        chosen = items * int(whole) + draw.sample(items, round(part * len(items)))
        rows += chosen
        report.append(
            {
                "source": one.describe(),
                "format": fmt,
                "rows": len(items),
                "weight": one.weight,
                "rows_used": len(chosen),
                "fingerprint": fingerprint(dataset),
                "skipped": bad["count"],
            }
        )
    draw.shuffle(rows)
    bad = {
        "count": sum(r["skipped"] for r in report),
        "first": [line for _, _, one_bad, _ in parts for line in one_bad["first"]][:_MAX_REPORTED],
    }
    columns = list(dict.fromkeys(column for _, _, _, found in parts for column in found))
    return table(rows), parts[0][1], bad, columns, report


def _held_out(train, fmt: str, data_config, source: str):
    """The eval split beside the train rows: `data.eval` (rows of the same kind), else `eval_fraction` of train drawn
    with `split_seed`; returns (train, eval, eval bad-row report)."""
    if data_config.eval is None:
        if len(train) < 2:
            raise TunerError(
                f"{source}: data.train has {len(train)} usable row, too few to hold out an eval split. "
                f"Add rows or give `data.eval`."
            )
        parts = train.train_test_split(test_size=data_config.eval_fraction, seed=data_config.split_seed)
        how = {"train_test_split": data_config.eval_fraction, "seed": data_config.split_seed}
        held_in, held_out = (drawn(parts[name], train, {**how, "part": name}) for name in ("train", "test"))
        return held_in, held_out, _describe_bad([], "")
    evaluation, eval_fmt, eval_bad, _ = load_split(data_config.eval, data_config, f"{source}: data.eval")
    # Feedback (thumbs up/down) and prompts (GRPO) train what any kind of held-out row can score.
    if FORMATS[eval_fmt].family != FORMATS[fmt].family and FORMATS[fmt].family not in ("feedback", "prompts"):
        raise TunerError(
            f"{source}: data.train is {fmt} but data.eval is {eval_fmt}; both splits must hold the same kind of rows."
        )
    return train, evaluation, eval_bad


def load_data(data_config, seed: int = 0, source: str = "<recipe>") -> Splits:
    """Load a recipe's train and eval rows as canonical rows.

    The eval rows come from `data.eval`, or from an `eval_fraction` of the train rows drawn with `data.split_seed`
    (not the run's seed: every seed of a sweep is scored on the same rows; a mixture of train sources and their
    `max_samples` caps are drawn with `split_seed` too, before anything is held out). `max_train_samples`
    keeps a seeded random subset of the train rows; `max_eval_samples` keeps the first eval rows, so every method
    and seed is scored on the same rows. Train rows asking a scored eval question are dropped first
    (`drop_eval_overlap`), for every method, and counted in the report.
    """
    if data_config.train is None:  # retrieval alone trains nothing: the eval rows stand alone
        evaluation, fmt, eval_bad, columns = load_split(data_config.eval, data_config, f"{source}: data.eval")
        train, train_bad, mixture = evaluation.select([]), _describe_bad([], ""), None
    else:
        # A mixture's draw and per-source caps decide which rows exist, before any are held out: drawn with
        # split_seed, so the eval rows (and the pool of each seed) are the same whatever the run's seed.
        train, fmt, train_bad, columns, mixture = _mixture(data_config, data_config.split_seed, source)
        train, evaluation, eval_bad = _held_out(train, fmt, data_config, source)
    if data_config.max_eval_samples and data_config.max_eval_samples < len(evaluation):
        evaluation = evaluation.select(range(data_config.max_eval_samples))
    train, overlap = _without_eval_questions(train, evaluation, data_config, source)
    if data_config.max_train_samples and data_config.max_train_samples < len(train):
        train = train.shuffle(seed=seed, keep_in_memory=True).select(range(data_config.max_train_samples))
    for bad in (train_bad, eval_bad):
        for line in bad["first"]:
            print(f"tuner: skipped {line}")
        if bad["count"] > len(bad["first"]):
            more = bad["count"] - len(bad["first"])
            print(f"tuner: ... {more} more {'row' if more == 1 else 'rows'} skipped")
    labels = data_config.label_names or _label_set(train, evaluation)
    report = {
        "format": fmt,
        **({"train_sources": mixture} if mixture else {}),
        "labels": labels,
        **_unseen_labels(train, evaluation, labels),
        "train_columns": columns,
        "train_rows": len(train),
        "eval_rows": len(evaluation),
        "train_rows_dropped_as_eval_questions": overlap,
        "train_fingerprint": kept_fingerprint(train, fingerprint),
        "eval_fingerprint": kept_fingerprint(evaluation, fingerprint),
        "skipped_train_rows": train_bad,
        "skipped_eval_rows": eval_bad,
        "split_seed": data_config.split_seed if data_config.eval is None else None,
    }
    return Splits(train=train, eval=evaluation, format=fmt, report=report, labels=labels)


def _label_set(train, evaluation) -> list[str] | None:
    """Classification rows' labels, train and eval together, sorted: the choices of `task: choice` when the recipe
    names none (`eval.choices`, `data.label_names`)."""
    if "label" not in train.column_names:
        return None
    return sorted(
        {
            str(label)
            for split in (train, evaluation)
            if "label" in split.column_names
            for label in column_values(split, "label")
            if label is not None
        }
    )


def _unseen_labels(train, evaluation, labels: list[str] | None) -> dict[str, Any]:
    """Eval rows whose label no train row has (a model trained on these rows never saw it), said and recorded."""
    if not labels or "label" not in train.column_names or "label" not in evaluation.column_names:
        return {}
    seen, held_out = {str(label) for label in column_values(train, "label")}, column_values(evaluation, "label")
    rows = [n for n, label in enumerate(held_out) if label is not None and str(label) not in seen]
    if not rows:
        return {}
    names = sorted({str(held_out[n]) for n in rows})
    print(
        f"tuner: {len(rows)} eval {'row has' if len(rows) == 1 else 'rows have'} a label no train row has "
        f"({', '.join(names[:10])}"
        f"{'...' if len(names) > 10 else ''}; eval rows {rows[:10]}{'...' if len(rows) > 10 else ''}): a model "
        f"tuned on the train rows has never seen it"
    )
    return {"eval_labels_unseen_in_train": {"labels": names, "rows": rows[:50], "count": len(rows)}}


def _without_eval_questions(train, evaluation, data_config, source: str):
    """The train rows less those that ask what an eval row asks, the whole conversation before the answer
    (`rows.asked`; with `data.drop_eval_overlap`), and how many went: a model trained on a scored row would be
    marked right for remembering it. Matching the last user turn alone dropped every chat ending in "thanks"."""
    if not data_config.drop_eval_overlap:
        return train, 0
    scored = scoring_rows(evaluation)
    questions = {asked(row) for row in scored}
    candidates = _may_ask(train, scored)
    if candidates is None:
        numbered = enumerate(records(train))
    else:
        numbered = zip(candidates, records(train.select(candidates, keep_in_memory=True)))
    gone = [number for number, row in numbered if asked(row) in questions]
    if not gone:
        return train, 0
    dropped = set(gone)
    keep = [number for number in range(len(train)) if number not in dropped]
    shown = "; ".join(f"row {n}: {asked(train[n])[:60]!r}" for n in gone[:3]) + ("; ..." if len(gone) > 3 else "")
    print(
        f"tuner: dropped {len(gone)} train {'row' if len(gone) == 1 else 'rows'} asking what an eval row asks, the "
        f"whole conversation before the answer (data.drop_eval_overlap: false keeps them): {shown}"
    )
    return train.select(keep, keep_in_memory=True), len(gone)


def _may_ask(train, scored: list[dict[str, Any]]) -> list[int] | None:
    """The numbers of the train rows that may ask what a scored row asks, found by Arrow without reading rows into
    Python: those whose prompt is one of the scored prompts, or that hold some scored row's last turn before its
    answer (a row asking the same holds it). None where Arrow cannot tell (rows as dicts, turns without text), and
    every row is checked."""
    import numpy as np

    column = "messages" if "messages" in train.column_names else "prompt"
    if isinstance(train, list) or column not in train.column_names or not len(train):
        return None
    texts = set()
    for row in scored:
        prompt = row["prompt"]
        turns = [prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt if m.get("role") != "system"]
        if not turns or not isinstance(turns[-1], str):
            return None
        texts.add(turns[-1])
    if not texts:
        return []
    import pyarrow as pa

    wanted = pa.array(sorted(texts), type=pa.string())
    found, start = [], 0
    for values in _pieces(train.with_format("arrow")[column]):
        rows = _asking(values, wanted)
        if rows is None:
            return None
        found.append(rows + start)
        start += len(values)
    return np.concatenate(found).tolist() if found else []


def _pieces(column, rows: int = 10_000):
    """A column's values a piece of about `rows` rows at a time: its chunks as they are (a memory-mapped column stays
    on disk), small chunks joined (a selection of rows, a held-out split, comes as one chunk per row: matching each
    alone took minutes at 100,000 rows)."""
    import pyarrow as pa

    group, held = [], 0
    for chunk in column.chunks:
        if not group and len(chunk) >= rows:
            yield chunk
            continue
        group.append(chunk)
        held += len(chunk)
        if held >= rows:
            yield pa.concat_arrays(group)
            group, held = [], 0
    if group:
        yield pa.concat_arrays(group)


def _asking(values, wanted):
    """The rows of one Arrow array of prompts (text) or turns (a list of messages) holding one of the `wanted` texts
    (an Arrow array), as a numpy array of row numbers; None for another type."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_string(kind):
        found = pc.is_in(values, value_set=wanted)
        return np.flatnonzero(found.fill_null(False).to_numpy(zero_copy_only=False))
    if not (pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)):
        return None
    struct = kind.value_type
    if struct.get_field_index("content") < 0 or not pa.types.is_string(struct.field("content").type):
        return None
    contents = pc.struct_field(pc.list_flatten(values), "content")
    found = pc.is_in(contents, value_set=wanted)
    parents = pc.list_parent_indices(values).to_numpy()
    return np.unique(parents[found.fill_null(False).to_numpy(zero_copy_only=False)])


def require_train_rows(splits: Splits, source: str) -> None:
    """Refuse to train on no rows: every train row asked an eval question and was dropped (`drop_eval_overlap`)."""
    if len(splits.train) == 0 and splits.report["train_rows_dropped_as_eval_questions"]:
        raise TunerError(
            f"{source}: every row of data.train asks a question that data.eval asks too, so none is left "
            f"to train on without training on the scored rows. Give held-out eval rows, or set "
            f"`data.drop_eval_overlap: false` to train on them anyway (its scores then measure recall)."
        )


def require_feedback(splits: Splits, source: str, unpair: bool) -> None:
    """Refuse KTO on rows that are not thumbs up/down feedback (pairs only with `kto.unpair`), or whose feedback is
    all one way: KTO learns from the contrast between desirable and undesirable answers."""
    family = FORMATS[splits.format].family
    if family == "preference" and not unpair:
        raise TunerError(
            f"{source}: method kto trains on answers marked good or bad, but data.train holds preference "
            f"pairs ({splits.format}). Set `kto.unpair: true` to split each pair into a thumbs-up and a "
            f"thumbs-down row, or use `tuner dpo` for pairs."
        )
    if family not in ("feedback", "preference"):
        raise TunerError(
            f"{source}: method kto needs feedback rows (an answer and a boolean `label`, thumbs up or "
            f"down), but data.train holds {splits.format} rows (columns found: "
            f"{splits.report['train_columns']}). Give `prompt`/`completion`/`label` or `messages`/"
            f"`label` rows (map your own thumbs column with `data.columns: {{label: ...}}`)."
        )
    if family == "feedback":
        counts = feedback_counts(splits.train)
        if not counts["desirable"] or not counts["undesirable"]:
            kind = "thumbs up" if counts["desirable"] else "thumbs down"
            raise TunerError(
                f"{source}: every one of the {len(splits.train)} train rows of data.train is {kind}; KTO "
                f"learns from the contrast between answers marked good and bad, so it needs rows of both "
                f"`label` values. Add rows of the other kind (or check the `label` column)."
            )


def feedback_rows(dataset, seed: int):
    """KTO's training rows: feedback rows (preference pairs unpaired into a thumbs-up and a thumbs-down row each),
    shuffled with the run's seed, because KTO batches rows in order (its KL estimate pairs neighbours) and a file
    sorted by label would make one-sided batches."""

    if "chosen" in dataset.column_names:
        dataset = table([one for row in dataset for one in unpaired(row)])
    return dataset.shuffle(seed=seed)


def feedback_counts(rows) -> dict[str, int]:
    """How many feedback rows are thumbs up (`desirable`) and thumbs down (`undesirable`)."""
    marks = column_values(rows, "desirable")
    return {"desirable": sum(1 for mark in marks if mark), "undesirable": sum(1 for mark in marks if not mark)}


def require_preference(splits: Splits, source: str, method: str) -> None:
    """Refuse a preference method's run on rows that are not preference pairs, naming the columns found."""
    if FORMATS[splits.format].family != "preference":
        raise TunerError(
            f"{source}: method {method} needs preference pairs, but data.train holds {splits.format} "
            f"rows (columns found: {splits.report['train_columns']}). Give rows with `chosen` and "
            f"`rejected` (plus `prompt`, or `conversations` as LLaMA-Factory writes them, or full "
            f"transcripts)."
        )
