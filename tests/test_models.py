from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from core.config import GenerationSettings, load_config
from core.generation import fit_dialogue, summarize, summarize_many
from core.models import (
    BASE_ADAPTER,
    ModelLoadError,
    adapter_base_warning,
    load_model_set,
    resolve_dtype,
)
from core.prompt import build_prompt

SETTINGS = GenerationSettings(max_new_tokens=12)


def tiny_config(paths: dict[str, str], **overrides):
    return load_config({}, preset="mini", **{**paths, **overrides})


@pytest.fixture(scope="module")
def model_set(tiny_checkpoints):
    # fp32: these tests compare with plain transformers in fp32; the default fast path (bf16 +
    # int8 decoder weights) has its own correctness tests in tests/test_perf_paths.py.
    return load_model_set(tiny_config(tiny_checkpoints, dtype="float32"))


@pytest.fixture(scope="module")
def dialogue(data_dir) -> str:
    from core.data import load_split

    return load_split(data_dir, "test", limit=1)[0].dialogue


def _plain_generate(location: str, dialogue: str, max_new_tokens: int = 12) -> str:
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForSeq2SeqLM.from_pretrained(location).eval()
    fitted = fit_dialogue(tokenizer, dialogue)  # the same cut the app makes for long inputs
    inputs = tokenizer(build_prompt(fitted.dialogue), return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_all_three_load_and_lora_shares_the_base_weights(model_set) -> None:
    assert model_set.errors == {}
    original, lora, full = (model_set.models[n] for n in ("original", "lora", "full"))
    assert original.model is lora.model  # one in-memory base, the adapter injected into it
    assert original.adapter_name == BASE_ADAPTER
    assert full.model is not original.model
    base_weights = {p.data_ptr() for n, p in original.model.named_parameters() if "lora_" not in n}
    full_weights = {p.data_ptr() for p in full.model.parameters()}
    assert base_weights.isdisjoint(full_weights)
    assert all(model_set.status(n) == "loaded" for n in ("original", "full", "lora"))


def test_original_through_shared_base_equals_a_separately_loaded_base(
    model_set, tiny_checkpoints, dialogue
) -> None:
    results = {s.model: s for s in summarize(model_set, dialogue, SETTINGS)}
    assert results["original"].error is None
    assert results["original"].text == _plain_generate(tiny_checkpoints["original"], dialogue)
    assert results["full"].text == _plain_generate(tiny_checkpoints["full"], dialogue)


def test_lora_output_differs_once_its_weights_are_nonzero(model_set, dialogue) -> None:
    results = {s.model: s.text for s in summarize(model_set, dialogue, SETTINGS)}
    assert results["lora"] and results["lora"] != results["original"]


def test_original_and_lora_share_one_generate_call(model_set, dialogue) -> None:
    results = {s.model: s for s in summarize(model_set, dialogue, SETTINGS)}
    assert results["original"].batched_with == ("lora",)
    assert results["lora"].batched_with == ("original",)
    assert results["full"].batched_with == ()
    assert all(r.seconds > 0 for r in results.values())


def test_mixed_adapter_batch_equals_separate_calls(model_set, data_dir) -> None:
    from core.data import load_split

    dialogues = [r.dialogue for r in load_split(data_dir, "validation", limit=3)]
    together = {
        rows[0].model: [r.text for r in rows] for rows in summarize_many(model_set, dialogues, SETTINGS)
    }
    for name in ("original", "lora"):
        alone = next(summarize_many(model_set, dialogues, SETTINGS, names=(name,)))
        assert [r.text for r in alone] == together[name]
        one_by_one = [
            next(summarize_many(model_set, [d], SETTINGS, names=(name,)))[0].text for d in dialogues
        ]
        assert one_by_one == together[name]


def test_greedy_generation_is_deterministic(model_set, dialogue) -> None:
    # Keyed by model: the columns arrive in the order their calls finish, which may vary.
    first = {s.model: s.text for s in summarize(model_set, dialogue, SETTINGS)}
    second = {s.model: s.text for s in summarize(model_set, dialogue, SETTINGS)}
    assert first == second and set(first) == {"original", "lora", "full"}


def test_float16_is_refused_and_auto_is_bf16_only_where_the_cpu_has_it() -> None:
    from core.precision import cpu_has_native_bf16

    with pytest.raises(ModelLoadError, match="overflows in fp16"):
        resolve_dtype("float16", torch.device("cpu"))
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_bf16_on_cpu_is_selectable(tiny_checkpoints, dialogue) -> None:
    models = load_model_set(tiny_config(tiny_checkpoints, dtype="bfloat16"), names=("full",))
    assert next(models.models["full"].model.parameters()).dtype == torch.bfloat16
    assert next(summarize(models, dialogue, SETTINGS, names=("full",))).error is None


def test_adapter_for_another_base_is_reported(tiny_checkpoints, tmp_path: Path) -> None:
    adapter = tmp_path / "lora"
    shutil.copytree(tiny_checkpoints["lora"], adapter)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "google/flan-t5-large"
    config_path.write_text(json.dumps(config))
    warning = adapter_base_warning(str(adapter), tiny_checkpoints["original"])
    assert warning is not None and "google/flan-t5-large" in warning
    models = load_model_set(tiny_config({**tiny_checkpoints, "lora": str(adapter)}))
    assert "google/flan-t5-large" in models.status("lora")
    assert adapter_base_warning(tiny_checkpoints["lora"], tiny_checkpoints["original"]) is None


def test_missing_full_checkpoint_leaves_the_others_serving(
    tiny_checkpoints, tmp_path: Path, dialogue
) -> None:
    missing = tmp_path / "nowhere"
    models = load_model_set(tiny_config({**tiny_checkpoints, "full": str(missing)}))
    assert str(missing) in models.errors["full"]
    results = {s.model: s for s in summarize(models, dialogue, SETTINGS)}
    assert results["full"].error == models.errors["full"]
    assert results["original"].error is None and results["original"].text
    assert results["lora"].error is None and results["lora"].text
