"""Hub-hosted checkpoints, the connected first run and votes that survive a restart, all offline.

The Hub cache is a temporary directory the tests fill themselves, in huggingface_hub's layout
(``models--owner--name/snapshots/<commit>`` and ``refs/<revision>``); ``HF_HUB_OFFLINE=1``
stays on, so nothing here touches the network. The Hub client of the votes copy is replaced
at its boundary (``HfApi``) by an in-memory stand-in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.checkpoints import ARENA_FILE, CheckpointNotFoundError, fetch_checkpoint, hub_location
from core.config import load_config
from core.model_cards import model_cards
from core.models import load_model_set
from core.service import ArenaService
from core.vote_sync import VOTES_DIR_IN_REPO, start_vote_sync, vote_from_json, votes_storage_note
from core.votes import Vote, VoteStore

DIALOGUE = "#Person1#: Did you book the table?\n#Person2#: Yes, for eight at seven."


def put_in_hub_cache(cache: Path, repo_id: str, source: str | Path, revision: str = "main") -> str:
    """Copy ``source`` into the Hub cache as ``repo_id`` at ``revision``; return the commit hash."""
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache under a temporary ``HF_HOME``, offline."""
    import huggingface_hub.constants as constants

    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read these at import; its functions read the live constants.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def hub_models(hub_cache: Path, tiny_checkpoints: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The tiny original as ``google/flan-t5-base``, the full fine-tune as ``me/tiny-full`` (no
    arena.json) and the LoRA adapter as ``me/tiny-lora`` at revision ``v1`` only (with arena.json)."""
    lora = tmp_path / "lora-upload"
    shutil.copytree(tiny_checkpoints["lora"], lora)
    adapter = json.loads((lora / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = "google/flan-t5-base"  # as train.lora records a Hub base
    (lora / "adapter_config.json").write_text(json.dumps(adapter))
    meta = {"method": "lora", "base_model": "google/flan-t5-base", "trainable_params": 512, "steps": 7}
    (lora / ARENA_FILE).write_text(json.dumps(meta))
    put_in_hub_cache(hub_cache, "google/flan-t5-base", tiny_checkpoints["original"])
    put_in_hub_cache(hub_cache, "me/tiny-full", tiny_checkpoints["full"])
    commit = put_in_hub_cache(hub_cache, "me/tiny-lora", lora, revision="v1")
    return {"full": "me/tiny-full", "lora": "me/tiny-lora@v1", "lora_commit": commit}


def test_hub_locations_parse_owner_name_and_revision(tmp_path: Path) -> None:
    assert hub_location("me/model@v2") is not None
    assert (hub_location("me/model@v2").repo_id, hub_location("me/model@v2").revision) == ("me/model", "v2")
    assert hub_location("me/model").revision is None
    assert str(hub_location("me/model@abc")) == "me/model@abc"
    assert hub_location(str(tmp_path)) is None and hub_location("./here") is None


def test_app_serves_all_three_columns_with_full_and_lora_as_repo_ids(
    hub_models: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    env = {
        "ARENA_FULL": hub_models["full"],
        "ARENA_LORA": hub_models["lora"],
        "ARENA_CHECKPOINTS": str(tmp_path / "no-checkpoints"),
        "ARENA_DATA": data_dir,
        "ARENA_DEVICE": "cpu",
        "ARENA_MAX_NEW_TOKENS": "8",
    }
    config = load_config(env, votes_db=str(tmp_path / "votes.sqlite"))
    assert config.preset == "flan-t5-base" and config.models.original == "google/flan-t5-base"
    model_set = load_model_set(config)
    assert model_set.errors == {}
    assert model_set.models["lora"].warning is None  # adapter records the Hub base it sits on
    assert model_set.models["lora"].model is model_set.models["original"].model  # one shared base
    assert model_set.status("lora") == "loaded from the Hub: me/tiny-lora@v1"
    assert model_set.status("full") == "loaded from the Hub: me/tiny-full"

    service = ArenaService(config, model_set, votes=VoteStore(config.votes_db))
    result = service.compare(DIALOGUE)
    for name in ("original", "full", "lora"):
        assert result["models"][name]["error"] is None, result["models"][name]
        assert result["models"][name]["summary"].strip()

    cards = model_cards(config)
    assert cards["lora"].has_metadata and cards["lora"].steps == 7
    assert cards["full"].has_metadata is False
    assert "me/tiny-full has no arena.json" in cards["full"].note or "no arena.json" in cards["full"].note
    assert cards["full"].total_params and cards["original"].total_params  # counted from the snapshot


def test_a_revision_by_commit_hash_is_served_and_a_missing_revision_is_named(
    hub_models: dict[str, str],
) -> None:
    assert fetch_checkpoint(f"me/tiny-lora@{hub_models['lora_commit']}").name == hub_models["lora_commit"]
    with pytest.raises(CheckpointNotFoundError, match="me/tiny-lora is not in the local Hub cache"):
        fetch_checkpoint("me/tiny-lora")  # only v1 was published


def test_a_repo_missing_from_the_cache_is_one_columns_clear_error(
    hub_models: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    env = {
        "ARENA_FULL": "nobody/not-there",
        "ARENA_LORA": "too/many/slashes",
        "ARENA_CHECKPOINTS": str(tmp_path),
        "ARENA_DATA": data_dir,
        "ARENA_DEVICE": "cpu",
    }
    start = time.perf_counter()
    model_set = load_model_set(load_config(env))
    assert time.perf_counter() - start < 60  # answered from the cache; nothing waits on the network
    assert "nobody/not-there is not in the local Hub cache" in model_set.errors["full"]
    assert "HF_HUB_OFFLINE=1" in model_set.errors["full"]
    assert "too/many/slashes is neither a local directory nor a Hub repo id" in model_set.errors["lora"]
    assert set(model_set.errors) == {"full", "lora"} and "original" in model_set.models
    cards = model_cards(model_set.config)
    assert cards["full"].note == "Hub repo nobody/not-there is not in the local Hub cache"


def test_a_missing_original_repo_names_it_in_the_original_and_lora_columns(
    hub_models: dict[str, str], tmp_path: Path
) -> None:
    config = load_config(
        {"ARENA_CHECKPOINTS": str(tmp_path), "ARENA_DEVICE": "cpu"},
        original="google/flan-t5-large",
        full=hub_models["full"],
        lora=hub_models["lora"],
    )
    model_set = load_model_set(config)
    assert "google/flan-t5-large is not in the local Hub cache" in model_set.errors["original"]
    assert model_set.errors["lora"].startswith("needs the original model: Hub repo google/flan-t5-large")
    assert "full" in model_set.models


def test_connected_first_run_serves_real_flan_t5_and_says_how_to_train_the_rest(
    hub_models: dict[str, str], data_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fine-tuned checkpoints and the Hub reachable: the flan-t5-base preset, not the mini."""
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes: list[bool] = []
    monkeypatch.setattr("core.config.hub_reachable", lambda: probes.append(True) or True)
    env = {"ARENA_CHECKPOINTS": str(tmp_path / "checkpoints"), "ARENA_DATA": data_dir, "ARENA_DEVICE": "cpu"}
    config = load_config(env)
    assert probes == [True]
    assert config.preset == "flan-t5-base"
    assert "the Hub is reachable, so the real google/flan-t5-base is served" in config.preset_reason
    assert "`python -m train.full --bf16`" in config.preset_reason

    # The download itself is huggingface_hub's; here the cache already holds the model (and no
    # network exists), so the load runs offline from the cache the test filled.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model_set = load_model_set(config)
    assert "original" in model_set.models and set(model_set.errors) == {"full", "lora"}
    full_dir = str(tmp_path / "checkpoints" / "flan-t5-base" / "full")
    assert (
        f"not trained yet: `python -m train.full --bf16` writes it to {full_dir}" in model_set.errors["full"]
    )
    assert "`python -m train.lora --bf16`" in model_set.errors["lora"]


def test_offline_first_run_stays_on_the_mini_preset_without_probing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_probe() -> bool:
        raise AssertionError("HF_HUB_OFFLINE=1: the Hub must not be probed")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("core.config.hub_reachable", no_probe)
    assert load_config({"ARENA_CHECKPOINTS": str(tmp_path)}).preset == "mini"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("core.config.hub_reachable", lambda: False)
    assert load_config({"ARENA_CHECKPOINTS": str(tmp_path)}).preset == "mini"


# ---------------------------------------------------------------------------- votes


def test_votes_default_to_persistent_storage_when_it_is_writable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = load_config({}, persistent_root=data)
    assert config.votes_db == str(data / "votes.sqlite")
    assert config.persistent_root == str(data)
    assert "on persistent storage: they survive restarts" in votes_storage_note(config, on_space=True)

    absent = load_config({}, persistent_root=tmp_path / "no-data")
    assert Path(absent.votes_db).parent.name == "data" and absent.persistent_root is None
    assert "not durable on this host" in votes_storage_note(absent, on_space=True)
    assert "on a Space they would not survive a restart" in votes_storage_note(absent, on_space=False)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    assert load_config({}, persistent_root=not_a_dir).persistent_root is None
    assert load_config({"ARENA_VOTES_DB": "/x/v.sqlite"}, persistent_root=data).votes_db == "/x/v.sqlite"


class FakeHubApi:
    """``huggingface_hub.HfApi`` at its boundary: an in-memory dataset repo of files."""

    def __init__(self, root: Path, files: dict[str, str] | None = None) -> None:
        self.root = root
        self.files: dict[str, bytes] = {k: v.encode() for k, v in (files or {}).items()}
        self.commits: list[list[str]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> Any:
        assert kwargs.get("repo_type") == "dataset"
        return SimpleNamespace(repo_id=repo_id)

    def run_as_future(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def create_commit(self, repo_id: str, operations: list[Any], **kwargs: Any) -> Any:
        assert kwargs.get("repo_type") == "dataset"
        for op in operations:
            self.files[op.path_in_repo] = op.path_or_fileobj.read()
        self.commits.append([op.path_in_repo for op in operations])
        return SimpleNamespace(oid="0" * 40)

    def list_repo_files(self, repo_id: str, repo_type: str | None = None) -> list[str]:
        assert repo_type == "dataset"
        return [".gitattributes", *self.files]

    def hf_hub_download(self, repo_id: str, filename: str, repo_type: str | None = None) -> str:
        path = self.root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.files[filename])
        return str(path)


def make_vote(battle: str, choice: str = "A", created_at: str = "") -> Vote:
    return Vote(
        battle_id=battle, dialogue_id="test_1", order_shown=("lora", "original", "full"), choice=choice,
        ranking=("lora", "full", "original") if choice == "A" else None, settings={"max_new_tokens": 60},
        preset="mini", session_id="s", created_at=created_at,
    )  # fmt: skip


def test_votes_are_appended_to_the_hub_dataset_and_loaded_back_after_a_restart(tmp_path: Path) -> None:
    api = FakeHubApi(tmp_path / "downloads")
    first = load_config({"ARENA_VOTES_REPO": "me/arena-votes"}, votes_db=str(tmp_path / "a" / "votes.sqlite"))
    store = VoteStore(first.votes_db)
    sync = start_vote_sync(first, store, api=api)
    assert sync is not None
    try:
        stored = [store.add(make_vote("b1")), store.add(make_vote("b2", choice="none"))]
        for vote in stored:
            sync.record(vote)
        sync.push_now().result()
    finally:
        sync.stop()
    uploaded = [name for name in api.files if name.startswith(f"{VOTES_DIR_IN_REPO}/")]
    assert len(uploaded) == 1 and uploaded[0].endswith(".jsonl")
    lines = [json.loads(x) for x in api.files[uploaded[0]].decode().splitlines()]
    assert [x["battle_id"] for x in lines] == ["b1", "b2"] and "id" not in lines[0]
    assert vote_from_json(lines[0]) == Vote(**{**stored[0].__dict__, "id": None})

    # A restart on a wiped disk: an empty database is filled back from the dataset.
    second = load_config(
        {"ARENA_VOTES_REPO": "me/arena-votes"}, votes_db=str(tmp_path / "b" / "votes.sqlite")
    )
    fresh = VoteStore(second.votes_db)
    resumed = start_vote_sync(second, fresh, api=api)
    assert resumed is not None
    resumed.stop()
    restored = fresh.all()
    assert [v.battle_id for v in restored] == ["b1", "b2"]
    assert [(v.choice, v.ranking, v.created_at) for v in restored] == [
        (v.choice, v.ranking, v.created_at) for v in stored
    ]
    # A database that already holds votes is the real store: nothing is loaded over it.
    again = start_vote_sync(second, fresh, api=api)
    assert again is not None
    again.stop()
    assert fresh.count() == 2


def test_the_service_copies_each_stored_vote_and_skips_broken_lines(tmp_path: Path) -> None:
    api = FakeHubApi(
        tmp_path / "downloads",
        {f"{VOTES_DIR_IN_REPO}/old.jsonl": 'not json\n{"battle_id": "x"}\n'},
    )
    config = load_config({"ARENA_VOTES_REPO": "me/v"}, votes_db=str(tmp_path / "votes.sqlite"))
    store = VoteStore(config.votes_db)
    sync = start_vote_sync(config, store, api=api)
    assert sync is not None and store.count() == 0  # nothing valid to restore, and no crash
    service = ArenaService(config, SimpleNamespace(), votes=store, vote_sync=sync)
    battle = service.battles.open(
        dialogue_id="d", dialogue="x", reference="", summaries={"original": "a", "full": "b", "lora": "c"},
        settings={}, preset="mini", session_id="s",
    )  # fmt: skip
    service.vote(battle.token, "B")
    sync.push_now().result()
    sync.stop()
    line = json.loads(api.files[f"{VOTES_DIR_IN_REPO}/{sync.path.name}"].decode())
    assert line["battle_id"] == battle.battle_id and line["choice"] == "B"
