"""The running app through ``gradio_client``: named endpoints, shapes, persistence, clear errors."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from core.config import MODEL_NAMES, load_config
from core.metrics import ROUGE_TYPES
from core.votes import VoteStore
from tests.conftest import start_app

pytestmark = pytest.mark.slow


def test_named_endpoints_are_exactly_the_documented_ones(gradio_client) -> None:
    api = gradio_client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/compare", "/battle", "/vote", "/leaderboard", "/agreement"}


def test_api_docs_show_each_endpoints_json_shape_not_any(gradio_client) -> None:
    """The "Use via API" page (and view_api) describe what the README promises, field by field."""
    api = gradio_client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    shown = {
        name: api[name]["returns"][0]["python_type"]["type"]
        for name in ("/compare", "/battle", "/vote", "/leaderboard")
    }
    for fields in ("preset: str", "summary: str", "rouge1: float", "error: None | str", "timed_out: bool"):
        assert fields in shown["/compare"], shown["/compare"]
    assert "token: str" in shown["/battle"] and "A: str" in shown["/battle"]
    assert "ok: bool" in shown["/vote"] and "revealed: dict(A: str" in shown["/vote"]
    assert shown["/leaderboard"].startswith("list[dict(model: str, votes: int")
    assert not any(t in ("Any", "Dict[Any, Any]", "List[Any]") for t in shown.values()), shown


def test_compare_returns_three_summaries_and_scores(gradio_client) -> None:
    dialogue = "#Person1#: Where are you going?\n#Person2#: To the bank, I need to pay my rent."
    result = gradio_client.predict(dialogue, "#Person2# goes to the bank to pay rent.", api_name="/compare")
    assert result["preset"] == "mini"
    assert set(result["models"]) == set(MODEL_NAMES)
    for entry in result["models"].values():
        assert entry["error"] is None and entry["summary"].strip()
        assert set(entry["rouge"]) == set(ROUGE_TYPES)
        assert entry["seconds"] >= 0 and entry["timed_out"] is False
    unscored = gradio_client.predict(dialogue, "", api_name="/compare")
    assert all(entry["rouge"] is None for entry in unscored["models"].values())


def test_compare_refuses_bad_input_with_a_message(gradio_client) -> None:
    with pytest.raises(Exception, match="dialogue is empty"):
        gradio_client.predict("   ", "", api_name="/compare")
    with pytest.raises(Exception, match="from 1 to 512"):
        gradio_client.predict("#Person1#: Hi.", "", 100000, api_name="/compare")


def test_battle_and_vote_persist_and_move_the_leaderboard(gradio_client, app_server) -> None:
    before = {row["model"]: row for row in gradio_client.predict(api_name="/leaderboard")}
    battle = gradio_client.predict(api_name="/battle")
    assert set(battle) == {"token", "dialogue_id", "dialogue", "reference", "summaries"}
    assert set(battle["summaries"]) == {"A", "B", "C"}
    stored_before = VoteStore(app_server.votes_db).count()

    answer = gradio_client.predict(battle["token"], "C", api_name="/vote")
    assert answer["ok"] is True and sorted(answer["revealed"]) == ["A", "B", "C"]
    assert sorted(answer["revealed"].values()) == sorted(MODEL_NAMES)
    winner = answer["revealed"]["C"]

    votes = VoteStore(app_server.votes_db).all()
    assert len(votes) == stored_before + 1
    assert votes[-1].dialogue_id == battle["dialogue_id"] and votes[-1].choice_model == winner

    after = {row["model"]: row for row in gradio_client.predict(api_name="/leaderboard")}
    assert after[winner]["wins"] == before[winner]["wins"] + 1
    assert all(after[m]["votes"] == before[m]["votes"] + 1 for m in MODEL_NAMES)
    row = after[winner]
    assert set(row) == {"model", "votes", "wins", "win_rate", "ci95", "bt"}
    assert row["ci95"][0] <= row["win_rate"] <= row["ci95"][1]

    with pytest.raises(Exception, match="already used"):
        gradio_client.predict(battle["token"], "A", api_name="/vote")
    with pytest.raises(Exception, match="unknown battle token"):
        gradio_client.predict("not-a-real-token", "A", api_name="/vote")
    assert VoteStore(app_server.votes_db).count() == stored_before + 1


@pytest.fixture(scope="module")
def app_without_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with none of its checkpoints present (a fresh clone before training)."""
    root = tmp_path_factory.mktemp("no-checkpoints")
    missing = {name: str(root / "checkpoints" / "mini" / name) for name in MODEL_NAMES}
    server = start_app(missing, str(root / "votes.sqlite"), str(root / "checkpoints"), root)
    try:
        yield server.url
    finally:
        server.stop()


def test_app_starts_without_checkpoints_and_says_why_per_column(app_without_checkpoints: str) -> None:
    from gradio_client import Client

    client = Client(app_without_checkpoints, verbose=False)
    result = client.predict("#Person1#: Hi.\n#Person2#: Hello.", "Two people greet.", api_name="/compare")
    for name in MODEL_NAMES:
        error = result["models"][name]["error"]
        assert "not found" in error and f"mini{os.sep}original" in result["models"]["original"]["error"]
        assert result["models"][name]["rouge"] is None
    assert f"mini{os.sep}full" in result["models"]["full"]["error"]
    with pytest.raises(Exception, match="needs all three models"):
        client.predict(api_name="/battle")
    assert [row["votes"] for row in client.predict(api_name="/leaderboard")] == [0, 0, 0]


# ---------------------------------------------------------------------------- the page, in process


def test_importing_app_loads_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.models

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("importing app.py loaded models")

    monkeypatch.setattr(core.models, "load_model_set", refuse)
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app = importlib.import_module("app")
    assert callable(app.build_demo) and callable(app.main)


def _fn(demo: object, name: str) -> object:
    (found,) = [f for f in demo.fns.values() if f.name == name]  # type: ignore[attr-defined]
    return found


def _service_and_demo(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path: Path
) -> tuple[object, object]:
    """The app's service on the tiny models and the page built from it (not launched)."""
    from app import build_demo
    from core.models import load_model_set
    from core.service import ArenaService

    env = {
        "ARENA_PRESET": "mini", "ARENA_ORIGINAL": tiny_checkpoints["original"], "ARENA_FULL": tiny_checkpoints["full"],
        "ARENA_LORA": tiny_checkpoints["lora"], "ARENA_DATA": data_dir, "ARENA_DEVICE": "cpu",
        "ARENA_MAX_NEW_TOKENS": "8", "ARENA_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "ARENA_VOTES_DB": str(tmp_path / "votes.sqlite"),
    }  # fmt: skip
    config = load_config(env)
    service = ArenaService(config, load_model_set(config))
    return service, build_demo(service)


def test_handlers_update_only_their_declared_outputs(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    """Handlers return {component: value}; gradio refuses a key that is not an output of the event."""
    service, demo = _service_and_demo(tiny_checkpoints, data_dir, tmp_path)
    battle_fn, vote_fn = _fn(demo, "start_battle"), _fn(demo, "submit_vote")
    started = battle_fn.fn(None)
    assert set(started) == set(battle_fn.outputs)  # a new battle resets every field
    token = next(value for key, value in started.items() if key is battle_fn.outputs[0])
    early = vote_fn.fn(None, "A", None)
    assert set(early) < set(vote_fn.outputs) and len(early) == 1  # "start a battle first": nothing else moves
    voted = vote_fn.fn(token, "B", None)
    assert set(voted) == set(vote_fn.outputs) and service.votes.count() == 1  # the State held the token
    frames = list(
        _fn(demo, "compare_frames").fn("#Person1#: Hi.\n#Person2#: Hello.", "Two greet.", None, None)
    )
    outputs = set(_fn(demo, "compare_frames").outputs)
    assert all(set(frame) == outputs for frame in frames) and len(frames) >= 2


def test_editing_the_dialogue_passes_gradios_output_check(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    """Every answer of ``dialogue_edited`` (nothing to change, or the example's fields cleared)
    goes through gradio's own output check, as it does on every keystroke and example pick."""
    import asyncio

    service, demo = _service_and_demo(tiny_checkpoints, data_dir, tmp_path)
    edited = _fn(demo, "dialogue_edited")
    example = service.random_example()
    answers = {
        "typed, no example picked": edited.fn("#Person1#: Hi.", None),
        "the picked example's own text": edited.fn(example.dialogue, example.id),
        "the example, edited": edited.fn(example.dialogue + " Bye.", example.id),
    }
    shown = {
        case: asyncio.run(demo.postprocess_data(edited, answer, None)) for case, answer in answers.items()
    }
    assert all(len(values) == len(edited.outputs) for values in shown.values())
    reference = edited.outputs.index(next(c for c in edited.outputs if c.label and "Reference" in c.label))
    assert shown["the example, edited"][reference] == ""  # its reference no longer applies
    shown_fields = [i for i, c in enumerate(edited.outputs) if not isinstance(c, gr.State)]
    for case in ("typed, no example picked", "the picked example's own text"):  # nothing moves
        assert all(shown[case][i] == {"__type__": "update"} for i in shown_fields), case
