"""``core.row_encoding``: rows encoded at their own length, some of them by another worker.

A comparison's shared-base batch hands its LoRA row's encoder pass to the full model's worker
(:class:`EncoderHandoff`). What must hold: the summaries are exactly those without the handoff;
the handed rows really run on the other worker; and no failure or absence on either side leaves
the other waiting or wrong - the owner takes back rows the helper never started, ignores states
of other ids, and survives a helper that fails.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
import torch

import core.generation as generation
from core.config import GenerationSettings, load_config
from core.generation import offered_rows, plan_handoff, summarize_many
from core.models import load_model_set
from core.prompt import build_prompt
from core.row_encoding import EncoderHandoff, OfferedRows, encode_rows_apart

SETTINGS = GenerationSettings(max_new_tokens=12, min_new_tokens=12, num_beams=1)


@pytest.fixture(scope="module")
def model_set(tiny_checkpoints):
    return load_model_set(load_config({}, preset="mini", device="cpu", dtype="float32", **tiny_checkpoints))


@pytest.fixture(scope="module")
def dialogues(data_dir) -> list[str]:
    from core.data import load_split

    return [r.dialogue for r in load_split(data_dir, "validation", limit=3)]


@pytest.fixture
def two_cores(monkeypatch):
    """Both groups of a comparison at once (one intra-op thread each), as on the 2-core host."""
    monkeypatch.setattr(generation, "available_cores", lambda: 2)


def _summaries(model_set, dialogues, handoff: bool, monkeypatch) -> dict[str, list[tuple]]:
    monkeypatch.setattr(generation, "HAND_OFF_ENCODER_ROWS", handoff)
    return {
        rows[0].model: [dataclasses.astuple(dataclasses.replace(r, seconds=0.0)) for r in rows]
        for rows in summarize_many(model_set, dialogues, SETTINGS)
    }


@pytest.fixture
def shared_encoder_calls(model_set) -> Iterator[list[tuple[str, int]]]:
    """(thread name, tokens) of every call of the shared base's encoder, as they run."""
    calls: list[tuple[str, int]] = []
    encoder = model_set.models["lora"].model.get_encoder()
    hook = encoder.register_forward_pre_hook(
        lambda _module, _args, kwargs: calls.append(
            (threading.current_thread().name, kwargs["input_ids"].shape[1])
        ),
        with_kwargs=True,
    )
    yield calls
    hook.remove()


@pytest.mark.parametrize("count", [1, 2], ids=["one-dialogue", "two-dialogues"])
def test_handed_rows_run_on_the_other_worker_and_change_no_summary(
    model_set, dialogues, two_cores, monkeypatch, shared_encoder_calls, count
) -> None:
    without = _summaries(model_set, dialogues[:count], False, monkeypatch)
    assert len({thread for thread, _ in shared_encoder_calls}) == 1  # without: the batch's worker
    calls = shared_encoder_calls
    calls.clear()
    # The owner takes back rows the helper has not started (a test below); on a loaded machine
    # the tiny models' owner can get there first. Here the owner waits for the helper to finish,
    # so the rows are the helper's every time.
    helped = threading.Event()
    run, collect = EncoderHandoff.run, EncoderHandoff.collect

    def run_then_say(self: EncoderHandoff) -> None:
        run(self)
        helped.set()

    def collect_after_helper(self: EncoderHandoff):
        assert helped.wait(60), "the helper never ran"
        return collect(self)

    monkeypatch.setattr(EncoderHandoff, "run", run_then_say)
    monkeypatch.setattr(EncoderHandoff, "collect", collect_after_helper)
    with_handoff = _summaries(model_set, dialogues[:count], True, monkeypatch)
    assert with_handoff == without
    assert set(with_handoff) == {"original", "lora", "full"}
    # Every row of the shared batch encoded once, at its own length, on two different workers.
    assert len(calls) == 2 * count
    assert len({thread for thread, _ in calls}) == 2


def test_plan_hands_half_the_difference_of_the_larger_batchs_last_rows(model_set, monkeypatch) -> None:
    shared = [model_set.models["original"], model_set.models["lora"]]
    full = [model_set.models["full"]]
    owner, helper, handoff = plan_handoff([shared, full], dialogues=1)
    assert (owner, helper, handoff.rows) == (0, 1, (1,))  # the LoRA row (rows: original, LoRA)
    owner, helper, handoff = plan_handoff([full, shared], dialogues=3)  # 3 rows against 6
    assert (owner, helper, handoff.rows) == (1, 0, (4, 5))
    assert plan_handoff([full, [model_set.models["lora"]]], dialogues=1) is None  # equal rows
    assert plan_handoff([shared, full, full], dialogues=1) is None  # only two groups at once
    monkeypatch.setattr(generation, "HAND_OFF_ENCODER_ROWS", False)
    assert plan_handoff([shared, full], dialogues=1) is None


def test_no_handoff_for_a_model_whose_adapter_rows_are_not_per_thread(model_set, monkeypatch) -> None:
    monkeypatch.setattr(generation, "rows_per_thread", lambda model: False)  # e.g. LoRA on embeddings
    shared = [model_set.models["original"], model_set.models["lora"]]
    assert plan_handoff([shared, [model_set.models["full"]]], dialogues=1) is None


def _batch(model_set, dialogues):
    shared = model_set.models["lora"]
    prompts = [build_prompt(d) for d in dialogues[:2]]
    encoded = shared.tokenizer(prompts * 2, return_tensors="pt", padding=True)
    names = [model_set.models["original"].adapter_name] * 2 + [shared.adapter_name] * 2
    return shared, prompts, encoded, names


def test_owner_takes_back_rows_the_helper_never_started(model_set, dialogues, shared_encoder_calls) -> None:
    shared, prompts, encoded, names = _batch(model_set, dialogues)
    group = [model_set.models["original"], shared]
    handoff = EncoderHandoff([2, 3])
    handoff.offer(offered_rows(group, prompts, handoff.rows, 512))
    with torch.inference_mode():
        expected = encode_rows_apart(shared.model, encoded, names).last_hidden_state
    got: list[torch.Tensor] = []

    def owner() -> None:
        with torch.inference_mode():
            got.append(encode_rows_apart(shared.model, encoded, names, handoff).last_hidden_state)

    assert _finishes(owner, 60)  # it does not wait for a helper that never came
    assert torch.equal(got[0], expected)
    assert len(shared_encoder_calls) == 8  # four rows, twice: the owner encoded the handed two
    handoff.run()  # a helper arriving late finds the rows taken: it returns without encoding
    assert len(shared_encoder_calls) == 8


def test_states_from_the_helper_are_used_only_for_the_ids_offered(model_set, dialogues) -> None:
    shared, prompts, encoded, names = _batch(model_set, dialogues)
    group = [model_set.models["original"], shared]
    handoff = EncoderHandoff([3])
    wrong = offered_rows(group, prompts[::-1], handoff.rows, 512)  # another dialogue's ids in row 3
    assert not torch.equal(wrong.ids[3][0], encoded["input_ids"][3][encoded["attention_mask"][3].bool()])
    handoff.offer(wrong)
    handoff.run()
    with torch.inference_mode():
        expected = encode_rows_apart(shared.model, encoded, names).last_hidden_state
        got = encode_rows_apart(shared.model, encoded, names, handoff).last_hidden_state
    assert torch.equal(got, expected)


def test_a_failing_helper_leaves_the_rows_to_the_owner(model_set, dialogues, caplog) -> None:
    shared, prompts, encoded, names = _batch(model_set, dialogues)
    group = [model_set.models["original"], shared]
    handoff = EncoderHandoff([3])
    good = offered_rows(group, prompts, handoff.rows, 512)
    broken = dataclasses.replace(shared, model=object())  # no encoder: encoding on it raises
    handoff.offer(OfferedRows(broken, good.ids, good.adapter_names))
    handoff.run()  # never raises: its own group must still run
    assert "their own worker encodes them" in caplog.text
    with torch.inference_mode():
        expected = encode_rows_apart(shared.model, encoded, names).last_hidden_state
        got = encode_rows_apart(shared.model, encoded, names, handoff).last_hidden_state
    assert torch.equal(got, expected)


def test_a_withdrawn_offer_releases_the_waiting_helper_at_once() -> None:
    handoff = EncoderHandoff([1])
    helper = threading.Thread(target=handoff.run)
    helper.start()
    helper.join(timeout=0.2)
    assert helper.is_alive()  # waiting for the offer
    handoff.withdraw()
    helper.join(timeout=10)
    assert not helper.is_alive()
    assert handoff.collect() is None  # the owner encodes everything itself


def test_a_helper_whose_owner_never_offers_gives_up(monkeypatch) -> None:
    import core.row_encoding as row_encoding

    monkeypatch.setattr(row_encoding, "OFFER_WAIT_S", 0.2)
    handoff = EncoderHandoff([1])
    assert _finishes(handoff.run, 30)  # no offer, no withdrawal: it stops waiting
    assert handoff.collect() is None  # an owner arriving after all encodes the rows itself


def _finishes(target, seconds: float = 120) -> bool:
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    return not worker.is_alive()


def test_bad_input_with_a_handoff_answers_every_column(model_set, two_cores) -> None:
    results: dict[str, str | None] = {}

    def compare() -> None:
        for rows in summarize_many(model_set, ["   "], SETTINGS):
            results[rows[0].model] = rows[0].error

    assert _finishes(compare)  # the helper is not left waiting for an offer that never comes
    assert set(results) == {"original", "lora", "full"}
    assert all(error and "empty" in error for error in results.values())


def test_a_failing_shared_batch_neither_blocks_nor_breaks_the_full_model(
    model_set, dialogues, two_cores, monkeypatch
) -> None:
    expected = next(s.text for s in generation.summarize(model_set, dialogues[0], SETTINGS, names=("full",)))
    shared = model_set.models["lora"].model

    def broken_generate(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(shared, "generate", broken_generate)
    results: dict[str, object] = {}

    def compare() -> None:
        for rows in summarize_many(model_set, dialogues[:1], SETTINGS):
            results[rows[0].model] = rows[0]

    assert _finishes(compare)
    assert results["full"].error is None and results["full"].text == expected
    assert "decoder exploded" in results["original"].error and "decoder exploded" in results["lora"].error


def test_simultaneous_comparisons_each_get_their_own_summaries(model_set, dialogues, two_cores) -> None:
    """Visitors comparing at the same time: helpers encode on the shared base without its lock,
    each request's rows through its own adapters - every request gets what it gets alone."""
    alone = [
        {rows[0].model: [r.text for r in rows] for rows in summarize_many(model_set, [d], SETTINGS)}
        for d in dialogues
    ]
    start = threading.Barrier(len(dialogues), timeout=60)
    together: dict[int, dict[str, list[str]]] = {}

    def visitor(i: int) -> None:
        start.wait()
        for _ in range(3):  # repeated, so the requests' calls interleave in many ways
            got = {
                rows[0].model: [r.text for r in rows]
                for rows in summarize_many(model_set, [dialogues[i]], SETTINGS)
            }
            if together.setdefault(i, got) != got:
                together[i] = {"changed between repeats": []}

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(len(dialogues))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [together.get(i) for i in range(len(dialogues))] == alone
    assert len({tuple(a["lora"]) for a in alone}) == len(dialogues)  # the requests really differ
