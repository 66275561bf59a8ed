"""Text, tables and charts the app shows, as pure functions of the service's results.

Anything that may carry user text or file paths goes through :func:`md_escape` before it
reaches a Markdown component, so pasted HTML, links or images render as inert text, and
absolute paths are shown relative to the project (:func:`scrub_paths`): a visitor never
learns the server's file-system layout.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.checkpoints import portable_location
from core.config import MODEL_LABELS, MODEL_NAMES, PROJECT_ROOT, ArenaConfig
from core.metrics import ROUGE_TYPES
from core.model_cards import ModelCard, human_bytes, human_count, lora_headline
from core.prompt import clean_text
from core.summaries import MAX_DIALOGUE_CHARS, MAX_INPUT_TOKENS

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
# An absolute path: "/" or "~/" not inside a word, a URL ("https://") or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`,;()\[\]<>]+")
README_FILE = PROJECT_ROOT / "README.md"
REAL_MODELS_SECTION = "Train your own"  # the README section that builds the flan-t5-base checkpoints


def scrub_paths(text: object) -> str:
    """``text`` with every absolute path made project-relative (:func:`portable_location`)."""

    def relative(match: re.Match[str]) -> str:
        path = match.group(0)
        stripped = path.rstrip(".")  # a sentence's full stop is not part of the path
        return portable_location(stripped) + path[len(stripped) :]

    return _ABSOLUTE_PATH.sub(relative, str(text))


def md_escape(text: object, limit: int = 600) -> str:
    """Text made inert for Markdown: paths made relative, HTML-escaped, Markdown syntax escaped,
    one line, capped."""
    value = scrub_paths(text)
    if len(value) > limit:
        value = value[:limit] + "…"
    value = " ".join(value.split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(value, quote=False))


def format_seconds(seconds: float) -> str:
    """A duration for people: milliseconds under a second, else seconds."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def progress_line(fraction: float, text: str) -> str:
    """A one-line progress report for a long run: a text bar, the percentage and what is going on."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(20 * fraction)
    return f"⏳ `{'█' * filled}{'░' * (20 - filled)}` {100 * fraction:.0f}% · {md_escape(text, 200)}…"


def truncation_notice(results: Sequence[ModelResult], dialogue: str) -> str | None:
    """The one sentence on how much of a long dialogue was cut, or ``None`` when nothing was.

    ``results`` are the models' answers (anything with ``input_tokens`` and ``truncated_tokens``,
    e.g. :class:`core.summaries.Summary`); the worst cut is reported.
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
    if status.startswith("loading"):  # the page is served before the models are (README, P6)
        return "⏳"
    return "⚠" if status.startswith("loaded with a warning") else "✓"


PRESET_WORDS: dict[str, str] = {
    "mini": (
        "**You are looking at the `mini` preset: three small practice models, not Flan-T5.** "
        "They are tiny T5s (about 3.5M parameters) trained from scratch on a CPU, so that the arena "
        "runs without downloads or a GPU; their summaries show how the comparison works, not how "
        "good Flan-T5 gets. The real preset (`flan-t5-base`: Google's Flan-T5-base as released, "
        "fully fine-tuned on DialogSum, and with a LoRA adapter) appears here once its fine-tuned "
        "checkpoints exist: see *How to get the real models* below (the README's "
        f"*{REAL_MODELS_SECTION}* section)."
    ),
    "flan-t5-base": (
        "**You are looking at the `flan-t5-base` preset:** Google's Flan-T5-base as released "
        "(*Original*), the same model fully fine-tuned on DialogSum (*Full fine-tune*), and "
        "Flan-T5-base with a small LoRA adapter trained on DialogSum (*LoRA*)."
    ),
}


def page_intro(preset: str) -> str:
    """The page's title and one sentence on what it compares, true for the live preset."""
    family = "Flan-T5" if preset == "flan-t5-base" else "A small T5"
    return (
        "# Dialogue-summary arena\n"
        f"{family} **before fine-tuning**, after a **full fine-tune** and with **LoRA**, side by side on "
        "[DialogSum](https://huggingface.co/datasets/knkarthick/dialogsum) dialogues, scored with ROUGE."
    )


def preset_banner(config: ArenaConfig, statuses: Mapping[str, str], examples_error: str | None = None) -> str:
    """Which preset is shown, in a visitor's words, why it was chosen, and the state of each model."""
    reason = re.sub(r"^[\w.-]+ preset: ", "", config.preset_reason)
    lines = [
        PRESET_WORDS.get(config.preset, f"**Live preset: `{md_escape(config.preset)}`**"),
        "",
        f"*Why this preset:* {md_escape(reason)}",
        "",
        " · ".join(
            f"{status_icon(statuses[name])} **{MODEL_LABELS[name]}**: {md_escape(statuses[name], 300)}"
            for name in MODEL_NAMES
        ),
    ]
    if examples_error:
        lines += ["", f"⚠ DialogSum examples unavailable: {md_escape(examples_error)}"]
    return "\n".join(lines)


def readme_section(title: str, readme: Path = README_FILE) -> str | None:
    """The body of the README's ``## title`` section (up to the next ``##``), or ``None``."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    return match.group(1).strip() if match else None


def default_placeholder(value: int | None) -> str:
    """What an empty generation-settings box means: the configured value, else the model's own."""
    return f"default ({value})" if value is not None else "model default"


def column_header(name: str, status: str) -> str:
    """Heading of one model's column; says why the model is down when it is."""
    text = f"### {MODEL_LABELS[name]}"
    if status.startswith("unavailable"):
        text += f"\n\n✗ {md_escape(status, 400)}"
    elif status.startswith("loaded with a warning"):
        text += f"\n\n⚠ {md_escape(status, 400)}"
    elif status.startswith("loading"):
        text += f"\n\n⏳ {md_escape(status, 400)}"
    return text


def timing_text(result: ModelResult) -> str:
    """How long a column took; models that ran in one batched call are timed together, so say so."""
    text = format_seconds(result.seconds)
    if result.cached:
        return text + " (cached)"
    if result.batched_with:
        others = " and ".join(MODEL_LABELS.get(n, n) for n in result.batched_with)
        text += f" for this and {others} together (one batched call, not timed apart)"
    return text


EMPTY_SUMMARY = (
    "⚠ **Empty summary**: the model stopped before writing any words "
    "(a very small *Max new tokens* often causes this), so every ROUGE score is 0."
)
TIMED_OUT = "✂ **Cut at the server's time limit**: the summary is what the model had written by then."


def result_markdown(result: ModelResult | None, pending: bool = False) -> str:
    """ROUGE scores (absent without a reference), time, errors and warnings of one column."""
    if result is None:
        return "*generating…*" if pending else ""
    if result.error:
        return f"✗ **Error:** {md_escape(scrub_paths(result.error))}"
    notes = [TIMED_OUT] if result.timed_out else []
    if not result.summary.strip():
        notes.append(EMPTY_SUMMARY)
    prefix = "".join(note + "\n\n" for note in notes)
    timing = timing_text(result)
    if result.rouge is None:
        return f"{prefix}{timing} · *ROUGE: no reference given*"
    header = " | ".join(SHORT_LABELS[k] for k in ROUGE_TYPES)
    values = " | ".join(f"{100 * result.rouge[k]:.1f}" for k in ROUGE_TYPES)
    return f"{prefix}| {header} |\n|{':---:|' * len(ROUGE_TYPES)}\n| {values} |\n\nROUGE F1 × 100 · {timing}"


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


def _pre_trained(card: ModelCard) -> bool:
    """A card whose training was pre-training (the mini original), not summary fine-tuning."""
    return card.method == "pretrained"


def _fine_tuning_loss(card: ModelCard) -> str:
    if card.final_train_loss is None or _pre_trained(card):
        return "n/a"
    return f"{card.final_train_loss:.3f}"


def _pre_training_loss(card: ModelCard) -> str:
    # Span corruption (filling in masked spans) is a different task with a different loss
    # scale: it is shown apart, never in the row that compares the fine-tunes.
    if card.final_train_loss is None or not _pre_trained(card):
        return "n/a"
    return f"{card.final_train_loss:.3f} (span corruption: not comparable)"


def models_table(cards: Mapping[str, ModelCard]) -> str:
    """All model cards as one Markdown table: one column per model, one row per fact."""
    names = [n for n in MODEL_NAMES if n in cards] + [n for n in cards if n not in MODEL_NAMES]  # + adapters
    facts: list[tuple[str, Any]] = [
        ("Method", lambda c: _fmt(c.method)),
        ("Base model", lambda c: f"`{md_escape(c.base_model, 80)}`" if c.base_model else "n/a"),
        ("Total parameters", lambda c: human_count(c.total_params)),
        ("Trainable parameters", _trainable),
        ("Size on disk", lambda c: f"**{human_bytes(c.size_on_disk_bytes)}**"),
        ("Training examples", lambda c: _fmt(c.examples)),
        ("Steps / epochs", lambda c: f"{_fmt(c.steps)} / {_fmt(c.epochs)}"),
        ("Training time", lambda c: _duration(c.wall_time_s)),
        ("Final fine-tuning loss (summaries)", _fine_tuning_loss),
        ("Final pre-training loss (other task)", _pre_training_loss),
        ("Hardware", lambda c: _fmt(c.hardware)),
        # LoRA's frozen base may train in bf16 (train.lora's default where native): part of its cost
        ("Training precision", lambda c: _fmt(c.precision)),
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
    verdicts = baseline_sentences(report)
    if verdicts:
        text += "\n\n" + "  \n".join(verdicts)
    errors = report.get("errors") or {}
    for name, error in errors.items():
        text += f"\n\n✗ {MODEL_LABELS.get(name, md_escape(name))}: {md_escape(error)}"
    return text


BASELINE_WORDS: dict[str, str] = {
    "template": "a fixed template sentence that ignores the dialogue",
    "first_line": "copying the dialogue's first line",
}


def baseline_sentences(report: Mapping[str, Any]) -> list[str]:
    """One plain sentence per fine-tuned model that does not clearly beat the trivial baselines."""
    lines = []
    for v in report.get("baseline_verdicts", []):
        if v["verdict"] == "beats":
            continue
        label = MODEL_LABELS.get(v["model"], md_escape(v["model"]))
        metric = ROUGE_LABELS.get(v["metric"], v["metric"])
        trivial = BASELINE_WORDS.get(v["baseline"], md_escape(v["baseline"]).replace("\\_", " "))
        scores = f"{metric} {100 * v['mean']:.1f} vs {100 * v['baseline_mean']:.1f} for {trivial}"
        if v["verdict"] == "below":
            lines.append(f"✗ **{label} does not beat the trivial baselines** ({scores}).")
        else:
            lines.append(
                f"⚠ **{label} is not clearly better than the trivial baselines** ({scores}; "
                "the 95% intervals overlap)."
            )
    return lines


def rouge_cost(report: Mapping[str, Any] | None, metric: str = "rougeL") -> str | None:
    """LoRA's ROUGE difference to the full fine-tune, as words (``None`` without a report)."""
    if not report or metric not in report.get("lora_vs_full_pp", {}):
        return None
    delta = report["lora_vs_full_pp"][metric]
    label = ROUGE_LABELS[metric]
    if delta < 0:
        return f"for **{-delta:.1f} pp** less {label} than the full fine-tune"
    return f"with **{delta:+.1f} pp** {label} against the full fine-tune"
