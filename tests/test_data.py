from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.config import default_data_source
from core.data import DataError, Dialogue, find_dialogue, group_hub_rows, load_split


@pytest.fixture(scope="module")
def local_dir() -> str:
    source = default_data_source()
    if not Path(source).is_dir():
        pytest.skip(f"DialogSum is not beside the project (looked for ../shared/dialogsum, got {source})")
    return source


def test_local_validation_split_has_one_reference_each(local_dir: str) -> None:
    records = load_split(local_dir, "validation")
    assert len(records) == 500
    assert all(isinstance(r, Dialogue) and len(r.references) == 1 for r in records)
    assert records[0].id.startswith("dev_")
    assert records[0].dialogue.startswith("#Person1#")
    assert all(r.topic for r in records)


def test_local_test_split_has_three_references_each(local_dir: str) -> None:
    records = load_split(local_dir, "test")
    assert len(records) == 250
    assert all(len(r.references) == 3 for r in records)
    assert len({r.id for r in records}) == 250


def test_unlabeled_split_has_no_references_and_limit_applies(local_dir: str) -> None:
    records = load_split(local_dir, "unlabeled", limit=7)
    assert len(records) == 7
    assert all(r.references == () and r.reference == "" for r in records)


def test_find_by_id_or_topic(local_dir: str) -> None:
    records = load_split(local_dir, "test")
    assert find_dialogue(records, records[3].id) is records[3]
    by_topic = find_dialogue(records, records[5].topic.upper())
    assert by_topic is not None and by_topic.topic == records[5].topic
    assert find_dialogue(records, "no such id") is None


def test_hub_rows_of_one_test_dialogue_merge_into_one_record() -> None:
    rows = [
        {"id": "test_0_1", "dialogue": "#Person1#: Hi.", "summary": "A greets.", "topic": "greeting"},
        {"id": "test_0_2", "dialogue": "#Person1#: Hi.", "summary": "Someone says hi.", "topic": "hello"},
        {"id": "test_0_3", "dialogue": "#Person1#: Hi.", "summary": "A greets.", "topic": "greeting"},
        {"id": "test_1_1", "dialogue": "#Person2#: Bye.", "summary": "B leaves.", "topic": "farewell"},
    ]
    records = group_hub_rows(rows, source="hub")
    assert [r.id for r in records] == ["test_0_1", "test_1_1"]
    assert records[0].references == ("A greets.", "Someone says hi.")
    assert records[0].topic == "greeting"


def test_hub_layout_directory_goes_through_datasets(tmp_path: Path) -> None:
    # A local snapshot of the Hub mirror's layout: csv files with id, dialogue, summary, topic.
    with (tmp_path / "test.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "dialogue", "summary", "topic"])
        writer.writeheader()
        for k in (1, 2, 3):
            writer.writerow(
                {"id": f"test_0_{k}", "dialogue": "#Person1#: Hi.", "summary": f"s{k}", "topic": "t"}
            )
        writer.writerow({"id": "test_1_1", "dialogue": "#Person2#: Bye.", "summary": "s", "topic": "u"})
    records = load_split(str(tmp_path), "test")
    assert [len(r.references) for r in records] == [3, 1]
    assert records[0].references == ("s1", "s2", "s3")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"validation\.jsonl"):
        load_split(str(tmp_path), "validation")


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "validation.jsonl"
    good = json.dumps({"fname": "d1", "dialogue": "#Person1#: Hi.", "summary": "x"})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(DataError, match=r"validation\.jsonl:2: not valid JSON"):
        load_split(str(tmp_path), "validation")


def test_row_without_dialogue_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text(json.dumps({"fname": "d1", "summary1": "x"}) + "\n")
    with pytest.raises(DataError, match="no 'dialogue' text"):
        load_split(str(tmp_path), "test")


def test_unknown_split_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split"):
        load_split(str(tmp_path), "dev")
