"""The SQLite vote store: WAL, schema version, one row per vote, no SQL from user text, CSV."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.votes import SCHEMA_VERSION, DuplicateVoteError, Vote, VoteStore, VoteStoreError


def make_vote(battle_id: str = "b1", choice: str = "A", **overrides) -> Vote:
    fields = {
        "battle_id": battle_id,
        "dialogue_id": "test_1",
        "order_shown": ("lora", "original", "full"),
        "choice": choice,
        "ranking": None,
        "settings": {"max_new_tokens": 24},
        "preset": "mini",
        "session_id": "s1",
    }
    fields.update(overrides)
    return Vote(**fields)


def test_new_database_is_wal_with_schema_version(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    assert store.journal_mode() == "wal"
    assert store.schema_version() == SCHEMA_VERSION
    assert store.count() == 0


def test_vote_round_trip_keeps_every_field(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    stored = store.add(make_vote(choice="B", ranking=("original", "full", "lora")))
    assert stored.id is not None and stored.created_at
    (read,) = store.all()
    assert read.battle_id == "b1"
    assert read.dialogue_id == "test_1"
    assert read.order_shown == ("lora", "original", "full")
    assert read.choice == "B" and read.choice_model == "original"
    assert read.ranking == ("original", "full", "lora")
    assert read.settings == {"max_new_tokens": 24}
    assert (read.preset, read.session_id) == ("mini", "s1")


def test_votes_survive_a_new_store_on_the_same_file(tmp_votes_db: str) -> None:
    VoteStore(tmp_votes_db).add(make_vote("b1"))
    VoteStore(tmp_votes_db).add(make_vote("b2", choice="none"))
    assert [v.battle_id for v in VoteStore(tmp_votes_db).all()] == ["b1", "b2"]


def test_one_vote_per_battle(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    store.add(make_vote("b1"))
    with pytest.raises(DuplicateVoteError):
        store.add(make_vote("b1", choice="C"))
    assert store.count() == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"choice": "D"}, "choice must be one of"),
        ({"order_shown": ("lora", "lora", "full")}, "three different models"),
        ({"ranking": ("lora", "full")}, "exactly once"),
        ({"choice": "none", "ranking": ("lora", "original", "full")}, "contradicts"),
        ({"choice": "B", "ranking": ("lora", "original", "full")}, "chosen best summary first"),
    ],
)
def test_inconsistent_votes_are_refused_and_not_stored(
    tmp_votes_db: str, overrides: dict, message: str
) -> None:
    store = VoteStore(tmp_votes_db)
    with pytest.raises(ValueError, match=message):
        store.add(make_vote(**overrides))
    assert store.count() == 0


def test_user_text_is_data_not_sql(tmp_votes_db: str) -> None:
    nasty = "x'); DROP TABLE votes; --"
    store = VoteStore(tmp_votes_db)
    store.add(make_vote(dialogue_id=nasty, session_id=nasty))
    (read,) = store.all()
    assert read.dialogue_id == nasty and read.session_id == nasty


def test_filter_by_preset(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    store.add(make_vote("b1", preset="mini"))
    store.add(make_vote("b2", preset="flan-t5-base"))
    assert [v.battle_id for v in store.all(preset="flan-t5-base")] == ["b2"]


def test_csv_export_has_one_row_per_vote(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    store.add(make_vote("b1", choice="C"))
    store.add(make_vote("b2", choice="none"))
    rows = list(csv.DictReader(io.StringIO(store.to_csv())))
    assert [r["battle_id"] for r in rows] == ["b1", "b2"]
    assert rows[0]["choice_model"] == "full" and rows[1]["choice_model"] == ""
    assert json.loads(rows[0]["order_shown"]) == ["lora", "original", "full"]


def test_other_schema_version_is_refused(tmp_votes_db: str) -> None:
    VoteStore(tmp_votes_db).initialise()
    with sqlite3.connect(tmp_votes_db) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(VoteStoreError, match="schema version"):
        VoteStore(tmp_votes_db).initialise()


def test_concurrent_writers_lose_nothing(tmp_votes_db: str) -> None:
    stores = [VoteStore(tmp_votes_db) for _ in range(2)]  # two "processes" on one file

    def write(worker: int) -> None:
        for i in range(15):
            stores[worker % 2].add(make_vote(f"w{worker}-{i}"))

    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(write, w) for w in range(6)]:
            future.result()  # re-raises a worker's error here
    ids = [v.battle_id for v in VoteStore(tmp_votes_db).all()]
    assert len(ids) == 90 and len(set(ids)) == 90
