"""ROUGE with ``rouge_score``, following the conventions of the ``evaluate`` rouge metric.

``evaluate.load("rouge")`` fetches its script from the Hub, so it is not used at run time;
this module reproduces its defaults: ROUGE-1/2/L/Lsum F-measure, no stemming, raw strings
(``rouge_score``'s tokenizer lowercases and keeps ``[a-z0-9]`` runs, so ``#Person1#`` becomes
``person1``).

Several references: **per metric, the best F-measure over the references** (this is
``rouge_score``'s ``score_multi`` and what ``evaluate`` does for a list of references).
That rule lives only in :func:`rouge`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
MULTI_REFERENCE_RULE = "best F-measure per metric over the references (rouge_score.score_multi)"
ROUGE_CONVENTIONS = (
    "ROUGE F-measure via rouge_score (same conventions as evaluate's rouge: no stemming, "
    f"lowercased [a-z0-9] tokens); several references: {MULTI_REFERENCE_RULE}"
)

_WORD = re.compile(r"\S+")


@lru_cache(maxsize=2)  # cache: a scorer is stateless and cheap to share
def _scorer(use_stemmer: bool) -> RougeScorer:
    # Imported here, not with the module: rouge_score imports nltk (~0.4 s), and the app's first
    # page, which imports this module for its names, scores nothing (python -m bench, P6).
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)


def rouge(
    prediction: str, references: Sequence[str] | str, use_stemmer: bool = False
) -> dict[str, float] | None:
    """ROUGE-1/2/L/Lsum F-measure of ``prediction``; ``None`` when there is no reference.

    An absent reference means "no score", not zero, so callers can show it as absent.
    """
    refs = [references] if isinstance(references, str) else list(references)
    refs = [r for r in refs if r and r.strip()]
    if not refs:
        return None
    scores = _scorer(use_stemmer).score_multi(refs, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


def overlap_spans(summary: str, references: Sequence[str] | str) -> list[tuple[str, str | None]]:
    """Split ``summary`` into spans for highlighting: words found in a reference are labelled.

    A word counts as overlapping when any of its ROUGE tokens (same tokenization as the
    scores) occurs in any reference; whitespace is kept so the spans join back to the text.
    Returns ``(text, "overlap" | None)`` pairs with neighbours of the same label merged.
    """
    from rouge_score import tokenize  # lazy, as in _scorer

    refs = [references] if isinstance(references, str) else list(references)
    vocabulary = {tok for ref in refs for tok in tokenize.tokenize(ref, None)}
    spans: list[tuple[str, str | None]] = []
    position = 0
    for match in _WORD.finditer(summary):
        gap = summary[position : match.start()]
        if gap and spans:  # whitespace joins the span before it, so highlights stay whole
            spans[-1] = (spans[-1][0] + gap, spans[-1][1])
        elif gap:
            spans.append((gap, None))
        tokens = tokenize.tokenize(match.group(), None)
        label = "overlap" if tokens and any(t in vocabulary for t in tokens) else None
        spans.append((match.group(), label))
        position = match.end()
    if position < len(summary):
        tail = summary[position:]
        spans[-1:] = [(spans[-1][0] + tail, spans[-1][1])] if spans else [(tail, None)]
    merged: list[tuple[str, str | None]] = []
    for text, label in spans:
        if merged and merged[-1][1] == label:
            merged[-1] = (merged[-1][0] + text, label)
        else:
            merged.append((text, label))
    return merged
