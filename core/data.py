"""DialogSum loading: a local directory (``../shared/dialogsum`` layout) or a Hub data set.

Both layouts map to one record, :class:`Dialogue`: id, dialogue text, the list of human
reference summaries, and the topic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test", "unlabeled")


class DataError(RuntimeError):
    """A data file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Dialogue:
    """One DialogSum dialogue with all of its human summaries (may be empty: unlabeled)."""

    id: str
    dialogue: str
    references: tuple[str, ...]
    topic: str = ""

    @property
    def reference(self) -> str:
        """The first human summary, or an empty string."""
        return self.references[0] if self.references else ""


def _numbered(row: dict, stem: str) -> list[str]:
    """Values of ``stem``, ``stem1``, ``stem2``... in order, skipping blanks."""
    keys = [stem] if stem in row else []
    keys += sorted(
        (k for k in row if k.startswith(stem) and k[len(stem) :].isdigit()),
        key=lambda k: int(k[len(stem) :]),
    )
    return [str(row[k]).strip() for k in keys if row.get(k) and str(row[k]).strip()]


def record_from_row(row: dict, *, source: str, line: int | None = None) -> Dialogue:
    """Map one raw row (local or Hub layout) to a :class:`Dialogue`."""
    where = f"{source}:{line}" if line is not None else source
    dialogue = row.get("dialogue")
    if not isinstance(dialogue, str) or not dialogue.strip():
        raise DataError(f"{where}: row has no 'dialogue' text")
    ident = row.get("fname") or row.get("id")
    if not ident:
        raise DataError(f"{where}: row has neither 'fname' nor 'id'")
    topics = _numbered(row, "topic")
    return Dialogue(
        id=str(ident),
        dialogue=dialogue.strip(),
        references=tuple(_numbered(row, "summary")),
        topic=topics[0] if topics else "",
    )


def read_jsonl(path: Path) -> list[Dialogue]:
    """Read one local split file; errors name the file and line."""
    if not path.is_file():
        raise DataError(f"DialogSum file not found: {path}")
    records = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from err
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object per line")
                records.append(record_from_row(row, source=str(path), line=number))
    except UnicodeDecodeError as err:  # a corrupt file must be a DataError, like any other
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from err
    if not records:
        raise DataError(f"{path}: no dialogues in file")
    return records


def group_hub_rows(rows: Iterable[dict], *, source: str) -> list[Dialogue]:
    """Hub layout: the test split repeats each dialogue once per human summary; merge them.

    Rows are grouped by dialogue text (ids differ between the copies on some mirrors); the
    first id and topic are kept and the references accumulate in order.
    """
    merged: dict[str, Dialogue] = {}
    for number, row in enumerate(rows):
        record = record_from_row(dict(row), source=source, line=number)
        seen = merged.get(record.dialogue)
        if seen is None:
            merged[record.dialogue] = record
        else:
            extra = tuple(r for r in record.references if r not in seen.references)
            merged[record.dialogue] = Dialogue(seen.id, seen.dialogue, seen.references + extra, seen.topic)
    return list(merged.values())


def _load_hub(source: str, split: str) -> list[Dialogue]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a hard requirement
        raise DataError("the 'datasets' package is needed to read DialogSum from the Hub") from err
    try:
        rows = datasets.load_dataset(source, split=split)
    except Exception as err:
        raise DataError(f"could not load split {split!r} of {source!r}: {err}") from err
    return group_hub_rows(rows, source=f"{source}[{split}]")


@lru_cache(maxsize=16)  # cache: splits are read-only and reading a Hub split is slow
def _load_split_cached(source: str, split: str) -> tuple[Dialogue, ...]:
    path = Path(source).expanduser()
    if path.is_dir():
        jsonl = path / f"{split}.jsonl"
        if jsonl.is_file():
            return tuple(read_jsonl(jsonl))
        if any(path.glob(f"{split}*")):
            # A local snapshot of the Hub layout (csv/parquet/json files): let datasets read it.
            return tuple(_load_hub(str(path), split))
        raise DataError(f"DialogSum file not found: {jsonl}")
    if path.suffix == ".jsonl":
        return tuple(read_jsonl(path))
    if path.exists() or str(source).startswith((".", "/", "~")):
        raise DataError(f"DialogSum data path is not a directory: {path}")
    return tuple(_load_hub(source, split))


def load_split(source: str, split: str, limit: int | None = None) -> list[Dialogue]:
    """Load one DialogSum split from a local directory or a Hub id.

    ``source`` is a directory holding ``<split>.jsonl`` (the ``../shared/dialogsum`` layout),
    a single ``.jsonl`` file, or a Hub data set id such as ``knkarthick/dialogsum``.
    """
    if split not in SPLITS and not Path(source).suffix == ".jsonl":
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    records = list(_load_split_cached(str(source), split))
    logger.debug("loaded %d dialogues from %s [%s]", len(records), source, split)
    return records[:limit] if limit is not None else records


def find_dialogue(records: Iterable[Dialogue], key: str) -> Dialogue | None:
    """The record whose id equals ``key`` (exact), else the first whose topic matches it."""
    key = key.strip()
    records = list(records)
    for record in records:
        if record.id == key:
            return record
    lowered = key.lower()
    for record in records:
        if record.topic.lower() == lowered:
            return record
    return None
