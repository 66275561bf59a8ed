"""Evaluation reports (``summary.json``) read and put in the shape the Benchmark tab shows.

There is one report shape: the document :func:`core.evaluation.build_report` returns, which
``python -m train.evaluate`` writes and the app's fresh evaluation builds in memory. Cells
that do not have that shape (a hand-edited or damaged file) are left out, never guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.config import MODEL_LABELS, MODEL_NAMES
from core.inputs import InputError
from core.jsonfile import JsonFileError, read_json_object
from core.metrics import ROUGE_TYPES

REPORT_FILE = "summary.json"
VERDICT_METRIC = "rougeL"  # the metric a fine-tune must win on to count as beating the baselines
FINE_TUNED: tuple[str, ...] = ("full", "lora")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(value: Any) -> list[float] | None:
    """``[lo, hi]`` as floats, or ``None`` when ``value`` is not a pair of numbers."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(x) for x in value):
        return [float(value[0]), float(value[1])]
    return None


def _metrics(entry: Any) -> dict[str, dict[str, Any]]:
    """``{metric: {"mean", "ci95"}}`` of one system (a model or a baseline) of the report."""
    if not isinstance(entry, Mapping):
        return {}
    cells = {}
    for metric in ROUGE_TYPES:
        stat = entry.get(metric)
        if isinstance(stat, Mapping) and _number(stat.get("mean")):
            cells[metric] = {"mean": float(stat["mean"]), "ci95": _interval(stat.get("ci95"))}
    return cells


def _improvement(raw: Mapping[str, Any], key: str, metric: str) -> tuple[float | None, list[float] | None]:
    """The report's improvement ``key`` (e.g. ``full_vs_original``) in pp, and its paired CI."""
    given = raw.get("improvement_pp")
    value = given.get(key) if isinstance(given, Mapping) else None
    value = value.get(metric) if isinstance(value, Mapping) else None
    if not _number(value):
        return None, None
    cis = raw.get("improvement_ci95_pp")
    ci = cis.get(key) if isinstance(cis, Mapping) else None
    return float(value), _interval(ci.get(metric) if isinstance(ci, Mapping) else None)


def normalise_report(raw: Any, source: str = "") -> dict[str, Any]:
    """A ``build_report`` document in the UI's shape.

    ``{"source", "n", "split", "preset", "rows": [{"model", "label", "metrics": {metric:
    {"mean", "ci95", "delta_pp", "delta_ci95_pp"}}}], "lora_vs_full_pp": {metric: float}}``;
    models first, then baselines. ``delta_pp`` is the report's ``improvement_pp`` over the
    original model (``None`` for the original itself and where the report has none).
    """
    if not isinstance(raw, Mapping):
        raise InputError(f"{source or 'report'} is not a JSON object")
    models = raw.get("models")
    models = models if isinstance(models, Mapping) else {}
    rows: list[dict[str, Any]] = []
    for name in MODEL_NAMES:
        if name not in models:
            continue
        metrics = _metrics(models[name])
        for metric, cell in metrics.items():
            cell["delta_pp"], cell["delta_ci95_pp"] = (
                _improvement(raw, f"{name}_vs_original", metric) if name != "original" else (None, None)
            )
        rows.append({"model": name, "label": MODEL_LABELS[name], "metrics": metrics})
    baselines = raw.get("baselines")
    for name, entry in (baselines if isinstance(baselines, Mapping) else {}).items():
        metrics = {
            m: {**cell, "delta_pp": None, "delta_ci95_pp": None} for m, cell in _metrics(entry).items()
        }
        label = f"Baseline: {str(name).replace('_', ' ')}"
        rows.append({"model": f"baseline:{name}", "label": label, "metrics": metrics})
    lora_vs_full = {}
    for metric in ROUGE_TYPES:
        value, _ = _improvement(raw, "lora_vs_full", metric)
        if value is not None:
            lora_vs_full[metric] = value
    n = raw.get("n")
    return {
        "source": source,
        "n": int(n) if _number(n) else None,
        "split": str(raw.get("split", "")),
        "preset": str(raw.get("preset", "")),
        "rows": rows,
        "lora_vs_full_pp": lora_vs_full,
        "baseline_verdicts": baseline_verdicts(rows),
    }


def baseline_verdicts(rows: list[dict[str, Any]], metric: str = VERDICT_METRIC) -> list[dict[str, Any]]:
    """Whether each fine-tuned model beats the best trivial baseline on ``metric``.

    One entry per fine-tuned model with the metric: ``{"model", "metric", "mean", "ci95",
    "baseline", "baseline_mean", "baseline_ci95", "verdict"}`` where ``verdict`` is
    ``"below"`` (mean at or under the baseline's), ``"overlaps"`` (higher, but the 95%
    intervals overlap: not clearly better) or ``"beats"``. Empty without a baseline.
    """
    baselines = [r for r in rows if r["model"].startswith("baseline:") and metric in r["metrics"]]
    if not baselines:
        return []
    best = max(baselines, key=lambda r: r["metrics"][metric]["mean"])
    base = best["metrics"][metric]
    verdicts = []
    for row in rows:
        cell = row["metrics"].get(metric)
        if row["model"] not in FINE_TUNED or cell is None:
            continue
        if cell["mean"] <= base["mean"]:
            verdict = "below"
        elif cell["ci95"] and base["ci95"] and cell["ci95"][0] <= base["ci95"][1]:
            verdict = "overlaps"
        else:
            verdict = "beats"
        verdicts.append(
            {
                "model": row["model"], "metric": metric, "mean": cell["mean"], "ci95": cell["ci95"],
                "baseline": best["model"].removeprefix("baseline:"), "baseline_mean": base["mean"],
                "baseline_ci95": base["ci95"], "verdict": verdict,
            }
        )  # fmt: skip
    return verdicts


def read_report(report_dir: str | Path) -> dict[str, Any] | None:
    """The normalised ``summary.json`` in ``report_dir``, or ``None`` when there is none yet."""
    path = Path(report_dir) / REPORT_FILE
    try:
        raw = read_json_object(path, on_error="raise", what=f"the evaluation report {path}")
    except JsonFileError as err:
        raise InputError(str(err)) from err
    return None if raw is None else normalise_report(raw, source=str(path))
