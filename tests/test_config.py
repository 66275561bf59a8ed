from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import (
    GenerationSettings,
    choose_preset,
    ensure_offline_if_unreachable,
    load_config,
    missing_checkpoint_hint,
    preset_models,
)


def _make_checkpoint(path: Path, marker: str) -> None:
    path.mkdir(parents=True)
    (path / marker).write_text("{}")


def test_without_flan_checkpoints_the_mini_preset_is_chosen_and_says_why(tmp_path: Path) -> None:
    preset, reason = choose_preset(tmp_path, {})
    assert preset == "mini"
    assert str(tmp_path / "flan-t5-base") in reason
    assert "not Flan-T5" in reason


def test_flan_preset_is_chosen_when_its_checkpoints_exist(tmp_path: Path) -> None:
    _make_checkpoint(tmp_path / "flan-t5-base" / "full", "config.json")
    _make_checkpoint(tmp_path / "flan-t5-base" / "lora", "adapter_config.json")
    preset, reason = choose_preset(tmp_path, {})
    assert preset == "flan-t5-base"
    assert "found" in reason


def test_flan_preset_needs_both_checkpoints(tmp_path: Path) -> None:
    _make_checkpoint(tmp_path / "flan-t5-base" / "full", "config.json")
    assert choose_preset(tmp_path, {})[0] == "mini"


def test_env_preset_wins_and_unknown_preset_is_rejected(tmp_path: Path) -> None:
    assert choose_preset(tmp_path, {"ARENA_PRESET": "flan-t5-base"})[0] == "flan-t5-base"
    with pytest.raises(ValueError, match="not one of"):
        choose_preset(tmp_path, {"ARENA_PRESET": "gpt"})


def test_preset_defaults_name_the_three_models(tmp_path: Path) -> None:
    base = preset_models("flan-t5-base", tmp_path)
    assert base.original == "google/flan-t5-base"
    assert base.full == str(tmp_path / "flan-t5-base" / "full")
    assert base.lora == str(tmp_path / "flan-t5-base" / "lora")
    mini = preset_models("mini", tmp_path)
    assert mini.as_dict() == {n: str(tmp_path / "mini" / n) for n in ("original", "full", "lora")}


def test_environment_then_explicit_overrides(tmp_path: Path) -> None:
    env = {
        "ARENA_CHECKPOINTS": str(tmp_path),
        "ARENA_PRESET": "mini",
        "ARENA_ORIGINAL": "/models/base",
        "ARENA_DATA": "/data/dialogsum",
        "ARENA_MAX_NEW_TOKENS": "64",
        "ARENA_NUM_BEAMS": "2",
        "ARENA_DTYPE": "bfloat16",
        "ARENA_VOTES_DB": "/tmp/v.sqlite",
    }
    config = load_config(env)
    assert config.models.original == "/models/base"
    assert config.models.full == str(tmp_path / "mini" / "full")
    assert config.data == "/data/dialogsum"
    assert config.generation == GenerationSettings(max_new_tokens=64, num_beams=2)
    assert config.dtype == "bfloat16"
    assert config.votes_db == "/tmp/v.sqlite"
    assert config.report_dir == tmp_path / "mini" / "eval"
    overridden = load_config(env, original="/other", max_new_tokens=10)
    assert overridden.models.original == "/other"
    assert overridden.generation.max_new_tokens == 10


def test_configured_flan_checkpoints_select_the_flan_preset(tmp_path: Path) -> None:
    config = load_config({"ARENA_CHECKPOINTS": str(tmp_path)}, full="/ft/full", lora="/ft/lora")
    assert config.preset == "flan-t5-base"
    assert config.models.original == "google/flan-t5-base"
    assert (config.models.full, config.models.lora) == ("/ft/full", "/ft/lora")


def test_default_generation_matches_the_lab() -> None:
    settings = load_config({}).generation
    assert settings.max_new_tokens == 200
    assert settings.as_generate_kwargs() == {"max_new_tokens": 200}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (GenerationSettings(max_new_tokens=0), "max_new_tokens must be an integer from 1 to 512"),
        (GenerationSettings(max_new_tokens=10_000), "from 1 to 512"),
        (GenerationSettings(num_beams=9), "num_beams must be an integer from 1 to 8"),
        (GenerationSettings(num_beams=True), "num_beams"),
    ],
)
def test_out_of_range_generation_settings_name_the_allowed_range(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_bad_integer_in_environment_is_named() -> None:
    with pytest.raises(ValueError, match="ARENA_MAX_NEW_TOKENS must be an integer"):
        load_config({"ARENA_MAX_NEW_TOKENS": "many"})


def test_all_local_locations_switch_offline_without_probing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_probe() -> bool:
        raise AssertionError("the network must not be probed for local models")

    monkeypatch.setattr("core.config.hub_reachable", no_probe)
    config = load_config({"ARENA_CHECKPOINTS": str(tmp_path), "ARENA_DATA": str(tmp_path)}, preset="mini")
    assert ensure_offline_if_unreachable(config) is True
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_unreachable_hub_switches_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("core.config.hub_reachable", lambda: False)
    config = load_config({"ARENA_CHECKPOINTS": str(tmp_path)}, preset="flan-t5-base")
    assert ensure_offline_if_unreachable(config) is True
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_reachable_hub_stays_online(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("core.config.hub_reachable", lambda: True)
    config = load_config({"ARENA_CHECKPOINTS": str(tmp_path)}, preset="flan-t5-base")
    assert ensure_offline_if_unreachable(config) is False
    assert "HF_HUB_OFFLINE" not in os.environ


def test_the_hub_probe_decides_only_a_first_run(tmp_path: Path) -> None:
    """Checkpoints on disk or a requested preset decide without asking; only a first run probes."""
    calls: list[str] = []

    def online() -> bool:
        calls.append("probe")
        return True

    assert choose_preset(tmp_path, {"ARENA_PRESET": "mini"}, hub_online=online)[0] == "mini"
    assert choose_preset(tmp_path, {"ARENA_LORA": "me/lora"}, hub_online=online)[0] == "flan-t5-base"
    assert calls == []
    preset, reason = choose_preset(tmp_path, {}, hub_online=online)
    assert (preset, calls) == ("flan-t5-base", ["probe"])
    assert "python -m train.full --bf16" in reason and "ARENA_PRESET=mini" in reason
    assert choose_preset(tmp_path, {}, hub_online=lambda: False)[0] == "mini"


def test_missing_fine_tunes_at_the_default_location_name_their_command(tmp_path: Path) -> None:
    config = load_config({"ARENA_CHECKPOINTS": str(tmp_path)}, preset="flan-t5-base")
    assert missing_checkpoint_hint(config, "lora") == (
        f"not trained yet: `python -m train.lora --bf16` writes it to {tmp_path / 'flan-t5-base' / 'lora'} "
        "(README: Train your own)"
    )
    assert missing_checkpoint_hint(config, "original") is None
    elsewhere = load_config({"ARENA_CHECKPOINTS": str(tmp_path)}, preset="flan-t5-base", full="/x/full")
    assert missing_checkpoint_hint(elsewhere, "full") is None  # configured elsewhere: its own error says
    _make_checkpoint(tmp_path / "flan-t5-base" / "lora", "adapter_config.json")
    assert missing_checkpoint_hint(config, "lora") is None
