"""Concurrent users on loopback: every request answered (or refused as busy and retried), no vote
lost or duplicated (issue 6); one client cannot fill the queue (issue 11).

The CI-sized run of ``bench/load.py``: 20 concurrent ``/compare`` clients and a burst of
``VOTES`` simultaneous ``/vote`` calls, each with its own battle token. ``python -m bench.load
--tiny`` runs the full-size version (500 votes by default) outside the test suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import LoadOptions, format_report, require_loopback, run_load

COMPARE_CLIENTS = 20
VOTES = 100  # the standalone script sends 500 by default; 100 keeps this test near 30 s on 2 cores
REPLAYS = 20
FLOOD = 8  # /compare calls one client sends at once (the app allows app.QUEUED_PER_CLIENT)


@pytest.fixture(scope="module")
def load_app(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: dict[str, str]) -> Iterator:
    """An app of its own (short summaries keep generation cheap), with a fresh votes DB."""
    from tests.conftest import start_app

    root = tmp_path_factory.mktemp("load")
    (root / "checkpoints").mkdir()
    server = start_app(
        tiny_checkpoints, str(root / "votes.sqlite"), str(root / "checkpoints"), root / "logs",
        ARENA_MAX_NEW_TOKENS="8",
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_concurrent_compares_and_a_vote_burst_lose_nothing(load_app) -> None:
    report = run_load(
        LoadOptions(
            url=load_app.url,
            compare_clients=COMPARE_CLIENTS,
            votes=VOTES,
            replays=REPLAYS,
            votes_db=load_app.votes_db,
            time_cap_s=240,
            flood=FLOOD,
        )
    )
    print("\n" + format_report(report))  # the figures, visible with pytest -s
    assert not report.timed_out
    assert report.compare.sent == COMPARE_CLIENTS
    # Answered, or refused as busy and answered on a retry: nothing else.
    assert report.compare.answered == COMPARE_CLIENTS, report.compare.messages
    assert report.compare.errors == report.compare.rejected == report.compare.gave_up_busy == 0
    assert report.votes_sent == VOTES
    assert report.votes.answered == report.votes_acknowledged == VOTES, report.votes.messages
    assert report.votes.errors == report.votes.gave_up_busy == 0
    # Exactly the acknowledged votes are stored: none lost, none duplicated, none altered.
    assert report.votes_stored == VOTES
    assert report.duplicates == 0
    assert report.unmatched == 0
    # A used token is refused every time, with the reason.
    assert report.replays.rejected == REPLAYS and report.replays.answered == 0
    assert all("already used" in message for message in report.replays.messages)
    # Fairness: one client's flood is cut to the per-client bound, with a message; others are served.
    from app import QUEUED_PER_CLIENT

    assert report.fairness.sent == FLOOD and report.fairness.limited >= 1
    assert report.fairness.answered >= QUEUED_PER_CLIENT
    assert report.fairness.answered + report.fairness.limited == FLOOD
    assert all(f"already have {QUEUED_PER_CLIENT}" in m for m in report.fairness.messages if "limited" in m)
    assert report.bystander.answered == 1 and report.bystander.limited == 0
    assert report.ok, report.problems
    assert "Traceback" not in load_app.log_tail(1_000_000)  # refusals are messages, not crashes


def test_load_script_refuses_anything_but_loopback() -> None:
    assert require_loopback("http://127.0.0.1:7860") == "http://127.0.0.1:7860/"
    assert require_loopback("http://localhost:7860/") == "http://localhost:7860/"
    for url in (
        "http://example.org:7860/",
        "http://10.0.0.5:7860/",
        "https://0.0.0.0/",
        "file:///etc/passwd",
    ):
        with pytest.raises(SystemExit, match="loopback"):
            require_loopback(url)


def test_load_script_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.load import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--compare-clients", "--votes", "--time-cap", "--url", "--tiny"):
        assert flag in text


def test_stored_votes_are_compared_with_the_acknowledged_ones(tmp_path: Path) -> None:
    """The checker itself: a lost, a duplicated and an altered vote are each reported."""
    import json

    from bench.load import LoadReport, PhaseStats, _check
    from core.votes import Vote, VoteStore

    store = VoteStore(tmp_path / "votes.sqlite")
    order = ("original", "full", "lora")
    for i, choice in enumerate(("A", "B", "B")):
        store.add(Vote(f"battle-{i}", "d", order, choice, None, {}, "mini", "api"))
    acknowledged = [(json.dumps(list(order)), c, None) for c in ("A", "B", "C", "none")]
    report = LoadReport("http://127.0.0.1:1/", *(PhaseStats() for _ in range(4)))
    report.votes_sent = report.votes_acknowledged = 4
    _check(report, LoadOptions(url=report.url, votes=4, votes_db=str(store.path)), acknowledged, 0)
    assert report.votes_stored == 3 and report.duplicates == 0
    assert report.unmatched == 3  # a second "B" stored; "C" and "none" acknowledged but missing
    assert any("4 votes acknowledged but 3 stored" in p for p in report.problems)
