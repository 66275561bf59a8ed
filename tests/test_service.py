"""The app's logic without Gradio: compare, caching, input checks, battles, votes, reports, cards."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import load_file

from core import charts
from core import presentation as view
from core.battles import BattleError, BattleStore
from core.config import MODEL_NAMES, PROJECT_ROOT, GenerationSettings, load_config
from core.data import load_split
from core.evaluation import build_report, score_table
from core.inputs import InputError, join_references, parse_references, parse_settings
from core.jsonfile import JsonFileError, read_json_object
from core.metrics import ROUGE_TYPES
from core.model_cards import card_for, lora_headline, model_cards
from core.models import ModelSet, load_model_set
from core.presentation import truncation_notice
from core.reports import normalise_report, read_report
from core.service import ArenaService, ModelResult
from core.summaries import MAX_DIALOGUE_CHARS
from core.votes import VoteStore

SETTINGS = GenerationSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def model_set(tiny_checkpoints: dict[str, str], data_dir: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("service")
    env = {
        "ARENA_PRESET": "mini",
        "ARENA_ORIGINAL": tiny_checkpoints["original"],
        "ARENA_FULL": tiny_checkpoints["full"],
        "ARENA_LORA": tiny_checkpoints["lora"],
        "ARENA_DATA": data_dir,
        "ARENA_DEVICE": "cpu",
        "ARENA_MAX_NEW_TOKENS": "12",
        "ARENA_CHECKPOINTS": str(root / "checkpoints"),
        "ARENA_VOTES_DB": str(root / "unused.sqlite"),
    }
    return load_model_set(load_config(env))


@pytest.fixture
def service(model_set: ModelSet, tmp_votes_db: str) -> ArenaService:
    return ArenaService(model_set.config, model_set, votes=VoteStore(tmp_votes_db))


@pytest.fixture(scope="module")
def example(data_dir: str):
    return load_split(data_dir, "test", limit=1)[0]


# ---------------------------------------------------------------------------- compare


def test_compare_returns_the_api_shape(service: ArenaService, example) -> None:
    result = service.compare(example.dialogue, join_references(example.references))
    assert result["preset"] == "mini"
    assert set(result["models"]) == set(MODEL_NAMES)
    for entry in result["models"].values():
        assert {"summary", "rouge", "seconds", "error"} <= set(entry)
        assert entry["error"] is None and entry["summary"]
        assert set(entry["rouge"]) == set(ROUGE_TYPES)
        assert all(0.0 <= v <= 1.0 for v in entry["rouge"].values())
        assert isinstance(entry["seconds"], float)


def test_rouge_is_absent_not_zero_without_a_reference(service: ArenaService, example) -> None:
    result = service.compare(example.dialogue, "   ")
    assert all(entry["rouge"] is None for entry in result["models"].values())
    streamed = list(service.compare_stream(example.dialogue, "", SETTINGS))
    assert all(r.rouge is None and r.spans == [] for r in streamed)
    assert "no reference" in view.result_markdown(streamed[0])


def test_stream_yields_each_model_once_then_the_cache_answers(service: ArenaService, example) -> None:
    first = list(service.compare_stream(example.dialogue, example.reference, SETTINGS))
    assert sorted(r.model for r in first) == sorted(MODEL_NAMES)
    second = {r.model: r for r in service.compare_stream(example.dialogue, example.reference, SETTINGS)}
    assert all(r.cached for r in second.values())
    assert {r.model: r.summary for r in first} == {m: r.summary for m, r in second.items()}
    spans = second["original"].spans
    assert "".join(text for text, _ in spans) == second["original"].summary


@pytest.mark.parametrize("dialogue", ["", "   \n\t ", "\x00\x01\x7f", None])
def test_empty_dialogue_is_refused_clearly(service: ArenaService, dialogue) -> None:
    with pytest.raises(InputError, match="dialogue is empty"):
        service.compare(dialogue, "")


@pytest.mark.parametrize(
    ("tokens", "beams", "message"),
    [(0, None, "max_new_tokens must be a whole number from 1 to 512"), (None, 9, "num_beams .* 1 to 8"),
     ("lots", None, "max_new_tokens"), (12.5, None, "max_new_tokens"), (True, None, "max_new_tokens")],
)  # fmt: skip
def test_settings_out_of_range_name_the_allowed_range(service: ArenaService, tokens, beams, message) -> None:
    with pytest.raises(InputError, match=message):
        service.compare("#Person1#: Hi.", "", tokens, beams)


def test_settings_parse_numbers_from_the_ui() -> None:
    assert parse_settings(40.0, "2") == GenerationSettings(max_new_tokens=40, num_beams=2)
    defaults = GenerationSettings(max_new_tokens=99, num_beams=None)
    assert parse_settings(None, "", defaults) == defaults


def test_references_split_on_blank_lines_and_join_without_duplicates() -> None:
    assert parse_references("one\ntwo\n\n  three  \n\n\n") == ["one\ntwo", "three"]
    assert parse_references(None) == []
    assert join_references(["a  b", "a b", "c"]) == "a b\n\nc"


def test_long_dialogue_is_cut_with_a_notice(service: ArenaService) -> None:
    turns = "\n".join(
        f"#Person{i % 2 + 1}#: I would like to talk about the weather today." for i in range(150)
    )
    results = list(service.compare_stream(turns, "", SETTINGS))
    assert all(r.error is None and r.truncated_tokens > 0 for r in results)
    notice = truncation_notice(results, turns)
    assert notice and "tokens" in notice and "cut" in notice
    huge = "#Person1#: " + "blah " * (MAX_DIALOGUE_CHARS // 4)
    assert "characters" in (truncation_notice([], huge) or "")


def test_a_failed_model_shows_an_error_in_its_column_only(
    model_set: ModelSet, tmp_votes_db: str, example
) -> None:
    broken = ModelSet(
        config=model_set.config,
        models={k: v for k, v in model_set.models.items() if k != "full"},
        errors={"full": "model directory not found: /nowhere/full"},
    )
    service = ArenaService(model_set.config, broken, votes=VoteStore(tmp_votes_db))
    result = service.compare(example.dialogue, example.reference)["models"]
    assert "/nowhere/full" in result["full"]["error"] and result["full"]["rouge"] is None
    assert result["original"]["error"] is None and result["lora"]["error"] is None
    assert service.model_status()["full"].startswith("unavailable")
    with pytest.raises(InputError, match="needs all three models"):
        service.new_battle()


# ---------------------------------------------------------------------------- battles and votes


def test_battle_vote_reveal_and_leaderboard(service: ArenaService) -> None:
    battle = service.new_battle(session_id="s1", settings=SETTINGS)
    shown = service.battle_json(battle)
    assert set(shown) == {"token", "dialogue_id", "dialogue", "reference", "summaries"}
    assert set(shown["summaries"]) == {"A", "B", "C"}
    assert not any(name in json.dumps(shown["summaries"]) for name in ("original", "lora"))  # no names
    answer = service.vote_json(shown["token"], "b", "B>C>A")
    assert answer["ok"] is True and sorted(answer["revealed"].values()) == sorted(MODEL_NAMES)
    assert answer["revealed"] == dict(zip("ABC", battle.order, strict=True))
    (stored,) = service.votes.all()
    assert stored.choice == "B" and stored.choice_model == battle.order[1]
    assert stored.ranking == (battle.order[1], battle.order[2], battle.order[0])
    assert stored.settings == {"max_new_tokens": 12} and stored.preset == "mini"
    board = {row["model"]: row for row in service.leaderboard()}
    assert board[battle.order[1]]["wins"] == 1 and all(row["votes"] == 1 for row in board.values())
    assert Path(service.export_votes_csv()).read_text(encoding="utf-8").count("\n") == 2


def test_bad_votes_are_refused_and_store_nothing(service: ArenaService) -> None:
    battle = service.new_battle(settings=SETTINGS)
    for choice, ranking, message in [
        ("D", None, "choice must be"),
        ("A", "A>A>B", "exactly once"),
        ("none", "A>B>C", "contradicts"),
        ("B", "A>B>C", "puts A first"),
    ]:
        with pytest.raises(InputError, match=message):
            service.vote(battle.token, choice, ranking)
    with pytest.raises(InputError, match="unknown battle token"):
        service.vote("forged-" + battle.token[7:], "A")
    with pytest.raises(InputError, match="missing battle token"):
        service.vote("", "A")
    assert service.votes.count() == 0
    service.vote(battle.token, "none")  # the malformed attempts did not burn the token
    with pytest.raises(InputError, match="already used"):
        service.vote(battle.token, "A")
    assert service.votes.count() == 1


def test_battle_tokens_expire_and_the_store_is_bounded() -> None:
    now = [0.0]
    store = BattleStore(ttl_s=60, max_open=2, clock=lambda: now[0])

    def open_one():
        return store.open(dialogue_id="d", dialogue="x", reference="", summaries={"original": "a", "full": "b",
                          "lora": "c"}, settings={}, preset="mini", session_id="s")  # fmt: skip

    first, second = open_one(), open_one()
    now[0] = 61.0
    with pytest.raises(BattleError, match="expired"):
        store.take(first.token)
    third, fourth = open_one(), open_one()  # second expired; the store holds at most two
    assert len(store) == 2
    with pytest.raises(BattleError, match="expired"):
        store.take(second.token)
    assert store.take(third.token).order == third.order and store.take(fourth.token)
    assert len({first.token, second.token, third.token}) == 3 and len(first.token) >= 32


def test_one_token_one_vote_under_concurrency(service: ArenaService) -> None:
    battle = service.new_battle(settings=SETTINGS)

    def attempt(_: int) -> bool:
        try:
            service.vote(battle.token, "A")
            return True
        except InputError:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count(True) == 1 and service.votes.count() == 1


# ---------------------------------------------------------------------------- benchmark reports


def test_report_from_core_evaluation_is_normalised(data_dir: str, tmp_path: Path) -> None:
    records = load_split(data_dir, "test", limit=6)
    predictions = {
        "original": [r.dialogue.splitlines()[0] for r in records],
        "full": [r.references[0] for r in records],
        "lora": [r.references[-1][:40] for r in records],
    }
    summary = build_report(score_table(records, predictions), preset="mini", split="test", resamples=50)
    assert read_report(tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    report = read_report(tmp_path)
    rows = {row["model"]: row for row in report["rows"]}
    assert list(rows)[:3] == list(MODEL_NAMES) and any(m.startswith("baseline:") for m in rows)
    full = rows["full"]["metrics"]["rougeL"]
    assert full["mean"] == pytest.approx(summary["models"]["full"]["rougeL"]["mean"])
    assert full["delta_pp"] == pytest.approx(summary["improvement_pp"]["full_vs_original"]["rougeL"])
    assert rows["original"]["metrics"]["rouge1"]["delta_pp"] is None
    assert report["n"] == 6
    assert "less ROUGE-L" in (view.rouge_cost(report) or "")
    assert len(view.benchmark_rows(report)) == len(report["rows"])


def test_unreadable_report_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="unreadable"):
        read_report(tmp_path)
    with pytest.raises(InputError, match="not a JSON object"):
        normalise_report([1, 2])


def test_only_the_build_summary_shape_is_read() -> None:
    cell = {"mean": 0.3, "ci95": [0.2, 0.4]}
    report = normalise_report(
        {"models": {"original": {"rouge1": cell}, "full": {"rouge": {"rouge1": cell}},
                    "lora": {"rouge1": 0.3, "rouge2": {"value": 0.1, "lo": 0.0, "hi": 0.2}}}, "n": 3}
    )  # fmt: skip
    rows = {row["model"]: row["metrics"] for row in report["rows"]}
    assert rows["original"]["rouge1"]["ci95"] == [0.2, 0.4]
    assert rows["full"] == {} and rows["lora"] == {}  # other spellings are not guessed at
    assert report["lora_vs_full_pp"] == {}


def test_json_reader_policies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken, listed = tmp_path / "broken.json", tmp_path / "list.json"
    broken.write_bytes(b"\xff{")
    listed.write_text("[1]", encoding="utf-8")
    assert read_json_object(tmp_path / "absent.json", on_error="raise") is None
    with pytest.raises(JsonFileError, match="the thing is unreadable: not valid JSON"):
        read_json_object(broken, on_error="raise", what="the thing")
    with pytest.raises(JsonFileError, match="expected a JSON object"):
        read_json_object(listed, on_error="raise")
    assert read_json_object(broken, on_error="ignore") is None and not caplog.records
    assert read_json_object(listed, on_error="warn") is None
    assert "list.json is unreadable" in caplog.text


def test_fresh_evaluation_is_bounded_and_reports_progress(service: ArenaService) -> None:
    seen: list[float] = []
    report = service.fresh_evaluation(2, progress=lambda frac, _desc: seen.append(frac))
    assert report["n"] == 2 and [r["model"] for r in report["rows"][:3]] == list(MODEL_NAMES)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    # One loop, one cache: the evaluated dialogues now compare from the cache.
    first = next(r for r in service.examples() if r.references)
    assert all(r.cached for r in service.compare_stream(first.dialogue, "", service.config.generation))
    for bad in (0, 51, "many"):
        with pytest.raises(InputError, match="from 1 to 50"):
            service.fresh_evaluation(bad)


# ---------------------------------------------------------------------------- model cards


def test_cards_from_files_when_metadata_is_missing(model_set: ModelSet) -> None:
    cards = model_cards(model_set.config)
    original, lora = cards["original"], cards["lora"]
    weights = Path(model_set.config.models.original) / "model.safetensors"
    expected = sum(t.numel() for t in load_file(str(weights)).values())  # tensors, not headers
    assert original.total_params == expected and original.trainable_params == 0
    assert lora.method == "lora" and 0 < lora.trainable_params < lora.total_params
    assert lora.size_on_disk_bytes < cards["full"].size_on_disk_bytes
    assert "%" in (lora_headline(cards) or "") and "smaller" in lora_headline(cards)


def test_cards_read_arena_json_and_survive_missing_dirs(
    tiny_checkpoints: dict[str, str], tmp_path: Path
) -> None:
    lora_dir = tmp_path / "lora"
    shutil.copytree(tiny_checkpoints["lora"], lora_dir)
    meta = {"method": "lora", "base_model": "google/flan-t5-base", "trainable_params": 7, "total_params": 100,
            "size_on_disk_bytes": 1234, "examples": 500, "steps": 30, "epochs": 1.5, "wall_time_s": 90.0,
            "hardware": "CPU", "precision": "float32, bfloat16 frozen base", "final_train_loss": 1.25, "seed": 1,
            "loss_history": [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}, {"bad": 1}]}  # fmt: skip
    (lora_dir / "arena.json").write_text(json.dumps(meta), encoding="utf-8")
    card = card_for("lora", str(lora_dir))
    assert (card.trainable_params, card.total_params, card.size_on_disk_bytes) == (7, 100, 1234)
    assert card.loss_history == [(10.0, 3.0), (20.0, 2.0)] and card.trainable_share == pytest.approx(0.07)
    missing = card_for("full", str(tmp_path / "nowhere"))
    assert missing.total_params is None and "not found" in missing.note
    table = view.models_table({"lora": card, "full": missing})
    assert "7.0%" in table or "7.00%" in table
    assert "n/a" in table
    precision = next(line for line in table.splitlines() if line.startswith("| Training precision |"))
    assert "float32, bfloat16 frozen base" in precision and "n/a" in precision  # LoRA; the missing full: n/a


# ---------------------------------------------------------------------------- presentation


def test_figures_render_with_and_without_data(model_set: ModelSet, tmp_path: Path) -> None:
    cards = model_cards(model_set.config)
    nothing = {name: card_for(name, str(tmp_path / "missing" / name)) for name in MODEL_NAMES}
    for figure in (
        charts.size_figure(cards), charts.size_figure(nothing), charts.loss_figure(cards), charts.loss_figure({}),
        charts.benchmark_figure({}), charts.benchmark_figure({"rows": [{"model": "full", "label": "Full",
                                                                        "metrics": {}}]}),
    ):  # fmt: skip
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")  # drawing is where a bad axis setup fails
        assert buffer.getvalue().startswith(b"\x89PNG")
    assert "n/a" in view.models_table(nothing) and "not found" in view.models_table(nothing)


def test_markdown_escaping_makes_user_text_inert() -> None:
    text = view.md_escape("<script>alert(1)</script> [click](http://x) ![i](http://y) **b** `c`")
    assert "<script>" not in text and "](" not in text
    assert "\\[click\\]" in text and "&lt;script&gt;" in text


def test_a_cut_summary_is_shown_as_cut_and_kept_out_of_battles(
    model_set: ModelSet, tmp_votes_db: str, example
) -> None:
    config = dataclasses.replace(model_set.config, generation_timeout_s=1e-6)
    service = ArenaService(config, model_set, votes=VoteStore(tmp_votes_db))
    forced = GenerationSettings(max_new_tokens=20, min_new_tokens=20)
    results = list(service.compare_stream(example.dialogue, example.reference, forced))
    assert results and all(r.timed_out and r.error is None for r in results)
    assert all("time limit" in view.result_markdown(r) for r in results)
    assert all(entry["timed_out"] for entry in service.compare(example.dialogue)["models"].values())
    with pytest.raises(InputError, match="time limit"):
        service.new_battle(settings=forced)


def _lora_says(monkeypatch: pytest.MonkeyPatch, on_dialogue, **fields) -> list[str]:
    """Make the LoRA's summary carry ``fields`` (an empty text, an error) on the dialogues that
    ``on_dialogue(dialogue, seen)`` picks; returns every dialogue summarized, in order."""
    import core.generation

    real, seen = core.generation.summarize, []

    def summarize(model_set, dialogue, *args, **kwargs):
        seen.append(dialogue)
        for summary in real(model_set, dialogue, *args, **kwargs):
            hit = summary.model == "lora" and on_dialogue(dialogue, seen)
            yield dataclasses.replace(summary, **fields) if hit else summary

    monkeypatch.setattr(core.generation, "summarize", summarize)  # the service imports it per call
    return seen


def test_a_battle_draws_another_dialogue_when_a_model_writes_nothing(
    service: ArenaService, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _lora_says(monkeypatch, lambda dialogue, seen: dialogue == seen[0], text="")
    battle = service.new_battle(settings=SETTINGS)
    assert len(seen) == 2 and seen[0] != seen[1] and battle.dialogue == seen[1]
    assert all(text.strip() for text in battle.summaries.values())


def test_a_battle_gives_up_after_a_few_silent_dialogues(
    service: ArenaService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.service import BATTLE_DIALOGUE_TRIES

    seen = _lora_says(monkeypatch, lambda dialogue, seen: True, text="")
    tried = f"LoRA: empty summary \\({BATTLE_DIALOGUE_TRIES} dialogues drawn, none summarized by all\\)"
    with pytest.raises(InputError, match=tried):
        service.new_battle(settings=SETTINGS)
    assert len(set(seen)) == len(seen) == BATTLE_DIALOGUE_TRIES


def test_a_battle_never_retries_a_failed_model(
    service: ArenaService, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _lora_says(monkeypatch, lambda dialogue, seen: True, text="", error="generation failed: boom")
    with pytest.raises(InputError, match=r"LoRA: generation failed: boom$"):
        service.new_battle(settings=SETTINGS)
    assert len(seen) == 1


def _result(**fields) -> ModelResult:
    return ModelResult(**{"model": "full", "summary": "A summary.", "rouge": None, "seconds": 0.5, **fields})


def test_an_empty_summary_is_said_to_be_empty() -> None:
    zeros = dict.fromkeys(ROUGE_TYPES, 0.0)
    text = view.result_markdown(_result(summary="", rouge=zeros))
    assert "Empty summary" in text and "Max new tokens" in text
    assert "Empty summary" not in view.result_markdown(_result(rouge=zeros))


def test_models_timed_in_one_batch_say_so() -> None:
    together = view.result_markdown(_result(model="original", batched_with=("lora",)))
    assert "LoRA together" in together and "one batched call" in together
    alone = view.result_markdown(_result())
    assert "batched" not in alone and "500 ms" in alone
    assert "batched" not in view.result_markdown(_result(batched_with=("lora",), cached=True))


def test_empty_settings_boxes_say_what_they_mean() -> None:
    assert view.default_placeholder(None) == "model default"
    assert view.default_placeholder(200) == "default (200)"
    assert parse_settings(None, None, GenerationSettings(max_new_tokens=200)).num_beams is None


def test_visitors_never_see_absolute_server_paths(model_set: ModelSet, tmp_path: Path) -> None:
    inside = PROJECT_ROOT / "checkpoints" / "flan-t5-base"
    config = dataclasses.replace(
        model_set.config, preset_reason=f"mini preset: flan-t5-base checkpoints not found in {inside}"
    )
    statuses = {
        "original": "loaded",
        "full": f"unavailable: no model at '{tmp_path / 'full'}'.",
        "lora": f"unavailable: adapter {inside}/lora is broken",
    }
    shown = " ".join(
        [
            view.preset_banner(config, statuses, f"no data in {tmp_path}/dialogsum"),
            *(view.column_header(name, status) for name, status in statuses.items()),
            view.result_markdown(_result(error=f"model directory not found: {tmp_path}/full")),
            view.models_table({"full": card_for("full", str(tmp_path / "nowhere" / "full"))}),
        ]
    )
    assert str(PROJECT_ROOT) not in shown and str(tmp_path) not in shown
    assert "checkpoints/flan\\-t5\\-base" in shown  # said relative to the project
    assert "not Flan-T5" in view.preset_banner(config, statuses)
    assert (
        view.scrub_paths("see https://huggingface.co/a/b and ./x/y")
        == "see https://huggingface.co/a/b and ./x/y"
    )


def test_the_readme_section_on_real_models_exists() -> None:
    section = view.readme_section(view.REAL_MODELS_SECTION)
    assert section and "python -m train.full" in section


def test_pre_training_loss_is_kept_apart_from_fine_tuning_losses(model_set: ModelSet) -> None:
    cards = model_cards(model_set.config)
    cards["original"] = dataclasses.replace(cards["original"], method="pretrained", final_train_loss=4.25)
    cards["full"] = dataclasses.replace(cards["full"], final_train_loss=5.5)
    rows = {
        line.split("|")[1].strip(): line for line in view.models_table(cards).splitlines() if "loss" in line
    }
    fine, pre = rows["Final fine-tuning loss (summaries)"], rows["Final pre-training loss (other task)"]
    assert "5.500" in fine and "4.250" not in fine
    assert "4.250" in pre and "not comparable" in pre and "5.500" not in pre


def test_a_fine_tune_that_does_not_beat_the_baselines_is_called_out() -> None:
    def stat(mean: float) -> dict:
        return {m: {"mean": mean, "ci95": [mean - 0.02, mean + 0.02]} for m in ROUGE_TYPES}

    raw = {
        "n": 10, "split": "test", "preset": "mini",
        "models": {"original": stat(0.10), "full": stat(0.20), "lora": stat(0.40)},
        "baselines": {"template": stat(0.22), "first_line": stat(0.12)},
    }  # fmt: skip
    report = normalise_report(raw, source="test")
    verdicts = {v["model"]: v["verdict"] for v in report["baseline_verdicts"]}
    assert verdicts == {"full": "below", "lora": "beats"}
    caption = view.benchmark_caption(report)
    assert (
        "Full fine-tune does not beat the trivial baselines" in caption and "ROUGE-L 20.0 vs 22.0" in caption
    )
    assert "LoRA" not in caption.split("trivial baselines")[0].split("✗")[-1]
    raw["models"]["lora"] = stat(0.23)
    close = view.benchmark_caption(normalise_report(raw))
    assert "LoRA is not clearly better than the trivial baselines" in close


def test_client_address_trusts_only_the_proxys_own_forwarded_entry() -> None:
    from core.inputs import client_address

    assert client_address("127.0.0.1", "6.6.6.6, 203.0.113.9") == "203.0.113.9"  # the proxy's entry
    assert client_address("10.0.0.2", "203.0.113.9") == "203.0.113.9"  # a private proxy (a Space)
    assert client_address("8.8.4.4", "1.2.3.4") == "8.8.4.4"  # a public peer is the client
    assert client_address("127.0.0.1", "not an address") == "127.0.0.1"
    assert client_address(None) == "unknown" and client_address("127.0.0.1") == "127.0.0.1"
