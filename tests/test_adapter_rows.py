"""``core.adapter_rows``: peft's mixed-adapter batches without peft's per-call hooks.

The arithmetic must be peft's, bit for bit: every comparison here is ``torch.equal`` against
peft's own ``adapter_names=...`` path on the same model, for each way rows can be laid out (every
row one adapter, a run of rows, scattered rows), in the encoder and decoder, with beams; anything
the lean path does not cover falls back to peft's hooks; nothing is left on the model afterwards.
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from core.adapter_rows import adapter_rows, find_lora_layers, row_groups, rows_per_thread
from core.config import load_config
from core.models import BASE_ADAPTER, LORA_ADAPTER, load_model_set

B, L = BASE_ADAPTER, LORA_ADAPTER


@pytest.fixture(scope="module", params=["auto", "float32"])
def shared(request, tiny_checkpoints):
    """The peft model original and LoRA share, at the app's default precision and at fp32."""
    config = load_config({}, preset="mini", device="cpu", dtype=request.param, **tiny_checkpoints)
    model_set = load_model_set(config, names=("original", "lora"))
    return model_set.models["lora"]


@pytest.fixture(scope="module")
def prompts(data_dir) -> list[str]:
    from core.data import load_split
    from core.prompt import build_prompt

    return [build_prompt(r.dialogue) for r in load_split(data_dir, "validation", limit=4)]


def _batch(loaded, prompts: list[str], rows: int):
    return loaded.tokenizer(prompts[:rows], return_tensors="pt", padding=True)  # lengths differ


def _lean_forwards(model) -> int:
    """How many layers have a forward of their own (what :func:`adapter_rows` sets)."""
    return sum("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize(
    "names",
    [[L, L, L], [B, B, L, L], [B, L, B, L], [L, B, B], [B, B]],
    ids=["every-row", "a-run", "scattered", "first-row", "no-adapter"],
)
def test_forward_is_bit_identical_to_peft_mixed_batches(shared, prompts, names) -> None:
    model = shared.model
    encoded = _batch(shared, prompts, len(names))
    decoder_ids = torch.tensor([[0, 5, 9, 13, 2]] * len(names))
    with torch.inference_mode():
        expected = model(**encoded, decoder_input_ids=decoder_ids, adapter_names=names).logits
        with adapter_rows(model, names):
            assert _lean_forwards(model) == len(find_lora_layers(model).layers) > 0  # lean path
            got = model(**encoded, decoder_input_ids=decoder_ids).logits
    assert torch.equal(got, expected)
    assert _lean_forwards(model) == 0
    if L in names:  # the adapter changes its rows, so a row given the wrong adapter would show
        with torch.inference_mode():
            plain = model(**encoded, decoder_input_ids=decoder_ids, adapter_names=[B] * len(names)).logits
        assert all(torch.equal(plain[i], got[i]) != (n == L) for i, n in enumerate(names))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_is_identical_to_peft_with_beams(shared, prompts, num_beams) -> None:
    model, names = shared.model, [B, L, L, B]
    encoded = _batch(shared, prompts, len(names))
    settings = {"max_new_tokens": 10, "num_beams": num_beams, "do_sample": False}
    with torch.inference_mode():
        expected = model.generate(**encoded, adapter_names=names, **settings)
        with adapter_rows(model, names, num_beams=num_beams):
            got = model.generate(**encoded, **settings)
    assert torch.equal(got, expected)


def test_rows_are_grouped_as_views_where_they_run_together() -> None:
    every, run, scattered = row_groups([L, L]), row_groups([B, L, L]), row_groups([L, B, L])
    assert every[0].rows is None
    assert run[0].rows == slice(1, 3)
    assert torch.equal(scattered[0].rows, torch.tensor([0, 2]))
    beams = row_groups([B, L], repeat=3)  # generate repeats each row for its beams, in place
    assert beams[0].rows == slice(3, 6)
    assert row_groups([B, B]) == []


def test_nothing_stays_on_the_model_after_an_error_or_a_nested_block(shared, prompts) -> None:
    model = shared.model
    with pytest.raises(RuntimeError, match="boom"), adapter_rows(model, [L]):
        raise RuntimeError("boom")
    assert _lean_forwards(model) == 0
    encoded = _batch(shared, prompts, 2)
    with torch.inference_mode(), adapter_rows(model, [B, L]):
        outer = _logits(model, encoded)
        with adapter_rows(model, [L, B]):
            assert not torch.equal(_logits(model, encoded), outer)  # the inner block's rows
        assert torch.equal(_logits(model, encoded), outer)  # the enclosing block's rows are back
    assert _lean_forwards(model) == 0


def _logits(model, encoded, **extra) -> torch.Tensor:
    decoder_ids = torch.tensor([[0, 5, 9, 13, 2]] * len(encoded["input_ids"]))
    return model(**encoded, decoder_input_ids=decoder_ids, **extra).logits


def test_threads_keep_their_own_rows_on_one_shared_model(shared, prompts) -> None:
    """Two threads in blocks with different rows at the same time, and a third with no block,
    each get what they would alone: the rows are per thread (python -m bench: P2)."""
    model = shared.model
    assert rows_per_thread(model)
    encoded = _batch(shared, prompts, 2)
    layouts = {"base-lora": [B, L], "lora-base": [L, B]}
    with torch.inference_mode():
        expected = {k: _logits(model, encoded, adapter_names=v) for k, v in layouts.items()}
        expected["no block"] = _logits(model, encoded)  # peft's own forward: its active adapter
    in_blocks = threading.Barrier(3, timeout=60)  # every thread's block is open before any runs
    got: dict[str, list[torch.Tensor]] = {}

    def run(layout: str) -> None:
        with torch.inference_mode():
            context = adapter_rows(model, layouts[layout]) if layout in layouts else contextlib.nullcontext()
            with context:
                in_blocks.wait()
                got[layout] = [_logits(model, encoded) for _ in range(5)]  # interleaved calls
                in_blocks.wait()  # no block closes while another thread still runs

    threads = [threading.Thread(target=run, args=(k,)) for k in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(got) == set(expected)
    for layout, runs in got.items():
        assert all(torch.equal(logits, expected[layout]) for logits in runs), layout
    assert not torch.equal(expected["base-lora"], expected["lora-base"])
    assert _lean_forwards(model) == 0  # the last block to close took the dispatch away


def test_no_adapter_names_leave_the_model_as_it_is(tiny_checkpoints) -> None:
    from transformers import AutoModelForSeq2SeqLM

    plain = AutoModelForSeq2SeqLM.from_pretrained(tiny_checkpoints["full"])  # no peft layers at all
    with adapter_rows(plain, None):
        assert _lean_forwards(plain) == 0


def test_an_unknown_adapter_is_refused_by_name(shared) -> None:
    with (
        pytest.raises(ValueError, match="no such LoRA adapter in the model: typo"),
        adapter_rows(shared.model, [B, "typo"]),
    ):
        pass
    assert _lean_forwards(shared.model) == 0


def test_other_lora_kinds_go_through_peft_hooks_with_the_same_results(tiny_checkpoints) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_checkpoints["original"])
    # LoRA on the embedding too: a layer kind the lean path leaves to peft.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v", "shared"], init_lora_weights=False)
    model = get_peft_model(base, config).eval()
    assert find_lora_layers(model).plain is False
    assert not rows_per_thread(model)  # peft's hooks are the model's, not the thread's
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints["original"])
    encoded = tokenizer(["#Person1#: Hi.", "#Person2#: Hello there."], return_tensors="pt", padding=True)
    names = [B, "default"]
    with torch.inference_mode():
        expected = model.generate(**encoded, adapter_names=names, max_new_tokens=8, do_sample=False)
        with adapter_rows(model, names):
            assert _lean_forwards(model) == 0  # peft's hooks, not the lean forward
            got = model.generate(**encoded, max_new_tokens=8, do_sample=False)
        everywhere = model.generate(
            **encoded, adapter_names=["default"] * 2, max_new_tokens=8, do_sample=False
        )
    assert torch.equal(got, expected)
    assert not torch.equal(got[0], everywhere[0])  # the base row really ran without the adapter
