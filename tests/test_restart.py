"""Votes survive the app being killed (issue 6).

One votes file, two app processes: votes cast on the first, ``SIGKILL``, the second starts on
the same file and serves the same leaderboard. Then a burst of votes is cut by a second
``SIGKILL`` while writes are in flight: every vote the app acknowledged is in the file, once,
and the file is intact. The file is SQLite in WAL mode with a schema version row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import Rejected, call
from core.leaderboard import standings
from core.votes import SCHEMA_VERSION, VoteStore

FIRST_VOTES = 12
BURST_VOTES = 30
KILL_AFTER_ACKS = 8  # SIGKILL lands while the rest of the burst is being written
RANKINGS = {"A": "A>C>B", "B": "B>A>C", "C": "C>B>A"}
# Bounds, so a stuck app fails the test with a reason instead of hanging CI. Generous: CI
# machines are small and shared; on tiny models one call takes well under a second.
CALL_DEADLINE_S = 120.0  # one endpoint call, its event stream included (heartbeats keep it open)
BATTLES_DEADLINE_S = 300.0  # collecting the battles one phase needs
MAX_BATTLE_TRIES_PER_BATTLE = 5  # tiny random models rarely write an empty summary; never 5 in a row


def _start(tiny: dict[str, str], root: Path):
    from tests.conftest import start_app

    return start_app(
        tiny, str(root / "votes.sqlite"), str(root / "checkpoints"), root / "logs", ARENA_MAX_NEW_TOKENS="8"
    )


async def _call(client: httpx.AsyncClient, url: str, name: str, payload: dict[str, Any]) -> Any:
    """``call`` with a deadline: an app that stops answering fails the test, it does not hang it."""
    try:
        return await asyncio.wait_for(call(client, url, name, payload), CALL_DEADLINE_S)
    except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
        pytest.fail(f"/{name} on {url} gave no result within {CALL_DEADLINE_S:.0f} s")


async def _battles(url: str, count: int) -> list[str]:
    """``count`` battle tokens; bounded in time and in refused attempts."""
    deadline = time.monotonic() + BATTLES_DEADLINE_S
    max_tries = count * MAX_BATTLE_TRIES_PER_BATTLE
    async with httpx.AsyncClient(timeout=120) as client:
        tokens: list[str] = []
        refusals: list[str] = []
        for _ in range(max_tries):
            if len(tokens) == count:
                return tokens
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(tokens)}/{count} battles within {BATTLES_DEADLINE_S:.0f} s")
            try:
                tokens.append((await _call(client, url, "battle", {}))["token"])
            except Rejected as err:  # a tiny random model may write an empty summary; try another
                assert "needs all three models" in str(err)
                refusals.append(str(err))
        if len(tokens) == count:
            return tokens
        pytest.fail(f"only {len(tokens)}/{count} battles in {max_tries} tries; refusals: {refusals[:3]}")


async def _vote(client: httpx.AsyncClient, url: str, token: str, choice: str, ranked: bool) -> tuple | None:
    payload = {"token": token, "choice": choice, "ranking": RANKINGS[choice] if ranked else ""}
    result = await _call(client, url, "vote", payload)
    revealed = result["revealed"]
    ranking = json.dumps([revealed[x] for x in payload["ranking"].split(">")]) if ranked else None
    return json.dumps([revealed[x] for x in "ABC"]), choice, ranking


def _ballots(tokens: list[str], seed: int) -> list[tuple[str, str, bool]]:
    """(token, choice, also rank all three?) per token: mostly picks, some "all bad", some rankings."""
    rng = random.Random(seed)
    ballots = []
    for token in tokens:
        choice = rng.choice("ABC") if rng.random() < 0.9 else "none"
        ballots.append((token, choice, choice != "none" and rng.random() < 0.4))
    return ballots


def _leaderboard(url: str) -> list[dict]:
    async def fetch() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await _call(client, url, "leaderboard", {})

    return asyncio.run(fetch())


def _stored(path: str) -> collections.Counter:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT order_shown, choice, ranking FROM votes").fetchall()
    return collections.Counter(rows)


def _file_facts(path: str) -> dict:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
            "versions": [row[0] for row in db.execute("SELECT version FROM schema_version")],
            "integrity": db.execute("PRAGMA integrity_check").fetchone()[0],
            "rows": db.execute("SELECT COUNT(*) FROM votes").fetchone()[0],
            "distinct_battles": db.execute("SELECT COUNT(DISTINCT battle_id) FROM votes").fetchone()[0],
        }


@pytest.mark.slow
def test_votes_survive_sigkill_and_a_crash_mid_burst(
    tiny_checkpoints: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "checkpoints").mkdir()
    db = str(tmp_path / "votes.sqlite")

    # -- first process: votes, the leaderboard they give, then SIGKILL while idle
    first = _start(tiny_checkpoints, tmp_path)
    try:
        tokens = asyncio.run(_battles(first.url, FIRST_VOTES + 1))
        leftover = tokens.pop()  # opened but never voted on: lives only in that process

        async def cast_first() -> list:
            async with httpx.AsyncClient(timeout=120) as client:
                return [await _vote(client, first.url, *b) for b in _ballots(tokens, seed=1)]

        acknowledged = asyncio.run(cast_first())
        before = _leaderboard(first.url)
    finally:
        first.process.kill()  # SIGKILL: no shutdown hook runs
        first.process.wait(timeout=30)
    assert sum(row["wins"] for row in before) == sum(1 for a in acknowledged if a[1] != "none")

    # -- second process on the same file: same leaderboard, same votes
    second = _start(tiny_checkpoints, tmp_path)
    try:
        after = _leaderboard(second.url)
        assert _same_board(after, before), (after, before)
        assert _stored(db) == collections.Counter(acknowledged)
        facts = _file_facts(db)
        assert facts["journal_mode"] == "wal"
        assert facts["versions"] == [SCHEMA_VERSION]
        assert facts["integrity"] == "ok"

        # A token of the killed process is refused with a reason, and stores nothing.
        async def late_vote() -> str:
            async with httpx.AsyncClient(timeout=60) as client:
                with pytest.raises(Rejected) as refused:
                    await _call(client, second.url, "vote", {"token": leftover, "choice": "A"})
                return str(refused.value)

        assert "unknown battle token" in asyncio.run(late_vote())
        assert _file_facts(db)["rows"] == FIRST_VOTES

        # -- a burst of votes, cut by SIGKILL after the first acknowledgements
        burst_tokens = asyncio.run(_battles(second.url, BURST_VOTES))

        async def burst() -> list:
            acks: list = []

            async def one(client: httpx.AsyncClient, ballot: tuple) -> None:
                with contextlib.suppress(httpx.HTTPError, RuntimeError, Rejected):
                    acks.append(await _vote(client, second.url, *ballot))
                    if len(acks) == KILL_AFTER_ACKS:
                        second.process.kill()

            async with httpx.AsyncClient(timeout=60) as client:
                await asyncio.gather(*(one(client, b) for b in _ballots(burst_tokens, seed=2)))
            return acks

        burst_acks = asyncio.run(burst())
    finally:
        second.process.kill()
        second.process.wait(timeout=30)
    assert len(burst_acks) >= KILL_AFTER_ACKS

    # Read back the way a restarted app does (VoteStore + standings): nothing acknowledged is
    # missing, nothing is stored twice, the file is intact.
    stored = _stored(db)
    assert not collections.Counter(acknowledged + burst_acks) - stored
    facts = _file_facts(db)
    assert facts["integrity"] == "ok" and facts["journal_mode"] == "wal"
    assert facts["rows"] == facts["distinct_battles"] <= FIRST_VOTES + BURST_VOTES
    store = VoteStore(db)
    assert store.schema_version() == SCHEMA_VERSION
    assert len(store.all()) == facts["rows"]
    board = [row.as_json() for row in standings(store.all(preset="mini"))]
    assert sum(row["votes"] for row in board) == 3 * facts["rows"]
    print(
        f"\nrestart: {FIRST_VOTES} votes survived SIGKILL + restart; burst of {BURST_VOTES} cut by SIGKILL "
        f"after {len(burst_acks)} acknowledgements: {facts['rows'] - FIRST_VOTES} stored, none lost or doubled"
    )


def _same_board(after: list[dict], before: list[dict]) -> bool:
    """Same models, counts and intervals; strengths equal up to float noise."""
    a, b = ({r["model"]: r for r in rows} for rows in (after, before))
    if a.keys() != b.keys():
        return False
    for model in a:
        if (a[model]["votes"], a[model]["wins"]) != (b[model]["votes"], b[model]["wins"]):
            return False
        if a[model]["win_rate"] != pytest.approx(b[model]["win_rate"]):
            return False
        if a[model]["ci95"] != pytest.approx(b[model]["ci95"]) or a[model]["bt"] != pytest.approx(
            b[model]["bt"]
        ):
            return False
    return True
