"""Human-evaluation votes in SQLite: one row per vote, safe under concurrent writers.

The database runs in WAL mode (readers never block the writer, a crash never loses a
committed vote) and records its schema version, so a later release can migrate old files.
Every statement is parameterised; no user text is ever spliced into SQL.

Schema versions: 1 stored the verdict only; 2 adds, per vote, what the rater saw - the
summaries, the references and each summary's ROUGE scores, computed at battle time - so that
:mod:`core.agreement` can compare people with ROUGE without regenerating anything. A version-1
file is migrated in place on first use (three nullable columns); its old votes keep ``NULL``
there and are left out of the agreement figures (and counted as such).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
CHOICES: tuple[str, ...] = ("A", "B", "C", "none")
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's lock before failing
INIT_DEADLINE_S = 30.0  # how long initialise() keeps retrying while other processes hold the file
INIT_FIRST_BACKOFF_S = 0.005  # first pause after a busy initialisation attempt; doubles each time
INIT_MAX_BACKOFF_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    battle_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    dialogue_id TEXT NOT NULL,
    order_shown TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'C', 'none')),
    ranking TEXT,
    settings TEXT NOT NULL,
    preset TEXT NOT NULL,
    session_id TEXT NOT NULL,
    rouge TEXT,
    summaries TEXT,
    reference_texts TEXT
);
"""
# Columns each version adds, so an older file can be brought up to date (ALTER TABLE ADD COLUMN
# is O(1) in SQLite: it rewrites no row).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE votes ADD COLUMN rouge TEXT",  # {model: {rouge1: f, ...}} of the shown summaries
        "ALTER TABLE votes ADD COLUMN summaries TEXT",  # {model: text} as shown
        "ALTER TABLE votes ADD COLUMN reference_texts TEXT",  # [reference, ...] ROUGE was computed against
    ),
}

_SELECT = (
    "SELECT id, battle_id, created_at, dialogue_id, order_shown, choice, ranking, settings, "
    "preset, session_id, rouge, summaries, reference_texts FROM votes"
)

CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "created_at",
    "battle_id",
    "dialogue_id",
    "order_shown",
    "choice",
    "choice_model",
    "ranking",
    "settings",
    "preset",
    "session_id",
    "rouge",
)


class VoteStoreError(RuntimeError):
    """The votes database is unusable (wrong schema version, unreadable file...)."""


class DuplicateVoteError(VoteStoreError):
    """A vote for this battle is already stored."""


@dataclass(frozen=True)
class Vote:
    """One stored vote. ``order_shown[i]`` is the model shown under letter ``"ABC"[i]``."""

    battle_id: str
    dialogue_id: str
    order_shown: tuple[str, ...]
    choice: str  # "A" | "B" | "C" | "none"
    ranking: tuple[str, ...] | None  # models best first, when the rater ranked all of them
    settings: dict[str, Any]
    preset: str
    session_id: str
    created_at: str = ""
    id: int | None = None
    # What the rater saw, recorded at battle time (``None`` for votes stored before schema 2,
    # and for battles without a reference, which have no ROUGE scores):
    rouge: dict[str, dict[str, float]] | None = None  # model -> {rouge1, rouge2, rougeL, rougeLsum}
    summaries: dict[str, str] | None = None  # model -> summary text
    references: tuple[str, ...] | None = None

    @property
    def choice_model(self) -> str | None:
        """The model picked as best, or ``None`` for "all bad"."""
        if self.choice == "none":
            return None
        return self.order_shown["ABC".index(self.choice)]


def check_choice_and_ranking(
    choice: str, ranking: Sequence[str] | None, order_shown: Sequence[str] = ("A", "B", "C")
) -> None:
    """Raise ``ValueError`` unless ``choice`` is valid and ``ranking`` agrees with it.

    ``ranking`` (best first, or ``None``) names what ``order_shown`` names: the letters
    ``A``/``B``/``C`` by default (the service checks a rater's input before a battle is used up),
    or the models in the order shown (the store checks a :class:`Vote` before writing it). This
    is the one place the rules live, so the service and the store cannot drift apart.
    """
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    if len(order_shown) != 3 or len(set(order_shown)) != 3:
        raise ValueError(f"order_shown must name three different models, got {tuple(order_shown)!r}")
    if ranking is None:
        return
    if sorted(ranking) != sorted(order_shown):
        raise ValueError("a ranking must list each shown model exactly once")
    if choice == "none":
        raise ValueError('a full ranking contradicts "all bad"; send one or the other')
    best = order_shown["ABC".index(choice)]
    if ranking[0] != best:
        raise ValueError(
            f"the ranking must put the chosen best summary first: it puts {ranking[0]} first "
            f"but the best pick is {best}"
        )


def validate_vote(vote: Vote) -> None:
    """Raise ``ValueError`` unless the vote is internally consistent."""
    check_choice_and_ranking(vote.choice, vote.ranking, vote.order_shown)
    for what, per_model in (("rouge", vote.rouge), ("summaries", vote.summaries)):
        if per_model is not None and sorted(per_model) != sorted(vote.order_shown):
            raise ValueError(f"{what} must name exactly the shown models, got {sorted(per_model)}")


class VoteStore:
    """Thread-safe access to the votes database at ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()  # serialises writers within this process
        self._initialised = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per operation: sqlite3 connections must not be shared
        # between threads, and opening one costs microseconds.
        # timeout= is SQLite's busy timeout: wait for another writer instead of failing at once.
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            yield connection
        finally:
            connection.close()

    def initialise(self) -> None:
        """Create the file, the tables and the schema version, and switch to WAL mode.

        Safe when several processes initialise the same new file at once (two app processes
        started on one fresh database): a busy attempt is retried until ``INIT_DEADLINE_S``.
        """
        if self._initialised:
            return
        with self._lock:
            if self._initialised:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Why retry rather than the busy timeout alone: switching a new file to WAL needs an
            # exclusive lock, and SQLite answers SQLITE_BUSY at once there instead of calling
            # the busy handler (measured: 6 processes on one new file, 4-7 rounds in 30 failed
            # "database is locked" at PRAGMA journal_mode). Why retry rather than an exclusive
            # lock file around creation: a lock file only orders processes that run this code,
            # while a retry also outlasts any other holder (sqlite3 shell, a backup, a reader),
            # needs no extra file beside the database and works on every platform. Both steps are
            # idempotent (CREATE IF NOT EXISTS, one version row written under BEGIN IMMEDIATE),
            # so an attempt that lost the race can simply run again. Backoff is exponential with
            # jitter so the losers do not collide again in lockstep; the deadline bounds it.
            deadline = time.monotonic() + INIT_DEADLINE_S
            backoff = INIT_FIRST_BACKOFF_S
            attempts = 0
            while True:
                attempts += 1
                try:
                    self._create_schema()
                    break
                except sqlite3.Error as err:
                    pause = random.uniform(backoff / 2, backoff)
                    if not _is_busy(err) or time.monotonic() + pause > deadline:
                        detail = f" (still busy after {attempts} attempts)" if _is_busy(err) else ""
                        raise VoteStoreError(
                            f"votes database {self.path} is unusable: {err}{detail}"
                        ) from err
                    logger.debug(
                        "votes database %s busy (%s); retry %d in %.3f s", self.path, err, attempts, pause
                    )
                    time.sleep(pause)
                    backoff = min(backoff * 2, INIT_MAX_BACKOFF_S)
            if attempts > 1:
                logger.info("votes database %s initialised after %d attempts", self.path, attempts)
            self._initialised = True

    def _create_schema(self) -> None:
        """One initialisation attempt: WAL mode, tables and version row (``sqlite3.Error`` when busy)."""
        with self._connect() as db:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("votes database %s is not in WAL mode (%s)", self.path, mode)
            # synchronous stays FULL (per connection, SQLite's default): an acknowledged
            # vote survives a power cut too, at ~20 ms a vote, far above the vote rate.
            db.execute("BEGIN IMMEDIATE")
            try:
                # Statement by statement: executescript() would COMMIT our transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                row = db.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif int(row[0]) < SCHEMA_VERSION:
                    # Inside the same BEGIN IMMEDIATE: of several processes opening an old file
                    # at once, one migrates and the others then find the new version.
                    self._migrate(db, int(row[0]))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise VoteStoreError(
                        f"votes database {self.path} has schema version {row[0]}, "
                        f"this code reads version {SCHEMA_VERSION}"
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT may already have rolled back
                    db.execute("ROLLBACK")
                raise

    def _migrate(self, db: sqlite3.Connection, found: int) -> None:
        """Bring a file of schema ``found`` up to :data:`SCHEMA_VERSION` (inside the caller's transaction)."""
        if found < 1:
            raise VoteStoreError(f"votes database {self.path} has unknown schema version {found}")
        present = {info[1] for info in db.execute("PRAGMA table_info(votes)")}
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS.get(version, ()):
                column = statement.split("ADD COLUMN ")[1].split()[0]
                if column not in present:  # CREATE TABLE IF NOT EXISTS may have made it already
                    db.execute(statement)
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        logger.info("votes database %s migrated from schema %d to %d", self.path, found, SCHEMA_VERSION)

    def schema_version(self) -> int:
        """The version recorded in the database file."""
        self.initialise()
        with self._connect() as db:
            return int(db.execute("SELECT version FROM schema_version").fetchone()[0])

    def journal_mode(self) -> str:
        """SQLite's journal mode of the file (``wal`` once initialised)."""
        self.initialise()
        with self._connect() as db:
            return str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def add(self, vote: Vote) -> Vote:
        """Store one vote and return it with its id and timestamp.

        Raises ``ValueError`` for an inconsistent vote and :class:`DuplicateVoteError` when this
        battle already has a vote (a battle is good for one vote, even across restarts).
        """
        validate_vote(vote)
        self.initialise()
        created_at = vote.created_at or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        row = (
            vote.battle_id,
            created_at,
            vote.dialogue_id,
            json.dumps(list(vote.order_shown)),
            vote.choice,
            json.dumps(list(vote.ranking)) if vote.ranking is not None else None,
            json.dumps(vote.settings, sort_keys=True),
            vote.preset,
            vote.session_id,
            _json_or_null(vote.rouge),
            _json_or_null(vote.summaries),
            _json_or_null(list(vote.references) if vote.references is not None else None),
        )
        with self._lock, self._connect() as db:
            try:
                cursor = db.execute(
                    "INSERT INTO votes (battle_id, created_at, dialogue_id, order_shown, choice, "
                    "ranking, settings, preset, session_id, rouge, summaries, reference_texts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as err:
                if "UNIQUE" in str(err).upper():
                    raise DuplicateVoteError(f"battle {vote.battle_id} already has a vote") from err
                raise VoteStoreError(f"vote rejected by the database: {err}") from err
            except sqlite3.Error as err:
                raise VoteStoreError(f"could not store the vote in {self.path}: {err}") from err
        return Vote(**{**vote.__dict__, "created_at": created_at, "id": cursor.lastrowid})

    def all(self, preset: str | None = None) -> list[Vote]:
        """Every stored vote in insertion order (optionally of one preset only)."""
        self.initialise()
        query = _SELECT
        params: tuple[Any, ...] = ()
        if preset is not None:
            query += " WHERE preset = ?"
            params = (preset,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id", params).fetchall()
        return [_row_to_vote(row) for row in rows]

    def get(self, battle_id: str) -> Vote | None:
        """The vote of one battle, or ``None``."""
        self.initialise()
        with self._connect() as db:
            row = db.execute(_SELECT + " WHERE battle_id = ?", (battle_id,)).fetchone()
        return _row_to_vote(row) if row is not None else None

    def count(self) -> int:
        """Number of stored votes."""
        self.initialise()
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def to_csv(self) -> str:
        """All votes as CSV text (one row per vote, JSON in the list/dict columns)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for vote in self.all():
            writer.writerow(
                [
                    vote.id,
                    vote.created_at,
                    vote.battle_id,
                    vote.dialogue_id,
                    json.dumps(list(vote.order_shown)),
                    vote.choice,
                    vote.choice_model or "",
                    json.dumps(list(vote.ranking)) if vote.ranking else "",
                    json.dumps(vote.settings, sort_keys=True),
                    vote.preset,
                    vote.session_id,
                    json.dumps(vote.rouge, sort_keys=True) if vote.rouge is not None else "",
                ]
            )
        return buffer.getvalue()


def _is_busy(err: sqlite3.Error) -> bool:
    """Whether ``err`` is SQLite's "another connection holds the lock" (worth retrying)."""
    code = getattr(err, "sqlite_errorcode", None)  # Python >= 3.11; extended codes keep the low byte
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def _json_or_null(value: Any) -> str | None:
    return json.dumps(value, sort_keys=True) if value is not None else None


def _row_to_vote(row: Sequence[Any]) -> Vote:
    ident, battle_id, created_at, dialogue_id, order, choice, ranking, settings, preset, session = row[:10]
    scores, summaries, references = row[10:]
    return Vote(
        battle_id=battle_id,
        dialogue_id=dialogue_id,
        order_shown=tuple(json.loads(order)),
        choice=choice,
        ranking=tuple(json.loads(ranking)) if ranking else None,
        settings=json.loads(settings),
        preset=preset,
        session_id=session,
        created_at=created_at,
        id=int(ident),
        rouge=json.loads(scores) if scores else None,
        summaries=json.loads(summaries) if summaries else None,
        references=tuple(json.loads(references)) if references else None,
    )
