"""Blind battles: which model hides behind A, B and C stays on the server.

A battle is named by an unguessable token (``secrets.token_urlsafe``). The client only ever
sees the token and the three summaries; :meth:`BattleStore.take` hands the mapping out once,
so a token is good for exactly one vote. Battles expire, and the store is bounded so a flood
of ``/battle`` calls cannot grow memory without limit (the oldest open battles go first).
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LETTERS: tuple[str, ...] = ("A", "B", "C")
TOKEN_BYTES = 24  # 192 random bits: guessing a live token is hopeless
MAX_TOKEN_CHARS = 128  # longer input is not a token; refuse before hashing it
DEFAULT_TTL_S = 60 * 60.0
DEFAULT_MAX_OPEN = 5_000
_RETIRED_MEMORY = 20_000  # recently used/expired tokens remembered for a precise error message


class BattleError(ValueError):
    """A vote cannot be accepted for this token; the message says why, for the rater."""


@dataclass(frozen=True)
class Battle:
    """One blind comparison; ``order[i]`` is the model shown under ``LETTERS[i]``."""

    token: str
    battle_id: str  # stored with the vote; unlike the token it is not a secret
    dialogue_id: str
    dialogue: str
    reference: str
    order: tuple[str, ...]
    summaries: dict[str, str]  # model -> summary text
    settings: dict[str, Any]
    preset: str
    session_id: str
    created: float = field(default=0.0)
    references: tuple[str, ...] = ()  # what ``reference`` joins; ROUGE was computed against these
    rouge: dict[str, dict[str, float]] | None = None  # model -> scores of its summary; None: no reference

    def letter_summaries(self) -> dict[str, str]:
        """``{"A": text, "B": text, "C": text}`` in the shown order."""
        return {letter: self.summaries[model] for letter, model in zip(LETTERS, self.order, strict=True)}

    def revealed(self) -> dict[str, str]:
        """``{"A": model, ...}``: only for after the vote."""
        return dict(zip(LETTERS, self.order, strict=True))


def _token_key(token: str) -> str:
    # Keys of the retired map are hashes, so a memory dump never lists usable tokens.
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class BattleStore:
    """Open battles keyed by token: thread-safe, single use, expiring, bounded."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_open: int = DEFAULT_MAX_OPEN,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if ttl_s <= 0 or max_open < 1:
            raise ValueError("ttl_s must be positive and max_open at least 1")
        self.ttl_s = ttl_s
        self.max_open = max_open
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._open: OrderedDict[str, Battle] = OrderedDict()
        self._retired: OrderedDict[str, str] = OrderedDict()  # token hash -> reason
        self._lock = threading.Lock()

    def shuffled(self, models: Sequence[str]) -> tuple[str, ...]:
        """A uniformly random order of ``models`` for the letters A, B, C."""
        order = list(models)
        self._rng.shuffle(order)
        return tuple(order)

    def open(
        self,
        *,
        dialogue_id: str,
        dialogue: str,
        reference: str,
        summaries: dict[str, str],
        settings: dict[str, Any],
        preset: str,
        session_id: str,
        order: Sequence[str] | None = None,
        references: Sequence[str] = (),
        rouge: dict[str, dict[str, float]] | None = None,
    ) -> Battle:
        """Register a battle over the three ``summaries`` and return it (with its token).

        ``rouge`` (model -> scores against ``references``) is recorded now, with the summaries
        the rater will see, and stored with the vote: the agreement figures compare people with
        ROUGE on exactly these summaries.
        """
        if len(summaries) != len(LETTERS):
            raise ValueError(f"a battle needs exactly {len(LETTERS)} summaries, got {len(summaries)}")
        if rouge is not None and sorted(rouge) != sorted(summaries):
            raise ValueError("rouge must score exactly the summarised models")
        shown = tuple(order) if order is not None else self.shuffled(sorted(summaries))
        if sorted(shown) != sorted(summaries):
            raise ValueError("order must be a permutation of the summarised models")
        battle = Battle(
            token=secrets.token_urlsafe(TOKEN_BYTES),
            battle_id=secrets.token_hex(8),
            dialogue_id=dialogue_id,
            dialogue=dialogue,
            reference=reference,
            order=shown,
            summaries=dict(summaries),
            settings=dict(settings),
            preset=preset,
            session_id=session_id,
            created=self._clock(),
            references=tuple(references),
            rouge={m: dict(scores) for m, scores in rouge.items()} if rouge is not None else None,
        )
        with self._lock:
            self._purge_expired()
            while len(self._open) >= self.max_open:
                evicted, _ = self._open.popitem(last=False)
                self._retire(
                    evicted, "this battle was dropped because too many battles are open; start a new one"
                )
            self._open[battle.token] = battle
        return battle

    def take(self, token: object) -> Battle:
        """Remove and return the open battle named by ``token``; raise :class:`BattleError`.

        Atomic: of two concurrent calls with one token, exactly one gets the battle.
        """
        if not isinstance(token, str) or not token.strip():
            raise BattleError("missing battle token: start a battle first")
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS:
            raise BattleError("unknown battle token: start a new battle")
        with self._lock:
            battle = self._open.pop(token, None)
            if battle is None:
                reason = self._retired.get(_token_key(token))
                raise BattleError(reason or "unknown battle token: start a new battle")
            if self._clock() - battle.created > self.ttl_s:
                self._retire(token, self._expired_message())
                raise BattleError(self._expired_message())
            self._retire(token, "this battle token was already used: one vote per battle; start a new battle")
            return battle

    def restore(self, battle: Battle) -> None:
        """Reopen a battle whose vote could not be stored, so the rater can retry."""
        with self._lock:
            self._retired.pop(_token_key(battle.token), None)
            self._open[battle.token] = battle

    def peek(self, token: str) -> Battle | None:
        """The open battle for ``token`` without using it (for re-rendering), or ``None``."""
        with self._lock:
            return self._open.get(token)

    def __len__(self) -> int:
        with self._lock:
            self._purge_expired()
            return len(self._open)

    def _expired_message(self) -> str:
        return f"this battle expired (battles are open for {self.ttl_s / 60:.0f} min); start a new battle"

    def _retire(self, token: str, reason: str) -> None:
        self._retired[_token_key(token)] = reason
        while len(self._retired) > _RETIRED_MEMORY:
            self._retired.popitem(last=False)

    def _purge_expired(self) -> None:
        now = self._clock()
        while self._open:
            token, oldest = next(iter(self._open.items()))
            if now - oldest.created <= self.ttl_s:
                break
            del self._open[token]
            self._retire(token, self._expired_message())


class FairDraw:
    """Which three of N models a battle shows: the least-drawn first, ties broken at random.

    Over time every model is drawn equally often (counts never differ by more than one among
    models drawn from the same pool), so each gets the same number of chances to win; with
    exactly three models every battle shows all three. Counts start from the stored votes
    (:meth:`seed`), so the balance survives a restart. Thread-safe.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.seeded = False

    def seed(self, shown: Sequence[Sequence[str]]) -> None:
        """Count the models of battles already shown (e.g. each stored vote's ``order_shown``)."""
        with self._lock:
            for models in shown:
                for model in models:
                    self._counts[model] = self._counts.get(model, 0) + 1
            self.seeded = True

    def draw(self, models: Sequence[str], k: int = len(LETTERS)) -> tuple[str, ...]:
        """``k`` of ``models``, the least drawn so far first (random among equals), and count them."""
        if len(set(models)) < k:
            raise ValueError(f"a battle needs {k} different models, got {len(set(models))}")
        with self._lock:
            keyed = sorted(dict.fromkeys(models), key=lambda m: (self._counts.get(m, 0), self._rng.random()))
            chosen = tuple(keyed[:k])
            for model in chosen:
                self._counts[model] = self._counts.get(model, 0) + 1
        return chosen

    def counts(self) -> dict[str, int]:
        """How often each model was drawn (seeded counts included)."""
        with self._lock:
            return dict(self._counts)
