"""The app's figures (and the report's ``rouge.png``), as pure functions of cards and reports.

Each returns a bare matplotlib ``Figure`` (not pyplot): nothing global to leak or to clean up
between requests, and ``figure.savefig(path)`` writes it to a file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from core.config import MODEL_LABELS, MODEL_NAMES
from core.metrics import ROUGE_TYPES
from core.model_cards import ModelCard, human_bytes
from core.presentation import MODEL_COLORS, ROUGE_LABELS


def _figure(width: float = 7.0, height: float = 3.4) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def loss_figure(cards: Mapping[str, ModelCard]) -> Any:
    """Training-loss curves of the full fine-tune and LoRA on one plot."""
    figure, axes = _figure()
    plotted = False
    for name in ("full", "lora"):
        card = cards.get(name)
        if card and card.loss_history:
            steps, losses = zip(*card.loss_history, strict=True)
            axes.plot(steps, losses, label=card.label, color=MODEL_COLORS[name], linewidth=1.8)
            plotted = True
    axes.set_xlabel("training step")
    axes.set_ylabel("training loss")
    axes.set_title("Fine-tuning loss (summaries)")
    axes.grid(alpha=0.3)
    if plotted:
        axes.legend()
    else:
        axes.text(
            0.5, 0.5, "no loss history recorded yet", ha="center", va="center", transform=axes.transAxes
        )
    return figure


def size_figure(cards: Mapping[str, ModelCard]) -> Any:
    """Size on disk and trainable parameters per model, side by side (log scale)."""
    figure, axes = _figure(7.0, 2.6)
    names = [n for n in MODEL_NAMES if cards.get(n) and cards[n].size_on_disk_bytes]
    if not names:
        axes.text(0.5, 0.5, "no checkpoint files found", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    sizes = [cards[n].size_on_disk_bytes / 2**20 for n in names]
    bars = axes.barh(
        [MODEL_LABELS[n] for n in names], sizes, color=[MODEL_COLORS[n] for n in names], height=0.55
    )
    axes.bar_label(bars, labels=[human_bytes(cards[n].size_on_disk_bytes) for n in names], padding=4)
    axes.set_xscale("log")
    axes.set_xlabel("MB on disk (log scale)")
    axes.set_title("What you ship: weights on disk")
    axes.invert_yaxis()
    axes.grid(axis="x", alpha=0.3)
    axes.set_xlim(min(sizes) / 3, max(sizes) * 8)
    return figure


def benchmark_figure(report: Mapping[str, Any], title: str | None = None) -> Any:
    """Grouped bars: mean ROUGE per metric for each model and baseline, with 95% CI whiskers.

    ``report`` is a normalised report (:func:`core.reports.normalise_report`).
    """
    figure, axes = _figure(8.0, 3.6)
    entries = [e for e in report.get("rows", []) if e.get("metrics")]
    if not entries:
        axes.text(0.5, 0.5, "no evaluation report yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    width = 0.8 / len(entries)
    for i, entry in enumerate(entries):
        xs, means, low, high = [], [], [], []
        for j, metric in enumerate(ROUGE_TYPES):
            cell = entry["metrics"].get(metric)
            if cell is None or not math.isfinite(cell["mean"]):
                continue
            xs.append(j + (i - (len(entries) - 1) / 2) * width)
            means.append(100 * cell["mean"])
            lo, hi = cell.get("ci95") or (cell["mean"], cell["mean"])
            low.append(max(0.0, 100 * (cell["mean"] - lo)))
            high.append(max(0.0, 100 * (hi - cell["mean"])))
        baseline = entry["model"] not in MODEL_NAMES
        axes.bar(
            xs, means, width * 0.92, yerr=[low, high], capsize=2, label=entry["label"],
            color="#e5e7eb" if baseline else MODEL_COLORS[entry["model"]],
            edgecolor="#6b7280" if baseline else "none", hatch="//" if baseline else None,
        )  # fmt: skip
    axes.set_xticks(range(len(ROUGE_TYPES)), [ROUGE_LABELS[m] for m in ROUGE_TYPES])
    axes.set_ylabel("ROUGE F1 × 100 (95% CI)")
    axes.grid(axis="y", alpha=0.3)
    if title:
        axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return figure
