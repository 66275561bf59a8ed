"""What the app does, independent of Gradio: compare, battle, vote, leaderboard, reports.

``app.py`` only wires these functions to components and named API endpoints, so the UI and
the API share one code path (and one set of input checks). Every user-facing failure is an
:class:`InputError` whose message can be shown as is.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.battles import LETTERS, Battle, BattleError, BattleStore
from core.config import (
    MAX_NEW_TOKENS_RANGE,
    MODEL_LABELS,
    MODEL_NAMES,
    NUM_BEAMS_RANGE,
    ArenaConfig,
    GenerationSettings,
)
from core.data import DataError, Dialogue, find_dialogue, load_split
from core.evaluation import build_summary, score_table
from core.generation import (
    MAX_DIALOGUE_CHARS,
    MAX_INPUT_TOKENS,
    Summary,
    SummaryCache,
    summarize,
    summarize_many,
)
from core.leaderboard import standings
from core.metrics import ROUGE_TYPES, overlap_spans, rouge
from core.models import ModelSet
from core.prompt import clean_text
from core.votes import DuplicateVoteError, Vote, VoteStore, VoteStoreError

logger = logging.getLogger(__name__)

EXAMPLE_SPLITS: tuple[str, ...] = ("test", "validation")  # held-out first: training never saw it
MAX_REFERENCE_CHARS = 20_000
MAX_CHOICE_CHARS = 32
_REFERENCE_SEPARATOR = re.compile(r"\n\s*\n")


class InputError(ValueError):
    """The request cannot be served as given; the message tells the user what to change."""


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

    def as_json(self) -> dict[str, Any]:
        """The ``/compare`` shape of one model (plus ``truncated_tokens``)."""
        return {
            "summary": self.summary,
            "rouge": self.rouge,
            "seconds": round(self.seconds, 4),
            "error": self.error,
            "truncated_tokens": self.truncated_tokens,
        }


# ---------------------------------------------------------------------------- input checks


def clean_dialogue(dialogue: object) -> str:
    """The dialogue as the models will see it; :class:`InputError` when there is none."""
    if dialogue is None:
        dialogue = ""
    if not isinstance(dialogue, str):
        raise InputError(f"the dialogue must be text, got {type(dialogue).__name__}")
    text = clean_text(dialogue).strip()
    if not text:
        raise InputError("The dialogue is empty: paste a conversation or pick an example.")
    return text


def parse_references(reference: object) -> list[str]:
    """Reference summaries from the reference box: several are separated by a blank line."""
    if reference is None:
        return []
    if isinstance(reference, (list, tuple)):
        return [r for item in reference for r in parse_references(item)]
    if not isinstance(reference, str):
        raise InputError(f"the reference must be text, got {type(reference).__name__}")
    text = clean_text(reference)[:MAX_REFERENCE_CHARS].strip()
    return [part.strip() for part in _REFERENCE_SEPARATOR.split(text) if part.strip()]


def join_references(references: Sequence[str]) -> str:
    """The reference box text for several references (inverse of :func:`parse_references`).

    Duplicates are dropped: some DialogSum rows repeat a summary, and a repeat adds nothing
    to a best-over-references score.
    """
    unique = dict.fromkeys(" ".join(r.split()) for r in references if r.strip())
    return "\n\n".join(unique)


def _setting(name: str, value: object, bounds: tuple[int, int]) -> int | None:
    lo, hi = bounds
    message = f"{name} must be a whole number from {lo} to {hi}, got {value!r}"
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(message)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError as err:
            raise InputError(message) from err
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(message)
        value = int(value)
    if not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(message)
    return value


def parse_settings(
    max_new_tokens: object = None, num_beams: object = None, defaults: GenerationSettings | None = None
) -> GenerationSettings:
    """Generation settings from user input; unset values keep ``defaults``; out of range -> error."""
    defaults = defaults or GenerationSettings()
    tokens = _setting("max_new_tokens", max_new_tokens, MAX_NEW_TOKENS_RANGE)
    beams = _setting("num_beams", num_beams, NUM_BEAMS_RANGE)
    settings = GenerationSettings(
        max_new_tokens=tokens if tokens is not None else defaults.max_new_tokens,
        num_beams=beams if beams is not None else defaults.num_beams,
        min_new_tokens=defaults.min_new_tokens,
    )
    try:
        return settings.validate()
    except ValueError as err:
        raise InputError(str(err)) from err


def parse_choice(choice: object) -> str:
    """``"A"``/``"B"``/``"C"`` or ``"none"`` (also accepts lower case and "all bad")."""
    if not isinstance(choice, str) or len(choice) > MAX_CHOICE_CHARS:
        raise InputError('choice must be "A", "B", "C" or "none"')
    value = choice.strip()
    if value.upper() in LETTERS:
        return value.upper()
    if value.lower() in ("none", "all bad", "all_bad"):
        return "none"
    raise InputError(f'choice must be "A", "B", "C" or "none", got {value[:MAX_CHOICE_CHARS]!r}')


def parse_ranking(ranking: object) -> tuple[str, ...] | None:
    """A full ranking of the letters, best first (``"B>A>C"``, ``"BAC"``, ``["B","A","C"]``)."""
    if ranking is None or (isinstance(ranking, str) and not ranking.strip()):
        return None
    if isinstance(ranking, (list, tuple)):
        letters = [str(x).strip().upper() for x in ranking]
    elif isinstance(ranking, str) and len(ranking) <= MAX_CHOICE_CHARS:
        letters = [ch for ch in ranking.upper() if ch not in " ,>;"]
    else:
        raise InputError('ranking must order A, B and C, best first, e.g. "B>A>C"')
    if sorted(letters) != list(LETTERS):
        raise InputError('ranking must order A, B and C exactly once each, best first, e.g. "B>A>C"')
    return tuple(letters)


def anonymous_session_id(raw: str | None, salt: str) -> str:
    """A stable, non-reversible id for one browser session (or ``"api"`` when unknown)."""
    if not raw:
        return "api"
    return hashlib.sha256(f"{salt}:{raw}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- presentation


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def truncation_notice(results: Sequence[ModelResult], dialogue: str) -> str | None:
    """A sentence on how much of a long dialogue was cut, or ``None`` when nothing was."""
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


# ---------------------------------------------------------------------------- the service


class ArenaService:
    """The app's state (models, caches, battles, votes) and every action on it."""

    def __init__(
        self,
        config: ArenaConfig,
        model_set: ModelSet,
        *,
        cache: SummaryCache | None = None,
        battles: BattleStore | None = None,
        votes: VoteStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.model_set = model_set
        self.cache = cache if cache is not None else SummaryCache()  # an empty cache is falsy
        self.battles = battles if battles is not None else BattleStore()  # so is an empty store
        self.votes = votes if votes is not None else VoteStore(config.votes_db)
        self._rng = rng or random.SystemRandom()
        self._salt = secrets.token_hex(8)
        self._examples: list[Dialogue] | None = None
        self._examples_error: str | None = None
        self._examples_lock = threading.Lock()
        self._export_dir = Path(tempfile.mkdtemp(prefix="arena-exports-"))

    @classmethod
    def from_config(cls, config: ArenaConfig) -> ArenaService:
        """Load the preset's models (failures are recorded per model, never raised)."""
        from core.models import load_model_set

        start = time.perf_counter()
        model_set = load_model_set(config)
        logger.info("models loaded in %.1f s (errors: %s)", time.perf_counter() - start, model_set.errors)
        return cls(config, model_set)

    # -- status -------------------------------------------------------------------------

    def model_status(self) -> dict[str, str]:
        """One line per model: loaded, loaded with a warning, or why it is unavailable."""
        return {name: self.model_set.status(name) for name in MODEL_NAMES}

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

    def random_example(self) -> Dialogue:
        records = self.examples()
        if not records:
            raise InputError(f"no DialogSum examples available: {self._examples_error}")
        return self._rng.choice(records)

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
        )

    def summaries(
        self, dialogue: str, settings: GenerationSettings, names: Sequence[str] = MODEL_NAMES
    ) -> Iterator[tuple[Summary, bool]]:
        """``(summary, from_cache)`` per model: cache hits first, then each model as it finishes."""
        # Key on a digest: a pasted 100,000-character dialogue must not be held once per entry.
        digest = hashlib.sha256(clean_text(dialogue).strip().encode("utf-8")).hexdigest()
        keys = {name: SummaryCache.key(self.config.preset, name, digest, settings) for name in names}
        missing = []
        for name in names:
            hit = self.cache.get(keys[name])
            if hit is not None:
                yield hit, True
            else:
                missing.append(name)
        if missing:
            for summary in summarize(self.model_set, dialogue, settings, names=missing):
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
            "models": {name: results[name].as_json() for name in MODEL_NAMES},
        }

    # -- battles ------------------------------------------------------------------------

    def new_battle(self, session_id: str = "api", settings: GenerationSettings | None = None) -> Battle:
        """A blind battle on a random example; all three models must answer."""
        settings = settings or self.config.generation
        example = self.random_example()
        texts: dict[str, str] = {}
        failures = []
        for summary, _ in self.summaries(example.dialogue, settings):
            if summary.error is not None or not summary.text.strip():
                failures.append(f"{MODEL_LABELS[summary.model]}: {summary.error or 'empty summary'}")
            texts[summary.model] = summary.text
        if failures:
            raise InputError("A blind battle needs all three models; " + "; ".join(failures))
        return self.battles.open(
            dialogue_id=example.id,
            dialogue=example.dialogue,
            reference=join_references(example.references),
            summaries=texts,
            settings=settings.as_generate_kwargs(),
            preset=self.config.preset,
            session_id=session_id,
        )

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
        if letters is not None:
            if letter == "none":
                raise InputError('a full ranking contradicts "all bad"; send one or the other')
            if letters[0] != letter:
                raise InputError(f"the ranking puts {letters[0]} first but the best pick is {letter}")
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
        )
        try:
            stored = self.votes.add(vote)
        except DuplicateVoteError as err:
            raise InputError("this battle already has a vote") from err
        except (VoteStoreError, ValueError) as err:
            self.battles.restore(battle)
            logger.error("vote not stored: %s", err)
            raise InputError(f"the vote could not be stored, please try again ({err})") from err
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
        return [row.as_json() for row in standings(votes)]

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

        Scored exactly like ``python -m train.evaluate`` (``core.evaluation``: paired bootstrap
        95% CIs, baselines, improvements in pp) and returned in :meth:`benchmark_report`'s
        shape, plus ``errors`` for models that could not answer.
        """
        lo, hi = FRESH_EVAL_RANGE
        count = _setting("number of dialogues", n, FRESH_EVAL_RANGE)
        if count is None:
            raise InputError(f"number of dialogues must be a whole number from {lo} to {hi}")
        records = [r for r in self.examples() if r.references][:count]
        if not records:
            raise InputError(f"no labelled DialogSum examples available: {self._examples_error}")
        predictions: dict[str, list[str]] = {name: [] for name in MODEL_NAMES}
        errors: dict[str, str] = {}
        settings = self.config.generation
        for start in range(0, len(records), chunk):
            batch = records[start : start + chunk]
            if progress:
                progress(
                    start / len(records), f"dialogues {start + 1}-{start + len(batch)} of {len(records)}"
                )
            for results in summarize_many(self.model_set, [r.dialogue for r in batch], settings):
                for summary in results:
                    if summary.error:
                        errors[summary.model] = summary.error
                    predictions[summary.model].append(summary.text)
        if progress:
            progress(1.0, "scoring")
        served = {name: texts for name, texts in predictions.items() if name not in errors}
        table = score_table(records, served)
        summary = build_summary(table, preset=self.config.preset, split=f"first {len(records)} held-out")
        report = normalise_report(summary, source="fresh evaluation")
        report["errors"] = errors
        return report


# ---------------------------------------------------------------------------- benchmark

REPORT_FILE = "summary.json"
FRESH_EVAL_RANGE = (1, 50)  # a fresh evaluation from the UI is bounded: it shares the CPU with users


def _cell(value: Any) -> dict[str, Any] | None:
    """One metric cell of a report in any of the accepted spellings -> ``{mean, ci95}``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"mean": float(value), "ci95": None}
    if not isinstance(value, dict):
        return None
    mean = value.get("mean", value.get("value"))
    if not isinstance(mean, (int, float)):
        return None
    ci = value.get("ci95") or value.get("ci")
    if ci is None and isinstance(value.get("lo", value.get("low")), (int, float)):
        ci = [value.get("lo", value.get("low")), value.get("hi", value.get("high"))]
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci)):
        ci = None
    return {"mean": float(mean), "ci95": [float(ci[0]), float(ci[1])] if ci else None}


def _metrics(entry: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(entry, dict):
        return {}
    scores = entry.get("rouge", entry.get("metrics", entry))
    if not isinstance(scores, dict):
        return {}
    cells = {m: _cell(scores.get(m)) for m in ROUGE_TYPES}
    return {m: c for m, c in cells.items() if c is not None}


def _improvement(
    raw: dict[str, Any], name: str, metric: str, versus: str = "original"
) -> dict[str, Any] | None:
    """``{"mean", "ci95"}`` in pp of ``name`` over ``versus`` from a ``summary.json``, if given."""
    key = f"{name}_vs_{versus}"
    given = raw.get("improvement_pp", {})
    value = (
        given.get(key, {}).get(metric)
        if isinstance(given, dict) and isinstance(given.get(key), dict)
        else None
    )
    if not isinstance(value, (int, float)):
        return None
    cis = raw.get("improvement_ci95_pp", {})
    ci = cis.get(key, {}).get(metric) if isinstance(cis, dict) and isinstance(cis.get(key), dict) else None
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2
    return {"mean": float(value), "ci95": [float(ci[0]), float(ci[1])] if ok else None}


def normalise_report(raw: Any, source: str = "") -> dict[str, Any]:
    """A benchmark report (``summary.json`` of ``core.evaluation.build_summary``) in the UI's shape.

    ``{"source", "n", "split", "preset", "rows": [{"model", "label", "metrics": {metric:
    {"mean", "ci95", "delta_pp", "delta_ci95_pp"}}}], "lora_vs_full_pp": {metric: float}}``;
    models first, then baselines. Improvements (percentage points over the original) come from
    the report's ``improvement_pp`` when present, else from the difference of the means.
    """
    if not isinstance(raw, dict):
        raise InputError(f"{source or 'report'} is not a JSON object")
    rows: list[dict[str, Any]] = []
    models = raw.get("models", {})
    if isinstance(models, dict):
        for name in MODEL_NAMES:
            if name in models:
                rows.append({"model": name, "label": MODEL_LABELS[name], "metrics": _metrics(models[name])})
    base = next((r for r in rows if r["model"] == "original"), None)
    for row in rows:
        for metric, cell in row["metrics"].items():
            cell["delta_pp"] = cell["delta_ci95_pp"] = None
            if row is base or base is None:
                continue
            given = _improvement(raw, row["model"], metric)
            if given is not None:
                cell["delta_pp"], cell["delta_ci95_pp"] = given["mean"], given["ci95"]
            elif metric in base["metrics"]:
                cell["delta_pp"] = 100 * (cell["mean"] - base["metrics"][metric]["mean"])
    baselines = raw.get("baselines", {})
    if isinstance(baselines, dict):
        for name, entry in baselines.items():
            label = f"Baseline: {str(name).replace('_', ' ')}"
            rows.append({"model": f"baseline:{name}", "label": label, "metrics": _metrics(entry)})
    by_model = {r["model"]: r["metrics"] for r in rows}
    lora_vs_full = {}
    for metric in ROUGE_TYPES:
        given = _improvement(raw, "lora", metric, versus="full")
        if given is not None:
            lora_vs_full[metric] = given["mean"]
        elif metric in by_model.get("lora", {}) and metric in by_model.get("full", {}):
            lora_vs_full[metric] = 100 * (by_model["lora"][metric]["mean"] - by_model["full"][metric]["mean"])
    n = raw.get("n")
    return {
        "source": source,
        "n": int(n) if isinstance(n, (int, float)) else None,
        "split": str(raw.get("split", "")),
        "preset": str(raw.get("preset", "")),
        "rows": rows,
        "lora_vs_full_pp": lora_vs_full,
    }


def read_report(report_dir: str | Path) -> dict[str, Any] | None:
    """The normalised ``summary.json`` in ``report_dir``, or ``None`` when there is none yet."""
    import json

    path = Path(report_dir) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, and bytes that aren't UTF-8
        raise InputError(f"the evaluation report {path} is unreadable: {err}") from err
    return normalise_report(raw, source=str(path))
