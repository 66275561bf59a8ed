"""The SQLite vote store: WAL, schema version, one row per vote, no SQL from user text, CSV."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from core import votes
from core.votes import (
    SCHEMA_VERSION,
    DuplicateVoteError,
    Vote,
    VoteStore,
    VoteStoreError,
    check_choice_and_ranking,
)

INIT_PROCESSES = 6
INIT_ROUNDS = 30


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


@pytest.mark.parametrize(
    ("choice", "ranking", "message"),
    [
        ("D", None, "choice must be one of"),
        ("A", ("A", "A", "B"), "exactly once"),
        ("none", ("A", "B", "C"), "contradicts"),
        ("B", ("A", "B", "C"), "puts A first but the best pick is B"),
    ],
)
def test_the_one_consistency_check_reads_letters_too(
    choice: str, ranking: tuple | None, message: str
) -> None:
    """The service checks a rater's letters with the same function the store checks votes with."""
    with pytest.raises(ValueError, match=message):
        check_choice_and_ranking(choice, ranking)
    check_choice_and_ranking("B", ("B", "C", "A"))  # consistent: no error
    check_choice_and_ranking("none", None)


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


def _initialise_each(paths: list[str], barrier: Any, errors: Any) -> None:
    """One process of the race below: for each fresh file, wait for the others, then initialise it."""
    for round_no, path in enumerate(paths):
        barrier.wait(timeout=60)  # all processes start on this file at the same moment
        try:
            store = VoteStore(path)
            store.initialise()
            if store.journal_mode() != "wal" or store.schema_version() != SCHEMA_VERSION:
                raise AssertionError(f"{path}: not a WAL file with schema version {SCHEMA_VERSION}")
        except (VoteStoreError, sqlite3.Error, AssertionError) as err:  # the parent fails on each
            errors.put((round_no, f"{type(err).__name__}: {err}"))


def test_processes_initialising_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Several app processes started on one fresh votes file must not trip over each other."""
    context = multiprocessing.get_context("spawn")  # real separate processes, as two apps would be
    paths = [str(tmp_path / f"round-{i}" / "votes.sqlite") for i in range(INIT_ROUNDS)]
    barrier, errors = context.Barrier(INIT_PROCESSES), context.Queue()
    workers = [
        context.Process(target=_initialise_each, args=(paths, barrier, errors)) for _ in range(INIT_PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    alive = [w for w in workers if w.is_alive()]
    for worker in alive:
        worker.kill()
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not alive, f"{len(alive)} initialising processes still running after 300 s"
    assert [w.exitcode for w in workers] == [0] * INIT_PROCESSES
    failed_rounds = sorted({round_no for round_no, _ in failures})
    assert not failures, f"{len(failed_rounds)}/{INIT_ROUNDS} rounds failed: {failures[:5]}"
    for path in paths:
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_initialise_gives_up_on_a_file_locked_past_its_deadline(
    tmp_votes_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry is bounded: a file held locked for good fails with a clear error, it never hangs."""
    monkeypatch.setattr(votes, "INIT_DEADLINE_S", 0.5)
    monkeypatch.setattr(votes, "BUSY_TIMEOUT_S", 0.05)
    holder = sqlite3.connect(tmp_votes_db, isolation_level=None)
    try:
        holder.execute("CREATE TABLE other (x)")
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the new file and never lets go
        with pytest.raises(VoteStoreError, match=r"database is locked \(still busy after \d+ attempts\)"):
            VoteStore(tmp_votes_db).initialise()
    finally:
        holder.close()
    store = VoteStore(tmp_votes_db)  # once the holder is gone, the same file initialises
    assert store.journal_mode() == "wal" and store.schema_version() == SCHEMA_VERSION


# ---------------------------------------------------------------------------- schema 2: what the rater saw

SCORES = {
    m: {"rouge1": 0.5, "rouge2": 0.25, "rougeL": v, "rougeLsum": v}
    for m, v in (("lora", 0.4), ("original", 0.1), ("full", 0.3))
}
SCHEMA_1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, battle_id TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    dialogue_id TEXT NOT NULL, order_shown TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'C', 'none')), ranking TEXT, settings TEXT NOT NULL,
    preset TEXT NOT NULL, session_id TEXT NOT NULL
);
INSERT INTO schema_version (version) VALUES (1);
INSERT INTO votes (battle_id, created_at, dialogue_id, order_shown, choice, ranking, settings, preset,
    session_id) VALUES ('old', '2024-01-01T00:00:00.000+00:00', 'test_9', '["lora", "original", "full"]',
    'B', '["original", "lora", "full"]', '{}', 'mini', 's0');
"""  # the version-1 layout, as shipped before the agreement figures


def test_scores_summaries_and_references_round_trip(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    summaries = {"lora": "L.", "original": "O.", "full": "F."}
    store.add(make_vote(rouge=SCORES, summaries=summaries, references=("r1", "r2")))
    read = store.get("b1")
    assert read is not None and read.rouge == SCORES and read.summaries == summaries
    assert read.references == ("r1", "r2")
    assert store.get("nope") is None
    (row,) = csv.DictReader(io.StringIO(store.to_csv()))
    assert json.loads(row["rouge"]) == SCORES


def test_scores_must_name_the_shown_models(tmp_votes_db: str) -> None:
    store = VoteStore(tmp_votes_db)
    with pytest.raises(ValueError, match="rouge must name exactly the shown models"):
        store.add(make_vote(rouge={"lora": SCORES["lora"]}))
    with pytest.raises(ValueError, match="summaries must name exactly"):
        store.add(make_vote(summaries={"a": "", "b": "", "c": ""}))
    assert store.count() == 0


def test_a_version_1_file_is_migrated_and_its_old_votes_still_read(tmp_votes_db: str) -> None:
    with sqlite3.connect(tmp_votes_db) as db:
        db.executescript(SCHEMA_1)
    store = VoteStore(tmp_votes_db)
    assert store.schema_version() == SCHEMA_VERSION == 2
    (old,) = store.all()
    assert (old.battle_id, old.choice_model, old.ranking) == ("old", "original", ("original", "lora", "full"))
    assert old.rouge is None and old.summaries is None and old.references is None
    store.add(make_vote("new", rouge=SCORES, summaries={"lora": "L", "original": "O", "full": "F"}))
    assert [v.rouge for v in VoteStore(tmp_votes_db).all()] == [None, SCORES]
    with sqlite3.connect(tmp_votes_db) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(votes)")}
        assert {"rouge", "summaries", "reference_texts"} <= columns
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]

    from core.agreement import agreement

    report = agreement(VoteStore(tmp_votes_db).all())
    assert (report.votes, report.unscored) == (1, 1)  # the old vote is left out, and counted
