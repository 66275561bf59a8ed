"""Reading what a training run leaves beside its weights (``arena.json``), and where things are.

The training scripts write ``arena.json`` and a model card (``train/metadata.py``); the app
only reads them. Both sides use these names and readers, so the app never imports the
training code. Paths are recorded *portably* (relative to the project when they live inside
it) so a shipped checkpoint never carries one machine's absolute paths.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.config import PROJECT_ROOT, is_local_path

logger = logging.getLogger(__name__)

ARENA_FILE = "arena.json"
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin")


def portable_location(location: str) -> str:
    """A hub id as is; a local path relative to the project (or its parent) when possible.

    ``/home/me/arena/checkpoints/mini/original`` becomes ``checkpoints/mini/original`` and the
    shared data copy ``../shared/dialogsum``; paths elsewhere keep their last two components.
    """
    if not is_local_path(location):
        return location
    path = Path(location).expanduser()
    if not path.is_absolute():
        return path.as_posix()
    resolved = path.resolve()
    for root, prefix in ((PROJECT_ROOT, ""), (PROJECT_ROOT.parent, "../")):
        try:
            return prefix + resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return Path(*resolved.parts[-2:]).as_posix()


def weights_size_bytes(directory: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``/``*.bin``) directly in ``directory``."""
    return sum(
        p.stat().st_size for p in Path(directory).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )


def read_metadata(directory: str | Path) -> dict[str, Any] | None:
    """The ``arena.json`` of a checkpoint directory, or ``None`` when there is none (or it is broken)."""
    path = Path(directory) / ARENA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, and bytes that aren't UTF-8
        logger.warning("ignoring unreadable %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else None
