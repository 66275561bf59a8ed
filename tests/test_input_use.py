"""The input-use measure (core/input_use.py): teacher-forced loss with own vs another dialogue."""

from __future__ import annotations

import pytest
import torch

from core.config import load_config
from core.data import load_split
from core.evaluation import derangement
from core.input_use import input_use, reference_losses
from core.models import load_model_set
from core.prompt import build_prompt


@pytest.fixture(scope="module")
def model_set(tiny_checkpoints: dict[str, str], data_dir: str):
    config = load_config(
        env={}, preset="mini", data=data_dir, device="cpu", dtype="float32", **tiny_checkpoints
    )
    loaded = load_model_set(config)
    assert not loaded.errors, loaded.errors
    return loaded


def test_reference_loss_is_the_models_own_loss(model_set, data_dir: str) -> None:
    record = load_split(data_dir, "validation", limit=1)[0]
    loaded = model_set.models["full"]
    (loss,) = reference_losses(loaded, [record.dialogue], [record.reference])
    tokenizer = loaded.tokenizer
    encoded = tokenizer([build_prompt(record.dialogue)], return_tensors="pt")
    labels = tokenizer(text_target=[record.reference], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = loaded.model(**encoded, labels=labels).loss.item()
    assert loss == pytest.approx(expected, rel=1e-4)


def test_batching_does_not_change_the_losses(model_set, data_dir: str) -> None:
    records = load_split(data_dir, "validation", limit=5)
    loaded = model_set.models["lora"]  # a row of the shared peft model: adapter picked per row
    dialogues, refs = [r.dialogue for r in records], [r.reference for r in records]
    one = reference_losses(loaded, dialogues, refs, batch_size=1)
    many = reference_losses(loaded, dialogues, refs, batch_size=5)
    assert many == pytest.approx(one, rel=1e-4)
    base = reference_losses(model_set.models["original"], dialogues, refs, batch_size=5)
    assert base != pytest.approx(many)  # the adapter is applied to LoRA's rows only


def test_input_use_pairs_each_reference_with_another_dialogue(model_set, data_dir: str) -> None:
    records = load_split(data_dir, "validation", limit=6)
    result = input_use(list(model_set.models.values()), records, resamples=200)
    assert set(result) == {"original", "full", "lora"}
    loaded = model_set.models["full"]
    refs = [r.reference for r in records]
    own = reference_losses(loaded, [r.dialogue for r in records], refs)
    other = reference_losses(loaded, [records[j].dialogue for j in derangement(len(records))], refs)
    row = result["full"]
    assert row["own_loss"]["mean"] == pytest.approx(sum(own) / len(own), rel=1e-5)
    assert row["gap"]["mean"] == pytest.approx(
        sum(other) / len(other) - sum(own) / len(own), rel=1e-4, abs=1e-6
    )
    lo, hi = row["gap"]["ci95"]
    assert lo <= row["gap"]["mean"] <= hi
    assert row["reads_input"] == (lo > 0) and row["n"] == 6


def test_input_use_needs_two_labelled_dialogues(model_set, data_dir: str) -> None:
    records = load_split(data_dir, "validation", limit=1)
    with pytest.raises(ValueError, match="at least two"):
        input_use(list(model_set.models.values()), records)
