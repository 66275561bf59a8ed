"""The page is served before the models are loaded: what needs them waits, bounded, and says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core import presentation as view
from core.config import PROJECT_ROOT, ArenaConfig, load_config
from core.inputs import InputError
from core.models import ModelSet, load_model_set
from core.service import ArenaService, ModelLoad
from core.votes import VoteStore

DIALOGUE = "#Person1#: Shall we meet at noon?\n#Person2#: Yes, at the station."
WAIT_S = 60.0  # far longer than the tiny models need; only a hang would reach it


@pytest.fixture(scope="module")
def app_env(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The app's environment for the tiny models (what ``config`` is loaded from)."""
    root = tmp_path_factory.mktemp("startup")
    return {
        "ARENA_PRESET": "mini", "ARENA_ORIGINAL": tiny_checkpoints["original"], "ARENA_FULL": tiny_checkpoints["full"],
        "ARENA_LORA": tiny_checkpoints["lora"], "ARENA_DATA": data_dir, "ARENA_DEVICE": "cpu",
        "ARENA_MAX_NEW_TOKENS": "8", "ARENA_CHECKPOINTS": str(root / "checkpoints"),
        "ARENA_VOTES_DB": str(root / "unused.sqlite"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def config(app_env: dict[str, str]) -> ArenaConfig:
    return load_config(app_env)


@pytest.fixture(scope="module")
def model_set(config: ArenaConfig) -> ModelSet:
    return load_model_set(config)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds a slow loader until the test opens it (always opened at the end: no thread left waiting)."""
    event = threading.Event()
    yield event
    event.set()


def slow_service(
    model_set: ModelSet, gate: threading.Event, votes_db: str, load_wait_s: float = WAIT_S
) -> ArenaService:
    """A service whose startup load ends only when ``gate`` opens."""

    def load() -> ModelSet:
        gate.wait()
        return model_set

    return ArenaService(model_set.config, ModelLoad(load), votes=VoteStore(votes_db), load_wait_s=load_wait_s)


def test_a_compare_during_the_load_waits_for_it_then_succeeds(
    model_set: ModelSet, gate: threading.Event, tmp_votes_db: str
) -> None:
    service = slow_service(model_set, gate, tmp_votes_db)
    assert all(s.startswith("loading (") for s in service.model_status().values())
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(service.compare, DIALOGUE)
        time.sleep(0.3)  # still waiting while the load runs: nothing answered early, nothing failed
        assert not answer.done()
        gate.set()
        result = answer.result(timeout=WAIT_S)
    assert set(result["models"]) == set(service.model_names)
    assert all(column["error"] is None and column["summary"] for column in result["models"].values())
    assert service.model_status() == {name: model_set.status(name) for name in service.model_names}


def test_a_battle_during_the_load_waits_for_it(
    model_set: ModelSet, gate: threading.Event, tmp_votes_db: str
) -> None:
    service = slow_service(model_set, gate, tmp_votes_db)
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(service.new_battle)
        time.sleep(0.3)
        assert not answer.done()
        gate.set()
        battle = answer.result(timeout=WAIT_S)
    assert sorted(battle.summaries) == sorted(service.model_names)


def test_a_load_that_outlasts_the_wait_is_a_clear_message(
    model_set: ModelSet, gate: threading.Event, tmp_votes_db: str
) -> None:
    service = slow_service(model_set, gate, tmp_votes_db, load_wait_s=0.2)
    with pytest.raises(InputError, match=r"still loading \(\d+ s so far\)"):
        service.compare(DIALOGUE)
    with pytest.raises(InputError, match="still loading"):
        service.fresh_evaluation(2)
    gate.set()  # once loaded, the same service serves
    assert service.compare(DIALOGUE)["models"]["original"]["summary"]


def test_a_failed_load_is_reported_to_requests_and_in_the_status(
    model_set: ModelSet, tmp_votes_db: str
) -> None:
    def load() -> ModelSet:
        raise MemoryError("no room for the weights")

    loading = ModelLoad(load)
    service = ArenaService(model_set.config, loading, votes=VoteStore(tmp_votes_db))
    assert loading.finished(WAIT_S)
    with pytest.raises(InputError, match=r"could not be loaded.*no room for the weights"):
        service.compare(DIALOGUE)
    statuses = service.model_status()
    assert all(s.startswith("unavailable: loading the models failed") for s in statuses.values())
    assert [row["votes"] for row in service.leaderboard()] == [0, 0, 0]  # what needs no model still works


def test_the_page_shows_loading_then_the_real_status(
    model_set: ModelSet, gate: threading.Event, tmp_path: Path
) -> None:
    """Built while the models load (as ``python app.py`` does); each page load refreshes the status."""
    pytest.importorskip("gradio")
    from app import build_demo

    service = slow_service(model_set, gate, str(tmp_path / "votes.sqlite"))
    demo = build_demo(service)
    banner = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "preset-banner")
    assert banner.value.count("⏳") == 3 and "loading" in banner.value
    (refresh,) = [f for f in demo.fns.values() if f.name == "refresh_status"]
    gate.set()
    values = refresh.fn()
    assert set(values) == set(refresh.outputs)
    loaded = {name: model_set.status(name) for name in service.model_names}
    assert values[banner] == view.preset_banner(service.config, loaded, service.examples_error)
    assert "⏳" not in values[banner] and not any("⏳" in values[h] for h in refresh.outputs[1:])


# Importing the app and building its page (a load still running) in a fresh interpreter: which
# of the model libraries that pulled in. They take ~2.5 s to import on a slow 2-core host, which
# the first page would otherwise wait for (python -m bench, P6); the model load imports them.
# Likewise ROUGE's scorer (rouge_score and nltk, ~0.4 s): the first page scores nothing.
PAGE_PROBE = """
import json, sys, threading
import app
from core.config import load_config
from core.service import ArenaService, ModelLoad
from core.votes import VoteStore

gate = threading.Event()
service = ArenaService(load_config(), ModelLoad(gate.wait), votes=VoteStore(sys.argv[1]))
app.build_demo(service)
print(json.dumps(sorted(m for m in ("torch", "transformers", "peft", "rouge_score", "nltk") if m in sys.modules)))
"""


def test_the_page_is_built_without_importing_the_model_libraries(
    app_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("gradio")
    env = {**os.environ, **app_env}
    probe = subprocess.run(
        [sys.executable, "-c", PAGE_PROBE, str(tmp_path / "votes.sqlite")],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == []


def test_the_model_load_imports_them_in_the_background(
    config: ArenaConfig, model_set: ModelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ArenaService.start returns before load_model_set runs, which runs on the load's thread."""
    import core.models

    threads, release = [], threading.Event()

    def load(loading_config: ArenaConfig) -> ModelSet:
        assert loading_config is config
        threads.append(threading.current_thread().name)
        release.wait(WAIT_S)
        return model_set

    monkeypatch.setattr(core.models, "load_model_set", load)
    service = ArenaService.start(config)
    try:
        assert all("loading" in line for line in service.model_status().values())  # start did not wait
    finally:
        release.set()
    assert service.model_set is model_set
    assert threads == ["arena-model-load"]
