"""Leaderboard from blind votes: win rates with Wilson intervals and Bradley-Terry strengths.

Pairwise outcomes implied by one vote (the only place this rule lives):

* a full ranking ``[x, y, z]`` -> x beats y, x beats z, y beats z;
* a best pick ``x`` (no ranking) -> x beats each of the other two;
* "all bad" (``none``) -> no pair is decided.

Bradley-Terry strengths ``p`` (P(i beats j) = p_i / (p_i + p_j)) are fitted with Hunter's
MM algorithm. A small symmetric prior - ``PRIOR_WINS`` virtual wins each way for every pair -
keeps strengths finite when a model never wins or never loses, and pulls them together when
there is little data. Strengths are reported normalised to sum to 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from core.config import MODEL_NAMES
from core.votes import Vote

Z_95 = 1.959963984540054
PRIOR_WINS = 0.5
MM_MAX_ITER = 1000
MM_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Standing:
    """One leaderboard row."""

    model: str
    votes: int  # battles the model took part in
    wins: int  # times it was picked as the best summary
    win_rate: float
    ci95: tuple[float, float]
    bt: float

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "votes": self.votes,
            "wins": self.wins,
            "win_rate": self.win_rate,
            "ci95": [self.ci95[0], self.ci95[1]],
            "bt": self.bt,
        }


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when there are no trials."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 0.9999999999999999
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return (lo, hi)


def pairwise_outcomes(vote: Vote) -> list[tuple[str, str]]:
    """``(winner, loser)`` pairs implied by one vote (see the module docstring)."""
    if vote.ranking is not None:
        return list(combinations(vote.ranking, 2))
    best = vote.choice_model
    if best is None:
        return []
    return [(best, other) for other in vote.order_shown if other != best]


def bradley_terry(
    outcomes: Iterable[tuple[str, str]],
    models: Sequence[str],
    prior_wins: float = PRIOR_WINS,
    max_iter: int = MM_MAX_ITER,
    tol: float = MM_TOLERANCE,
) -> dict[str, float]:
    """Bradley-Terry strengths (summing to 1) fitted by the MM algorithm (Hunter, 2004)."""
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    wins = [[0.0] * n for _ in range(n)]  # wins[i][j]: times i beat j
    for winner, loser in outcomes:
        if winner in index and loser in index and winner != loser:
            wins[index[winner]][index[loser]] += 1.0
    for i, j in combinations(range(n), 2):
        wins[i][j] += prior_wins
        wins[j][i] += prior_wins
    strength = [1.0 / n] * n
    for _ in range(max_iter):
        updated = []
        for i in range(n):
            total_wins = sum(wins[i])
            denominator = sum(
                (wins[i][j] + wins[j][i]) / (strength[i] + strength[j]) for j in range(n) if j != i
            )
            updated.append(total_wins / denominator if denominator > 0 else strength[i])
        norm = sum(updated)
        updated = [s / norm for s in updated]
        change = max(abs(a - b) for a, b in zip(updated, strength, strict=True))
        strength = updated
        if change < tol:
            break
    return {m: strength[index[m]] for m in models}


def standings(votes: Sequence[Vote], models: Sequence[str] = MODEL_NAMES) -> list[Standing]:
    """Per-model votes, wins, win rate (Wilson 95% CI) and BT strength, strongest first."""
    battles = dict.fromkeys(models, 0)
    wins = dict.fromkeys(models, 0)
    outcomes: list[tuple[str, str]] = []
    for vote in votes:
        for model in vote.order_shown:
            if model in battles:
                battles[model] += 1
        best = vote.choice_model
        if best in wins:
            wins[best] += 1
        outcomes.extend(pairwise_outcomes(vote))
    strengths = bradley_terry(outcomes, models)
    rows = [
        Standing(
            model=m,
            votes=battles[m],
            wins=wins[m],
            win_rate=wins[m] / battles[m] if battles[m] else 0.0,
            ci95=wilson_interval(wins[m], battles[m]),
            bt=strengths[m],
        )
        for m in models
    ]
    return sorted(rows, key=lambda row: (-row.bt, models.index(row.model)))
