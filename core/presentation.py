"""Text, tables and charts the app shows, as pure functions of the service's results.

Anything that may carry user text or file paths goes through :func:`md_escape` before it
reaches a Markdown component, so pasted HTML, links or images render as inert text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.checkpoints import portable_location
from core.config import MODEL_LABELS, MODEL_NAMES, ArenaConfig
from core.generation import MAX_DIALOGUE_CHARS, MAX_INPUT_TOKENS
from core.metrics import ROUGE_TYPES
from core.model_cards import ModelCard, human_bytes, human_count, lora_headline
from core.prompt import clean_text

if TYPE_CHECKING:  # the service imports nothing from here; only its result type is named
    from core.service import ModelResult

SHORT_LABELS: dict[str, str] = {"rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L", "rougeLsum": "R-Lsum"}
ROUGE_LABELS: dict[str, str] = {
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "rougeLsum": "ROUGE-Lsum",
}
MODEL_COLORS: dict[str, str] = {"original": "#9ca3af", "full": "#2563eb", "lora": "#f97316"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|~>])")


def md_escape(text: object, limit: int = 600) -> str:
    """Text made inert for Markdown: HTML-escaped, Markdown syntax escaped, one line, capped."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + "…"
    value = " ".join(value.split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(value, quote=False))


def format_seconds(seconds: float) -> str:
    """A duration for people: milliseconds under a second, else seconds."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def truncation_notice(results: Sequence[ModelResult], dialogue: str) -> str | None:
    """The one sentence on how much of a long dialogue was cut, or ``None`` when nothing was.

    ``results`` are the models' answers (anything with ``input_tokens`` and ``truncated_tokens``,
    e.g. :class:`core.generation.Summary`); the worst cut is reported.
    """
    chars_cut = max(0, len(clean_text(dialogue).strip()) - MAX_DIALOGUE_CHARS)
    cut = [r for r in results if r.truncated_tokens > 0]
    parts = []
    if chars_cut:
        parts.append(f"only the first {MAX_DIALOGUE_CHARS:,} characters were read ({chars_cut:,} dropped)")
    if cut:
        worst = max(cut, key=lambda r: r.truncated_tokens)
        total = worst.input_tokens + worst.truncated_tokens
        parts.append(
            f"the models read the first {MAX_INPUT_TOKENS} tokens: {worst.truncated_tokens:,} of "
            f"{total:,} tokens ({100 * worst.truncated_tokens / max(total, 1):.0f}%) were cut from the end"
        )
    if not parts:
        return None
    return "The dialogue is longer than the models' input limit: " + "; ".join(parts) + "."


def status_icon(status: str) -> str:
    if status.startswith("unavailable"):
        return "✗"
    return "⚠" if status.startswith("loaded with a warning") else "✓"


def preset_banner(config: ArenaConfig, statuses: Mapping[str, str], examples_error: str | None = None) -> str:
    """Which preset is live, why, and the state of each model."""
    lines = [
        f"**Live preset: `{md_escape(config.preset)}`** — {md_escape(config.preset_reason)}",
        "",
        " · ".join(
            f"{status_icon(statuses[name])} **{MODEL_LABELS[name]}**: {md_escape(statuses[name], 300)}"
            for name in MODEL_NAMES
        ),
    ]
    if examples_error:
        lines += ["", f"⚠ DialogSum examples unavailable: {md_escape(examples_error)}"]
    return "\n".join(lines)


def column_header(name: str, status: str) -> str:
    """Heading of one model's column; says why the model is down when it is."""
    text = f"### {MODEL_LABELS[name]}"
    if status.startswith("unavailable"):
        text += f"\n\n✗ {md_escape(status, 400)}"
    elif status.startswith("loaded with a warning"):
        text += f"\n\n⚠ {md_escape(status, 400)}"
    return text


def result_markdown(result: ModelResult | None, pending: bool = False) -> str:
    """ROUGE scores (absent without a reference), time and errors of one column."""
    if result is None:
        return "*generating…*" if pending else ""
    if result.error:
        return f"✗ **Error:** {md_escape(result.error)}"
    timing = f"{format_seconds(result.seconds)}" + (" (cached)" if result.cached else "")
    if result.rouge is None:
        return f"{timing} · *ROUGE: no reference given*"
    header = " | ".join(SHORT_LABELS[k] for k in ROUGE_TYPES)
    values = " | ".join(f"{100 * result.rouge[k]:.1f}" for k in ROUGE_TYPES)
    return f"| {header} |\n|{':---:|' * len(ROUGE_TYPES)}\n| {values} |\n\nROUGE F1 × 100 · {timing}"


def overlap_value(result: ModelResult | None) -> list[tuple[str, str | None]] | None:
    """Spans for ``gr.HighlightedText``; ``None`` (cleared) without a reference or summary."""
    if result is None or result.error or not result.spans:
        return None
    return result.spans


# ---------------------------------------------------------------------------- leaderboard

LEADERBOARD_COLUMNS: tuple[str, ...] = ("Model", "Votes", "Wins", "Win rate", "95% CI", "Bradley-Terry")


def leaderboard_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """``/leaderboard`` rows as table rows (percentages for people)."""
    return [
        [
            MODEL_LABELS.get(row["model"], row["model"]),
            row["votes"],
            row["wins"],
            f"{100 * row['win_rate']:.0f}%",
            f"{100 * row['ci95'][0]:.0f}–{100 * row['ci95'][1]:.0f}%",
            f"{row['bt']:.3f}",
        ]
        for row in rows
    ]


def reveal_markdown(revealed: Mapping[str, str], choice: str, ranking: Sequence[str] | None) -> str:
    """What the rater learns after voting: which model wrote which summary."""
    names = ", ".join(f"**{letter}** = {MODEL_LABELS[model]}" for letter, model in revealed.items())
    if choice == "none":
        picked = "You marked all three as bad."
    else:
        picked = f"You picked **{choice}** ({MODEL_LABELS[revealed[choice]]})."
    if ranking:
        picked += " Ranking: " + " > ".join(MODEL_LABELS[revealed[x]] for x in ranking) + "."
    return f"✓ Vote stored. {names}. {picked}"


# ---------------------------------------------------------------------------- model cards


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return md_escape(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _trainable(card: ModelCard) -> str:
    if card.trainable_params is None:
        return "n/a"
    share = card.trainable_share
    text = human_count(card.trainable_params)
    if share is not None and card.trainable_params:
        text += f" (**{100 * share:.2f}%**)"
    return text


def models_table(cards: Mapping[str, ModelCard]) -> str:
    """All model cards as one Markdown table: one column per model, one row per fact."""
    names = [n for n in MODEL_NAMES if n in cards]
    facts: list[tuple[str, Any]] = [
        ("Method", lambda c: _fmt(c.method)),
        ("Base model", lambda c: f"`{md_escape(c.base_model, 80)}`" if c.base_model else "n/a"),
        ("Total parameters", lambda c: human_count(c.total_params)),
        ("Trainable parameters", _trainable),
        ("Size on disk", lambda c: f"**{human_bytes(c.size_on_disk_bytes)}**"),
        ("Training examples", lambda c: _fmt(c.examples)),
        ("Steps / epochs", lambda c: f"{_fmt(c.steps)} / {_fmt(c.epochs)}"),
        ("Training time", lambda c: _duration(c.wall_time_s)),
        (
            "Final training loss",
            lambda c: "n/a" if c.final_train_loss is None else f"{c.final_train_loss:.3f}",
        ),
        ("Hardware", lambda c: _fmt(c.hardware)),
    ]
    lines = [
        "| | " + " | ".join(f"**{cards[n].label}**" for n in names) + " |",
        "|---|" + "---|" * len(names),
        *[f"| {label} | " + " | ".join(get(cards[n]) for n in names) + " |" for label, get in facts],
    ]
    notes = [f"*{cards[n].label}: {md_escape(cards[n].note)}*" for n in names if cards[n].note]
    return "\n".join(lines) + ("\n\n" + "  \n".join(notes) if notes else "")


def models_headline(cards: Mapping[str, ModelCard], rouge_cost: str | None = None) -> str:
    """The at-a-glance sentence: LoRA's share of parameters, size and (if known) ROUGE cost."""
    headline = lora_headline(dict(cards))
    if not headline:
        return "*Training metadata is not available yet: the cards below show what the files tell.*"
    return f"## {headline}" + (f", {rouge_cost}" if rouge_cost else "") + "."


# ---------------------------------------------------------------------------- benchmark


def _bench_cell(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "n/a"
    text = f"{100 * cell['mean']:.1f}"
    if cell.get("ci95"):
        lo, hi = cell["ci95"]
        text += f" ({100 * lo:.1f}–{100 * hi:.1f})"
    if cell.get("delta_pp") is not None:
        text += f" · {cell['delta_pp']:+.1f} pp"
    return text


def benchmark_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """Table rows from a normalised report (``core.reports.normalise_report``): models, then baselines."""
    return [
        [entry["label"], *[_bench_cell(entry["metrics"].get(m)) for m in ROUGE_TYPES]]
        for entry in report.get("rows", [])
    ]


BENCHMARK_COLUMNS: list[str] = ["System", *[ROUGE_LABELS[m] for m in ROUGE_TYPES]]


def benchmark_caption(report: Mapping[str, Any]) -> str:
    """Where a benchmark report comes from and what it covers."""
    parts = [f"**Source:** `{md_escape(portable_location(str(report.get('source') or 'report')))}`"]
    if report.get("n"):
        parts.append(f"**{report['n']}** dialogues")
    if report.get("split"):
        parts.append(f"split: {md_escape(report['split'])}")
    text = " · ".join(parts)
    text += (
        "\n\nEach cell: mean ROUGE F1 × 100 (95% bootstrap interval) · improvement over the original "
        "model in percentage points. Baselines: a fixed template sentence and the dialogue's first line."
    )
    errors = report.get("errors") or {}
    for name, error in errors.items():
        text += f"\n\n✗ {MODEL_LABELS.get(name, md_escape(name))}: {md_escape(error)}"
    return text


def rouge_cost(report: Mapping[str, Any] | None, metric: str = "rougeL") -> str | None:
    """LoRA's ROUGE difference to the full fine-tune, as words (``None`` without a report)."""
    if not report or metric not in report.get("lora_vs_full_pp", {}):
        return None
    delta = report["lora_vs_full_pp"][metric]
    label = ROUGE_LABELS[metric]
    if delta < 0:
        return f"for **{-delta:.1f} pp** less {label} than the full fine-tune"
    return f"with **{delta:+.1f} pp** {label} against the full fine-tune"
