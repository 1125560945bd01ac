"""Data at scale: JSONL read by pyarrow gives the rows Python's reader gives, conversion in batches gives the rows one
batch gives, a file's converted rows are kept in the cache and read back (not converted again) while the file and
the converting keys are the same, and TRL's tokenized rows are reused by a second run of the same data."""

from __future__ import annotations

import json

import pytest

import tuner.data.converted
import tuner.data.digest
import tuner.data.formats
import tuner.data.sources
import tuner.data.splits
import tuner.errors
from tuner import recipe_from_dict
from tuner.data.rows import fingerprint
from tuner.data.sources import records
from tuner.data.splits import load_data
from tuner.recipes import sft
from tuner.schema import DataConfig

from helpers import SHARED_DATA, needs_shared_data, pair_rows, recipe_document, ticket_rows, write_jsonl


@pytest.fixture
def conversions(monkeypatch):
    """How many times a source was converted (rather than read from the cache)."""
    calls = []
    convert = tuner.data.splits.to_canonical

    def counted(*args, **kwargs):
        calls.append(args[2])
        return convert(*args, **kwargs)

    monkeypatch.setattr(tuner.data.splits, "to_canonical", counted)
    return calls


def _entries(tmp_path):
    folder = tmp_path / "cache" / tuner.data.converted.FOLDER
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def _rows(splits):
    return list(records(splits.train)), list(records(splits.eval))


def test_a_file_is_converted_once_then_read_back_memory_mapped(tmp_path, conversions):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(60))
    test = write_jsonl(tmp_path / "test.jsonl", ticket_rows(10, offset=100))
    config = DataConfig(train=str(train), eval=str(test), system_prompt="Route tickets.")
    first = load_data(config)
    assert len(conversions) == 2 and len(_entries(tmp_path)) == 2
    second = load_data(config)
    assert len(conversions) == 2  # neither file converted again
    assert _rows(second) == _rows(first)
    assert second.report == first.report  # the fingerprints, labels and counts included
    assert second.train.cache_files and second.train.cache_files[0]["filename"].endswith("rows.arrow")
    # The same bytes under another name and folder are the same entry.
    copy = tmp_path / "elsewhere" / "copy.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(train.read_bytes())
    load_data(config.model_copy(update={"train": DataConfig(train=str(copy)).train}))
    assert len(conversions) == 2


def test_new_bytes_or_a_converting_key_convert_again_and_caps_do_not(tmp_path, conversions):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(60))
    config = DataConfig(train=str(train))
    load_data(config)
    assert len(conversions) == 1
    for changed in ({"max_train_samples": 20}, {"eval_fraction": 0.3}, {"split_seed": 4}):
        load_data(config.model_copy(update=changed))
    assert len(conversions) == 1  # which rows are kept or held out is decided after conversion
    load_data(config.model_copy(update={"system_prompt": "Be brief."}))
    assert len(conversions) == 2
    write_jsonl(train, ticket_rows(61))
    splits = load_data(config)
    assert len(conversions) == 3 and len(splits.train) + len(splits.eval) == 61


def test_cache_off_converts_every_time_and_keeps_nothing(tmp_path, conversions):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(30))
    config = DataConfig(train=str(train), cache=False)
    load_data(config)
    load_data(config)
    assert len(conversions) == 2 and _entries(tmp_path) == []


def test_a_damaged_entry_is_converted_again(tmp_path, conversions):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(40))
    config = DataConfig(train=str(train))
    first = _rows(load_data(config))
    (entry,) = _entries(tmp_path)
    arrow = entry / "rows.arrow"
    head = arrow.read_bytes()[:100]
    arrow.unlink()  # a new file: the first rows are still mapped from the old one
    arrow.write_bytes(head)
    again = load_data(config)
    assert len(conversions) == 2 and _rows(again) == first


def test_a_cache_that_cannot_be_written_costs_the_next_run_not_this_one(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setattr(tuner.data.converted, "cache_dir", lambda: blocker)
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(30))
    splits = load_data(DataConfig(train=str(train)))
    assert len(splits.train) + len(splits.eval) == 30
    assert "could not keep the converted rows" in capsys.readouterr().out


def _chats(n: int, tools_from: int) -> list[dict]:
    tool = [{"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}]
    return [
        {
            "messages": [
                {"role": "user", "content": f"Where is order {i}?"},
                {"role": "assistant", "content": f"Order {i} ships today."},
            ],
            **({"tools": tool} if i >= tools_from else {}),
        }
        for i in range(n)
    ]


ROW_SETS = {
    "classification": lambda: ticket_rows(50),
    "pairs": lambda: pair_rows(30),
    "chats with tools in later rows": lambda: _chats(30, tools_from=20),
    "feedback": lambda: [
        {"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 2 == 0} for i in range(30)
    ],
}


@pytest.mark.parametrize("kind", sorted(ROW_SETS))
def test_pyarrow_reads_a_jsonl_file_as_pythons_reader_does(tmp_path, monkeypatch, kind):
    train = write_jsonl(tmp_path / "train.jsonl", ROW_SETS[kind]())
    config = DataConfig(train=str(train), cache=False)
    by_arrow = load_data(config)
    monkeypatch.setattr(tuner.data.sources, "_arrow_jsonl", lambda path: None)
    by_python = load_data(config)
    assert _rows(by_arrow) == _rows(by_python)
    assert by_arrow.report == by_python.report


@needs_shared_data("sst2", "train.jsonl")
def test_pyarrow_reads_real_sst2_rows_as_pythons_reader_does(tmp_path, monkeypatch):
    lines = (SHARED_DATA / "sst2" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:3000]
    train = tmp_path / "sst2.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = DataConfig(train=str(train), cache=False, label_names=["negative", "positive"])
    by_arrow = load_data(config)
    monkeypatch.setattr(tuner.data.sources, "_arrow_jsonl", lambda path: None)
    by_python = load_data(config)
    assert len(by_arrow.train) > 2000
    assert _rows(by_arrow) == _rows(by_python) and by_arrow.report == by_python.report


def test_files_pyarrow_would_read_differently_go_through_pythons_reader(tmp_path):
    from tuner.data.sources import _arrow_jsonl

    dates = write_jsonl(tmp_path / "dates.jsonl", [{"text": "due 2026-12-03", "label": "2026-12-03"}])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "two"}])
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9", "label": "x"}\n')
    assert _arrow_jsonl(dates) is None and _arrow_jsonl(mixed) is None and _arrow_jsonl(latin) is None
    plain = write_jsonl(tmp_path / "plain.jsonl", ticket_rows(3))
    assert _arrow_jsonl(plain).num_rows == 3


def test_conversion_in_batches_gives_the_rows_of_one_batch(tmp_path, monkeypatch):
    # Tools first appear in the third batch: the column (and the row of `None`s before) must survive the join.
    train = write_jsonl(tmp_path / "train.jsonl", _chats(45, tools_from=25))
    config = DataConfig(train=str(train), cache=False, drop_eval_overlap=False)
    whole = load_data(config)
    monkeypatch.setattr(tuner.data.formats, "BATCH", 10)
    batched = load_data(config)
    assert _rows(batched) == _rows(whole)
    assert batched.report["train_fingerprint"] == whole.report["train_fingerprint"]
    rows = sorted(_rows(batched)[0] + _rows(batched)[1], key=lambda row: int(row["messages"][0]["content"][15:-1]))
    assert rows[0]["tools"] is None and json.loads(rows[30]["tools"])[0]["function"]["name"] == "track"


def test_a_second_run_of_the_same_data_reuses_trls_tokenized_rows(tmp_path, tiny_model_dir, ticket_files):
    train, test = ticket_files
    document = recipe_document(tiny_model_dir, train, test, tmp_path / "runs" / "first")
    document["train"]["max_steps"] = 1
    first = sft.run(recipe_from_dict(document))
    entry = next(e for e in _entries(tmp_path) if json.loads((e / "converted.json").read_text())["file"] == str(train))
    derived = {p.name: p.stat().st_mtime_ns for p in entry.glob("cache-*.arrow")}
    assert derived, "TRL's tokenized rows are not kept beside the converted rows"
    second = sft.run(recipe_from_dict({**document, "output_dir": str(tmp_path / "runs" / "second")}))
    assert {p.name: p.stat().st_mtime_ns for p in entry.glob("cache-*.arrow")} == derived  # read, not written again
    assert second.manifest["data"]["train_fingerprint"] == first.manifest["data"]["train_fingerprint"]
    assert second.metrics["train_loss"] == pytest.approx(first.metrics["train_loss"])


def test_fingerprints_do_not_depend_on_how_rows_were_read(tmp_path):
    rows = ticket_rows(12)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    from tuner.data.sources import read_source
    from tuner.schema import SourceConfig

    assert fingerprint(read_source(SourceConfig(path=str(train)))) == fingerprint(rows)


def _thanks_chats(n: int, offset: int = 0) -> list[dict]:
    # Every chat ends in the same "thanks": only the whole conversation tells two apart.
    return [
        {
            "messages": [
                {"role": "user", "content": f"Where is order {i}?"},
                {"role": "assistant", "content": f"Order {i} ships today."},
                {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": "You're welcome."},
            ]
        }
        for i in range(offset, offset + n)
    ]


OVERLAPS = {
    "chat prompts": (lambda: ticket_rows(40), lambda: ticket_rows(10, offset=35), {}),
    "plain-text prompts": (lambda: ticket_rows(40), lambda: ticket_rows(10, offset=35), {"chat": False}),
    "chats ending alike": (lambda: _thanks_chats(40), lambda: _thanks_chats(10, offset=35), {}),
}


@pytest.mark.parametrize("kind", sorted(OVERLAPS))
def test_arrow_finds_the_train_rows_asking_eval_questions_that_reading_every_row_finds(tmp_path, monkeypatch, kind):
    make_train, make_eval, settings = OVERLAPS[kind]
    train = write_jsonl(tmp_path / "train.jsonl", make_train())
    test = write_jsonl(tmp_path / "test.jsonl", make_eval())
    config = DataConfig(train=str(train), eval=str(test), cache=False, **settings)
    by_arrow = load_data(config)
    assert by_arrow.report["train_rows_dropped_as_eval_questions"] == 5  # rows 35-39 are asked by both
    monkeypatch.setattr(tuner.data.splits, "_may_ask", lambda train, scored: None)  # every row read in Python
    by_python = load_data(config)
    assert _rows(by_arrow) == _rows(by_python) and by_arrow.report == by_python.report


@pytest.mark.parametrize("kind", ["same columns in every batch", "a field only later batches have"])
def test_rows_written_to_the_cache_a_batch_at_a_time_are_the_rows_converted_in_memory(tmp_path, monkeypatch, kind):
    rows = _chats(45, tools_from=25 if kind == "a field only later batches have" else 45)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    config = DataConfig(train=str(train), drop_eval_overlap=False)
    in_memory = load_data(config.model_copy(update={"cache": False}))
    monkeypatch.setattr(tuner.data.formats, "BATCH", 10)
    cold = load_data(config)  # five batches written to the entry as they come
    (entry,) = _entries(tmp_path)
    kept = json.loads((entry / "converted.json").read_text())
    cached = load_data(config)
    assert _rows(cold) == _rows(cached) == _rows(in_memory)
    assert cold.report == cached.report == in_memory.report  # the fingerprints included
    whole = tuner.data.converted.converted(train, config, lambda parts: pytest.fail("converted again"))[0]
    assert len(whole) == 45
    if kind == "same columns in every batch":  # fingerprinted while written, never read back to do so
        assert kept["fingerprint"] == fingerprint(whole) == fingerprint(list(records(whole)))
    else:  # joined in memory, fingerprinted on first use
        assert "fingerprint" not in kept
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no folder left half-built


def test_a_disk_that_fills_while_the_rows_are_written_costs_a_second_conversion_not_the_run(
    tmp_path, monkeypatch, capsys, conversions
):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(45))
    config = DataConfig(train=str(train))
    expected = _rows(load_data(config.model_copy(update={"cache": False})))
    monkeypatch.setattr(tuner.data.formats, "BATCH", 10)
    write = tuner.data.converted.Entry.add

    def fills(self, table):
        if self.batches == 2:
            raise OSError(28, "No space left on device")
        write(self, table)

    monkeypatch.setattr(tuner.data.converted.Entry, "add", fills)
    conversions.clear()
    splits = load_data(config)
    assert _rows(splits) == expected and len(conversions) == 2
    assert "could not keep the converted rows" in capsys.readouterr().out
    folder = tmp_path / "cache" / tuner.data.converted.FOLDER
    assert list(folder.iterdir()) == []  # neither an entry nor half of one


def test_a_file_with_no_usable_row_leaves_no_half_built_entry(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "", "label": "x"}] * 3)
    with pytest.raises(tuner.errors.TunerError, match="none of its 3 rows"):
        load_data(DataConfig(train=str(train)))
    folder = tmp_path / "cache" / tuner.data.converted.FOLDER
    assert list(folder.iterdir()) == []


def test_the_helper_process_fingerprints_batches_as_the_rows_are_fingerprinted_here():
    import pyarrow

    from tuner.data.digest import Digest

    rows = [{"prompt": f"Question {i} – é?", "completion": "Ünïcode", "label": None} for i in range(25)]
    table = pyarrow.Table.from_pylist(rows)
    digest = Digest(table.schema)
    for start in (0, 10, 20):
        digest.add(table.slice(start, 10))
    assert digest.hexdigest() == fingerprint(rows)
    empty = Digest(table.schema)
    assert empty.hexdigest() == fingerprint([])


def test_a_helper_that_dies_leaves_the_fingerprint_to_the_run(tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(45))
    test = write_jsonl(tmp_path / "test.jsonl", ticket_rows(5, offset=100))
    config = DataConfig(train=str(train), eval=str(test))
    expected = load_data(config.model_copy(update={"cache": False}))
    monkeypatch.setattr(tuner.data.formats, "BATCH", 10)
    add = tuner.data.digest.Digest.add

    def dies(self, table):
        self.process.kill()
        self.process.wait()
        add(self, table)

    monkeypatch.setattr(tuner.data.digest.Digest, "add", dies)
    splits = load_data(config)
    assert _rows(splits) == _rows(expected) and splits.report == expected.report
    entry = next(e for e in _entries(tmp_path) if json.loads((e / "converted.json").read_text())["file"] == str(train))
    # Taken in this process on first use, and kept for the next run.
    assert json.loads((entry / "converted.json").read_text())["fingerprint"] == expected.report["train_fingerprint"]


def test_a_held_out_splits_fingerprints_are_kept_by_how_it_was_drawn(tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(60))
    config = DataConfig(train=str(train), eval_fraction=0.25)
    first = load_data(config)
    assert first.report["train_fingerprint"] == fingerprint(list(records(first.train)))
    assert first.report["eval_fingerprint"] == fingerprint(list(records(first.eval)))

    def refused(rows):
        raise AssertionError("fingerprinted again")

    computed = tuner.data.splits.fingerprint
    monkeypatch.setattr(tuner.data.splits, "fingerprint", refused)
    assert load_data(config).report == first.report  # both read from the entry
    # Another seed or fraction draws other rows: fingerprinted, and checked against the rows themselves.
    monkeypatch.setattr(tuner.data.splits, "fingerprint", computed)
    for changed in ({"split_seed": 3}, {"eval_fraction": 0.5}):
        other = load_data(config.model_copy(update=changed))
        assert other.report["train_fingerprint"] != first.report["train_fingerprint"]
        assert other.report["train_fingerprint"] == fingerprint(list(records(other.train)))
        assert other.report["eval_fingerprint"] == fingerprint(list(records(other.eval)))
    # A cap drawn with the run's seed is a selection of its own: fingerprinted each time, never confused with the split.
    capped = load_data(config.model_copy(update={"max_train_samples": 20}))
    assert capped.report["train_fingerprint"] == fingerprint(list(records(capped.train)))
    assert capped.report["eval_fingerprint"] == first.report["eval_fingerprint"]


def test_a_held_out_split_is_matched_against_eval_a_piece_at_a_time_as_reading_every_row_does(tmp_path, monkeypatch):
    # Rows twice in the file: the held-out split asks questions train rows ask too. A selection of rows comes as one
    # Arrow chunk per row; matching each alone took minutes at 100,000 rows.
    train = write_jsonl(tmp_path / "train.jsonl", ticket_rows(60) + ticket_rows(20))
    config = DataConfig(train=str(train), eval_fraction=0.25)
    asking, calls = tuner.data.splits._asking, []
    monkeypatch.setattr(tuner.data.splits, "_asking", lambda *args: calls.append(1) or asking(*args))
    by_arrow = load_data(config)
    assert by_arrow.report["train_rows_dropped_as_eval_questions"] > 0
    assert len(calls) == 1  # the 55 train rows in one piece
    monkeypatch.setattr(tuner.data.splits, "_may_ask", lambda train, scored: None)  # every row read in Python
    by_python = load_data(config)
    assert _rows(by_arrow) == _rows(by_python) and by_arrow.report == by_python.report
