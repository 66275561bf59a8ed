"""The JSON shapes of the named API endpoints, as types gradio reads.

``gr.api`` derives an endpoint's documented schema ("Use via API", ``gradio_client``'s
``view_api``, ``/gradio_api/info``) from the function's type hints; a bare ``dict`` shows as
"Any". These ``TypedDict`` s spell out what the README promises, field by field.
"""

from __future__ import annotations

from typing import TypedDict


class Rouge(TypedDict):
    """ROUGE F-measures in [0, 1]."""

    rouge1: float
    rouge2: float
    rougeL: float  # the metric's own name, as the JSON carries it
    rougeLsum: float


class ModelAnswer(TypedDict):
    """One model's summary of a ``/compare`` call."""

    summary: str
    rouge: Rouge | None  # null without a reference
    seconds: float
    error: str | None
    truncated_tokens: int
    timed_out: bool  # cut by the server's time limit: the summary is what it had so far


class CompareAnswer(TypedDict):
    """``/compare``: the live preset and each model's answer."""

    preset: str
    models: dict[str, ModelAnswer]  # "original", "full", "lora"


class Letters(TypedDict):
    """A value per anonymous letter of a blind battle."""

    A: str
    B: str
    C: str


class BattleAnswer(TypedDict):
    """``/battle``: a dialogue and three anonymous summaries; the token is good for one vote."""

    token: str
    dialogue_id: str
    dialogue: str
    reference: str
    summaries: Letters


class VoteAnswer(TypedDict):
    """``/vote``: stored, and which model wrote each letter."""

    ok: bool
    revealed: Letters


class LeaderboardRow(TypedDict):
    """One model's standing on ``/leaderboard``."""

    model: str
    votes: int
    wins: int
    win_rate: float
    ci95: list[float]  # Wilson 95% interval [low, high]
    bt: float  # Bradley-Terry strength (the models' strengths sum to 1)
