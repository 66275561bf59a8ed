"""Reading what a training run leaves beside its weights (``arena.json``), and where things are.

The training scripts write ``arena.json`` and a model card (``train/metadata.py``); the app
only reads them. Both sides use these names and readers, so the app never imports the
training code. Paths are recorded *portably* (relative to the project when they live inside
it) so a shipped checkpoint never carries one machine's absolute paths.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import PROJECT_ROOT, is_local_path
from core.jsonfile import read_json_object

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
    # The path as given first: ../shared may be a symbolic link to a folder elsewhere.
    for candidate, root, prefix in (
        (path, PROJECT_ROOT, ""),
        (path, PROJECT_ROOT.parent, "../"),
        (resolved, PROJECT_ROOT.resolve(), ""),
        (resolved, PROJECT_ROOT.parent.resolve(), "../"),
    ):
        try:
            return prefix + candidate.relative_to(root).as_posix()
        except ValueError:
            continue
    return Path(*resolved.parts[-2:]).as_posix()


def weights_size_bytes(directory: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``/``*.bin``) directly in ``directory``."""
    return sum(
        p.stat().st_size for p in Path(directory).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )


def read_metadata(directory: str | Path) -> dict[str, Any] | None:
    """The ``arena.json`` of a checkpoint directory, or ``None`` when there is none (or it is broken).

    Metadata only decorates a page (cards, curves), so a broken file is a logged warning.
    """
    return read_json_object(Path(directory) / ARENA_FILE, on_error="warn")


# ---------------------------------------------------------------------------- Hub-hosted checkpoints

# What serving reads from a Hub repo: configs, arena.json, tokenizer and safetensors weights. The
# other weight formats a repo may carry (flan-t5-base also ships pytorch_model.bin, tf_model.h5
# and flax_model.msgpack, ~1 GB each) are never fetched unless the repo has no safetensors.
HUB_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.model", "*.txt", "README.md")
HUB_FALLBACK_PATTERNS: tuple[str, ...] = ("*.bin",)


class CheckpointNotFoundError(LookupError):
    """A Hub checkpoint that is neither in the local cache nor fetchable; the message names it."""


@dataclass(frozen=True)
class HubLocation:
    """A Hub model repo and optional revision, written ``owner/name`` or ``owner/name@rev``."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def hub_location(location: str) -> HubLocation | None:
    """The Hub repo named by ``location``, or ``None`` when it is a local path."""
    if is_local_path(location):
        return None
    repo_id, _, revision = location.strip().partition("@")
    return HubLocation(repo_id, revision or None)


def hub_offline() -> bool:
    """Whether huggingface_hub may not use the network (``HF_HUB_OFFLINE``, read live)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_error(hub: HubLocation, err: BaseException) -> CheckpointNotFoundError:
    """A one-line reason naming the repo; never the library's multi-line advice."""
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, HFValidationError):
        return CheckpointNotFoundError(
            f"{hub} is neither a local directory nor a Hub repo id (owner/name[@revision])"
        )
    if isinstance(err, RevisionNotFoundError):
        return CheckpointNotFoundError(f"Hub repo {hub.repo_id} has no revision {hub.revision!r}")
    if isinstance(err, RepositoryNotFoundError):
        return CheckpointNotFoundError(f"Hub repo {hub.repo_id} not found (or private without a token)")
    if isinstance(err, LocalEntryNotFoundError):
        why = "the Hub is offline (HF_HUB_OFFLINE=1)" if hub_offline() else "the Hub could not be reached"
        return CheckpointNotFoundError(f"Hub repo {hub} is not in the local Hub cache and {why}")
    first = (str(err).strip().splitlines() or [""])[0]
    return CheckpointNotFoundError(
        f"Hub repo {hub} could not be fetched: {type(err).__name__}: {first}"[:400]
    )


def fetch_checkpoint(location: str) -> Path:
    """The local directory holding ``location``'s files.

    A local path is returned as it is (its checks are the loader's). A Hub id (``owner/name``
    or ``owner/name@rev``) resolves to its snapshot in the Hub cache, downloading the files
    serving needs (:data:`HUB_PATTERNS`) when the Hub is reachable; offline it answers from the
    cache alone, at once. Raises :class:`CheckpointNotFoundError` naming the repo otherwise.
    """
    hub = hub_location(location)
    if hub is None:
        return Path(location).expanduser()
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=list(HUB_PATTERNS))
        )
        if not any(folder.glob("*.safetensors")) and not hub_offline():
            folder = Path(
                snapshot_download(
                    hub.repo_id, revision=hub.revision, allow_patterns=list(HUB_FALLBACK_PATTERNS)
                )
            )
    except Exception as err:  # every failure becomes one line naming the repo
        raise _hub_error(hub, err) from err
    return folder


def cached_checkpoint(location: str) -> Path | None:
    """``location``'s directory if it is on disk now (a local directory or a cached Hub snapshot);
    never touches the network."""
    hub = hub_location(location)
    if hub is None:
        path = Path(location).expanduser()
        return path if path.is_dir() else None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub.repo_id, revision=hub.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure just means "not cached here"
        return None


def location_metadata(location: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(arena.json, None)`` of a checkpoint, or ``(None, why it is absent)``.

    For a Hub repo the file is read with ``hf_hub_download`` (from the cache when offline), so
    a repo whose snapshot was filled by another tool still shows its training record.
    """
    hub = hub_location(location)
    if hub is None:
        meta = read_metadata(Path(location).expanduser())
        return (meta, None) if meta else (None, f"no training metadata ({ARENA_FILE}) in {location}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        path = Path(hf_hub_download(hub.repo_id, ARENA_FILE, revision=hub.revision))
    except RemoteEntryNotFoundError:
        return None, f"Hub repo {hub} has no {ARENA_FILE} (no training metadata)"
    except LocalEntryNotFoundError:  # offline, and the file is not cached
        if cached_checkpoint(location) is not None:
            return None, f"the cached snapshot of Hub repo {hub} has no {ARENA_FILE} (no training metadata)"
        return None, f"Hub repo {hub} is not in the local Hub cache: no training metadata to show"
    except Exception as err:  # noqa: BLE001 - metadata is optional; the page must not break
        return None, f"{ARENA_FILE} of Hub repo {hub} could not be read: {_hub_error(hub, err)}"
    meta = read_metadata(path.parent)
    return (meta, None) if meta else (None, f"{ARENA_FILE} of Hub repo {hub} is unreadable")
