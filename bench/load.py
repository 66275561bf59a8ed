"""Bounded load test of the arena on loopback: concurrent ``/compare`` clients, then a burst of votes.

What it does, in order (every phase has a fixed request count; the whole run has a time cap,
after which it stops and reports what it has):

1. ``--compare-clients`` clients (default 20) each send ``--compare-requests`` ``/compare``
   calls at once, on distinct DialogSum dialogues (so the summary cache can't answer them).
2. ``--votes`` battles (default 500) are opened through ``/battle`` (each vote needs its own
   single-use token).
3. All ``--votes`` ``/vote`` calls are sent at once, one per token; then ``--replays`` of the
   used tokens are sent again, which must all be refused.
4. The votes database is checked: stored vs sent, duplicates, and that every stored vote is
   one the app acknowledged (same shown order and choice).
5. Fairness: one client sends ``--flood`` long ``/compare`` calls at once while another sends
   one. The app bounds what one client may have queued or running (``app.QUEUED_PER_CLIENT``):
   the flood's excess must be refused at once with a message saying why, and the other
   client must still be served.

Each simulated client has its own address, sent as ``X-Forwarded-For`` the way a reverse
proxy does (the app trusts that header only from a loopback or private peer).

A request refused because the app's queue is full (HTTP 503, gradio's "Queue is full") is
counted as *refused-busy* and retried with backoff, up to ``--retries`` times.

Only loopback is allowed: by default the script starts ``python app.py`` itself on
``127.0.0.1`` with a temporary votes database (``--tiny`` serves tiny random models so the run
takes seconds); ``--url http://127.0.0.1:PORT/`` targets a running app instead (give
``--votes-db`` to verify storage in its database, otherwise the leaderboard is used).

    python -m bench.load --tiny                      # the CI-sized run, self-contained
    python -m bench.load --tiny --votes 2000 --compare-clients 50
    python -m bench.load --url http://127.0.0.1:7860/ --votes-db data/votes.sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from bench.app_process import AppStartError, start_app

logger = logging.getLogger("bench.load")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BUSY_STATUS = 503  # gradio answers a full queue with 503 "Queue is full. Max size is N ..."
LIMITED_STATUS = 400  # the app's per-client bound refuses with 400 and a message (app.py)
CHOICES = ("A", "B", "C", "none")
RANKINGS = ("A>B>C", "A>C>B", "B>A>C", "B>C>A", "C>A>B", "C>B>A")


@dataclass
class LoadOptions:
    """One run's sizes and limits (the CLI flags)."""

    url: str
    compare_clients: int = 20
    compare_requests: int = 1
    votes: int = 500
    replays: int = 50
    battle_concurrency: int = 16
    max_new_tokens: int | None = None
    retries: int = 8
    request_timeout_s: float = 120.0
    time_cap_s: float = 300.0
    votes_db: str | None = None
    data: str | None = None
    seed: int = 0
    flood: int = 8  # phase 5: /compare calls one client sends at once (0 = skip the phase)
    flood_tokens: int = 256  # long summaries, so that the flood's calls overlap


@dataclass
class PhaseStats:
    """Outcome counts of one phase. ``refused_busy`` counts refusals, retried or not."""

    sent: int = 0
    answered: int = 0
    refused_busy: int = 0
    gave_up_busy: int = 0
    rejected: int = 0  # answered with an error message (expected for replays)
    limited: int = 0  # refused because this client already had too many jobs (phase 5)
    errors: int = 0  # anything else: transport failures, timeouts, unexpected payloads
    seconds: float = 0.0
    messages: collections.Counter = field(default_factory=collections.Counter)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"] = dict(self.messages.most_common(5))
        return data


@dataclass
class LoadReport:
    """Everything the run measured; ``ok`` says whether every invariant held."""

    url: str
    compare: PhaseStats
    battles: PhaseStats
    votes: PhaseStats
    replays: PhaseStats
    fairness: PhaseStats = field(default_factory=PhaseStats)  # the flooding client's calls
    bystander: PhaseStats = field(default_factory=PhaseStats)  # the other client's call
    votes_sent: int = 0
    votes_acknowledged: int = 0
    votes_stored: int | None = None
    duplicates: int | None = None
    unmatched: int | None = None  # stored votes the app never acknowledged, or the reverse
    storage_check: str = ""
    timed_out: bool = False
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "problems": self.problems,
            "seconds": round(self.seconds, 2),
            "timed_out": self.timed_out,
            "compare": self.compare.as_json(),
            "battles": self.battles.as_json(),
            "votes": self.votes.as_json(),
            "replays": self.replays.as_json(),
            "fairness": self.fairness.as_json(),
            "bystander": self.bystander.as_json(),
            "votes_sent": self.votes_sent,
            "votes_acknowledged": self.votes_acknowledged,
            "votes_stored": self.votes_stored,
            "duplicates": self.duplicates,
            "unmatched": self.unmatched,
            "storage_check": self.storage_check,
        }


class Busy(Exception):
    """The app's queue was full."""


class Rejected(Exception):
    """The app answered with an error message (a gr.Error)."""


class Limited(Exception):
    """The app refused the call at once: this client already has too many jobs (HTTP 400)."""


def client_address(k: int, block: int = 18) -> str:
    """A distinct simulated client address (198.18.0.0/15 is reserved for benchmarks)."""
    return f"198.{block}.{k // 256 % 256}.{k % 256}"


def require_loopback(url: str) -> str:
    """Return ``url`` normalised with a trailing slash; refuse anything but loopback."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or parsed.hostname not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing {url!r}: this load test only targets loopback (127.0.0.1)")
    return url if url.endswith("/") else url + "/"


async def call(
    client: httpx.AsyncClient, url: str, name: str, payload: dict[str, Any], address: str | None = None
) -> Any:
    """One named-endpoint call through gradio's HTTP API (``/gradio_api/call/v2/<name>``).

    Returns the endpoint's value; raises :class:`Busy` for a full queue and
    :class:`Rejected` with the app's message for a ``gr.Error``, :class:`Limited` when the app
    refuses the call because this client (``address``, sent as ``X-Forwarded-For``) has too
    many jobs already.
    """
    # ASCII JSON (\uXXXX escapes): any text a client can send arrives, lone surrogates included.
    body = json.dumps(payload, ensure_ascii=True)
    headers = {"Content-Type": "application/json"}
    if address:
        headers["X-Forwarded-For"] = address
    response = await client.post(f"{url}gradio_api/call/v2/{name}", content=body, headers=headers)
    if response.status_code == BUSY_STATUS:
        raise Busy(response.json().get("detail", "queue is full"))
    if response.status_code == LIMITED_STATUS:
        raise Limited(str(response.json().get("detail", "refused")))
    response.raise_for_status()
    event_id = response.json()["event_id"]
    event = None
    async with client.stream("GET", f"{url}gradio_api/call/v2/{name}/{event_id}") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line[len("event:") :].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = json.loads(line[len("data:") :].strip() or "null")
                if event == "error":
                    message = data.get("error") if isinstance(data, dict) else data
                    raise Rejected(str(message or "error without a message"))
                return data[0] if isinstance(data, list) and len(data) == 1 else data
    raise RuntimeError(f"{name}: the event stream ended without a result")


async def call_with_retries(
    client: httpx.AsyncClient,
    options: LoadOptions,
    stats: PhaseStats,
    name: str,
    payload: dict[str, Any],
    rng: random.Random,
    retry_rejected: int = 0,
    address: str | None = None,
) -> Any:
    """``call`` that retries busy refusals with jittered backoff; updates ``stats``.

    ``retry_rejected`` retries that many rejections too (a ``/battle`` on a random dialogue
    can be refused when a tiny random model writes an empty summary; the next one differs).
    """
    stats.sent += 1
    busy_refusals = 0
    while True:
        try:
            result = await call(client, options.url, name, payload, address)
        except Busy as busy:
            stats.refused_busy += 1
            stats.messages[f"busy: {str(busy)[:60]}"] += 1
            if busy_refusals == options.retries:
                stats.gave_up_busy += 1
                return None
            await asyncio.sleep(min(5.0, 0.2 * 2**busy_refusals) * (0.5 + rng.random()))
            busy_refusals += 1
            continue
        except Limited as err:
            stats.limited += 1
            stats.messages[f"limited: {str(err)[:70]}"] += 1
            return None
        except Rejected as err:
            stats.messages[str(err)[:80]] += 1
            if retry_rejected > 0:
                retry_rejected -= 1
                continue
            stats.rejected += 1
            return None
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as err:
            stats.errors += 1
            stats.messages[f"{type(err).__name__}: {str(err)[:60]}"] += 1
            return None
        stats.answered += 1
        return result


def _dialogues(options: LoadOptions, count: int) -> list[str]:
    """Distinct dialogues for ``/compare`` (validation split, read through ``core.data``)."""
    from core.config import default_data_source
    from core.data import load_split

    records = load_split(options.data or default_data_source(), "validation")
    texts = [r.dialogue for r in records]
    # More requests than dialogues: vary the text so every request still misses the cache.
    return [texts[i % len(texts)] + ("" if i < len(texts) else f"\n#Person1#: ({i})") for i in range(count)]


async def _timed(stats: PhaseStats, coroutines: list) -> list[Any]:
    start = time.perf_counter()
    results = await asyncio.gather(*coroutines)
    stats.seconds = time.perf_counter() - start
    return list(results)


async def _run(options: LoadOptions, report: LoadReport) -> list[tuple[str, str, str | None]]:
    """The three phases; returns the acknowledged votes as (order shown, choice, ranking)."""
    rng = random.Random(options.seed)
    total = options.compare_clients * options.compare_requests
    dialogues = _dialogues(options, total) if total else []
    limits = httpx.Limits(max_connections=max(options.votes, total) + 32, max_keepalive_connections=64)
    timeout = httpx.Timeout(options.request_timeout_s, connect=30.0)
    settings = {} if options.max_new_tokens is None else {"max_new_tokens": options.max_new_tokens}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def compare_client(k: int) -> None:
            for j in range(options.compare_requests):
                result = await call_with_retries(
                    client, options, report.compare, "compare",
                    {"dialogue": dialogues[k * options.compare_requests + j], "reference": "", **settings},
                    rng, address=client_address(k),
                )  # fmt: skip
                if result is not None:
                    models = result.get("models", {}) if isinstance(result, dict) else {}
                    failed = {n: m.get("error") for n, m in models.items() if m.get("error")}
                    if len(models) != 3 or failed:
                        report.compare.answered -= 1
                        report.compare.errors += 1
                        report.compare.messages[f"model error: {failed or models}"[:80]] += 1
                    for name in (n for n, m in models.items() if not m.get("error") and not m.get("summary")):
                        # Tiny random models sometimes stop at once: an answer, just an empty one.
                        report.compare.messages[f"empty summary from {name}"] += 1

        logger.info("compare: %d clients x %d requests", options.compare_clients, options.compare_requests)
        await _timed(report.compare, [compare_client(k) for k in range(options.compare_clients)])

        logger.info("opening %d battles", options.votes)
        gate = asyncio.Semaphore(options.battle_concurrency)

        async def open_battle(k: int) -> dict[str, Any] | None:
            async with gate:
                return await call_with_retries(
                    client, options, report.battles, "battle", {}, rng, retry_rejected=5,
                    address=client_address(k, block=19),
                )  # fmt: skip

        battles = await _timed(report.battles, [open_battle(k) for k in range(options.votes)])
        tokens = [b["token"] for b in battles if isinstance(b, dict) and b.get("token")]

        logger.info("sending %d votes at once", len(tokens))
        ballots = []
        for token in tokens:
            choice = rng.choice(CHOICES)
            ranking = None
            if choice != "none" and rng.random() < 0.3:  # some raters rank all three
                ranking = rng.choice([r for r in RANKINGS if r[0] == choice])
            ballots.append((token, choice, ranking))

        async def vote(token: str, choice: str, ranking: str | None) -> tuple[str, str, str | None] | None:
            payload = {"token": token, "choice": choice, "ranking": ranking or ""}
            result = await call_with_retries(client, options, report.votes, "vote", payload, rng)
            if not (isinstance(result, dict) and result.get("ok")):
                return None
            revealed = result["revealed"]
            order = json.dumps([revealed[x] for x in "ABC"])
            ranked = json.dumps([revealed[x] for x in ranking.split(">")]) if ranking else None
            return order, choice, ranked

        report.votes_sent = len(ballots)
        acknowledged = await _timed(report.votes, [vote(*b) for b in ballots])
        acknowledged = [a for a in acknowledged if a is not None]
        report.votes_acknowledged = len(acknowledged)

        replayed = rng.sample(ballots, min(options.replays, len(ballots)))
        await _timed(
            report.replays,
            [
                call_with_retries(client, options, report.replays, "vote", {"token": t, "choice": c}, rng)
                for t, c, _ in replayed
            ],
        )
        if options.flood:
            await _fairness(client, options, report, rng, dialogues[0] if dialogues else FLOOD_DIALOGUE)
    return acknowledged


FLOOD_DIALOGUE = "#Person1#: Shall we meet at noon?\n#Person2#: Yes, at the station."


async def _fairness(
    client: httpx.AsyncClient, options: LoadOptions, report: LoadReport, rng: random.Random, dialogue: str
) -> None:
    """Phase 5: one client floods ``/compare`` while another sends one call."""
    flooder, bystander = "198.20.0.1", "198.20.0.2"
    logger.info("fairness: one client sends %d /compare calls at once", options.flood)

    async def one(k: int, stats: PhaseStats, address: str) -> Any:
        payload = {"dialogue": f"{dialogue}\n#Person1#: ({k})", "reference": "",
                   "max_new_tokens": options.flood_tokens}  # fmt: skip
        return await call_with_retries(client, options, stats, "compare", payload, rng, address=address)

    flood = [one(k, report.fairness, flooder) for k in range(options.flood)]
    await _timed(report.fairness, [*flood, one(-1, report.bystander, bystander)])


def _stored_votes(path: str, after_id: int) -> list[tuple[str, str, str | None, str]]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return db.execute(
            "SELECT order_shown, choice, ranking, battle_id FROM votes WHERE id > ? ORDER BY id", (after_id,)
        ).fetchall()


def _max_vote_id(path: str) -> int:
    if not Path(path).is_file():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM votes").fetchone()[0])
        except sqlite3.OperationalError:  # the app has not created the table yet
            return 0


def _leaderboard_votes(url: str) -> int:
    """Votes so far according to ``/leaderboard`` (every vote counts once for each model)."""

    async def fetch() -> Any:
        async with httpx.AsyncClient(timeout=60) as client:
            return await call(client, url, "leaderboard", {})

    rows = asyncio.run(fetch())
    return max((int(row["votes"]) for row in rows), default=0)


def _check(report: LoadReport, options: LoadOptions, acknowledged: list, before: int) -> None:
    """Compare what the app acknowledged with what it stored; record every broken invariant."""
    problems = report.problems
    for phase, stats in (("compare", report.compare), ("battle", report.battles), ("vote", report.votes)):
        if stats.errors or stats.gave_up_busy or stats.rejected:
            problems.append(
                f"{phase}: {stats.errors} errors, {stats.rejected} rejected, "
                f"{stats.gave_up_busy} still busy after retries ({dict(stats.messages.most_common(3))})"
            )
    if report.replays.answered:
        problems.append(f"{report.replays.answered} replayed (used) tokens were accepted again")
    if options.flood:
        fair, other = report.fairness, report.bystander
        if not fair.limited:
            problems.append(f"one client sent {options.flood} calls at once and none was refused")
        if fair.answered + fair.limited != options.flood or fair.errors:
            problems.append(f"flood: {fair.answered} answered + {fair.limited} refused of {options.flood}")
        if any(m.startswith("limited:") and "already have" not in m for m in fair.messages):
            problems.append(f"a refusal did not say why: {dict(fair.messages)}")
        if other.answered != 1:
            problems.append(f"another client was not served during the flood: {dict(other.messages)}")
    if report.votes_sent != options.votes:
        problems.append(f"only {report.votes_sent} of {options.votes} battles could be opened")
    if options.votes_db:
        stored = _stored_votes(options.votes_db, before)
        report.votes_stored = len(stored)
        report.duplicates = len(stored) - len({row[3] for row in stored})
        theirs = collections.Counter((o, c, r) for o, c, r, _ in stored)
        ours = collections.Counter(acknowledged)
        report.unmatched = sum(((theirs - ours) + (ours - theirs)).values())
        report.storage_check = f"votes table of {options.votes_db}"
    else:
        report.votes_stored = _leaderboard_votes(options.url) - before
        report.storage_check = "leaderboard vote counts (no --votes-db: duplicates not checkable)"
    if report.votes_stored != report.votes_acknowledged:
        problems.append(f"{report.votes_acknowledged} votes acknowledged but {report.votes_stored} stored")
    if report.duplicates:
        problems.append(f"{report.duplicates} duplicated votes stored")
    if report.unmatched:
        problems.append(f"{report.unmatched} stored votes differ from the acknowledged ones")


def run_load(options: LoadOptions) -> LoadReport:
    """Run the bounded load test against ``options.url`` and return its report."""
    options.url = require_loopback(options.url)
    empty = PhaseStats
    report = LoadReport(options.url, empty(), empty(), empty(), empty())
    before = _max_vote_id(options.votes_db) if options.votes_db else _leaderboard_votes(options.url)
    start = time.perf_counter()
    acknowledged: list = []

    async def bounded() -> None:
        acknowledged.extend(await asyncio.wait_for(_run(options, report), timeout=options.time_cap_s))

    try:
        asyncio.run(bounded())
    except (asyncio.TimeoutError, TimeoutError):
        report.timed_out = True
        report.problems.append(f"time cap of {options.time_cap_s:.0f} s reached; the run was stopped")
    report.seconds = time.perf_counter() - start
    _check(report, options, acknowledged, before)
    return report


# ---------------------------------------------------------------------------- starting an app


@contextlib.contextmanager
def serve_app(workdir: Path, tiny: bool, max_new_tokens: int | None, start_timeout_s: float = 180.0):
    """``python app.py`` on a free loopback port with a fresh votes DB in ``workdir``."""
    env = {"ARENA_VOTES_DB": str(workdir / "votes.sqlite")}
    if max_new_tokens is not None:
        env["ARENA_MAX_NEW_TOKENS"] = str(max_new_tokens)
    if tiny:
        from bench.fixtures import build_tiny_checkpoints, tiny_app_env
        from core.config import default_data_source

        paths = build_tiny_checkpoints(workdir / "tiny", default_data_source())
        env.update(tiny_app_env(paths, str(workdir / "checkpoints")))
    try:
        app = start_app(workdir / "app.log", start_timeout_s, **env)
    except AppStartError as err:
        raise SystemExit(f"{str(err).splitlines()[0]}; see {workdir / 'app.log'}") from None
    try:
        yield app.url, env["ARENA_VOTES_DB"]
    finally:
        app.stop()


def format_report(report: LoadReport) -> str:
    """The human-readable summary the CLI prints."""
    lines = [
        f"load test against {report.url} ({report.seconds:.1f} s{', TIMED OUT' if report.timed_out else ''})"
    ]
    lines.append(
        f"{'phase':<10}{'sent':>6}{'answered':>10}{'busy':>7}{'gave up':>9}{'rejected':>10}{'limited':>9}"
        f"{'errors':>8}{'s':>8}"
    )
    for name in ("compare", "battles", "votes", "replays", "fairness", "bystander"):
        s: PhaseStats = getattr(report, name)
        lines.append(
            f"{name:<10}{s.sent:>6}{s.answered:>10}{s.refused_busy:>7}{s.gave_up_busy:>9}{s.rejected:>10}"
            f"{s.limited:>9}{s.errors:>8}{s.seconds:>8.1f}"
        )
    lines.append(
        f"votes: sent {report.votes_sent}, acknowledged {report.votes_acknowledged}, stored "
        f"{report.votes_stored}, duplicates {report.duplicates}, unmatched {report.unmatched} "
        f"[{report.storage_check}]"
    )
    lines.append("replays of used tokens must all be rejected: " + ", ".join(
        f"{n}x {m!r}" for m, n in report.replays.messages.most_common(2)) if report.replays.sent else "")  # fmt: skip
    lines.append("OK" if report.ok else "FAILED: " + "; ".join(report.problems))
    return "\n".join(line for line in lines if line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Bounded load test of the arena on loopback only: concurrent /compare clients, "
        "then a burst of /vote calls; checks that every vote is stored exactly once.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        help="a running app on 127.0.0.1 (default: start one with a temporary votes DB); the votes it "
        "casts are stored like real ones, so only use an app with a throwaway votes DB",
    )
    parser.add_argument("--votes-db", help="with --url: the app's SQLite file, to verify storage exactly")
    parser.add_argument(
        "--tiny", action="store_true", help="start the app on tiny random models (seconds, not minutes)"
    )
    parser.add_argument("--compare-clients", type=int, default=20, help="concurrent /compare clients")
    parser.add_argument("--compare-requests", type=int, default=1, help="/compare calls per client")
    parser.add_argument("--votes", type=int, default=500, help="battles opened, then voted on all at once")
    parser.add_argument("--replays", type=int, default=50, help="used tokens sent again (must be refused)")
    parser.add_argument("--battle-concurrency", type=int, default=16, help="concurrent /battle calls")
    parser.add_argument("--max-new-tokens", type=int, help="summary length for the started app and /compare")
    parser.add_argument("--retries", type=int, default=8, help="retries of a request refused as busy")
    parser.add_argument("--time-cap", type=float, default=300.0, help="stop the run after this many seconds")
    parser.add_argument(
        "--flood",
        type=int,
        default=8,
        help="fairness phase: /compare calls one client sends at once (0 = skip)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the report
    for name in ("compare_clients", "compare_requests", "votes", "replays", "retries", "flood"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")

    def run(url: str, votes_db: str | None) -> LoadReport:
        return run_load(
            LoadOptions(
                url=url, compare_clients=args.compare_clients, compare_requests=args.compare_requests,
                votes=args.votes, replays=args.replays, battle_concurrency=max(1, args.battle_concurrency),
                max_new_tokens=args.max_new_tokens, retries=args.retries, time_cap_s=args.time_cap,
                votes_db=votes_db, flood=args.flood,
            )
        )  # fmt: skip

    if args.url:
        report = run(args.url, args.votes_db)
    else:
        with (
            tempfile.TemporaryDirectory(prefix="arena-load-") as tmp,
            serve_app(Path(tmp), args.tiny, args.max_new_tokens) as (url, votes_db),
        ):
            report = run(url, votes_db)
    print(json.dumps(report.as_json(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
