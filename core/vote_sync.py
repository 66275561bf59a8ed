"""Votes that survive a Space restart: where they are kept, and an optional copy on the Hub.

A Space's disk is wiped on restart unless persistent storage (mounted at ``/data``) is
attached; :func:`core.config.default_votes_db` puts the SQLite file there when it exists, and
:func:`votes_storage_note` tells people whether their votes are durable on this host.

With ``ARENA_VOTES_REPO=owner/dataset``, every stored vote is also appended as one JSON line
to a file in a local folder that ``huggingface_hub.CommitScheduler`` commits to that Hub
dataset every few minutes (the documented way for a Space to keep data), and an app that
starts with an empty local database loads the votes back from the dataset. SQLite stays the
real store: the Hub copy is written after a vote is committed, and read only into an empty
database.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from core.config import ArenaConfig
from core.votes import DuplicateVoteError, Vote, VoteStore

logger = logging.getLogger(__name__)

VOTES_DIR_IN_REPO = "votes"  # folder of the dataset repo holding the JSON-lines files
PUSH_EVERY_MINUTES = 5.0  # CommitScheduler's period: one commit per period at most
_VOTE_FIELDS = {f.name for f in dataclasses.fields(Vote)} - {"id"}  # ids are local to one database


def vote_to_json(vote: Vote) -> dict[str, Any]:
    """One vote as a JSON-ready dict: every :class:`Vote` field but the database-local ``id``."""
    raw = dataclasses.asdict(vote)
    return {name: list(v) if isinstance(v, tuple) else v for name, v in raw.items() if name in _VOTE_FIELDS}


def vote_from_json(raw: Any) -> Vote:
    """The :class:`Vote` of one JSON line (``ValueError`` when it is not one); unknown keys are ignored."""
    if not isinstance(raw, dict):
        raise ValueError("a vote line must hold a JSON object")
    values = {name: raw[name] for name in _VOTE_FIELDS if name in raw}
    try:
        values["order_shown"] = tuple(values["order_shown"])
        ranking = values.get("ranking")
        values["ranking"] = tuple(ranking) if ranking else None
        return Vote(**values)
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a vote: {err}") from err


class VoteSync:
    """Appends votes to a Hub dataset through ``CommitScheduler``; loads them back when asked.

    ``api`` is the ``huggingface_hub.HfApi`` to talk through (tests pass a stand-in); the
    scheduler's background thread starts at construction and commits every ``every_minutes``.
    """

    def __init__(
        self,
        repo_id: str,
        folder: str | Path,
        *,
        api: Any = None,
        every_minutes: float = PUSH_EVERY_MINUTES,
    ) -> None:
        from huggingface_hub import CommitScheduler, HfApi

        self.repo_id = repo_id
        self.api = api if api is not None else HfApi()
        self.folder = Path(folder)
        # One file per process: two app processes never append to the same file, and a file the
        # scheduler already committed is only ever appended to (what CommitScheduler expects).
        self.path = self.folder / f"votes-{uuid.uuid4().hex}.jsonl"
        self.scheduler = CommitScheduler(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=self.folder,
            path_in_repo=VOTES_DIR_IN_REPO,
            every=every_minutes,
            allow_patterns=["*.jsonl"],
            hf_api=self.api,
        )

    def record(self, vote: Vote) -> None:
        """Append one stored vote to this process's JSON-lines file (committed at the next push).

        A failure is logged, never raised: the vote is already safe in SQLite.
        """
        line = json.dumps(vote_to_json(vote), sort_keys=True, ensure_ascii=False)
        try:
            with self.scheduler.lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as err:
            logger.error("vote %s not queued for the Hub dataset %s: %s", vote.battle_id, self.repo_id, err)

    def push_now(self) -> Future:
        """Commit what is queued now instead of at the next period (returns the commit's future)."""
        return self.scheduler.trigger()

    def stop(self) -> None:
        """Stop the scheduler thread (what is queued and not yet committed stays in the folder)."""
        self.scheduler.stop()

    def restore(self, store: VoteStore) -> int:
        """Load the dataset's votes into ``store`` when it is empty; return how many were added.

        A non-empty database is left alone (it is the real store). Lines that are not votes
        are skipped with a warning; a vote whose battle is already stored is skipped.
        """
        if store.count() > 0:
            return 0
        prefix = f"{VOTES_DIR_IN_REPO}/"
        names = [
            name
            for name in self.api.list_repo_files(self.repo_id, repo_type="dataset")
            if name.startswith(prefix) and name.endswith(".jsonl")
        ]
        votes: list[Vote] = []
        for name in sorted(names):
            path = Path(self.api.hf_hub_download(self.repo_id, name, repo_type="dataset"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    votes.append(vote_from_json(json.loads(line)))
                except ValueError as err:
                    logger.warning("skipping %s line %d of %s: %s", name, number, self.repo_id, err)
        added = 0
        for vote in sorted(votes, key=lambda v: v.created_at):  # local ids follow the votes' order
            try:
                store.add(vote)
                added += 1
            except DuplicateVoteError:
                continue
            except ValueError as err:
                logger.warning("skipping vote %s from %s: %s", vote.battle_id, self.repo_id, err)
        logger.info("loaded %d votes back from the Hub dataset %s", added, self.repo_id)
        return added


def start_vote_sync(config: ArenaConfig, store: VoteStore, api: Any = None) -> VoteSync | None:
    """The configured :class:`VoteSync` (``ARENA_VOTES_REPO``), after loading its votes back into an
    empty ``store``; ``None`` when none is configured or the Hub refuses (logged: votes then stay local)."""
    if not config.votes_repo:
        return None
    folder = Path(config.votes_db).expanduser().parent / "votes-hub-queue"
    try:
        sync = VoteSync(config.votes_repo, folder, api=api)
    except Exception as err:  # noqa: BLE001 - no token, no network, no such namespace: serve on
        logger.error("votes are not copied to the Hub dataset %s: %s", config.votes_repo, err)
        return None
    try:
        sync.restore(store)
    except Exception as err:  # noqa: BLE001 - a failed restore must not stop the app
        logger.error("votes could not be loaded back from %s: %s", config.votes_repo, err)
    return sync


def votes_storage_note(config: ArenaConfig, on_space: bool | None = None) -> str:
    """One sentence for the UI: where votes are kept and whether they survive a restart here.

    ``on_space`` (default: whether ``SPACE_ID`` is set, as on every Hugging Face Space) makes the
    warning explicit: a Space without persistent storage loses its disk at each restart.
    """
    on_space = "SPACE_ID" in os.environ if on_space is None else on_space
    db = Path(config.votes_db).expanduser()
    root = Path(config.persistent_root) if config.persistent_root else None
    if root is not None and db.resolve().is_relative_to(root.resolve()):
        note = f"Votes are stored in `{db}` on persistent storage: they survive restarts."
    elif on_space:
        note = (
            f"⚠ Votes are not durable on this host: `{db}` is on this Space's ephemeral disk, wiped at "
            "every restart (attach persistent storage, or set ARENA_VOTES_REPO)."
        )
    else:
        note = (
            f"Votes are stored in `{db}` on this host's disk (no persistent storage volume at /data): "
            "they last as long as this disk does; on a Space they would not survive a restart."
        )
    if config.votes_repo:
        note += (
            f" Every vote is also appended to the Hub dataset `{config.votes_repo}` and loaded back "
            "into an empty database at start."
        )
    return note
