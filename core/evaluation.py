"""Scoring a set of summaries honestly: bootstrap CIs, baselines and input-ignoring controls.

Pure functions over plain data (no models), shared by ``python -m train.evaluate`` and the
app's Benchmark tab:

* **Paired bootstrap.** One matrix of resampled dialogue indices is drawn (fixed seed) and
  reused for every system, so differences between systems are resampled *paired* over the
  same dialogues. CIs are percentile intervals.
* **Baselines.** ``template`` always answers the same sentence; ``first_line`` answers the
  dialogue's first turn. A model worth showing must beat both.
* **Controls.** A model's ``control`` scores its summaries against the references of a
  *different* dialogue (one fixed derangement of the evaluated set). A model that ignores its
  input scores the same on its own references and on the control; the gap is the signal.

Scores are ROUGE F-measures in [0, 1]; improvements are absolute differences in percentage
points (0.42 - 0.23 = 19 pp), as in the lab's table.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config import MODEL_NAMES
from core.data import Dialogue
from core.metrics import ROUGE_CONVENTIONS, ROUGE_TYPES, rouge

TEMPLATE_SUMMARY = "#Person1# and #Person2# talk about something."
BASELINES: tuple[str, ...] = ("template", "first_line")
IMPROVEMENT_PAIRS: tuple[tuple[str, str], ...] = (
    ("full", "original"),
    ("lora", "original"),
    ("lora", "full"),
)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240607  # fixed: the same inputs always give the same intervals
DERANGEMENT_SEED = 0
CI_LEVEL = 0.95


def template_summary(dialogue: str) -> str:
    """The ``template`` baseline: the same sentence whatever the dialogue says."""
    del dialogue  # the point of this baseline is to ignore its input
    return TEMPLATE_SUMMARY


def first_line_summary(dialogue: str) -> str:
    """The ``first_line`` baseline: the dialogue's first non-empty turn."""
    for line in dialogue.splitlines():
        if line.strip():
            return line.strip()
    return ""


BASELINE_FUNCTIONS = {"template": template_summary, "first_line": first_line_summary}


def derangement(n: int, seed: int = DERANGEMENT_SEED) -> list[int]:
    """A permutation of ``range(n)`` with no fixed points, the same for the same ``(n, seed)``.

    Sattolo's algorithm draws a single n-cycle, which never maps an index to itself.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i (not <= i) is what makes it a single cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def bootstrap_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``resamples x n`` dialogue indices drawn with replacement; share them to pair systems."""
    if n < 1:
        raise ValueError("bootstrap needs at least one scored dialogue")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def mean_ci(
    values: Sequence[float] | np.ndarray, indices: np.ndarray, level: float = CI_LEVEL
) -> dict[str, Any]:
    """``{"mean": m, "ci95": [lo, hi]}``: the sample mean and a percentile bootstrap interval."""
    array = np.asarray(values, dtype=float)
    if indices.shape[1] != len(array):
        raise ValueError(f"bootstrap indices are for {indices.shape[1]} dialogues, got {len(array)} values")
    means = array[indices].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(array.mean()), "ci95": [float(lo), float(hi)]}


def paired_difference(
    a: Sequence[float], b: Sequence[float], indices: np.ndarray, level: float = CI_LEVEL
) -> dict[str, Any]:
    """Mean and paired bootstrap CI of ``a - b`` (same dialogues, same resamples)."""
    return mean_ci(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), indices, level)


def score_predictions(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[dict[str, float]]:
    """ROUGE of each prediction against its references (0 for every metric when it has none)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    rows = []
    for prediction, refs in zip(predictions, references, strict=True):
        scores = rouge(prediction or "", refs)
        rows.append(scores if scores is not None else dict.fromkeys(ROUGE_TYPES, 0.0))
    return rows


def column(rows: Sequence[Mapping[str, float]], metric: str) -> np.ndarray:
    """One metric of every row, as an array."""
    return np.array([row[metric] for row in rows], dtype=float)


@dataclass
class ScoreTable:
    """Every per-dialogue score an evaluation needs, aligned by dialogue.

    ``scores`` holds the models and the baselines; ``controls`` the models scored against the
    references of dialogue ``permutation[i]``.
    """

    ids: list[str]
    dialogues: list[str]
    references: list[tuple[str, ...]]
    models: list[str]
    predictions: dict[str, list[str]]
    scores: dict[str, list[dict[str, float]]]
    controls: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    permutation: list[int] | None = None

    @property
    def n(self) -> int:
        return len(self.ids)


def score_table(records: Sequence[Dialogue], predictions: Mapping[str, Sequence[str]]) -> ScoreTable:
    """Score model predictions, the baselines and the controls over ``records`` (with references).

    ``predictions`` maps a model name to one summary per record, in order.
    """
    if not records:
        raise ValueError("nothing to score: no dialogues")
    missing_refs = [r.id for r in records if not r.references]
    if missing_refs:
        raise ValueError(
            f"{len(missing_refs)} dialogues have no reference summary (e.g. {missing_refs[0]}); "
            "score a labelled split (validation or test)"
        )
    references = [tuple(r.references) for r in records]
    table = ScoreTable(
        ids=[r.id for r in records],
        dialogues=[r.dialogue for r in records],
        references=references,
        models=[m for m in predictions if m not in BASELINES],
        predictions={},
        scores={},
    )
    for name, texts in predictions.items():
        texts = list(texts)
        if len(texts) != len(records):
            raise ValueError(f"model {name!r} has {len(texts)} summaries for {len(records)} dialogues")
        table.predictions[name] = texts
        table.scores[name] = score_predictions(texts, references)
    for name, make in BASELINE_FUNCTIONS.items():
        texts = [make(r.dialogue) for r in records]
        table.predictions[name] = texts
        table.scores[name] = score_predictions(texts, references)
    if len(records) >= 2:
        table.permutation = derangement(len(records))
        swapped = [references[j] for j in table.permutation]
        for name in table.models:
            table.controls[name] = score_predictions(table.predictions[name], swapped)
    return table


def _metric_cis(rows: Sequence[Mapping[str, float]], indices: np.ndarray) -> dict[str, dict[str, Any]]:
    return {metric: mean_ci(column(rows, metric), indices) for metric in ROUGE_TYPES}


def _ordered(models: Sequence[str]) -> list[str]:
    known = [m for m in MODEL_NAMES if m in models]
    return known + [m for m in models if m not in known]


def build_report(
    table: ScoreTable,
    preset: str,
    split: str,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report (``summary.json``): means with paired bootstrap CIs, improvements, baselines, controls.

    Required keys (read by the app and other tools): ``preset``, ``split``, ``n``,
    ``rouge_conventions``, ``models``, ``improvement_pp``, ``baselines``, ``controls``.
    Extra keys: ``improvement_ci95_pp`` (paired CIs of the improvements), ``control_gap``
    (own minus control, per model and metric, with CI), ``distinct_fraction`` (share of
    distinct summaries per model), ``bootstrap`` (resamples, seed, level), and ``extra``'s items.
    """
    indices = bootstrap_indices(table.n, resamples, seed)
    models = _ordered(table.models)
    summary: dict[str, Any] = {
        "preset": preset,
        "split": split,
        "n": table.n,
        "rouge_conventions": ROUGE_CONVENTIONS,
        "models": {m: _metric_cis(table.scores[m], indices) for m in models},
        "improvement_pp": {},
        "baselines": {b: _metric_cis(table.scores[b], indices) for b in BASELINES},
        "controls": {m: _metric_cis(table.controls[m], indices) for m in models if m in table.controls},
    }
    improvement_ci: dict[str, dict[str, list[float]]] = {}
    for a, b in IMPROVEMENT_PAIRS:
        if a in table.scores and b in table.scores and a in models and b in models:
            key = f"{a}_vs_{b}"
            summary["improvement_pp"][key] = {}
            improvement_ci[key] = {}
            for metric in ROUGE_TYPES:
                diff = paired_difference(
                    column(table.scores[a], metric), column(table.scores[b], metric), indices
                )
                summary["improvement_pp"][key][metric] = 100 * diff["mean"]
                improvement_ci[key][metric] = [100 * diff["ci95"][0], 100 * diff["ci95"][1]]
    summary["improvement_ci95_pp"] = improvement_ci
    summary["control_gap"] = {
        m: {
            metric: paired_difference(
                column(table.scores[m], metric), column(table.controls[m], metric), indices
            )
            for metric in ROUGE_TYPES
        }
        for m in models
        if m in table.controls
    }
    summary["distinct_fraction"] = {
        m: len(set(table.predictions[m])) / table.n for m in [*models, *BASELINES]
    }
    summary["bootstrap"] = {
        "resamples": resamples,
        "seed": seed,
        "level": CI_LEVEL,
        "method": "percentile; one index matrix shared by all systems (paired over dialogues)",
        "derangement_seed": DERANGEMENT_SEED if table.permutation is not None else None,
    }
    summary.update(dict(extra or {}))
    return summary


def _cell(stat: Mapping[str, Any]) -> str:
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.4f} [{lo:.4f}, {hi:.4f}]"


def _table(rows: Mapping[str, Mapping[str, Mapping[str, Any]]], labels: Mapping[str, str]) -> list[str]:
    lines = ["| | " + " | ".join(ROUGE_TYPES) + " |", "|---|" + "---|" * len(ROUGE_TYPES)]
    for name, metrics in rows.items():
        lines.append(
            f"| {labels.get(name, name)} | " + " | ".join(_cell(metrics[m]) for m in ROUGE_TYPES) + " |"
        )
    return lines


def report_markdown(summary: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """A human-readable ``report.md`` of a ``summary.json`` document."""
    labels = dict(labels or {})
    baseline_labels = {
        "template": f"template (“{TEMPLATE_SUMMARY}”)",
        "first_line": "first line of the dialogue",
    }
    lines = [
        f"# ROUGE report: {summary['preset']} on the {summary['split']} split (n={summary['n']})",
        "",
        "Mean ROUGE F-measure with a 95% paired bootstrap interval in brackets "
        f"({summary.get('bootstrap', {}).get('resamples', '?')} resamples over dialogues).",
        "",
        f"Conventions: {summary['rouge_conventions']}.",
        "",
        "## Models",
        "",
        *_table(summary["models"], labels),
        "",
        "## Improvement (absolute, percentage points)",
        "",
        "| | " + " | ".join(ROUGE_TYPES) + " |",
        "|---|" + "---|" * len(ROUGE_TYPES),
    ]
    cis = summary.get("improvement_ci95_pp", {})
    for key, metrics in summary["improvement_pp"].items():
        cells = []
        for metric in ROUGE_TYPES:
            cell = f"{metrics[metric]:+.2f}"
            if key in cis:
                lo, hi = cis[key][metric]
                cell += f" [{lo:+.2f}, {hi:+.2f}]"
            cells.append(cell)
        lines.append(f"| {key.replace('_vs_', ' vs ')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Baselines",
        "",
        "A model worth showing beats both. On the multi-reference test split the template alone "
        "scores around 0.25 ROUGE-1, partly because `#Person1#` counts as the word `person1`.",
        "",
        *_table(summary["baselines"], baseline_labels),
        "",
        "## Controls: scored against another dialogue's references",
        "",
        "Each model's summaries scored against the references of a different dialogue (one fixed "
        "derangement). A model that ignores its input scores the same on both; the gap "
        "(own minus control) is what it learned from the dialogue.",
        "",
    ]
    if summary.get("controls"):
        lines += _table(summary["controls"], labels)
        gaps = summary.get("control_gap", {})
        if gaps:
            lines += ["", "Gap, own minus control (ROUGE-1 and ROUGE-L, with 95% paired CI):", ""]
            for name, metrics in gaps.items():
                parts = [f"{m} {_cell(metrics[m])}" for m in ("rouge1", "rougeL")]
                lines.append(f"- {labels.get(name, name)}: " + "; ".join(parts))
    else:
        lines.append("(controls need at least 2 dialogues)")
    distinct = summary.get("distinct_fraction")
    if distinct:
        lines += [
            "",
            "## Distinct summaries",
            "",
            "Distinct summaries per dialogue (1.0: every summary is different; low: one answer for all):",
            "",
            *[f"- {labels.get(k, k)}: {v:.2f}" for k, v in distinct.items()],
        ]
    use = summary.get("input_use")
    if use:
        lines += [
            "",
            "## Input use: teacher-forced loss on the references",
            "",
            "Mean token loss of each dialogue's first reference given its own dialogue and given "
            "another's (the controls' derangement). A model that reads its input is surer with its "
            "own dialogue: gap = shuffled - own above zero, with its 95% CI above zero.",
            "",
            "| | own | shuffled | gap | reads its input |",
            "|---|---|---|---|---|",
        ]
        in_model_order = [n for n in summary["models"] if n in use] + [
            n for n in use if n not in summary["models"]
        ]
        for name in in_model_order:
            row = use[name]
            verdict = "yes" if row["reads_input"] else "no"
            lines.append(
                f"| {labels.get(name, name)} | {row['own_loss']['mean']:.3f} | "
                f"{row['shuffled_loss']['mean']:.3f} | {_cell(row['gap'])} | {verdict} |"
            )
    generation = summary.get("generation")
    if generation:
        lines += ["", "## Generation settings", ""]
        lines += [f"- {labels.get(k, k)}: `{v}`" for k, v in generation.items()]
    return "\n".join(lines) + "\n"
