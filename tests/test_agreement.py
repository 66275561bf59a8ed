"""ROUGE versus people: hand-computed agreement, tau-b, bootstrap CIs, the /agreement route."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from core.agreement import (
    CHANCE_OF_THREE,
    TIE_JOIN,
    agreement,
    bootstrap_ci95,
    check_metric,
    compare_vote,
    detail_rows,
    disagreement_rows,
    kendall_tau_b,
    summary_markdown,
)
from core.config import MODEL_NAMES, load_config
from core.metrics import ROUGE_TYPES, rouge
from core.votes import Vote, VoteStore

ORDER = ("original", "full", "lora")  # shown as A, B, C
API_KEYS = {
    "votes", "metric", "best_agree", "best_agree_ci95", "chance", "ranked_votes", "tau", "tau_ci95",
    "disagreements",
}  # fmt: skip


def scored(rouge_l: dict[str, float], rouge_1: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Stored scores with the given ROUGE-L (and ROUGE-1; the other variants copy ROUGE-L)."""
    one = rouge_1 or rouge_l
    return {
        m: {"rouge1": one[m], "rouge2": rouge_l[m], "rougeL": rouge_l[m], "rougeLsum": rouge_l[m]}
        for m in ORDER
    }


def vote(
    ident: int,
    best: str | None,
    rouge_l: dict[str, float] | None,
    ranking: tuple[str, ...] | None = None,
    rouge_1: dict[str, float] | None = None,
) -> Vote:
    choice = "none" if best is None else "ABC"[ORDER.index(best)]
    return Vote(
        battle_id=f"b{ident}", dialogue_id=f"test_{ident}", order_shown=ORDER, choice=choice, ranking=ranking,
        settings={}, preset="mini", session_id="s", id=ident,
        rouge=scored(rouge_l, rouge_1) if rouge_l is not None else None,
        summaries={m: f"summary by {m}" for m in ORDER}, references=("ref one", "ref two"),
    )  # fmt: skip


def s(original: float, full: float, lora: float) -> dict[str, float]:
    return {"original": original, "full": full, "lora": lora}


# Eight votes whose figures are worked out by hand below.
VOTES = [
    vote(1, "lora", s(0.1, 0.3, 0.5), ("lora", "full", "original")),  # agrees; same order: tau 1
    vote(2, "lora", s(0.5, 0.3, 0.1), ("lora", "full", "original")),  # ROUGE puts it last; tau -1
    vote(3, "full", s(0.2, 0.4, 0.4)),  # tied at ROUGE's top with lora: credit 1/2; no ranking
    vote(4, "full", s(0.4, 0.4, 0.1), ("full", "original", "lora")),  # tie at top: 1/2; tau-b 2/sqrt(6)
    vote(5, None, s(0.1, 0.2, 0.3)),  # all bad: left out
    vote(6, "full", None),  # an old vote without scores: left out
    vote(7, "original", s(0.2, 0.2, 0.2), ("original", "lora", "full")),  # all tied: 1/3; no tau
    vote(8, "full", s(0.6, 0.5, 0.2)),  # ROUGE puts it second: credit 0
]


def test_best_agree_and_tau_match_the_hand_computation() -> None:
    report = agreement(VOTES)
    assert report.metric == "rougeL"
    assert report.votes == 6  # 8 less the all-bad vote and the unscored one
    assert (report.all_bad, report.unscored, report.untied_excluded) == (1, 1, 1)
    assert report.best_agree == pytest.approx((1 + 0 + 1 / 2 + 1 / 2 + 1 / 3 + 0) / 6)  # = 7/18
    assert report.best_agree == pytest.approx(7 / 18)
    assert report.ranked_votes == 3  # votes 1, 2, 4 (vote 7 has no ROUGE order)
    assert report.tau == pytest.approx((1 - 1 + 2 / math.sqrt(6)) / 3)
    assert report.chance == CHANCE_OF_THREE == pytest.approx(1 / 3)


def test_disagreements_strongest_first_and_json_shape() -> None:
    report = agreement(VOTES)
    assert [d.vote.battle_id for d in report.disagreements] == ["b2", "b8"]  # last by ROUGE, then second
    body = report.as_json()
    assert set(body) == API_KEYS
    assert body["disagreements"] == [
        {"battle_id": "b2", "dialogue_id": "test_2", "human_best": "lora", "rouge_best": "original"},
        {"battle_id": "b8", "dialogue_id": "test_8", "human_best": "full", "rouge_best": "original"},
    ]
    lo, hi = body["best_agree_ci95"]
    assert lo <= body["best_agree"] <= hi and isinstance(lo, float)


def test_a_lower_tau_breaks_a_tie_in_rank() -> None:
    reversed_ = vote(1, "lora", s(0.5, 0.3, 0.1), ("lora", "full", "original"))  # tau -1
    partial = vote(2, "lora", s(0.5, 0.1, 0.05), ("lora", "original", "full"))  # last too, tau -1/3
    report = agreement([partial, reversed_])
    assert [d.vote.battle_id for d in report.disagreements] == ["b1", "b2"]
    assert report.disagreements[1].tau == pytest.approx(-1 / 3)


def test_rouge_ties_at_the_top_are_named_together() -> None:
    item = compare_vote(vote(1, "original", s(0.1, 0.4, 0.4)))
    assert item is not None and item.rouge_best == f"full{TIE_JOIN}lora" and item.best_credit == 0.0
    assert item.human_best_rouge_rank == 3


@pytest.mark.parametrize(
    ("ranking", "scores", "expected"),
    [
        (("a", "b", "c"), {"a": 3, "b": 2, "c": 1}, 1.0),
        (("a", "b", "c"), {"a": 1, "b": 2, "c": 3}, -1.0),
        (("a", "b", "c"), {"a": 3, "b": 1, "c": 2}, 1 / 3),  # C=2, D=1
        (("a", "b", "c"), {"a": 2, "b": 2, "c": 1}, 2 / math.sqrt(6)),  # one tied pair: tau-b
        (("a", "b", "c"), {"a": 1, "b": 1, "c": 1}, None),
    ],
)
def test_kendall_tau_b(ranking: tuple[str, ...], scores: dict[str, float], expected: float | None) -> None:
    got = kendall_tau_b(ranking, scores)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_the_metric_is_a_setting() -> None:
    # ROUGE-L says lora, ROUGE-1 says full: the same vote agrees under one and not the other.
    votes = [vote(1, "full", s(0.1, 0.2, 0.3), rouge_1=s(0.1, 0.5, 0.3))]
    assert agreement(votes, "rougeL").best_agree == 0.0
    assert agreement(votes, "rouge1").best_agree == 1.0
    with pytest.raises(ValueError, match="one of rouge1"):
        check_metric("bleu")
    assert load_config({"ARENA_AGREEMENT_METRIC": "rouge2"}).agreement_metric == "rouge2"
    assert load_config({}).agreement_metric == "rougeL"
    with pytest.raises(ValueError, match="ARENA_AGREEMENT_METRIC"):
        load_config({"ARENA_AGREEMENT_METRIC": "bleu"})


def test_no_scored_votes_gives_nulls() -> None:
    for votes in ([], [vote(1, "full", None)], [vote(1, None, s(0.1, 0.2, 0.3))]):
        body = agreement(votes).as_json()
        assert body == {
            "votes": 0, "metric": "rougeL", "best_agree": None, "best_agree_ci95": None,
            "chance": pytest.approx(1 / 3), "ranked_votes": 0, "tau": None, "tau_ci95": None, "disagreements": [],
        }  # fmt: skip
    assert "No scored votes" in summary_markdown(agreement([]))


def test_bootstrap_intervals_contain_the_point_and_narrow_with_data() -> None:
    rng = random.Random(7)
    widths = []
    for n in (5, 50, 500):
        values = [float(rng.random() < 0.6) for _ in range(n)]
        lo, hi = bootstrap_ci95(values)
        point = sum(values) / n
        assert 0.0 <= lo <= point <= hi <= 1.0
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_ci95([0.25] * 4) == (pytest.approx(0.25), pytest.approx(0.25))
    assert bootstrap_ci95([]) is None
    report = agreement(VOTES)
    assert report.tau_ci95[0] <= report.tau <= report.tau_ci95[1]
    assert report.best_agree_ci95[0] <= report.best_agree <= report.best_agree_ci95[1]


def test_page_text_says_what_was_left_out() -> None:
    report = agreement(VOTES)
    text = summary_markdown(report)
    assert "1 *all bad* vote(s)" in text and "1 vote(s) without stored ROUGE scores" in text
    assert "39%" in text  # 7/18
    rows = disagreement_rows(report, {"lora": "LoRA", "original": "Original"})
    assert rows[0][:4] == ["b2", "test_2", "LoRA", "Original"] and rows[0][4] == "3 of 3"


def test_detail_rows_show_both_verdicts_in_the_shown_order() -> None:
    rows = detail_rows(VOTES[1])  # b2: people lora > full > original; ROUGE-L original > full > lora
    assert [r[:2] for r in rows] == [["A", "original"], ["B", "full"], ["C", "lora"]]
    assert [(r[4], r[5]) for r in rows] == [("3", "1"), ("2", "2"), ("1", "3")]
    assert rows[2][2] == "summary by lora" and rows[0][3] == "50.0"
    old = detail_rows(replace(VOTES[5], summaries=None, references=None))  # as read from schema 1
    assert old[0][3] == "not stored" and "older than schema 2" in old[0][2]


# ---------------------------------------------------------------------------- the running app


@pytest.mark.slow
def test_agreement_route_follows_a_ranked_vote(gradio_client, app_server) -> None:
    """A vote made through the API is scored with the summaries the rater saw, and counted."""
    before = gradio_client.predict(api_name="/agreement")
    assert set(before) == API_KEYS and before["metric"] == "rougeL"
    battle = gradio_client.predict(api_name="/battle")
    answer = gradio_client.predict(battle["token"], "B", "B>C>A", api_name="/vote")
    revealed = answer["revealed"]

    stored = VoteStore(app_server.votes_db).get(vote_battle_id(app_server.votes_db, battle["dialogue_id"]))
    assert stored is not None and stored.references and stored.summaries
    for letter, text in battle["summaries"].items():  # exactly what was shown, scored against the refs
        model = revealed[letter]
        assert stored.summaries[model] == text
        assert stored.rouge[model] == pytest.approx(rouge(text, list(stored.references)))
        assert set(stored.rouge[model]) == set(ROUGE_TYPES)

    after = gradio_client.predict(api_name="/agreement")
    assert after["votes"] == before["votes"] + 1
    scores = [stored.rouge[revealed[x]]["rougeL"] for x in "ABC"]
    gained_tau = len({round(x, 12) for x in scores}) > 1  # all tied: no ROUGE order, no tau
    assert after["ranked_votes"] == before["ranked_votes"] + int(gained_tau)
    lo, hi = after["best_agree_ci95"]
    assert lo <= after["best_agree"] <= hi and after["chance"] == pytest.approx(1 / 3)
    assert gradio_client.predict("rouge1", api_name="/agreement")["metric"] == "rouge1"
    with pytest.raises(Exception, match="one of rouge1"):
        gradio_client.predict("bleu", api_name="/agreement")
    assert set(MODEL_NAMES) >= {d["human_best"] for d in after["disagreements"]}


def vote_battle_id(votes_db: str, dialogue_id: str) -> str:
    """The battle id of the latest stored vote on ``dialogue_id``."""
    return [v for v in VoteStore(votes_db).all() if v.dialogue_id == dialogue_id][-1].battle_id
