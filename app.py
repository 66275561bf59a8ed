"""Dialogue-summary arena: the Gradio app (compare, benchmark, blind human evaluation, models).

Run ``python app.py`` (honours ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` and the
``ARENA_*`` variables of ``core/config.py``). This file only declares the UI, top to bottom,
and wires it to ``core``; every decision lives in ``core.service`` and ``core.presentation``.
The page is built by :func:`build_demo` from a service, so importing this module loads no
model; :func:`main` starts loading the configured models in the background and launches
(the page is served meanwhile; what needs the models waits for them).

Named API endpoints (``gradio_client``): ``/compare``, ``/battle``, ``/vote``, ``/leaderboard``,
``/agreement``.
"""

from __future__ import annotations

import os

# Before gradio / huggingface_hub are imported: both read these once, at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import asyncio
import logging
import queue
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from core import charts
from core import presentation as view
from core.api_shapes import BattleAnswer, CompareAnswer, LeaderboardRow, VoteAnswer
from core.config import (
    MAX_NEW_TOKENS_RANGE,
    MODEL_LABELS,
    NUM_BEAMS_RANGE,
    ensure_offline_if_unreachable,
    load_config,
)
from core.inputs import InputError, client_address, join_references, parse_settings
from core.model_cards import model_cards
from core.service import FRESH_EVAL_RANGE, ArenaService
from core.vote_sync import votes_storage_note

logger = logging.getLogger("arena.app")

# Queue limits (cited by the README). Generation is CPU/GPU bound, so at most
# GENERATE_CONCURRENCY compare/battle/evaluation jobs run at once (each model also has its
# own lock); votes and reads are milliseconds, so they get a wider lane. At most
# QUEUE_MAX_SIZE events wait; beyond that a caller is refused at once with "queue is full"
# (gradio's busy answer) instead of waiting without bound.
GENERATE_CONCURRENCY = 2
LIGHT_CONCURRENCY = 16
QUEUE_MAX_SIZE = 512
# Fairness: one client (an address, see core.inputs.client_address) may have at most this many
# generation jobs queued or running at once; more are refused at once with a message, so one
# client cannot fill the queue that everyone shares.
QUEUED_PER_CLIENT = 3
MAX_UPLOAD = "1mb"  # gradio's upload route exists in every app; this one needs no uploads
RANKINGS = ("A > B > C", "A > C > B", "B > A > C", "B > C > A", "C > A > B", "C > B > A")
ALL_BAD = "All bad"
PRIVATE: dict[str, Any] = {"api_visibility": "private"}  # UI events; the API is the four gr.api routes


def setting_box(name: str, bounds: tuple[int, int], default: int | None, elem_id: str) -> gr.Textbox:
    """An optional whole-number setting: empty means the default, which the placeholder shows."""
    return gr.Textbox(
        value="",
        placeholder=view.default_placeholder(default),
        label=f"{name} ({bounds[0]}-{bounds[1]})",
        lines=1,
        max_lines=1,
        elem_id=elem_id,
    )


def user_error(err: Exception) -> gr.Error:
    """A message for the person (or client) who sent the request; no traceback in the log.

    Paths in it are made project-relative: a visitor never sees the server's layout.
    """
    return gr.Error(view.scrub_paths(err), print_exception=False)


def session_of(service: ArenaService, request: gr.Request | None) -> str:
    """The anonymous session id of a request (``"api"`` when gradio gives none)."""
    return service.session_id(getattr(request, "session_hash", None))


# ---------------------------------------------------------------------------- Compare


def compare_tab(service: ArenaService, statuses: dict[str, str]) -> dict[str, gr.Markdown]:
    """The Compare tab: pick or paste a dialogue, summarize it with the three models side by side.

    Returns each model column's header, which :func:`build_demo` refreshes with the model's status."""
    config = service.config
    examples = service.examples()
    first = examples[0] if examples else None
    selected = gr.State(first.id if first else None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row(equal_height=False):
                example_pick = gr.Dropdown(
                    choices=[(f"{d.id} · {d.topic}" if d.topic else d.id, d.id) for d in examples],
                    value=first.id if first else None,
                    label=f"DialogSum dialogue ({len(examples)} held-out): type an id or a topic",
                    filterable=True,
                    scale=4,
                    elem_id="example-pick",
                )
                random_button = gr.Button(
                    "Random", variant="secondary", scale=1, min_width=90, elem_id="random-example"
                )
            dialogue_box = gr.Textbox(
                value=first.dialogue if first else "",
                label="Dialogue: pick one above or paste your own (cut to 512 tokens)",
                lines=9,
                max_lines=9,
                elem_id="dialogue",
            )
        with gr.Column(scale=2):
            reference_box = gr.Textbox(
                value=join_references(first.references) if first else "",
                label="Reference summary (editable; blank line between several; empty = no ROUGE)",
                lines=7,
                max_lines=7,
                elem_id="reference",
            )
            with gr.Accordion("Generation settings", open=False):
                with gr.Row():
                    # Empty = the server's / model's default, said by the placeholder. Text boxes,
                    # not gr.Number: gradio 6's number box always shows (and sends) 0 when empty.
                    max_tokens_box = setting_box(
                        "Max new tokens",
                        MAX_NEW_TOKENS_RANGE,
                        config.generation.max_new_tokens,
                        "max-new-tokens",
                    )
                    beams_box = setting_box(
                        "Beams", NUM_BEAMS_RANGE, config.generation.num_beams, "num-beams"
                    )
                gr.Markdown("Deterministic decoding; results are cached per model, dialogue and settings.")
            summarize_button = gr.Button(
                "Summarize with all three models", variant="primary", size="lg", elem_id="summarize"
            )
            pick_note = gr.Markdown("", elem_id="pick-note")
    notice = gr.Markdown("", elem_id="compare-notice")
    columns: dict[str, tuple[gr.Textbox, gr.Markdown, gr.HighlightedText]] = {}
    headers: dict[str, gr.Markdown] = {}
    with gr.Row(equal_height=False):
        for name in service.model_names:  # the three, then each ARENA_ADAPTERS adapter
            with gr.Column(elem_id=f"column-{name}", elem_classes=["model-column"]):
                headers[name] = gr.Markdown(
                    view.column_header(name, statuses[name]), elem_id=f"header-{name}"
                )
                columns[name] = (
                    gr.Textbox(
                        label="Summary",
                        lines=3,
                        interactive=False,
                        buttons=["copy"],
                        elem_id=f"summary-{name}",
                    ),
                    gr.Markdown("", elem_id=f"scores-{name}"),
                    gr.HighlightedText(
                        label="Words shared with the reference",
                        color_map={"overlap": "#fdba74"},
                        show_legend=False,
                        show_inline_category=False,
                        elem_id=f"overlap-{name}",
                    ),
                )

    def pick_example(key: str | None) -> dict[Any, Any]:
        """Dropdown choice -> dialogue, reference, remembered id, note."""
        if not key:
            return {pick_note: ""}
        try:
            record = service.example(key)
        except InputError as err:
            return {selected: None, pick_note: f"⚠ {view.md_escape(err)}"}
        return {
            dialogue_box: record.dialogue,
            reference_box: join_references(record.references),
            selected: record.id,
            pick_note: "",
        }

    def random_example() -> dict[Any, Any]:
        try:
            record = service.random_example()
        except InputError as err:
            return {selected: None, pick_note: f"⚠ {view.md_escape(err)}"}
        return {
            example_pick: record.id,
            dialogue_box: record.dialogue,
            reference_box: join_references(record.references),
            selected: record.id,
            pick_note: "",
        }

    def dialogue_edited(text: str, remembered: str | None) -> Any:
        """Once the text is no longer the picked example, its id and reference no longer apply."""
        # gr.skip(), not {}: gradio reads an empty dict as one value for four outputs and fails.
        if not remembered:
            return gr.skip()
        try:
            if service.example(remembered).dialogue == text:
                return gr.skip()  # the example was just picked (this change is its text arriving)
        except InputError:
            pass
        note = "Your own dialogue: the reference was cleared (type one to get ROUGE)."
        return {example_pick: None, reference_box: "", selected: None, pick_note: note}

    def compare_frames(dialogue: str, reference: str, max_new_tokens: Any, num_beams: Any):
        """Stream the three columns: each fills as soon as its model is done."""
        results: dict[str, Any] = {}

        def frame(text: str, pending: bool) -> dict[Any, Any]:
            values: dict[Any, Any] = {notice: text}
            for name, (summary, scores, overlap) in columns.items():
                result = results.get(name)
                values[summary] = result.summary if result else ""
                values[scores] = view.result_markdown(result, pending=pending)
                # No shared words to show (no reference, no summary yet, an empty one): the panel
                # is hidden rather than left large and empty.
                spans = view.overlap_value(result)
                values[overlap] = gr.update(value=spans, visible=spans is not None)
            return values

        try:
            settings = parse_settings(max_new_tokens, num_beams, config.generation)
            yield frame("*Summarizing with all three models…*", pending=True)
            for result in service.compare_stream(dialogue, reference, settings):
                results[result.model] = result
                yield frame("*Summarizing…*" if len(results) < len(service.model_names) else "", pending=True)
        except InputError as err:
            yield frame(f"✗ {view.md_escape(err)}", pending=False)
            return
        except Exception as err:  # the page must say something rather than hang on a spinner
            logger.exception("compare failed")
            yield frame(f"✗ Unexpected error: {view.md_escape(err)}", pending=False)
            return
        cut = view.truncation_notice(list(results.values()), dialogue)
        yield frame(f"✂ {view.md_escape(cut, 1000)}" if cut else "", pending=False)

    picked = [dialogue_box, reference_box, selected, pick_note]
    example_pick.input(pick_example, example_pick, picked, **PRIVATE)
    random_button.click(random_example, None, [example_pick, *picked], **PRIVATE)
    # .change, not .input: gradio's textbox sends no input event for a paste (Ctrl+V).
    dialogue_box.change(
        dialogue_edited, [dialogue_box, selected], [example_pick, reference_box, selected, pick_note],
        queue=False, trigger_mode="always_last", show_progress="hidden", **PRIVATE,
    )  # fmt: skip
    summarize_button.click(
        compare_frames,
        [dialogue_box, reference_box, max_tokens_box, beams_box],
        [notice, *[c for column in columns.values() for c in column]],
        show_progress="minimal",  # columns stay visible while the others are still generating
        concurrency_limit=GENERATE_CONCURRENCY,
        concurrency_id="generate",
        **PRIVATE,
    )
    return headers


# ---------------------------------------------------------------------------- Benchmark


def report_view(service: ArenaService) -> tuple[str, list[list[Any]], dict[str, Any]]:
    """Caption, table rows and report (for the chart) of the live preset's evaluation (or why none)."""
    try:
        report = service.benchmark_report()
    except InputError as err:
        return f"⚠ {view.md_escape(err)}", [], {}
    if report is None:
        return (
            f"No evaluation report for the `{service.config.preset}` preset yet. Run `python -m train.evaluate` "
            f"(it writes `{view.md_escape(service.config.report_dir.name)}/summary.json` next to the "
            "checkpoints), or run a quick fresh evaluation below.",
            [],
            {},
        )
    return view.benchmark_caption(report), view.benchmark_rows(report), report


def lazy_plots(tab: gr.Tab, charts_: dict[gr.Plot, Callable[[], Any]]) -> None:
    """Draw each plot when ``tab`` is first opened, once for every visitor.

    Drawing at page build cost the cold start about 2 s (matplotlib's import and rendering);
    the first page needs none of these charts. The drawn image is kept, so later visitors
    only receive it.
    """
    lock = threading.Lock()
    drawn: dict[gr.Plot, Any] = {}

    def draw() -> dict[gr.Plot, Any]:
        with lock:
            for plot, make in charts_.items():
                if plot not in drawn:
                    drawn[plot] = plot.postprocess(make())
            return dict(drawn)

    tab.select(draw, None, list(charts_), show_progress="hidden", **PRIVATE)


def benchmark_tab(service: ArenaService, tab: gr.Tab) -> None:
    """The Benchmark tab: the shipped report, and a small evaluation run on demand."""
    caption, rows, report = report_view(service)
    gr.Markdown(caption, elem_id="report-caption")
    gr.Dataframe(
        value=rows,
        headers=view.BENCHMARK_COLUMNS,
        interactive=False,
        wrap=True,
        visible=bool(rows),
        elem_id="report-table",
    )
    report_plot = gr.Plot(show_label=False, visible=bool(rows), elem_id="report-plot")
    lazy_plots(tab, {report_plot: lambda: charts.benchmark_figure(report)})
    gr.Markdown(
        "### Fresh evaluation\nScores the three models now on the first *N* held-out dialogues "
        "(same scoring as `python -m train.evaluate`)."
    )
    with gr.Row(equal_height=True):
        fresh_n = gr.Slider(
            FRESH_EVAL_RANGE[0], FRESH_EVAL_RANGE[1], value=10, step=1, label="Dialogues (N)", scale=3
        )
        fresh_button = gr.Button("Run a fresh evaluation", scale=1, elem_id="fresh-eval")
    # Progress is written where the visitor looks, under the button (gradio's own bar overlays
    # the outputs, which are empty or hidden until the run ends).
    fresh_status = gr.Markdown("", elem_id="fresh-status")
    fresh_caption = gr.Markdown("", elem_id="fresh-caption")
    fresh_table = gr.Dataframe(
        headers=view.BENCHMARK_COLUMNS, interactive=False, wrap=True, visible=False, elem_id="fresh-table"
    )
    fresh_plot = gr.Plot(show_label=False, visible=False)

    def fresh_evaluation(n: Any) -> Iterator[dict[Any, Any]]:
        """Stream the run's progress (the report's own generation loop), then its table and chart."""
        yield {fresh_status: view.progress_line(0.0, "starting"), fresh_caption: ""}
        start = time.perf_counter()
        for kind, value in run_with_progress(lambda progress: service.fresh_evaluation(n, progress=progress)):
            if kind == "progress":
                yield {fresh_status: view.progress_line(*value)}
                continue
            if isinstance(value, InputError):
                yield {fresh_status: f"✗ {view.md_escape(value)}"}
                return
            if isinstance(value, BaseException):
                logger.error("fresh evaluation failed", exc_info=value)
                yield {fresh_status: f"✗ Unexpected error: {view.md_escape(value)}"}
                return
            yield {
                fresh_status: f"✓ Done in {view.format_seconds(time.perf_counter() - start)}.",
                fresh_caption: view.benchmark_caption(value),
                fresh_table: gr.update(value=view.benchmark_rows(value), visible=True),
                fresh_plot: gr.update(value=charts.benchmark_figure(value), visible=True),
            }

    fresh_button.click(
        fresh_evaluation, fresh_n, [fresh_status, fresh_caption, fresh_table, fresh_plot],
        concurrency_limit=1, concurrency_id="generate", show_progress="hidden", **PRIVATE,
    )  # fmt: skip


def run_with_progress(work: Callable[[Callable[[float, str], None]], Any]) -> Iterator[tuple[str, Any]]:
    """Run ``work(progress)`` in a thread; yield ``("progress", (fraction, text))`` as it reports,
    then one ``("result", value)`` (the return value, or the exception it raised)."""
    updates: queue.Queue[tuple[str, Any]] = queue.Queue()

    def target() -> None:
        try:
            updates.put(("result", work(lambda fraction, text: updates.put(("progress", (fraction, text))))))
        except Exception as err:  # noqa: BLE001 - handed to the caller, which shows and logs it
            updates.put(("result", err))

    threading.Thread(target=target, name="arena-progress", daemon=True).start()
    while True:
        kind, value = updates.get()
        yield kind, value
        if kind == "result":
            return


# ---------------------------------------------------------------------------- Human evaluation


def board_values(service: ArenaService) -> tuple[list[list[Any]], str | None]:
    """Leaderboard rows and a fresh CSV export of the votes; empty (and a warning) when the DB is down."""
    try:
        return view.leaderboard_rows(service.leaderboard()), service.export_votes_csv()
    except InputError as err:
        logger.error("%s", err)
        gr.Warning(view.scrub_paths(err))
        return [], None


def human_tab(service: ArenaService, demo: gr.Blocks) -> None:
    """The Human evaluation tab: blind battles, votes, the live leaderboard and the vote export."""
    gr.Markdown(
        "**Blind test.** Three summaries of one dialogue in random order, labelled A, B, C. "
        "Pick the best; the model names are revealed only after your vote (one vote per battle)."
    )
    battle_token = gr.State(None)
    battle_button = gr.Button("Start a blind battle", variant="primary", elem_id="start-battle")
    with gr.Row(equal_height=False):
        battle_dialogue = gr.Textbox(
            label="Dialogue", lines=8, max_lines=8, interactive=False, scale=3, elem_id="battle-dialogue"
        )
        with gr.Column(scale=2):
            hide_reference = gr.Checkbox(
                value=False, label="Hide the reference summary", elem_id="hide-reference"
            )
            battle_reference = gr.Textbox(
                label="Reference summary", lines=5, max_lines=6, interactive=False, elem_id="battle-reference"
            )
    boxes: dict[str, gr.Textbox] = {}
    with gr.Row(equal_height=True):
        for letter in "ABC":
            boxes[letter] = gr.Textbox(
                label=f"Summary {letter}", lines=4, interactive=False, elem_id=f"battle-{letter}"
            )
    with gr.Row():
        best_choice = gr.Radio(
            ["A", "B", "C", ALL_BAD], label="Which summary is best?", elem_id="best-choice"
        )
        ranking_choice = gr.Radio(
            list(RANKINGS), label="Optional: rank all three (best first)", elem_id="ranking-choice"
        )
    vote_button = gr.Button("Submit vote", variant="primary", interactive=False, elem_id="submit-vote")
    reveal = gr.Markdown("", elem_id="reveal")
    gr.Markdown(
        "### Leaderboard (live preset)\nWin rate with a Wilson 95% interval; Bradley-Terry strength "
        "fitted from the pairwise preferences the votes imply (strengths sum to 1)."
    )
    # durable here or not; the path relative to the project, as everywhere a visitor looks
    gr.Markdown(view.scrub_paths(votes_storage_note(service.config)), elem_id="votes-storage")
    board_rows, csv_path = board_values(service)
    leaderboard = gr.Dataframe(
        value=board_rows, headers=list(view.LEADERBOARD_COLUMNS), interactive=False, elem_id="leaderboard"
    )
    with gr.Row():
        refresh_board = gr.Button("Refresh leaderboard", size="sm")
        votes_csv = gr.DownloadButton(
            "Download all votes (CSV)", value=csv_path, size="sm", elem_id="votes-csv"
        )

    def leaderboard_view() -> dict[Any, Any]:
        rows, path = board_values(service)
        return {leaderboard: rows, votes_csv: path}

    def start_battle(request: gr.Request) -> dict[Any, Any]:
        try:
            battle = service.new_battle(session_of(service, request))
        except InputError as err:
            return {
                battle_token: None, battle_dialogue: "", battle_reference: "",
                **{box: gr.update(value="", label=f"Summary {x}") for x, box in boxes.items()},
                best_choice: None, ranking_choice: None, reveal: f"✗ {view.md_escape(err)}",
                vote_button: gr.update(interactive=False),
            }  # fmt: skip
        shown = battle.letter_summaries()
        return {
            battle_token: battle.token, battle_dialogue: battle.dialogue, battle_reference: battle.reference,
            **{box: gr.update(value=shown[x], label=f"Summary {x}") for x, box in boxes.items()},
            best_choice: None, ranking_choice: None,
            reveal: "Pick the best summary (optionally rank all three), then submit to see who wrote what.",
            vote_button: gr.update(interactive=True),
        }  # fmt: skip

    def submit_vote(token: str | None, best: str | None, ranking: str | None) -> dict[Any, Any]:
        if not token:
            return {reveal: "⚠ Start a battle first."}
        if not best and not ranking:
            return {reveal: "⚠ Pick the best summary (or *All bad*) first."}
        choice = "none" if best == ALL_BAD else (best or (ranking or "")[:1])
        try:
            battle, vote = service.vote(token, choice, ranking)
        except InputError as err:
            return {reveal: f"✗ {view.md_escape(err)}"}
        revealed = battle.revealed()
        letters = [x for x in (ranking or "") if x in "ABC"] or None
        return {
            battle_token: None,
            **{
                box: gr.update(label=f"Summary {x} — {MODEL_LABELS[revealed[x]]}") for x, box in boxes.items()
            },
            reveal: view.reveal_markdown(revealed, vote.choice, letters),
            vote_button: gr.update(interactive=False),
            **leaderboard_view(),
        }

    def toggle_reference(hidden: bool) -> Any:
        return gr.update(visible=not hidden)

    battle_button.click(
        start_battle, None,
        [battle_token, battle_dialogue, battle_reference, *boxes.values(), best_choice, ranking_choice, reveal,
         vote_button],
        concurrency_limit=GENERATE_CONCURRENCY, concurrency_id="generate", **PRIVATE,
    )  # fmt: skip
    hide_reference.change(toggle_reference, hide_reference, battle_reference, **PRIVATE)
    vote_button.click(
        submit_vote,
        [battle_token, best_choice, ranking_choice],
        [battle_token, *boxes.values(), reveal, vote_button, leaderboard, votes_csv],
        **PRIVATE,
    )
    refresh_board.click(leaderboard_view, None, [leaderboard, votes_csv], **PRIVATE)
    demo.load(leaderboard_view, None, [leaderboard, votes_csv], **PRIVATE)
    agreement_section(service, demo)


def agreement_section(service: ArenaService, demo: gr.Blocks) -> None:
    """Under the leaderboard: does ROUGE agree with the votes? Figures, disagreements, one opened."""
    from core.agreement import DETAIL_COLUMNS, DISAGREEMENT_COLUMNS, disagreement_rows, summary_markdown

    gr.Markdown(
        "### ROUGE versus people\nThe votes set against ROUGE on the very summaries the raters saw "
        "(scored against the references when the battle was made)."
    )
    figures = gr.Markdown("", elem_id="agreement-figures")
    disagreements = gr.Dataframe(
        headers=list(DISAGREEMENT_COLUMNS), interactive=False, wrap=True, elem_id="agreement-disagreements"
    )
    with gr.Row(equal_height=True):
        pick = gr.Dropdown(
            choices=[], value=None, label="Open a disagreement (battle id)", scale=3, elem_id="agreement-pick"
        )
        refresh = gr.Button("Refresh agreement", size="sm", scale=1)
    with gr.Row(equal_height=False):
        dialogue = gr.Textbox(
            label="Dialogue", lines=8, max_lines=12, interactive=False, elem_id="agreement-dialogue"
        )
        references = gr.Textbox(
            label="References", lines=5, max_lines=8, interactive=False, elem_id="agreement-references"
        )
    shown = gr.Dataframe(
        headers=list(DETAIL_COLUMNS), interactive=False, wrap=True, elem_id="agreement-summaries"
    )

    def refresh_view() -> dict[Any, Any]:
        try:
            report = service.agreement()
        except InputError as err:
            return {
                figures: f"⚠ {view.md_escape(err)}",
                disagreements: [],
                pick: gr.update(choices=[], value=None),
            }
        rows = disagreement_rows(report, MODEL_LABELS)
        choices = [(f"{row[0]} · {row[1]} · people {row[2]}, ROUGE {row[3]}", row[0]) for row in rows]
        return {
            figures: summary_markdown(report),
            disagreements: rows,
            pick: gr.update(choices=choices, value=None),
        }

    def open_vote(battle_id: str | None) -> dict[Any, Any]:
        if not battle_id:
            return {dialogue: "", references: "", shown: []}
        try:
            detail = service.vote_detail(battle_id)
        except InputError as err:
            return {dialogue: f"✗ {err}", references: "", shown: []}
        return {
            dialogue: detail["dialogue"],
            references: "\n\n".join(detail["references"]) or "(not stored: vote older than schema 2)",
            shown: detail["rows"],
        }

    refresh.click(refresh_view, None, [figures, disagreements, pick], **PRIVATE)
    demo.load(refresh_view, None, [figures, disagreements, pick], **PRIVATE)
    pick.change(open_vote, pick, [dialogue, references, shown], **PRIVATE)


# ---------------------------------------------------------------------------- Models


def models_tab(service: ArenaService, tab: gr.Tab) -> None:
    """The Models tab: what each model is, what it cost to train and what it weighs."""
    cards = model_cards(service.config)
    try:
        report = service.benchmark_report()
    except InputError:
        report = None
    gr.Markdown(view.models_headline(cards, view.rouge_cost(report)), elem_id="models-headline")
    gr.Markdown(view.models_table(cards), elem_id="models-table")
    with gr.Row():
        size_plot = gr.Plot(show_label=False, elem_id="size-plot")
        loss_plot = gr.Plot(show_label=False, elem_id="loss-plot")
    lazy_plots(
        tab, {size_plot: lambda: charts.size_figure(cards), loss_plot: lambda: charts.loss_figure(cards)}
    )


# ---------------------------------------------------------------------------- API


def resolved(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its annotations evaluated: gradio reads an endpoint's return type from
    ``inspect.signature``, which leaves this module's postponed (string) annotations as strings."""
    fn.__annotations__ = typing.get_type_hints(fn)
    return fn


def register_api(service: ArenaService) -> None:
    """The named endpoints; gradio_client reads their signatures and docstrings, and the "Use via
    API" page their return types (:mod:`core.api_shapes`), so it shows the JSON, not "Any"."""

    def api_compare(
        dialogue: str, reference: str = "", max_new_tokens: int | None = None, num_beams: int | None = None
    ) -> CompareAnswer:
        """Summarize a dialogue with all three models and score them against the reference(s).

        Args:
            dialogue: the conversation to summarize (cut to the models' 512-token input limit)
            reference: human summary; several are separated by a blank line; empty = no ROUGE
            max_new_tokens: optional summary length cap (1-512)
            num_beams: optional beam count (1-8)
        """
        try:
            return service.compare(dialogue, reference, max_new_tokens, num_beams)
        except InputError as err:
            raise user_error(err) from err

    def api_battle(request: gr.Request) -> BattleAnswer:
        """Start a blind battle: a DialogSum dialogue and three anonymous summaries A, B, C."""
        try:
            battle = service.new_battle(session_of(service, request))
        except InputError as err:
            raise user_error(err) from err
        return service.battle_json(battle)

    def api_vote(token: str, choice: str, ranking: str = "") -> VoteAnswer:
        """Vote once for a battle: choice is "A", "B", "C" or "none"; ranking optional ("B>A>C").

        Args:
            token: the battle token returned by /battle (good for one vote)
            choice: the best summary's letter, or "none" when all three are bad
            ranking: optional full ranking, best first, e.g. "B>A>C"
        """
        try:
            return service.vote_json(token, choice, ranking or None)
        except InputError as err:
            raise user_error(err) from err

    def api_leaderboard() -> list[LeaderboardRow]:
        """Per model: battles voted on, wins, win rate with a Wilson 95% CI, Bradley-Terry strength."""
        try:
            return service.leaderboard()
        except InputError as err:
            raise user_error(err) from err

    gr.api(
        resolved(api_compare),
        api_name="compare",
        concurrency_limit=GENERATE_CONCURRENCY,
        concurrency_id="generate",
    )
    gr.api(
        resolved(api_battle),
        api_name="battle",
        concurrency_limit=GENERATE_CONCURRENCY,
        concurrency_id="generate",
    )
    gr.api(resolved(api_vote), api_name="vote")
    gr.api(resolved(api_leaderboard), api_name="leaderboard")

    def api_agreement(metric: str = "") -> dict:
        """ROUGE versus people over the stored votes: best-pick agreement and Kendall tau with 95% CIs.

        Args:
            metric: rouge1, rouge2, rougeL or rougeLsum; empty = the server's setting (rougeL by default)
        """
        try:
            return service.agreement_json(metric or None)
        except InputError as err:
            raise user_error(err) from err

    gr.api(api_agreement, api_name="agreement")


# ---------------------------------------------------------------------------- fairness


def request_client(request: Any) -> str:
    """The client address of a queued request (its peer, or the proxy's X-Forwarded-For)."""
    peer = getattr(getattr(request, "client", None), "host", None)
    headers = getattr(request, "headers", None) or {}
    return client_address(peer, headers.get("x-forwarded-for"))


def limit_queued_per_client(demo: gr.Blocks, limit: int, concurrency_id: str = "generate") -> None:
    """Refuse a client's ``concurrency_id`` job while it already has ``limit`` queued or running.

    gradio has no per-client bound, so the queue's ``push`` (where gradio itself refuses a full
    queue) is wrapped: the count is read from the queue's own events each time, so nothing can
    drift when a job ends, fails or is cancelled. The refusal is an HTTP 400 whose message the
    page shows as is (a 503 would show only gradio's generic "busy" text).
    """
    from gradio import route_utils

    queue_ = demo._queue
    push = queue_.push
    checking = asyncio.Lock()  # check and enqueue as one step: two quick calls can't both slip in

    def held_by(client: str) -> int:
        waiting = queue_.event_queue_per_concurrency_id.get(concurrency_id)
        events = list(waiting.queue) if waiting is not None else []
        events += [e for job in queue_.active_jobs if job for e in job]
        return sum(
            1 for e in events if e.concurrency_id == concurrency_id and request_client(e.request) == client
        )

    async def limited_push(body: Any, request: Any, username: str | None) -> tuple[bool, Any, str]:
        try:
            fn = route_utils.get_fn(demo, None, body)
        except Exception:  # noqa: BLE001 - gradio's own push answers a bad request
            return await push(body, request, username)
        if fn.concurrency_id != concurrency_id:
            return await push(body, request, username)
        async with checking:
            if held_by(request_client(request)) >= limit:
                logger.info("refused a %s job: its client already holds %d", concurrency_id, limit)
                return False, TOO_MANY.format(limit=limit), "error"
            return await push(body, request, username)

    queue_.push = limited_push  # type: ignore[method-assign]


TOO_MANY = (
    "You already have {limit} summaries being generated or waiting; this server is shared, so "
    "please wait for one of them to finish, then try again."
)


# ---------------------------------------------------------------------------- the page


def build_demo(service: ArenaService) -> gr.Blocks:
    """The whole page over ``service``, whose models may still be loading; nothing is launched.

    The models' status (banner and column headers) is what it is at build time, refreshed by
    each page load: a visitor who arrives during the startup load sees "loading", then the
    real status as soon as the models are there.
    """
    statuses = service.model_status()
    # Vote exports are copied into gradio's cache; sweep files older than an hour, every hour.
    with gr.Blocks(title="Dialogue-summary arena", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(view.page_intro(service.config.preset), elem_id="page-intro")
        banner = gr.Markdown(
            view.preset_banner(service.config, statuses, service.examples_error), elem_id="preset-banner"
        )
        how_to = view.readme_section(view.REAL_MODELS_SECTION)
        if service.config.preset != "flan-t5-base" and how_to:
            with gr.Accordion("How to get the real models (README: Train your own)", open=False):
                gr.Markdown(how_to, elem_id="real-models")
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                headers = compare_tab(service, statuses)
            with gr.Tab("Benchmark", id="benchmark") as tab:
                benchmark_tab(service, tab)
            with gr.Tab("Human evaluation", id="human"):
                human_tab(service, demo)
            with gr.Tab("Models", id="models") as tab:
                models_tab(service, tab)
        register_api(service)

        def refresh_status() -> dict[Any, Any]:
            """The models' status, once the startup load is over (or the wait for it is)."""
            now = service.model_status(wait_s=service.load_wait_s)
            return {
                banner: view.preset_banner(service.config, now, service.examples_error),
                **{header: view.column_header(name, now[name]) for name, header in headers.items()},
            }

        demo.load(refresh_status, None, [banner, *headers.values()], show_progress="hidden", **PRIVATE)
    return demo


THEME = gr.themes.Soft(
    primary_hue="orange",
    secondary_hue="blue",
    neutral_hue="slate",
    # System fonts: the default theme fetches Google Fonts, which an offline machine can't reach.
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "DejaVu Sans", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "DejaVu Sans Mono", "monospace"],
).set(
    block_label_background_fill="*neutral_100",
    block_label_text_color="*neutral_600",
    block_title_background_fill="*neutral_100",
    block_title_text_color="*neutral_600",
)
CSS = """
.model-column { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px; }
#preset-banner { font-size: 0.9em; }
#random-example { align-self: flex-end; max-height: 44px; margin-bottom: 8px; }
#compare-notice, #pick-note, #reveal { min-height: 0; }
/* overlap highlights: flow like text and break between words (gradio's default breaks anywhere) */
.model-column .textfield { display: block !important; word-break: normal !important; overflow-wrap: anywhere; }
.model-column .token-container, .model-column .token { display: inline !important; }
.model-column .token.highlighted { margin: 0 !important; padding: 1px 0 !important; }
"""


def main() -> None:
    """Serve the page while the configured preset's models load (what ``python app.py`` and the
    Space run): the first page does not wait for them, the requests that need them do."""
    logging.basicConfig(
        level=os.environ.get("ARENA_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = load_config()
    ensure_offline_if_unreachable(config)  # before any model load: never wait on an unreachable Hub
    demo = build_demo(ArenaService.start(config))
    demo.queue(default_concurrency_limit=LIGHT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    limit_queued_per_client(demo, QUEUED_PER_CLIENT)
    # server_name / server_port unset: gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
    # run_history=False: pasted dialogues are not kept in the visitor's browser storage.
    # max_file_size: the app takes no files, but gradio's /gradio_api/upload route is always
    # open; without a cap anyone could fill the Space's disk through it.
    demo.launch(theme=THEME, css=CSS, footer_links=["api"], run_history=False, max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    main()
