"""User input (UI fields and API arguments) parsed and checked once, for the UI and the API alike.

Every failure is an :class:`InputError` whose message can be shown to the user as is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence

from core.battles import LETTERS
from core.config import MAX_NEW_TOKENS_RANGE, NUM_BEAMS_RANGE, GenerationSettings
from core.prompt import clean_text

MAX_REFERENCE_CHARS = 20_000
MAX_CHOICE_CHARS = 32
_REFERENCE_SEPARATOR = re.compile(r"\n\s*\n")


class InputError(ValueError):
    """The request cannot be served as given; the message tells the user what to change."""


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


def parse_whole_number(name: str, value: object, bounds: tuple[int, int]) -> int | None:
    """A whole number within ``bounds`` (inclusive) from a UI field or API argument; ``None`` if unset.

    Accepts ints, integral floats (gradio's Number) and numeric strings; anything else is an
    :class:`InputError` naming ``name`` and the allowed range.
    """
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
    tokens = parse_whole_number("max_new_tokens", max_new_tokens, MAX_NEW_TOKENS_RANGE)
    beams = parse_whole_number("num_beams", num_beams, NUM_BEAMS_RANGE)
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


def client_address(peer: str | None, forwarded_for: str | None = None) -> str:
    """The address a request comes from, for per-client limits.

    Behind a reverse proxy (a Space, nginx on the same host) every request arrives from the
    proxy's loopback or private address, and the proxy appends the real client to
    ``X-Forwarded-For``: its *last* entry is the one the proxy wrote (earlier ones are whatever
    the client sent, so they are never trusted). A peer on a public address is the client.
    """
    if not peer:
        return "unknown"
    try:
        direct = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if forwarded_for and (direct.is_loopback or direct.is_private):
        last = forwarded_for.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return peer
    return peer
