"""What a summary is and the app's cache of them: types the page and the service need without
loading torch (they are imported before the models load; :mod:`core.generation` makes them)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from core.config import GenerationSettings
from core.prompt import clean_text

MAX_INPUT_TOKENS = 512  # what the models were trained on (train/ truncates inputs here too)
MAX_DIALOGUE_CHARS = 200_000  # longer text is cut before tokenizing, so one paste can't stall a worker


@dataclass(frozen=True)
class Summary:
    """One model's answer for one dialogue."""

    model: str
    text: str
    seconds: float
    error: str | None = None
    input_tokens: int = 0
    truncated_tokens: int = 0
    batched_with: tuple[str, ...] = ()  # other models that ran in the same generate call
    truncated_chars: int = 0
    timed_out: bool = False  # the time budget ran out: ``text`` is what was generated so far


class SummaryCache:
    """A bounded, thread-safe LRU cache of summaries keyed by model, dialogue and settings.

    This is the one piece of shared mutable state the app keeps: a repeated click on the same
    dialogue with the same settings returns at once.
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self._entries: OrderedDict[tuple, Summary] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    @staticmethod
    def key(preset: str, model: str, dialogue: str, settings: GenerationSettings) -> tuple:
        return (preset, model, clean_text(dialogue).strip(), settings)

    def get(self, key: tuple) -> Summary | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: tuple, summary: Summary) -> None:
        if summary.error is not None or summary.timed_out:
            return  # errors and cut summaries are not cached: the next click retries
        with self._lock:
            self._entries[key] = summary
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def put_many(self, items: Sequence[tuple[Hashable, Summary]]) -> None:
        """Store several summaries (the :class:`BatchCache` protocol)."""
        for key, summary in items:
            self.put(key, summary)  # type: ignore[arg-type]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
