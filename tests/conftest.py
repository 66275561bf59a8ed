"""Shared test fixtures: offline environment, tiny checkpoints, a running app on loopback.

Fixture names are part of the test suite's interface (other test modules rely on them):

* ``data_dir``         - local DialogSum directory (str); tests skip when it is absent
* ``tiny_checkpoints`` - ``{"original"|"full"|"lora": path}`` of tiny random T5 checkpoints
* ``tmp_votes_db``     - path (str) of a fresh, not yet created SQLite votes file
* ``app_server``       - a running ``python app.py`` on tiny models (:class:`AppServer`)
* ``app_url``          - its base URL, e.g. ``http://127.0.0.1:54321/``

:func:`start_app` launches further app processes (e.g. to test a restart) the same way.
"""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub or gradio: both read these once at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.app_process import AppProcess, free_port, launch_app
from bench.fixtures import build_tiny_checkpoints, tiny_app_env
from core.config import default_data_source

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_START_TIMEOUT_S = 180.0  # generous: CI machines are small and shared; the app itself needs < 20 s


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The local DialogSum directory (``../shared/dialogsum``); skip when it is not there."""
    source = default_data_source()
    if not Path(source).is_dir():
        pytest.skip(f"local DialogSum copy not found (got {source!r}); tests never download it")
    return source


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> dict[str, str]:
    """Tiny random T5 ``original``/``full``/``lora`` checkpoints, built once per session."""
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    return build_tiny_checkpoints(root, data_dir)


@pytest.fixture
def tmp_votes_db(tmp_path: Path) -> str:
    """A path for a fresh SQLite votes database (the file does not exist yet)."""
    return str(tmp_path / "votes.sqlite")


@dataclass
class AppServer(AppProcess):
    """A ``python app.py`` process serving the tiny checkpoints on loopback."""

    votes_db: str = ""
    checkpoints: str = ""


def app_env(tiny: dict[str, str], votes_db: str, checkpoints: str, **extra: str) -> dict[str, str]:
    """Environment additions for an app process serving the tiny checkpoints."""
    env = tiny_app_env(tiny, checkpoints)
    env.update(
        ARENA_VOTES_DB=votes_db,
        ARENA_MAX_NEW_TOKENS="24",  # tiny random models babble to the cap; keep each call short
        OMP_NUM_THREADS="1",  # CI machines are small and shared: no thread oversubscription
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_app(
    tiny: dict[str, str],
    votes_db: str,
    checkpoints: str,
    log_dir: Path,
    timeout_s: float = APP_START_TIMEOUT_S,
    **extra_env: str,
) -> AppServer:
    """Launch ``python app.py`` on a free loopback port and wait until it serves its page."""
    port = free_port()
    app = launch_app(log_dir / f"app-{port}.log", port, **app_env(tiny, votes_db, checkpoints, **extra_env))
    server = AppServer(
        app.port, app.process, app.log_path, app.started, votes_db=votes_db, checkpoints=checkpoints
    )
    try:
        server.wait_until_serving(timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def app_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: dict[str, str]
) -> Iterator[AppServer]:
    """One app process for the whole session, on tiny models and a temporary votes DB."""
    root = tmp_path_factory.mktemp("app")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    server = start_app(tiny_checkpoints, str(root / "votes.sqlite"), str(checkpoints), root / "logs")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app_url(app_server: AppServer) -> str:
    """Base URL of the session's running app (tiny models, temporary votes DB)."""
    return app_server.url


@pytest.fixture(scope="session")
def gradio_client(app_url: str) -> Iterator[object]:
    """A ``gradio_client.Client`` connected to the session's app."""
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
