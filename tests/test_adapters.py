"""More than one adapter: ARENA_ADAPTERS, one shared base, one mixed batch, fair battle draws."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from bench.fixtures import save_lora_adapter
from core.battles import FairDraw
from core.config import MODEL_LABELS, MODEL_NAMES, load_config, parse_adapters
from core.generation import plan_groups, summarize_many
from core.models import LORA_ADAPTER, load_model_set

EXTRA = ("r2", "r8")
DIALOGUE = "#Person1#: Where are you going?\n#Person2#: To the bank, I need to pay my rent."


@pytest.fixture(scope="module")
def adapters(tiny_checkpoints: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two more tiny LoRA adapters (ranks 2 and 8, other random weights) on the tiny original."""
    from transformers import T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("adapters")
    paths = {}
    for seed, (name, rank) in enumerate(zip(EXTRA, (2, 8), strict=True), start=11):
        torch.manual_seed(seed)
        base = T5ForConditionalGeneration.from_pretrained(tiny_checkpoints["original"])
        save_lora_adapter(
            base, root / name, Path(tiny_checkpoints["original"]), rank=rank, alpha=8, b_std=0.5
        )
        paths[name] = str(root / name)
    return paths


def env_for(tiny: dict[str, str], data_dir: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ARENA_PRESET": "mini", "ARENA_ORIGINAL": tiny["original"], "ARENA_FULL": tiny["full"],
        "ARENA_LORA": tiny["lora"], "ARENA_DATA": data_dir, "ARENA_DEVICE": "cpu", "ARENA_DTYPE": "float32",
        "ARENA_MAX_NEW_TOKENS": "8", "ARENA_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "ARENA_VOTES_DB": str(tmp_path / "votes.sqlite"), **extra,
    }  # fmt: skip


def adapters_env(adapters: dict[str, str]) -> str:
    return ",".join(f"{name}={path}" for name, path in adapters.items())


# ---------------------------------------------------------------------------- configuration


def test_adapters_setting_is_parsed_and_checked() -> None:
    assert parse_adapters(" r4 = a/b , r8=/x/y,") == (("r4", "a/b"), ("r8", "/x/y"))
    assert parse_adapters("") == ()
    config = load_config({"ARENA_ADAPTERS": "r4=/x"})
    assert config.model_names == (*MODEL_NAMES, "r4") and MODEL_LABELS["r4"] == "LoRA r4"
    for bad, message in [
        ("r4", "must be name=location"),
        ("r4=", "must be name=location"),
        ("lora=/x", "other than original"),
        ("__base__=/x", "short identifier"),
        ("a b=/x", "short identifier"),
        ("r4=/x,r4=/y", "twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_adapters(bad)


# ---------------------------------------------------------------------------- loading and generation


@pytest.fixture(scope="module")
def five(tiny_checkpoints: dict[str, str], adapters: dict[str, str], data_dir: str, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("five")
    config = load_config(env_for(tiny_checkpoints, data_dir, tmp, ARENA_ADAPTERS=adapters_env(adapters)))
    return load_model_set(config)


def test_every_adapter_lives_in_the_one_base_and_runs_in_one_batch(five) -> None:
    assert not five.errors and set(five.models) == {"original", "lora", *EXTRA, "full"}
    shared = five.models["original"].model
    assert all(five.models[n].model is shared for n in ("lora", *EXTRA))  # one in-memory base
    assert five.models["full"].model is not shared
    assert set(shared.peft_config) == {LORA_ADAPTER, *EXTRA}
    groups = plan_groups(list(five.models.values()), five.config.generation)
    assert sorted(sorted(m.name for m in g) for g in groups) == [
        ["full"],
        sorted(["original", "lora", *EXTRA]),
    ]
    summaries = {
        rows[0].model: rows[0]
        for rows in summarize_many(five, [DIALOGUE], five.config.generation, five.config.model_names)
    }
    assert set(summaries) == set(five.config.model_names)
    assert set(summaries["r2"].batched_with) == {"original", "lora", "r8"}  # one mixed-adapter generate


def test_a_mixed_batch_gives_each_adapter_its_own_output(
    five, tiny_checkpoints: dict[str, str], adapters: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    """Each extra adapter, batched with the others, says what it says when loaded as the only LoRA."""
    settings = five.config.generation
    mixed = {
        rows[0].model: rows[0].text
        for rows in summarize_many(five, [DIALOGUE], settings, five.config.model_names)
    }
    for name, path in adapters.items():
        alone = load_model_set(
            load_config(env_for({**tiny_checkpoints, "lora": path}, data_dir, tmp_path)), ("lora",)
        )
        (rows,) = list(summarize_many(alone, [DIALOGUE], settings, ("lora",)))
        assert mixed[name] == rows[0].text
    assert len({mixed["lora"], mixed["r2"], mixed["r8"]}) == 3  # three different adapters at work


def test_a_broken_adapter_is_one_columns_error(
    tiny_checkpoints: dict[str, str], adapters: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(Path(adapters["r2"], "adapter_config.json").read_text())
    spec = f"bad={broken},r2={adapters['r2']},gone={tmp_path / 'missing'}"
    model_set = load_model_set(
        load_config(env_for(tiny_checkpoints, data_dir, tmp_path, ARENA_ADAPTERS=spec))
    )
    assert "missing adapter_model.safetensors" in model_set.errors["bad"]
    assert "gone" in model_set.errors and set(model_set.models) == {"original", "lora", "r2", "full"}
    assert set(model_set.models["original"].model.peft_config) == {LORA_ADAPTER, "r2"}  # nothing half-loaded


# ---------------------------------------------------------------------------- fair battles


def test_fair_draw_shows_every_model_equally_often() -> None:
    models = ("original", "full", "lora", "r2", "r8")
    draw = FairDraw(random.Random(3))
    shown: Counter[str] = Counter()
    for i in range(1, 101):
        chosen = draw.draw(models)
        assert len(set(chosen)) == 3
        shown.update(chosen)
        assert max(shown.values()) - min(shown[m] for m in models) <= 1, (i, shown)
    assert sum(shown.values()) == 300 and draw.counts() == dict(shown)
    firsts = {FairDraw(random.Random(seed)).draw(models) for seed in range(20)}
    assert len(firsts) > 1  # ties are broken at random, not by name
    assert sorted(FairDraw(random.Random(0)).draw(MODEL_NAMES)) == sorted(MODEL_NAMES)
    seeded = FairDraw(random.Random(0))
    seeded.seed([("original", "full", "lora")] * 2)
    assert sorted(seeded.draw(models)[:2]) == ["r2", "r8"]  # the least shown so far come first
    with pytest.raises(ValueError, match="3 different models"):
        draw.draw(("a", "b"))


def test_service_battles_leaderboard_compare_and_cards_cover_every_model(five, tmp_path: Path) -> None:
    from app import build_demo
    from core.model_cards import model_cards
    from core.service import ArenaService
    from core.votes import VoteStore

    service = ArenaService(
        five.config, five, votes=VoteStore(tmp_path / "votes.sqlite"), rng=random.Random(1)
    )
    names = five.config.model_names
    shown: Counter[str] = Counter()
    for _ in range(5):  # 15 places over 5 models: each exactly three times
        battle = service.new_battle()
        shown.update(battle.order)
        service.vote(battle.token, "A")
    assert shown == Counter(dict.fromkeys(names, 3))
    board = service.leaderboard()
    assert {row["model"] for row in board} == set(names) and sum(row["votes"] for row in board) == 15
    assert sum(row["wins"] for row in board) == 5
    compared = service.compare(DIALOGUE, "Person2 pays rent.")
    assert list(compared["models"]) == list(names)
    assert all(entry["error"] is None and entry["rouge"] is not None for entry in compared["models"].values())
    cards = model_cards(five.config)
    assert list(cards) == list(names) and cards["r8"].method == "lora" and cards["r8"].label == "LoRA r8"
    demo = build_demo(service)  # the page builds a Compare column per model
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {f"column-{n}" for n in names} <= ids


def test_a_cards_base_model_is_read_from_the_adapter_config_as_peft_records_it(
    tiny_checkpoints, tmp_path: Path
) -> None:
    import json

    from core.model_cards import adapter_base_model
    from core.models import adapter_config

    lora = Path(tiny_checkpoints["lora"])
    assert adapter_base_model(lora) == adapter_config(str(lora)).base_model_name_or_path  # what peft reads
    for text in ("[1, 2]", "{not json", json.dumps({"r": 8}), json.dumps({"base_model_name_or_path": ""})):
        (tmp_path / "adapter_config.json").write_text(text)
        assert adapter_base_model(tmp_path) is None  # the loader, not the card, reports a broken config
    (tmp_path / "adapter_config.json").unlink()
    assert adapter_base_model(tmp_path) is None
