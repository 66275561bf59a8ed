"""What the app does, independent of Gradio: compare, battle, vote, leaderboard, reports.

``app.py`` only wires these methods to components and named API endpoints, so the UI and
the API share one code path (and one set of input checks, :mod:`core.inputs`). Every
user-facing failure is an :class:`~core.inputs.InputError` whose message can be shown as is.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.agreement import AgreementReport, agreement, check_metric, detail_rows
from core.battles import Battle, BattleError, BattleStore, FairDraw
from core.config import MODEL_LABELS, MODEL_NAMES, ArenaConfig, GenerationSettings
from core.data import DataError, Dialogue, find_dialogue, load_split
from core.evaluation import build_report, score_table
from core.inputs import (
    InputError,
    anonymous_session_id,
    clean_dialogue,
    join_references,
    parse_choice,
    parse_ranking,
    parse_references,
    parse_settings,
    parse_whole_number,
)
from core.leaderboard import standings
from core.metrics import overlap_spans, rouge
from core.prompt import clean_text
from core.reports import normalise_report, read_report
from core.summaries import Summary, SummaryCache
from core.votes import DuplicateVoteError, Vote, VoteStore, VoteStoreError, check_choice_and_ranking

# core.models and core.generation import torch and transformers (~2.5 s): the page is served
# without them, and the background model load (ModelLoad) imports them (python -m bench, P6).
if TYPE_CHECKING:
    from core.models import ModelSet

__all__ = ["FRESH_EVAL_RANGE", "MODEL_LOAD_WAIT_S", "ArenaService", "InputError", "ModelLoad", "ModelResult"]

logger = logging.getLogger(__name__)

EXAMPLE_SPLITS: tuple[str, ...] = ("test", "validation")  # held-out first: training never saw it
FRESH_EVAL_RANGE = (1, 50)  # a fresh evaluation from the UI is bounded: it shares the CPU with users
# A request that needs the models while they are still loading (the page is served before they
# are: README, Performance, P6) waits at most this long, then is told to try again.
MODEL_LOAD_WAIT_S = 120.0
# A battle's dialogues drawn before an empty summary is an error: a model that is silent on most
# dialogues (or settings that leave no room to write) should say so, not be retried forever.
BATTLE_DIALOGUE_TRIES = 3
EMPTY_SUMMARY = "empty summary"


@dataclass(frozen=True)
class ModelResult:
    """One model's column of a comparison."""

    model: str
    summary: str
    rouge: dict[str, float] | None
    seconds: float
    error: str | None = None
    input_tokens: int = 0
    truncated_tokens: int = 0
    cached: bool = False
    spans: list[tuple[str, str | None]] = field(default_factory=list)
    timed_out: bool = False  # the time budget cut generation: ``summary`` is what it had so far
    batched_with: tuple[str, ...] = ()  # models timed together in the same generate call

    def as_json(self) -> dict[str, Any]:
        """The ``/compare`` shape of one model (plus ``truncated_tokens`` and ``timed_out``)."""
        return {
            "summary": self.summary,
            "rouge": self.rouge,
            "seconds": round(self.seconds, 4),
            "error": self.error,
            "truncated_tokens": self.truncated_tokens,
            "timed_out": self.timed_out,
        }


# ---------------------------------------------------------------------------- the startup load


class ModelLoad:
    """A model set loading in a background thread, so that the page can be served meanwhile.

    :meth:`wait` is what a request that needs the models calls (bounded; a clear
    :class:`InputError` when the time is up or the load failed); :meth:`state` is what the
    page's status shows without waiting.
    """

    def __init__(self, load: Callable[[], ModelSet]) -> None:
        self._load = load
        self._done = threading.Event()
        self._models: ModelSet | None = None
        self._error: Exception | None = None
        self._started = time.perf_counter()
        self._seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="arena-model-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._models = self._load()
        except Exception as err:  # kept, and reported to every request that waits for the models
            logger.exception("loading the models failed")
            self._error = err
        finally:
            self._seconds = time.perf_counter() - self._started
            self._done.set()

    @property
    def seconds(self) -> float:
        """How long the load took, or has taken so far."""
        return self._seconds if self._seconds is not None else time.perf_counter() - self._started

    def finished(self, timeout_s: float = 0.0) -> bool:
        """Whether the load has ended (loaded or failed), waiting up to ``timeout_s`` for it."""
        return self._done.wait(timeout_s) if timeout_s > 0 else self._done.is_set()

    def state(self) -> str | None:
        """``None`` once loaded; else the line every model's status shows (loading, or why not)."""
        if not self._done.is_set():
            return f"loading ({self.seconds:.0f} s so far)"
        if self._models is None:
            return f"unavailable: loading the models failed: {type(self._error).__name__}: {self._error}"
        return None

    def wait(self, timeout_s: float) -> ModelSet:
        """The loaded set, waiting up to ``timeout_s``; :class:`InputError` if it is not there by then."""
        if not self._done.wait(timeout_s):
            raise InputError(
                f"the models are still loading ({self.seconds:.0f} s so far); please try again in a moment"
            )
        if self._models is None:
            raise InputError(f"the models could not be loaded ({type(self._error).__name__}: {self._error})")
        return self._models


# ---------------------------------------------------------------------------- the service


class ArenaService:
    """The app's state (models, caches, battles, votes) and every action on it."""

    def __init__(
        self,
        config: ArenaConfig,
        model_set: ModelSet | ModelLoad,
        *,
        cache: SummaryCache | None = None,
        battles: BattleStore | None = None,
        votes: VoteStore | None = None,
        rng: random.Random | None = None,
        vote_sync: Any = None,
        load_wait_s: float = MODEL_LOAD_WAIT_S,
    ) -> None:
        """``model_set``: loaded, or a :class:`ModelLoad` still running (requests wait for it)."""
        self.config = config
        self._loading = model_set if isinstance(model_set, ModelLoad) else None
        self._model_set = None if isinstance(model_set, ModelLoad) else model_set
        self.load_wait_s = load_wait_s
        self.cache = cache if cache is not None else SummaryCache()  # an empty cache is falsy
        self.battles = battles if battles is not None else BattleStore()  # so is an empty store
        self.votes = votes if votes is not None else VoteStore(config.votes_db)
        self._rng = rng or random.SystemRandom()
        self.vote_sync = vote_sync  # core.vote_sync.VoteSync: each stored vote is copied to the Hub
        self._salt = secrets.token_hex(8)
        self._examples: list[Dialogue] | None = None
        self._examples_error: str | None = None
        self._examples_lock = threading.Lock()
        self._export_dir = Path(tempfile.mkdtemp(prefix="arena-exports-"))
        self.model_names: tuple[str, ...] = config.model_names  # the three, then ARENA_ADAPTERS' names
        self._draw = FairDraw(self._rng)

    @classmethod
    def start(cls, config: ArenaConfig) -> ArenaService:
        """A service whose preset's models load in the background (failures are recorded per
        model, never raised); it answers at once, and what needs the models waits for them."""
        from core.vote_sync import start_vote_sync

        def load() -> ModelSet:
            start = time.perf_counter()
            # torch and transformers are imported here, on the load's thread: not before the page
            # (P6), and not by a request racing this import (a second thread importing
            # transformers meanwhile can find it half-initialized). Requests wait for this load
            # before they import the generation code, which is then already loaded.
            import core.generation  # noqa: F401 - what the requests run
            from core.models import load_model_set

            model_set = load_model_set(config)
            logger.info("models loaded in %.1f s (errors: %s)", time.perf_counter() - start, model_set.errors)
            return model_set

        loading = ModelLoad(load)  # first: everything below runs while the models load
        votes = VoteStore(config.votes_db)
        return cls(config, loading, votes=votes, vote_sync=start_vote_sync(config, votes))

    @property
    def model_set(self) -> ModelSet:
        """The loaded models; while the startup load runs, waits for it (up to ``load_wait_s``)."""
        if self._model_set is None:
            assert self._loading is not None
            self._model_set = self._loading.wait(self.load_wait_s)
        return self._model_set

    # -- status -------------------------------------------------------------------------

    def model_status(self, wait_s: float = 0.0) -> dict[str, str]:
        """One line per model: loaded, loaded with a warning, or why it is unavailable; while
        the startup load runs (after waiting up to ``wait_s`` for it), "loading (N s so far)"."""
        if self._model_set is None and self._loading is not None:
            self._loading.finished(wait_s)
            state = self._loading.state()
            if state is not None:
                return {name: state for name in self.model_names}
        return {name: self.model_set.status(name) for name in self.model_names}

    def session_id(self, raw: str | None) -> str:
        return anonymous_session_id(raw, self._salt)

    # -- examples -----------------------------------------------------------------------

    def examples(self) -> list[Dialogue]:
        """Dialogues to pick from (held-out test split first); empty when no data is reachable."""
        with self._examples_lock:
            if self._examples is None:
                self._examples, errors = [], []
                for split in EXAMPLE_SPLITS:
                    try:
                        self._examples = load_split(self.config.data, split)
                        break
                    except DataError as err:
                        errors.append(str(err))
                self._examples_error = None if self._examples else "; ".join(errors)
            return self._examples

    @property
    def examples_error(self) -> str | None:
        """Why there are no examples, when there are none."""
        self.examples()
        return self._examples_error

    def example(self, key: object) -> Dialogue:
        """The example whose id (or else topic) is ``key``."""
        if not isinstance(key, str) or not key.strip():
            raise InputError("pick a dialogue id or topic")
        found = find_dialogue(self.examples(), key.strip()[:200])
        if found is None:
            raise InputError(f"no DialogSum dialogue with id or topic {key.strip()[:80]!r}")
        return found

    def random_example(self, avoid: Sequence[str] = ()) -> Dialogue:
        """A random example, not one whose id is in ``avoid`` (unless no other is left)."""
        records = self.examples()
        if not records:
            raise InputError(f"no DialogSum examples available: {self._examples_error}")
        fresh = [r for r in records if r.id not in avoid] if avoid else records
        return self._rng.choice(fresh or records)

    # -- compare ------------------------------------------------------------------------

    def _result(self, summary: Summary, references: list[str], cached: bool) -> ModelResult:
        scores = rouge(summary.text, references) if summary.error is None and references else None
        spans = overlap_spans(summary.text, references) if references and summary.text else []
        return ModelResult(
            model=summary.model,
            summary=summary.text,
            rouge=scores,
            seconds=summary.seconds,
            error=summary.error,
            input_tokens=summary.input_tokens,
            truncated_tokens=summary.truncated_tokens,
            cached=cached,
            spans=spans,
            timed_out=summary.timed_out,
            batched_with=summary.batched_with,
        )

    def summaries(
        self, dialogue: str, settings: GenerationSettings, names: Sequence[str] | None = None
    ) -> Iterator[tuple[Summary, bool]]:
        """``(summary, from_cache)`` per model: cache hits first, then each model as it finishes."""
        names = self.model_names if names is None else names
        digest = _digest(dialogue)
        keys = {name: self._cache_key(name, digest, settings) for name in names}
        missing = []
        for name in names:
            hit = self.cache.get(keys[name])
            if hit is not None:
                yield hit, True
            else:
                missing.append(name)
        if missing:
            model_set = self.model_set  # first: waits for the startup load, which imports this
            from core.generation import summarize

            limit = self.config.generation_timeout_s
            for summary in summarize(model_set, dialogue, settings, names=missing, time_limit_s=limit):
                self.cache.put(keys[summary.model], summary)
                yield summary, False

    def compare_stream(
        self, dialogue: object, reference: object = "", settings: GenerationSettings | None = None
    ) -> Iterator[ModelResult]:
        """Validate the input, then yield each model's result as soon as it is ready."""
        text = clean_dialogue(dialogue)
        references = parse_references(reference)
        settings = settings or self.config.generation
        for summary, cached in self.summaries(text, settings):
            yield self._result(summary, references, cached)

    def compare(
        self,
        dialogue: object,
        reference: object = "",
        max_new_tokens: object = None,
        num_beams: object = None,
    ) -> dict[str, Any]:
        """The ``/compare`` endpoint: all three models' results as one JSON object."""
        settings = parse_settings(max_new_tokens, num_beams, self.config.generation)
        results = {r.model: r for r in self.compare_stream(dialogue, reference, settings)}
        return {
            "preset": self.config.preset,
            "models": {name: results[name].as_json() for name in self.model_names},
        }

    # -- battles ------------------------------------------------------------------------

    def new_battle(self, session_id: str = "api", settings: GenerationSettings | None = None) -> Battle:
        """A blind battle on a random example; the three models drawn must all answer.

        With more than three models (``ARENA_ADAPTERS``), three are drawn per battle, the
        least-drawn first (:class:`core.battles.FairDraw`), so each is shown equally often.
        A model that writes nothing on the dialogue drawn (one that emits only special tokens
        can) gets another dialogue, up to :data:`BATTLE_DIALOGUE_TRIES` in all: any random
        dialogue serves a battle, so the rater need not see an error. Errors and summaries cut
        at the time limit are not retried (another dialogue would fail the same way).
        """
        settings = settings or self.config.generation
        names = self._draw_models()
        tried: list[str] = []
        while True:
            example = self.random_example(avoid=tried)
            tried.append(example.id)
            texts, problems = self._battle_summaries(example.dialogue, settings, names)
            silent_only = all(problem == EMPTY_SUMMARY for problem in problems.values())
            if not problems or not silent_only or len(tried) >= BATTLE_DIALOGUE_TRIES:
                break
            logger.info("battle: %s on dialogue %s; drawing another", problems, example.id)
        if problems:
            failures = "; ".join(f"{MODEL_LABELS[model]}: {problem}" for model, problem in problems.items())
            tries = f" ({len(tried)} dialogues drawn, none summarized by all)" if silent_only else ""
            raise InputError("A blind battle needs all three models; " + failures + tries)
        return self.battles.open(
            dialogue_id=example.id,
            dialogue=example.dialogue,
            reference=join_references(example.references),
            summaries=texts,
            settings=settings.as_generate_kwargs(),
            preset=self.config.preset,
            session_id=session_id,
            references=example.references,
            # Scored now, on the summaries shown: the vote stores them for core.agreement.
            rouge={m: rouge(t, example.references) for m, t in texts.items()} if example.references else None,
        )

    def _battle_summaries(
        self, dialogue: str, settings: GenerationSettings, names: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Each drawn model's summary of ``dialogue``, and what makes any unfit for a blind battle."""
        texts: dict[str, str] = {}
        problems: dict[str, str] = {}
        for summary, _ in self.summaries(dialogue, settings, names=names):
            texts[summary.model] = summary.text
            if summary.error:
                problems[summary.model] = summary.error
            elif not summary.text.strip():
                problems[summary.model] = EMPTY_SUMMARY
            elif summary.timed_out:
                problems[summary.model] = "cut at the time limit (a blind battle compares finished summaries)"
        return texts, problems

    @staticmethod
    def battle_json(battle: Battle) -> dict[str, Any]:
        """The ``/battle`` shape: what a rater may see before voting (no model names)."""
        return {
            "token": battle.token,
            "dialogue_id": battle.dialogue_id,
            "dialogue": battle.dialogue,
            "reference": battle.reference,
            "summaries": battle.letter_summaries(),
        }

    def vote(self, token: object, choice: object, ranking: object = None) -> tuple[Battle, Vote]:
        """Record one vote for the battle named by ``token``; the token is used up.

        The choice and ranking are checked before the token is touched, so a malformed vote
        does not cost the rater their battle; if storing fails, the battle is reopened.
        """
        letter = parse_choice(choice)
        letters = parse_ranking(ranking)
        try:
            check_choice_and_ranking(letter, letters)
        except ValueError as err:
            raise InputError(str(err)) from err
        try:
            battle = self.battles.take(token)
        except BattleError as err:
            raise InputError(str(err)) from err
        mapping = battle.revealed()
        vote = Vote(
            battle_id=battle.battle_id,
            dialogue_id=battle.dialogue_id,
            order_shown=battle.order,
            choice=letter,
            ranking=tuple(mapping[x] for x in letters) if letters else None,
            settings=battle.settings,
            preset=battle.preset,
            session_id=battle.session_id,
            rouge=battle.rouge,
            summaries=dict(battle.summaries),
            references=battle.references or None,
        )
        try:
            stored = self.votes.add(vote)
        except DuplicateVoteError as err:
            raise InputError("this battle already has a vote") from err
        except (VoteStoreError, ValueError) as err:
            self.battles.restore(battle)
            logger.error("vote not stored: %s", err)
            raise InputError(f"the vote could not be stored, please try again ({err})") from err
        if self.vote_sync is not None:
            self.vote_sync.record(stored)
        return battle, stored

    def vote_json(self, token: object, choice: object, ranking: object = None) -> dict[str, Any]:
        """The ``/vote`` shape: ``{"ok": true, "revealed": {"A": model, ...}}``."""
        battle, _ = self.vote(token, choice, ranking)
        return {"ok": True, "revealed": battle.revealed()}

    def leaderboard(self) -> list[dict[str, Any]]:
        """The ``/leaderboard`` shape, for the live preset's votes, strongest first."""
        try:
            votes = self.votes.all(preset=self.config.preset)
        except VoteStoreError as err:
            raise InputError(f"the votes database is unavailable: {err}") from err
        return [row.as_json() for row in standings(votes, self.model_names)]

    def _draw_models(self) -> tuple[str, ...]:
        """The three models of the next battle (all three when there are only three)."""
        if not self._draw.seeded:
            try:
                self._draw.seed([v.order_shown for v in self.votes.all(preset=self.config.preset)])
            except VoteStoreError as err:  # the vote will fail and say so; the draw need not
                logger.warning("battle draw starts without stored counts: %s", err)
                self._draw.seed([])
        working = [n for n in self.model_names if n in self.model_set.models]
        # Fewer than three working: draw from all, so the battle's error names the broken ones.
        return self._draw.draw(working if len(working) >= 3 else self.model_names)

    def agreement(self, metric: object = None) -> AgreementReport:
        """ROUGE against people on the live preset's votes (``metric``: default from the config)."""
        chosen = (
            metric.strip() if isinstance(metric, str) and metric.strip() else self.config.agreement_metric
        )
        try:
            check_metric(chosen)
            votes = self.votes.all(preset=self.config.preset)
        except ValueError as err:
            raise InputError(str(err)) from err
        except VoteStoreError as err:
            raise InputError(f"the votes database is unavailable: {err}") from err
        return agreement(votes, chosen)

    def agreement_json(self, metric: object = None) -> dict[str, Any]:
        """The ``/agreement`` shape (see :meth:`core.agreement.AgreementReport.as_json`)."""
        return self.agreement(metric).as_json()

    def vote_detail(self, battle_id: object, metric: object = None) -> dict[str, Any]:
        """One stored vote opened for reading: dialogue, references and the summaries as shown."""
        if not isinstance(battle_id, str) or not battle_id.strip():
            raise InputError("pick a vote to open")
        chosen = metric if isinstance(metric, str) and metric else self.config.agreement_metric
        try:
            vote = self.votes.get(battle_id.strip()[:64])
        except VoteStoreError as err:
            raise InputError(f"the votes database is unavailable: {err}") from err
        if vote is None:
            raise InputError(f"no stored vote for battle {battle_id.strip()[:64]!r}")
        try:
            dialogue = self.example(vote.dialogue_id).dialogue
        except InputError:
            dialogue = f"(dialogue {vote.dialogue_id} is not in the loaded DialogSum split)"
        return {
            "vote": vote,
            "dialogue": dialogue,
            "references": list(vote.references or ()),
            "rows": detail_rows(vote, chosen, MODEL_LABELS),
        }

    def export_votes_csv(self) -> str:
        """Write every vote to a fresh CSV file in a private directory; return its path."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self._export_dir / f"arena-votes-{stamp}.csv"
        try:
            path.write_text(self.votes.to_csv(), encoding="utf-8")
        except VoteStoreError as err:
            raise InputError(f"the votes database is unavailable: {err}") from err
        for old in sorted(self._export_dir.glob("arena-votes-*.csv"))[:-5]:
            old.unlink(missing_ok=True)  # keep the directory small
        return str(path)

    # -- benchmark ----------------------------------------------------------------------

    def benchmark_report(self) -> dict[str, Any] | None:
        """The live preset's evaluation report (``train.evaluate``), normalised; ``None`` if absent."""
        return read_report(self.config.report_dir)

    def fresh_evaluation(
        self,
        n: object,
        progress: Callable[[float, str], None] | None = None,
        chunk: int = 4,
    ) -> dict[str, Any]:
        """Evaluate the three models on the first ``n`` held-out examples (bounded), now.

        Generated by the same cached, batched loop as ``python -m train.evaluate``
        (:func:`core.generation.summarize_all`, through this app's summary cache, so a later
        Compare on one of these dialogues answers at once), scored the same way
        (``core.evaluation``: paired bootstrap 95% CIs, baselines, improvements in pp), and
        returned in :meth:`benchmark_report`'s shape plus ``errors`` for models that failed.
        ``progress(fraction, description)`` follows the loop's batches.
        """
        lo, hi = FRESH_EVAL_RANGE
        count = parse_whole_number("number of dialogues", n, FRESH_EVAL_RANGE)
        if count is None:
            raise InputError(f"number of dialogues must be a whole number from {lo} to {hi}")
        records = [r for r in self.examples() if r.references][:count]
        if not records:
            raise InputError(f"no labelled DialogSum examples available: {self._examples_error}")
        settings = self.config.generation
        digests = [_digest(r.dialogue) for r in records]

        def advance(done: int, total: int) -> None:
            if progress:
                progress(done / total if total else 1.0, f"dialogues: {done} of {total} summarized")

        model_set = self.model_set  # first: waits for the startup load, which imports this
        from core.generation import summarize_all

        result = summarize_all(
            model_set, [r.dialogue for r in records], settings, MODEL_NAMES,
            cache=self.cache, key=lambda name, i: self._cache_key(name, digests[i], settings),
            batch_size=chunk, progress=advance, time_limit_s=self.config.generation_timeout_s,
        )  # fmt: skip
        if progress:
            progress(1.0, "scoring")
        errors = {name: messages[-1] for name, messages in result.errors.items()}
        served = {name: texts for name, texts in result.texts.items() if name not in errors}
        table = score_table(records, served)
        summary = build_report(table, preset=self.config.preset, split=f"first {len(records)} held-out")
        report = normalise_report(summary, source="fresh evaluation")
        report["errors"] = errors
        return report

    def _cache_key(self, name: str, digest: str, settings: GenerationSettings) -> tuple:
        return SummaryCache.key(self.config.preset, name, digest, settings)


def _digest(dialogue: str) -> str:
    """What the summary cache keys a dialogue by: a digest, so that a pasted 100,000-character
    dialogue is not held once per cache entry."""
    return hashlib.sha256(clean_text(dialogue).strip().encode("utf-8")).hexdigest()
