"""The mini preset: the shipped checkpoints beat their untuned original, and the builder runs.

* The shipped ``checkpoints/mini`` loads through ``core`` like any preset; on a slice of the
  test split the fine-tuned models score higher ROUGE-1 than the original and do not answer
  every dialogue with the same sentence; on dialogues written for the test they write a
  different summary each and name something of their own dialogue.
* ``python -m train.mini`` with tiny sizes and a handful of steps writes a complete preset
  (three models, decoding defaults, report) that loads through ``core``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, GenerationSettings, load_config
from core.data import load_split
from core.generation import summarize_many
from core.metrics import rouge
from core.models import ModelSet, load_model_set
from train.tasks import content_words

MINI = PROJECT_ROOT / "checkpoints" / "mini"
SLICE = 30
SHIPPED_DEFAULTS = GenerationSettings(max_new_tokens=None)  # each generation_config.json decides


@pytest.fixture(scope="module")
def shipped_set(data_dir: str) -> ModelSet:
    """The shipped mini models, loaded once at fp32 (the same summaries on every CPU)."""
    if not (MINI / "full" / "config.json").is_file():
        pytest.skip(f"checkpoints/mini is absent ({MINI}); build it with `python -m train.mini`")
    config = load_config(env={}, preset="mini", data=data_dir, device="cpu", dtype="float32")
    model_set = load_model_set(config)
    assert not model_set.errors, model_set.errors
    return model_set


@pytest.fixture(scope="module")
def shipped_summaries(shipped_set: ModelSet, data_dir: str) -> dict[str, list[str]]:
    """Each shipped mini model's summaries of the first test dialogues, with its own decoding defaults."""
    records = load_split(data_dir, "test", limit=SLICE)
    out: dict[str, list[str]] = {}
    for batch in summarize_many(shipped_set, [r.dialogue for r in records], SHIPPED_DEFAULTS):
        assert all(s.error is None for s in batch), [s.error for s in batch if s.error]
        out[batch[0].model] = [s.text for s in batch]
    out["_references"] = [json.dumps(r.references) for r in records]
    return out


def _rouge1(summaries: list[str], references: list[str]) -> float:
    rows = [rouge(s, json.loads(r)) for s, r in zip(summaries, references, strict=True)]
    scores = [row["rouge1"] for row in rows if row is not None]  # rows without a reference have no score
    return sum(scores) / len(scores)


def test_shipped_mini_fine_tunes_beat_the_original(shipped_summaries: dict[str, list[str]]) -> None:
    refs = shipped_summaries["_references"]
    scores = {name: _rouge1(shipped_summaries[name], refs) for name in ("original", "full", "lora")}
    assert scores["full"] > scores["original"], scores
    assert scores["lora"] > scores["original"], scores


@pytest.mark.parametrize("name", ["full", "lora"])
def test_shipped_mini_summaries_depend_on_the_dialogue(
    shipped_summaries: dict[str, list[str]], name: str
) -> None:
    texts = shipped_summaries[name]
    assert all(t.strip() for t in texts), f"{name} returned an empty summary"
    assert len(set(texts)) > 1, f"{name} gave the same summary for all {len(texts)} dialogues: {texts[0]!r}"


def test_shipped_mini_carries_its_decoding_defaults_and_report() -> None:
    if not (MINI / "full" / "config.json").is_file():
        pytest.skip(f"checkpoints/mini is absent ({MINI}); build it with `python -m train.mini`")
    for name in ("original", "full", "lora"):
        defaults = json.loads((MINI / name / "generation_config.json").read_text(encoding="utf-8"))
        assert defaults.get("num_beams", 1) >= 1 and defaults.get("max_new_tokens"), name
    assert not list((MINI / "lora").glob("model*.safetensors")), (
        "the LoRA directory must hold only the adapter"
    )
    summary = json.loads((MINI / "eval" / "summary.json").read_text(encoding="utf-8"))
    assert summary["preset"] == "mini" and summary["split"] == "test"
    assert set(summary["models"]) == {"original", "full", "lora"}
    total = sum(p.stat().st_size for p in MINI.rglob("*") if p.is_file())
    assert total <= 40 * 1024 * 1024, f"checkpoints/mini is {total / 2**20:.1f} MiB, over the 40 MiB budget"


# Dialogues written for this test (not DialogSum): a ticket, a doctor, a meeting, a concert, a shop.
PASTED = [
    "#Person1#: Hi, I'd like a ticket to Boston on the morning train.\n#Person2#: The 9 o'clock train "
    "to Boston is 45 dollars.\n#Person1#: OK, one ticket to Boston, please. Can I pay by credit card?"
    "\n#Person2#: Sure. Here is your ticket.",
    "#Person1#: Doctor, I have had a bad headache for three days.\n#Person2#: Do you have a fever too?"
    "\n#Person1#: Yes, a little fever at night.\n#Person2#: I will give you some medicine. Take it "
    "twice a day and drink a lot of water.",
    "#Person1#: Can we meet on Friday to talk about the report?\n#Person2#: Friday is busy for me. How "
    "about Thursday afternoon?\n#Person1#: Thursday at 3 is fine. Let's meet in my office.\n"
    "#Person2#: Great, see you on Thursday.",
    "#Person1#: Mary, do you want to go to the concert with me tonight?\n#Person2#: I'd love to, but I "
    "have to finish my homework.\n#Person1#: The concert starts at eight. You can finish your homework "
    "before that.\n#Person2#: All right, I'll go with you.",
    "#Person1#: I want to buy a new computer for my son.\n#Person2#: This laptop is very popular with "
    "students. It is 800 dollars.\n#Person1#: That's too expensive. Do you have a cheaper one?\n"
    "#Person2#: This one is 500 dollars.",
]


def _own_content_words(dialogues: list[str]) -> list[set[str]]:
    """Each dialogue's content words (``train.tasks.content_words``) that no other dialogue has."""
    words = [_lower_content_words(d) for d in dialogues]
    return [w - set().union(*(o for j, o in enumerate(words) if j != i)) for i, w in enumerate(words)]


def _lower_content_words(text: str) -> set[str]:
    return {w.lower() for w in content_words(text)}


@pytest.mark.parametrize("name", ["full", "lora"])
def test_shipped_mini_summaries_of_pasted_dialogues_name_their_content(
    shipped_set: ModelSet, name: str
) -> None:
    (rows,) = list(summarize_many(shipped_set, PASTED, SHIPPED_DEFAULTS, names=(name,)))
    texts = [r.text for r in rows]
    assert len(set(texts)) == len(PASTED), texts
    named = [
        sorted(_lower_content_words(t) & own)
        for t, own in zip(texts, _own_content_words(PASTED), strict=True)
    ]
    # A 3.5M-parameter model: it names something of its own dialogue in some of them, not all.
    assert sum(bool(n) for n in named) >= 2, list(zip(texts, named, strict=True))


TINY_BUILD = [
    "--vocab-size", "300", "--d-model", "32", "--d-ff", "64", "--num-layers", "1", "--num-heads", "2",
    "--max-length", "64", "--pretrain-steps", "3", "--pretrain-batch-size", "4",
    "--train-limit", "8", "--batch-size", "4", "--full-steps", "2", "--lora-steps", "2",
    "--eval-limit", "3", "--max-new-tokens", "6", "--seed", "1", "--threads", "1", "--quiet",
    "--tasks",  # the instruction stage too (with DREAM when ../shared/dream is there)
    "--copy-steps", "2", "--copy-batch-size", "4",  # and a copy stage before it
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> Path:
    """Run the real build command with tiny sizes into a temporary directory."""
    out = tmp_path_factory.mktemp("mini-build") / "mini"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, "-m", "train.mini", "--data", data_dir, "--output", str(out), *TINY_BUILD]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mini preset built" in done.stdout
    return out


def test_build_writes_a_complete_preset(tiny_build: Path) -> None:
    for name in ("original", "full"):
        assert (tiny_build / name / "model.safetensors").is_file(), name
    assert (tiny_build / "lora" / "adapter_model.safetensors").is_file()
    assert not (tiny_build / "lora" / "model.safetensors").exists()
    for name in ("original", "full", "lora"):
        defaults = json.loads((tiny_build / name / "generation_config.json").read_text(encoding="utf-8"))
        assert defaults["max_new_tokens"] == 6 and defaults["no_repeat_ngram_size"] == 3, name
        meta = json.loads((tiny_build / name / "arena.json").read_text(encoding="utf-8"))
        assert meta["steps"] >= 1 and meta["loss_history"], name
        assert (tiny_build / name / "README.md").is_file(), name
    original = json.loads((tiny_build / "original" / "arena.json").read_text(encoding="utf-8"))
    assert original["method"] == "pretrained" and original["steps"] == 3
    assert original["instruction_pairs"] > 0 and original["denoising_windows"] > 0
    assert original["initialised_from"] == "a copy stage of 2 steps"
    assert not (tiny_build / "_copy_stage").exists()  # the first stage is not shipped
    for name in ("predictions.csv", "summary.json", "report.md", "rouge.png"):
        assert (tiny_build / "eval" / name).is_file(), name
    summary = json.loads((tiny_build / "eval" / "summary.json").read_text(encoding="utf-8"))
    assert summary["n"] == 3 and set(summary["models"]) == {"original", "full", "lora"}
    lora = json.loads((tiny_build / "lora" / "arena.json").read_text(encoding="utf-8"))
    assert lora["lora"]["base_dtype"] == "float32"  # the shipped recipe's, whatever the CPU
    build = json.loads((tiny_build / "build.json").read_text(encoding="utf-8"))
    assert set(build["seconds"]) == {"tokenizer", "original", "full", "lora", "eval"}


def test_built_preset_loads_and_summarizes_through_core(tiny_build: Path, data_dir: str) -> None:
    config = load_config(
        env={},
        preset="mini",
        original=str(tiny_build / "original"),
        full=str(tiny_build / "full"),
        lora=str(tiny_build / "lora"),
        data=data_dir,
        device="cpu",
        dtype="float32",
    )
    model_set = load_model_set(config)
    assert not model_set.errors, model_set.errors
    dialogue = load_split(data_dir, "test", limit=1)[0].dialogue
    batches = list(summarize_many(model_set, [dialogue], GenerationSettings(max_new_tokens=None)))
    assert {b[0].model for b in batches} == {"original", "full", "lora"}
    assert all(b[0].error is None for b in batches)


def test_build_refuses_to_overwrite_without_the_flag(tiny_build: Path, data_dir: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "train.mini",
        "--data",
        data_dir,
        "--output",
        str(tiny_build),
        *TINY_BUILD,
    ]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "--overwrite" in done.stderr


def test_build_rejects_bad_options(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "train.mini", "--output", str(tmp_path / "x"), "--d-model", "30"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "divisible" in done.stderr
    assert not (tmp_path / "x").exists()


def test_a_bad_lora_base_dtype_is_refused_before_anything_is_built() -> None:
    from train.mini import MiniOptions

    with pytest.raises(ValueError, match="lora_base_dtype must be one of auto, float32, bfloat16"):
        MiniOptions(lora_base_dtype="float16").validate()
    assert MiniOptions(lora_base_dtype="auto").validate().lora_base_dtype == "auto"


# --- the span-corruption collator (train/pretrain.py) ---------------------------------------


def _reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    """Undo span corruption: put each sentinel's hidden tokens back in place of the sentinel."""
    hidden: dict[int, list[int]] = {}
    current = None
    for token in targets[:-1]:  # drop EOS
        if token in sentinels:
            current = token
            hidden[current] = []
        else:
            hidden[current].append(token)
    out: list[int] = []
    for token in inputs[:-1]:
        out.extend(hidden[token] if token in sentinels else [token])
    return out


def test_noise_mask_follows_density_and_span_length() -> None:
    import numpy as np

    from train.pretrain import random_spans_noise_mask

    rng = np.random.default_rng(0)
    for length, density, span in [(200, 0.15, 3.0), (200, 0.5, 8.0), (37, 0.3, 2.0)]:
        mask = random_spans_noise_mask(length, density, span, rng)
        assert mask.sum() == round(length * density)
        starts = int(mask[0]) + int(np.sum(mask[1:] & ~mask[:-1]))
        assert starts == max(1, round(round(length * density) / span))
        assert not mask[0], "the text must not begin with a noise span"
    assert not random_spans_noise_mask(1, 0.5, 3.0, rng).any()


def test_corruption_round_trips_and_pads_labels_with_ignore_index(tiny_tokenizer) -> None:
    from train.pretrain import Denoiser, SpanCorruptionCollator

    texts = ["#Person1#: Hello, how are you doing today?", "#Person2#: I have been having trouble breathing."]
    features = [{"input_ids": tiny_tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
    collator = SpanCorruptionCollator(tiny_tokenizer, (Denoiser(0.3, 2.0),), seed=3)
    batch = collator(features)
    sentinels = tiny_tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
    assert batch["labels"].shape[0] == 2 and (batch["labels"] == -100).any()  # shorter row is padded
    for row, feature in enumerate(features):
        mask = batch["attention_mask"][row].bool()
        inputs = batch["input_ids"][row][mask].tolist()
        targets = [t for t in batch["labels"][row].tolist() if t != -100]
        assert inputs[-1] == targets[-1] == tiny_tokenizer.eos_token_id
        assert targets[0] == sentinels[0]
        assert _reconstruct(inputs, targets, sentinels) == feature["input_ids"]
    again = SpanCorruptionCollator(tiny_tokenizer, (Denoiser(0.3, 2.0),), seed=3)(features)
    assert all(batch[k].equal(again[k]) for k in batch), "same seed, same corruption"


def test_denoiser_spec_parsing() -> None:
    from train.pretrain import Denoiser, parse_denoisers

    assert parse_denoisers("0.15:3:1,0.5:8") == (Denoiser(0.15, 3.0, 1.0), Denoiser(0.5, 8.0, 1.0))
    for bad in ("0.15", "1.5:3", "0.2:x", "0.2:0.5"):
        with pytest.raises(ValueError):
            parse_denoisers(bad)


@pytest.fixture(scope="module")
def tiny_tokenizer(data_dir: str):
    from train.tokenizer import train_tokenizer

    records = load_split(data_dir, "validation", limit=100)
    return train_tokenizer([r.dialogue for r in records], vocab_size=400)
