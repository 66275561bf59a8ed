"""Does ROUGE agree with people? Stored blind votes against ROUGE on the same summaries.

Every vote stored since schema 2 (:mod:`core.votes`) carries the ROUGE scores, computed at
battle time against the battle's references, of the three summaries the rater saw. Here they
are set against the rater's verdict; nothing is regenerated.

Conventions (the one place they live):

* **Which votes.** Votes without stored scores (older than schema 2, or a battle without a
  reference) are left out and counted (``unscored``). "All bad" votes name no best summary, so
  they are **left out** of both figures and counted (``all_bad``). ``votes`` is what remains:
  the votes with a best pick and scores, the base of ``best_agree``.
* **best_agree.** Per vote, 1 when the rater's best is ROUGE's strict best, ``1/k`` when it is one
  of ``k`` summaries tied at ROUGE's top (ROUGE cannot separate them, and this keeps the chance
  level at exactly 1/3), else 0; ``best_agree`` is the mean. ``chance`` = 1/3: the expected value
  for a rater picking one of the three summaries at random.
* **tau.** Kendall's tau-b between the rater's full ranking (never tied) and ROUGE's scores
  (ties possible, e.g. two identical summaries), over the votes with a full ranking; tau-b
  discounts tied ROUGE pairs: ``(C - D) / sqrt(3 * (3 - T))`` for ``T`` tied pairs of three.
  When all three scores tie ROUGE has no order and tau-b is undefined: such a vote is left out
  of ``tau`` (``ranked_votes`` counts the votes used) and counted (``untied_excluded``).
* **95% CIs.** Percentile bootstrap over votes (``BOOTSTRAP_SAMPLES`` resamples, fixed seed, so
  a page refresh shows the same interval for the same votes).
* **Disagreements.** Votes whose best pick gets no credit (ROUGE puts another summary strictly
  above it), strongest first: the rater's best ranked lower by ROUGE first (last of three before
  second), then the lower tau (a full reversal, -1, first; unranked votes count as 0), then
  the larger ROUGE gap between ROUGE's best and the rater's best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.metrics import ROUGE_TYPES
from core.votes import Vote

DEFAULT_METRIC = "rougeL"
CHANCE_OF_THREE = 1.0 / 3.0
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 20240601
BOOTSTRAP_CHUNK = 250  # resamples per numpy draw: bounds memory at chunk x votes indices
MAX_DISAGREEMENTS = 20
TIE_TOLERANCE = 1e-12  # identical summaries score identically; this only absorbs float noise
TIE_JOIN = " = "  # rouge_best of several models tied at ROUGE's top, e.g. "full = lora"


@dataclass(frozen=True)
class VoteAgreement:
    """One scored vote with a best pick, set against ROUGE."""

    vote: Vote
    scores: dict[str, float]  # model -> the chosen metric
    rouge_top: tuple[str, ...]  # the models at ROUGE's top (several when tied), in shown order
    best_credit: float  # 1, 1/k (tied at the top), or 0
    human_best_rouge_rank: int  # 1 + how many summaries ROUGE puts strictly above the rater's best
    tau: float | None  # Kendall tau-b; None without a full ranking or when ROUGE ties all three

    @property
    def human_best(self) -> str:
        return self.vote.choice_model or ""

    @property
    def rouge_best(self) -> str:
        return TIE_JOIN.join(self.rouge_top)

    @property
    def gap(self) -> float:
        """ROUGE's best score minus the rater's best's score (>= 0)."""
        return max(self.scores.values()) - self.scores[self.human_best]

    def as_json(self) -> dict[str, Any]:
        """The ``/agreement`` disagreement entry."""
        return {
            "battle_id": self.vote.battle_id,
            "dialogue_id": self.vote.dialogue_id,
            "human_best": self.human_best,
            "rouge_best": self.rouge_best,
        }


@dataclass(frozen=True)
class AgreementReport:
    """The agreement figures over a set of votes (see the module docstring for each rule)."""

    metric: str
    votes: int
    best_agree: float | None
    best_agree_ci95: tuple[float, float] | None
    ranked_votes: int
    tau: float | None
    tau_ci95: tuple[float, float] | None
    disagreements: list[VoteAgreement] = field(default_factory=list)
    all_bad: int = 0  # scored "all bad" votes, left out
    unscored: int = 0  # votes without stored ROUGE scores, left out
    untied_excluded: int = 0  # ranked votes left out of tau because ROUGE tied all three
    chance: float = CHANCE_OF_THREE

    def as_json(self) -> dict[str, Any]:
        """Exactly the ``/agreement`` shape."""
        return {
            "votes": self.votes,
            "metric": self.metric,
            "best_agree": self.best_agree,
            "best_agree_ci95": list(self.best_agree_ci95) if self.best_agree_ci95 else None,
            "chance": self.chance,
            "ranked_votes": self.ranked_votes,
            "tau": self.tau,
            "tau_ci95": list(self.tau_ci95) if self.tau_ci95 else None,
            "disagreements": [d.as_json() for d in self.disagreements],
        }

    def find(self, battle_id: str) -> VoteAgreement | None:
        """The listed disagreement of ``battle_id``, if any."""
        return next((d for d in self.disagreements if d.vote.battle_id == battle_id), None)


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of the stored ROUGE variants, else raise ``ValueError``."""
    if metric not in ROUGE_TYPES:
        raise ValueError(f"agreement metric must be one of {', '.join(ROUGE_TYPES)}, got {metric!r}")
    return metric


def _tied(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=TIE_TOLERANCE)


def kendall_tau_b(ranking: Sequence[str], scores: dict[str, float]) -> float | None:
    """Kendall tau-b between a strict ranking (best first) and scores (higher = better).

    ``None`` when the scores tie every pair (no order to compare with).
    """
    concordant = discordant = tied = 0
    for i, first in enumerate(ranking):
        for second in ranking[i + 1 :]:  # the rater put ``first`` above ``second``
            if _tied(scores[first], scores[second]):
                tied += 1
            elif scores[first] > scores[second]:
                concordant += 1
            else:
                discordant += 1
    pairs = concordant + discordant + tied
    if pairs == tied:
        return None
    return (concordant - discordant) / math.sqrt(pairs * (pairs - tied))


def compare_vote(vote: Vote, metric: str = DEFAULT_METRIC) -> VoteAgreement | None:
    """One vote against ROUGE; ``None`` when it has no stored scores or no best pick."""
    best = vote.choice_model
    if vote.rouge is None or best is None:
        return None
    try:
        scores = {model: float(vote.rouge[model][metric]) for model in vote.order_shown}
    except (KeyError, TypeError, ValueError):
        return None  # scores of another shape: treat as unscored rather than guess
    top_score = max(scores.values())
    top = tuple(m for m in vote.order_shown if _tied(scores[m], top_score))
    above = sum(
        1 for m in vote.order_shown if scores[m] > scores[best] and not _tied(scores[m], scores[best])
    )
    return VoteAgreement(
        vote=vote,
        scores=scores,
        rouge_top=top,
        best_credit=1.0 / len(top) if best in top else 0.0,
        human_best_rouge_rank=1 + above,
        tau=kendall_tau_b(vote.ranking, scores) if vote.ranking is not None else None,
    )


def _mean(values: Sequence[float]) -> float | None:
    # numpy's mean, as in bootstrap_ci95: the point and its interval round alike.
    return float(np.mean(np.asarray(values, dtype=np.float64))) if values else None


def bootstrap_ci95(
    values: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the mean of ``values``; ``None`` when empty."""
    if not values:
        return None
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        count = min(BOOTSTRAP_CHUNK, samples - start)
        means.append(data[rng.integers(0, len(data), size=(count, len(data)))].mean(axis=1))
    lo, hi = np.percentile(np.concatenate(means), [2.5, 97.5])
    # Resampled means of identical values can differ from the point in the last bit
    # (another summation order); the interval must not exclude its own point for that.
    point = float(data.mean())
    return (min(float(lo), point), max(float(hi), point))


def disagreement_key(item: VoteAgreement) -> tuple[float, float, float, int]:
    """Sort key, strongest disagreement first (see the module docstring)."""
    tau = item.tau if item.tau is not None else 0.0
    return (-item.human_best_rouge_rank, tau, -item.gap, item.vote.id or 0)


def agreement(
    votes: Sequence[Vote], metric: str = DEFAULT_METRIC, max_disagreements: int = MAX_DISAGREEMENTS
) -> AgreementReport:
    """The agreement figures of ``votes`` on ``metric`` (``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``)."""
    check_metric(metric)
    compared: list[VoteAgreement] = []
    all_bad = unscored = 0
    for vote in votes:
        if vote.rouge is None:
            unscored += 1
            continue
        if vote.choice_model is None:
            all_bad += 1
            continue
        item = compare_vote(vote, metric)
        if item is None:
            unscored += 1
        else:
            compared.append(item)
    credits = [item.best_credit for item in compared]
    ranked = [item for item in compared if item.vote.ranking is not None]
    taus = [item.tau for item in ranked if item.tau is not None]
    disagreements = sorted((item for item in compared if item.best_credit == 0.0), key=disagreement_key)
    return AgreementReport(
        metric=metric,
        votes=len(compared),
        best_agree=_mean(credits),
        best_agree_ci95=bootstrap_ci95(credits),
        ranked_votes=len(taus),
        tau=_mean(taus),
        tau_ci95=bootstrap_ci95(taus),
        disagreements=disagreements[:max_disagreements],
        all_bad=all_bad,
        unscored=unscored,
        untied_excluded=len(ranked) - len(taus),
    )


# ---------------------------------------------------------------------------- what the page shows

DISAGREEMENT_COLUMNS: tuple[str, ...] = (
    "Battle",
    "Dialogue",
    "People's best",
    "ROUGE's best",
    "ROUGE rank of people's best",
    "Kendall tau",
)


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def summary_markdown(report: AgreementReport) -> str:
    """The figures in words, with what was left out and why."""
    label = report.metric
    left_out = (
        f"Left out: {report.all_bad} *all bad* vote(s) (no best pick to compare) and "
        f"{report.unscored} vote(s) without stored ROUGE scores (older votes or no reference)."
    )
    if report.votes == 0:
        return f"**ROUGE versus people ({label}).** No scored votes with a best pick yet. {left_out}"
    lo, hi = report.best_agree_ci95 or (0.0, 1.0)
    lines = [
        f"**ROUGE versus people ({label}), {report.votes} vote(s).** "
        f"People's best is ROUGE's best in **{_pct(report.best_agree or 0.0)}** of votes "
        f"(95% bootstrap CI {_pct(lo)}–{_pct(hi)}; chance {_pct(report.chance)}; a tie at ROUGE's top "
        "counts 1/k).",
    ]
    if report.tau is not None and report.tau_ci95 is not None:
        lines.append(
            f"Mean Kendall tau-b between full rankings and ROUGE's order: **{report.tau:+.2f}** "
            f"(95% CI {report.tau_ci95[0]:+.2f} to {report.tau_ci95[1]:+.2f}; {report.ranked_votes} "
            "ranked vote(s); 0 = no relation, +1 = same order)."
        )
    else:
        lines.append("No full rankings yet, so no Kendall tau.")
    if report.untied_excluded:
        lines.append(
            f"{report.untied_excluded} ranked vote(s) where ROUGE tied all three are left out of tau."
        )
    lines.append(left_out)
    return "\n\n".join(lines)


def disagreement_rows(report: AgreementReport, labels: dict[str, str] | None = None) -> list[list[Any]]:
    """Table rows of the listed disagreements, strongest first."""
    name = (labels or {}).get
    return [
        [
            item.vote.battle_id,
            item.vote.dialogue_id,
            name(item.human_best, item.human_best),
            TIE_JOIN.join(name(m, m) for m in item.rouge_top),
            f"{item.human_best_rouge_rank} of 3",
            f"{item.tau:+.2f}" if item.tau is not None else "no ranking",
        ]
        for item in report.disagreements
    ]


DETAIL_COLUMNS: tuple[str, ...] = ("Shown as", "Model", "Summary", "ROUGE", "People's place", "ROUGE's place")


def detail_rows(
    vote: Vote, metric: str = DEFAULT_METRIC, labels: dict[str, str] | None = None
) -> list[list[Any]]:
    """The summaries one rater saw, in the shown order, with both verdicts side by side.

    "People's place" is the rater's full ranking, or "best" / "-" without one; "ROUGE's place"
    is 1 + how many summaries ROUGE scores strictly higher (ties share a place).
    """
    name = (labels or {}).get
    scores = {m: (vote.rouge or {}).get(m, {}).get(metric) for m in vote.order_shown}
    rows = []
    for letter, model in zip("ABC", vote.order_shown, strict=True):
        if vote.ranking is not None:
            people = str(vote.ranking.index(model) + 1)
        else:
            people = "best" if model == vote.choice_model else ("all bad" if vote.choice == "none" else "-")
        score = scores[model]
        if score is None:
            shown_score, place = "not stored", "-"
        else:
            higher = sum(1 for s in scores.values() if s is not None and s > score and not _tied(s, score))
            shown_score, place = f"{100 * score:.1f}", str(1 + higher)
        summary = (vote.summaries or {}).get(model, "(not stored: vote older than schema 2)")
        rows.append([letter, name(model, model), summary, shown_score, people, place])
    return rows
