from __future__ import annotations

import pytest

from core.config import GenerationSettings, load_config
from core.generation import effective_kwargs, fit_dialogue, summarize, summarize_all
from core.models import load_model_set, load_tokenizer
from core.presentation import truncation_notice
from core.prompt import PROMPT_HEAD, PROMPT_TAIL, build_prompt, clean_text
from core.summaries import MAX_DIALOGUE_CHARS, MAX_INPUT_TOKENS, Summary, SummaryCache


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoints):
    return load_tokenizer(tiny_checkpoints["original"])


def test_prompt_is_the_labs_instruction() -> None:
    prompt = build_prompt("  #Person1#: Hi.\n#Person2#: Hello.  ")
    assert prompt == "Summarize the following conversation.\n\n#Person1#: Hi.\n#Person2#: Hello.\n\nSummary: "
    assert prompt.startswith(PROMPT_HEAD) and prompt.endswith(PROMPT_TAIL)


def test_clean_text_drops_control_characters_but_keeps_lines() -> None:
    assert clean_text("a\x00b\r\nc\td\x1b[0m\x7f") == "ab\nc\td[0m"
    assert clean_text("שלום 👋") == "שלום 👋"


def test_short_dialogue_is_kept_whole(tokenizer) -> None:
    fitted = fit_dialogue(tokenizer, "#Person1#: Hi.\n#Person2#: Hello.")
    assert fitted.truncated_tokens == 0
    assert fitted.dialogue == "#Person1#: Hi.\n#Person2#: Hello."
    assert fitted.input_tokens == len(tokenizer(build_prompt(fitted.dialogue))["input_ids"])


def test_long_dialogue_is_cut_to_the_limit_keeping_the_instruction(tokenizer) -> None:
    long = "#Person1#: " + "we should meet tomorrow at the station please " * 3000
    fitted = fit_dialogue(tokenizer, long)
    prompt_ids = tokenizer(build_prompt(fitted.dialogue))["input_ids"]
    assert len(prompt_ids) <= MAX_INPUT_TOKENS
    assert fitted.input_tokens == MAX_INPUT_TOKENS or fitted.input_tokens == len(prompt_ids)
    assert long.startswith(fitted.dialogue)
    assert fitted.truncated_chars == len(long.strip()) - len(fitted.dialogue) > 0
    capped = long.strip()[:MAX_DIALOGUE_CHARS]  # tokens are counted on the character-capped text
    total = len(tokenizer(build_prompt(capped))["input_ids"])
    assert fitted.truncated_tokens == total - fitted.input_tokens > 0
    short = fit_dialogue(tokenizer, "#Person1#: Hi.")
    assert short.truncated_tokens == short.truncated_chars == 0
    # The one truncation notice (core.presentation) reads the same counts.
    notice = truncation_notice([fitted], long) or ""
    assert (
        f"{fitted.truncated_tokens:,} of" in notice and truncation_notice([short], "#Person1#: Hi.") is None
    )


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x00"])
def test_empty_dialogue_is_a_clear_error(tokenizer, text) -> None:
    with pytest.raises(ValueError, match="the dialogue is empty"):
        fit_dialogue(tokenizer, text)


def test_empty_dialogue_reaches_every_column_as_a_message(tiny_checkpoints) -> None:
    models = load_model_set(load_config({}, preset="mini", **tiny_checkpoints))
    results = list(summarize(models, "   ", GenerationSettings(max_new_tokens=5)))
    assert sorted(r.model for r in results) == ["full", "lora", "original"]
    assert all(r.error and "empty" in r.error and r.text == "" for r in results)


def test_user_settings_override_model_defaults_and_never_sample(tiny_checkpoints) -> None:
    models = load_model_set(load_config({}, preset="mini", **tiny_checkpoints), names=("full",))
    loaded = models.models["full"]
    loaded.generation_defaults.update({"num_beams": 4, "no_repeat_ngram_size": 3, "max_new_tokens": 20})
    kwargs = effective_kwargs(loaded, GenerationSettings(max_new_tokens=7, num_beams=None))
    assert kwargs == {"num_beams": 4, "no_repeat_ngram_size": 3, "max_new_tokens": 7, "do_sample": False}
    assert effective_kwargs(loaded, GenerationSettings(num_beams=1))["num_beams"] == 1


def test_invalid_settings_are_rejected_before_generating(tiny_checkpoints) -> None:
    models = load_model_set(load_config({}, preset="mini", **tiny_checkpoints), names=("full",))
    with pytest.raises(ValueError, match="from 1 to 8"):
        list(summarize(models, "#Person1#: Hi.", GenerationSettings(num_beams=50)))


def test_summary_cache_is_bounded_and_skips_errors() -> None:
    cache = SummaryCache(max_entries=2)
    settings = GenerationSettings()
    keys = [SummaryCache.key("mini", "full", f"dialogue {i}", settings) for i in range(3)]
    for key in keys:
        cache.put(key, Summary("full", "text", 0.1))
    assert len(cache) == 2 and cache.get(keys[0]) is None and cache.get(keys[2]) is not None
    error_key = SummaryCache.key("mini", "lora", "x", settings)
    cache.put(error_key, Summary("lora", "", 0.0, error="boom"))
    assert cache.get(error_key) is None
    assert SummaryCache.key("mini", "full", " a\x00 ", settings) == SummaryCache.key(
        "mini", "full", "a", settings
    )


@pytest.fixture(scope="module")
def model_set(tiny_checkpoints, data_dir):
    """The three tiny models, loaded once for the generation-loop tests."""
    return load_model_set(load_config(env={}, preset="mini", data=data_dir, device="cpu", **tiny_checkpoints))


def test_summarize_all_batches_caches_and_reports_progress(model_set) -> None:
    settings = GenerationSettings(max_new_tokens=6)
    dialogues = ["#Person1#: " + "word " * n for n in (30, 3, 12)]  # not in length order
    cache, steps = SummaryCache(), []
    first = summarize_all(
        model_set, dialogues, settings, ("original", "lora"), cache=cache,
        key=lambda name, i: (name, i), batch_size=2, progress=lambda done, total: steps.append((done, total)),
    )  # fmt: skip
    assert steps == [(0, 3), (2, 3), (3, 3)] and first.generated == 6 and first.cached == 0
    for name in ("original", "lora"):  # batched and length-sorted, yet in input order
        alone = [next(summarize(model_set, d, settings, names=[name])).text for d in dialogues]
        assert first.texts[name] == alone
    again = summarize_all(
        model_set, dialogues, settings, ("original", "lora"), cache=cache, key=lambda name, i: (name, i)
    )
    assert (again.cached, again.generated, again.texts) == (6, 0, first.texts)
    absent = summarize_all(model_set, dialogues[:1], settings, ("nowhere",))
    assert absent.texts == {"nowhere": [""]} and "not loaded" in absent.errors["nowhere"][0]


def test_a_time_budget_cuts_generate_and_marks_the_summary(model_set) -> None:
    """ARENA_GENERATION_TIMEOUT_S: past the budget, generate returns what it had, marked as cut."""
    # Random weights rarely stop on their own: min_new_tokens makes the uncut run long for sure.
    settings = GenerationSettings(max_new_tokens=40, min_new_tokens=40, num_beams=1)
    dialogue = "#Person1#: Where are you going?\n#Person2#: To the bank."
    whole = {s.model: s for s in summarize(model_set, dialogue, settings)}
    cut = {s.model: s for s in summarize(model_set, dialogue, settings, time_limit_s=1e-6)}
    tokenizer = model_set.models["full"].tokenizer
    for name in ("original", "full", "lora"):
        assert not whole[name].timed_out and cut[name].timed_out and cut[name].error is None
        assert len(tokenizer(cut[name].text)["input_ids"]) < len(tokenizer(whole[name].text)["input_ids"])
    cache = SummaryCache()
    cache.put(("k",), cut["full"])
    assert cache.get(("k",)) is None  # a cut summary is not served again from the cache
    batch = summarize_all(
        model_set, [dialogue], settings, ("full",), cache=cache, key=lambda n, i: (n, i), time_limit_s=1e-6
    )
    assert batch.timed_out == 1 and len(cache) == 0


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 60.0), ("", 60.0), ("2.5", 2.5), ("0", None)]
)  # fmt: skip
def test_generation_timeout_is_configured_from_the_environment(raw, expected) -> None:
    env = {"ARENA_PRESET": "mini"} | ({} if raw is None else {"ARENA_GENERATION_TIMEOUT_S": raw})
    assert load_config(env=env).generation_timeout_s == expected
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ValueError, match="ARENA_GENERATION_TIMEOUT_S"):
            load_config(env={"ARENA_PRESET": "mini", "ARENA_GENERATION_TIMEOUT_S": bad})
