"""One reader for the small JSON files the project keeps (configs, metadata, reports).

Callers differ only in what a broken file means to them, so that is an explicit argument:

* ``"raise"``: :class:`JsonFileError` (a ``ValueError``) naming the file; the caller turns it
  into its own error (a model that cannot load, a report the user is told about);
* ``"warn"``: log a warning and return ``None`` (optional metadata that must never stop a page);
* ``"ignore"``: return ``None`` silently (a best-effort hint).

A file that does not exist is ``None`` under every policy: "not there yet" is not "broken".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

OnError = Literal["raise", "warn", "ignore"]


class JsonFileError(ValueError):
    """A JSON file exists but cannot be used: unreadable, not JSON, or not a JSON object."""


def read_json_object(
    path: str | Path, *, on_error: OnError, what: str | None = None
) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when the file is absent.

    A file that cannot be read, is not valid UTF-8 JSON, or holds something other than an
    object is handled by ``on_error`` (see the module docstring). ``what`` names the file in
    messages (default: its path).
    """
    path = Path(path)
    if not path.is_file():
        return None
    name = what or str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, and bytes that aren't UTF-8
        return _fail(JsonFileError(f"{name} is unreadable: not valid JSON ({_describe(err)})"), on_error)
    if not isinstance(raw, dict):
        return _fail(JsonFileError(f"{name} is unreadable: expected a JSON object"), on_error)
    return raw


def _describe(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:400]


def _fail(err: JsonFileError, on_error: OnError) -> None:
    if on_error == "raise":
        raise err
    if on_error == "warn":
        logger.warning("ignoring %s", err)
    return None
