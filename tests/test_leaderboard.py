"""Leaderboard statistics: Wilson intervals, implied pairwise outcomes, Bradley-Terry by MM."""

from __future__ import annotations

import math

import pytest

from core.leaderboard import (
    PRIOR_WINS,
    Z_95,
    bradley_terry,
    pairwise_outcomes,
    standings,
    wilson_interval,
)
from core.votes import Vote

ORDER = ("lora", "original", "full")
MODELS = ("original", "full", "lora")


def vote(choice: str, ranking: tuple[str, ...] | None = None, order: tuple[str, ...] = ORDER) -> Vote:
    return Vote("b", "d", order, choice, ranking, {}, "mini", "s")


@pytest.mark.parametrize(("wins", "n"), [(0, 10), (3, 10), (10, 10), (1, 1), (37, 120)])
def test_wilson_endpoints_solve_the_score_equation(wins: int, n: int) -> None:
    # The Wilson interval is {p : (p_hat - p)^2 = z^2 p (1 - p) / n}; check both ends independently.
    lo, hi = wilson_interval(wins, n)
    p_hat = wins / n
    assert 0.0 <= lo <= p_hat <= hi <= 1.0
    for p in (lo, hi):
        if p in (0.0, 1.0) and p == p_hat:
            continue  # clipped endpoint at an extreme proportion
        assert (p_hat - p) ** 2 == pytest.approx(Z_95**2 * p * (1 - p) / n, abs=1e-12)


def test_wilson_without_trials_is_uninformative_and_mirrors() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(3, 10)
    lo2, hi2 = wilson_interval(7, 10)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)


def test_pairwise_outcomes_follow_the_documented_rule() -> None:
    assert sorted(pairwise_outcomes(vote("B"))) == [("original", "full"), ("original", "lora")]
    ranked = vote("A", ranking=("lora", "full", "original"))
    assert sorted(pairwise_outcomes(ranked)) == [("full", "original"), ("lora", "full"), ("lora", "original")]
    assert pairwise_outcomes(vote("none")) == []


def test_bt_without_data_is_uniform() -> None:
    strengths = bradley_terry([], MODELS)
    assert all(v == pytest.approx(1 / 3) for v in strengths.values())


def test_bt_stays_finite_when_one_model_always_wins() -> None:
    strengths = bradley_terry([("lora", "full"), ("lora", "original")] * 50, MODELS)
    assert all(math.isfinite(v) and v > 0 for v in strengths.values())
    assert sum(strengths.values()) == pytest.approx(1.0)
    assert strengths["lora"] > strengths["original"] == pytest.approx(strengths["full"])


def test_bt_is_the_maximum_likelihood_fixed_point() -> None:
    outcomes = [("full", "original")] * 7 + [("original", "full")] * 2 + [("lora", "full")] * 4
    outcomes += [("full", "lora")] * 5 + [("lora", "original")] * 6 + [("original", "lora")] * 1
    p = bradley_terry(outcomes, MODELS)
    wins = {(a, b): PRIOR_WINS for a in MODELS for b in MODELS if a != b}
    for a, b in outcomes:
        wins[(a, b)] += 1
    # Likelihood equations: observed wins of i = expected wins of i, for every model.
    for i in MODELS:
        observed = sum(wins[(i, j)] for j in MODELS if j != i)
        expected = sum((wins[(i, j)] + wins[(j, i)]) * p[i] / (p[i] + p[j]) for j in MODELS if j != i)
        assert observed == pytest.approx(expected, rel=1e-6)


def test_standings_count_battles_wins_and_all_bad() -> None:
    votes = [vote("B"), vote("B"), vote("A", ranking=("lora", "original", "full")), vote("none")]
    rows = {row.model: row for row in standings(votes)}
    assert {m: rows[m].votes for m in MODELS} == {"original": 4, "full": 4, "lora": 4}
    assert {m: rows[m].wins for m in MODELS} == {"original": 2, "full": 0, "lora": 1}
    assert rows["original"].win_rate == pytest.approx(0.5)
    assert rows["original"].ci95 == wilson_interval(2, 4)
    assert rows["original"].bt > rows["lora"].bt > rows["full"].bt
    ordered = [row.model for row in standings(votes)]
    assert ordered == ["original", "lora", "full"]


def test_leaderboard_json_shape() -> None:
    row = standings([vote("C")])[0].as_json()
    assert set(row) == {"model", "votes", "wins", "win_rate", "ci95", "bt"}
    assert isinstance(row["ci95"], list) and len(row["ci95"]) == 2
