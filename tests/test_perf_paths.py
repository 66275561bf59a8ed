"""The fast paths that ``python -m bench`` made the defaults keep outputs correct.

* int8 decoder weights (``dtype="int8"`` with bf16 compute, ``"float32-int8"`` with fp32; what
  ``auto`` picks on x86 CPUs with AVX2, by whether they have hardware bf16): every layer
  converted, LoRA kept exact, close to the model it came from, and batch-invariant - a row's
  summary doesn't depend on what it is batched with, so peft's mixed-adapter batch (original +
  LoRA in one call) equals separate calls, and the report's batched evaluation equals one
  dialogue at a time.
* On a CPU a batch's rows are encoded one at a time at their own length (no padding), each with
  its own adapter, exactly as a batch-1 call encodes them; decoding runs batched.
* One intra-op thread per CPU generate call unless ``ARENA_THREADS`` says otherwise; by
  default the shared-base batch and the full model run at the same time when the cores hold
  both (one after another when they don't), with the same summaries as one after another, each
  column streamed as its call finishes.
* The original and LoRA rows really share one set of base weights (the memory figure P1).
* The benchmark builds flan-t5-base's exact shape (checked on the meta device: no weights).
"""

from __future__ import annotations

import dataclasses
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core import precision
from core.config import PROJECT_ROOT, GenerationSettings, load_config
from core.generation import (
    concurrent_workers,
    fit_dialogue,
    summarize,
    summarize_many,
)
from core.models import (
    BASE_ADAPTER,
    DEFAULT_CPU_THREADS,
    LORA_ADAPTER,
    ModelLoadError,
    cpu_threads,
    load_model_set,
    load_seq2seq,
    resolve_dtype,
    use_int8_weights,
)
from core.precision import (
    DENSE_IN_DECODER,
    Bf16StoredEmbedding,
    Bf16StoredLinear,
    Int8WeightLinear,
    cpu_has_native_bf16,
    int8_kernel_available,
    quantize_decoder,
)
from core.prompt import build_prompt
from core.row_encoding import encode_rows_apart
from core.summaries import Summary

pytestmark = pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")

SETTINGS = GenerationSettings(max_new_tokens=12, min_new_tokens=12, num_beams=1)


def _config(paths: dict[str, str], dtype: str, env: dict[str, str] | None = None):
    return load_config(env or {}, preset="mini", device="cpu", dtype=dtype, **paths)


@pytest.fixture(scope="module")
def model_sets(tiny_checkpoints) -> Callable[[str], Any]:
    """The tiny checkpoints loaded at an ``ARENA_DTYPE``, each precision once per module."""
    loaded: dict[str, Any] = {}

    def at(dtype: str) -> Any:
        if dtype not in loaded:
            loaded[dtype] = load_model_set(_config(tiny_checkpoints, dtype))
        return loaded[dtype]

    return at


@pytest.fixture(scope="module")
def int8_set(model_sets):
    return model_sets("int8")


@pytest.fixture(scope="module")
def dialogues(data_dir) -> list[str]:
    from core.data import load_split

    return [r.dialogue for r in load_split(data_dir, "validation", limit=4)]


@pytest.mark.parametrize(
    ("flags", "compute", "int8"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, torch.bfloat16, True),  # hardware bf16
        ({"avx2", "amx_bf16"}, torch.bfloat16, True),
        ({"avx2", "fma"}, torch.float32, True),  # AVX2 alone: fp32 with int8 decoder weights
        ({"sse4_2"}, torch.float32, False),  # no AVX2 (or not x86): plain fp32, unmeasured
        (set(), torch.float32, False),
    ],
)
def test_auto_precision_follows_the_cpu(flags, compute, int8, monkeypatch) -> None:
    monkeypatch.setattr(precision, "x86_cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == compute
    assert use_int8_weights("auto", cpu) is int8
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_explicit_precisions_ignore_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(precision, "x86_cpu_flags", lambda: frozenset())
    cpu = torch.device("cpu")
    assert (resolve_dtype("int8", cpu), use_int8_weights("int8", cpu)) == (torch.bfloat16, True)
    assert (resolve_dtype("float32-int8", cpu), use_int8_weights("float32-int8", cpu)) == (
        torch.float32,
        True,
    )
    assert not use_int8_weights("float32", cpu) and not use_int8_weights("bfloat16", cpu)
    with pytest.raises(ModelLoadError, match="float32-int8 needs a CPU"):
        use_int8_weights("float32-int8", torch.device("cuda"))
    with pytest.raises(ModelLoadError, match="float32-int8 or auto"):
        resolve_dtype("int4", cpu)


def test_this_cpu_is_read_from_its_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not (cpuinfo.is_file() and platform.machine().lower() in ("x86_64", "amd64")):
        pytest.skip("not an x86 Linux machine")
    flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for f in line.split()}
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert precision.int8_weights_pay_off() == ("avx2" in flags)


def test_cpu_generation_uses_one_thread_unless_configured(tiny_checkpoints) -> None:
    before = torch.get_num_threads()
    try:
        load_model_set(_config(tiny_checkpoints, "float32"), names=("full",))
        assert torch.get_num_threads() == DEFAULT_CPU_THREADS == 1
        two = _config(tiny_checkpoints, "float32", {"ARENA_THREADS": "2"})
        assert two.threads == 2 and cpu_threads(two) == 2
        load_model_set(two, names=("full",))
        assert torch.get_num_threads() == 2
        with pytest.raises(ModelLoadError, match="ARENA_THREADS"):
            cpu_threads(_config(tiny_checkpoints, "float32", {"ARENA_THREADS": "0"}))
    finally:
        torch.set_num_threads(before)


def test_every_generate_call_runs_at_the_configured_thread_count(int8_set, dialogues, monkeypatch) -> None:
    full = int8_set.models["full"]
    assert full.cpu_threads == DEFAULT_CPU_THREADS
    real, seen = full.model.generate, []

    def generate(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(full.model, "generate", generate)

    def request() -> None:  # a server thread started before the models loaded has every core
        torch.set_num_threads(2)
        list(summarize_many(int8_set, dialogues[:1], SETTINGS, names=("full",)))
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=request)
    worker.start()
    worker.join(timeout=120)
    assert seen == [DEFAULT_CPU_THREADS, DEFAULT_CPU_THREADS]


@pytest.mark.parametrize("bias", [True, False])
def test_bf16_stored_linear_applies_the_rounded_weight_in_the_inputs_dtype(bias) -> None:
    torch.manual_seed(0)
    dense = nn.Linear(64, 48, bias=bias)
    stored = Bf16StoredLinear(dense)
    assert stored.weight.dtype == torch.bfloat16 and stored.weight.shape == (48, 64)
    assert not list(stored.parameters())  # buffers: a model's dtype comes from its parameters
    x = torch.randn(3, 5, 64)
    rounded = nn.functional.linear(x, dense.weight.detach().bfloat16().float(), dense.bias)
    got = stored(x)
    assert got.dtype == torch.float32  # fp32 arithmetic: only the stored weight was rounded
    assert torch.equal(got, rounded)
    assert not torch.equal(got, dense(x))  # (the rounding is real)


def test_bf16_stored_embedding_looks_up_rounded_rows_in_the_models_dtype() -> None:
    torch.manual_seed(0)
    table = nn.Embedding(50, 16, padding_idx=0)
    stored = Bf16StoredEmbedding(table, torch.float32)
    assert (stored.num_embeddings, stored.embedding_dim, stored.padding_idx) == (50, 16, 0)
    assert stored.weight.dtype == torch.bfloat16 and not list(stored.parameters())
    ids = torch.tensor([[3, 7, 0, 49]])
    got = stored(ids)
    assert got.dtype == torch.float32
    assert torch.equal(got, table.weight.detach().bfloat16().float()[ids])


def test_a_tied_embedding_stays_dense_where_the_head_multiplies_by_it() -> None:
    from core.precision import store_dense_in_bf16

    model = load_seq2seq(str(PROJECT_ROOT / "checkpoints/mini/full"), torch.device("cpu"), torch.float32)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # the mini: tied
    assert store_dense_in_bf16(model) > 0
    assert type(model.get_input_embeddings()) is nn.Embedding
    assert model.get_input_embeddings().weight.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_linear_matches_the_dense_layer_it_replaces(dtype) -> None:
    torch.manual_seed(0)
    dense = nn.Linear(64, 48, bias=True).to(dtype)
    fast = Int8WeightLinear(dense)
    assert fast.weight.dtype == torch.int8 and fast.weight.shape == (48, 64)
    x = torch.randn(3, 5, 64, dtype=dtype)
    expected, got = dense(x), fast(x)
    assert got.dtype == dtype  # hands back the model's dtype: an fp32 model stays fp32 around it
    expected, got = expected.float(), got.float()
    assert got.shape == expected.shape
    # int8 per-row rounding: error well under 2% of the output scale
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()


@pytest.mark.parametrize(("dtype", "compute"), [("int8", torch.bfloat16), ("float32-int8", torch.float32)])
def test_every_decoder_layer_is_int8_but_the_encoder_and_lora_stay_dense(dtype, compute, model_sets) -> None:
    int8_set = model_sets(dtype)
    assert int8_set.errors == {}
    shared = int8_set.models["original"].model
    assert shared is int8_set.models["lora"].model
    for model in (shared, int8_set.models["full"].model):  # all else in the compute dtype
        floating = {n: t.dtype for n, t in [*model.named_parameters(), *model.named_buffers()]}
        assert {
            d for n, d in floating.items() if "lora_" not in n and not n.endswith((".weight", ".scales"))
        } <= {compute}
        assert {d for n, d in floating.items() if n.endswith(".scales")} == {torch.bfloat16}  # the kernel's
        dense_weights = {
            n: d
            for n, d in floating.items()
            if n.endswith(".weight") and "lora_" not in n and d != torch.int8
        }
        # What int8 serves in bf16 is stored in bf16 at fp32 compute too, but T5's encoder wo
        # (whose input T5 would round to its weight's dtype), the norms and the position bias.
        kept = ("DenseReluDense.wo.weight", "layer_norm.weight", "attention_bias.weight")
        stored_apart = {n for n in dense_weights if n.endswith(kept)}
        assert {d for n, d in dense_weights.items() if n not in stored_apart} == {torch.bfloat16}
        assert {dense_weights[n] for n in stored_apart} == {compute}
        assert model.dtype == compute  # transformers reads it from the first floating parameter
    for model in (shared, int8_set.models["full"].model):
        kinds = {name: type(module) for name, module in model.named_modules()}
        int8_layers = [n for n, k in kinds.items() if k is Int8WeightLinear]
        dense = [n for n, k in kinds.items() if k in (nn.Linear, Bf16StoredLinear)]
        assert int8_layers and any(n.endswith("lm_head") for n in int8_layers)
        assert all(".decoder." in f".{n}" or n.endswith("lm_head") for n in int8_layers)
        assert not any("lora_" in n for n in int8_layers)
        # the cross-attention projections stay dense, a LoRA-wrapped one too (peft: "<path>.base_layer")
        assert not any(n.removesuffix(".base_layer").endswith(DENSE_IN_DECODER) for n in int8_layers)
        decoder_dense = [n for n in dense if ".decoder." in f".{n}" and "lora_" not in n]
        assert all(n.removesuffix(".base_layer").endswith(DENSE_IN_DECODER) for n in decoder_dense)
        assert any(".encoder." in f".{n}" for n in dense)
    lora_params = [p for n, p in shared.named_parameters() if "lora_" in n]
    assert lora_params and all(p.dtype in (torch.bfloat16, torch.float32) for p in lora_params)


def test_quantizing_twice_converts_nothing_more(tiny_checkpoints) -> None:
    models = load_model_set(_config(tiny_checkpoints, "int8"), names=("full",))
    assert quantize_decoder(models.models["full"].model) == 0


@pytest.mark.parametrize(("dtype", "reference"), [("int8", "bfloat16"), ("float32-int8", "float32")])
def test_int8_logits_stay_close_to_the_model_they_came_from(dtype, reference, dialogues, model_sets) -> None:
    from core.prompt import build_prompt

    fast, ref = (
        model_sets(dtype).models["full"],
        model_sets(reference).models["full"],
    )
    inputs = ref.tokenizer([build_prompt(dialogues[0])], return_tensors="pt")
    start = torch.zeros((1, 1), dtype=torch.long)
    with torch.inference_mode():
        a = fast.model(**inputs, decoder_input_ids=start).logits.float()
        b = ref.model(**inputs, decoder_input_ids=start).logits.float()
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize("dtype", ["int8", "float32-int8"])
def test_mixed_adapter_batch_equals_separate_calls_with_int8_weights(dtype, dialogues, model_sets) -> None:
    int8_set = model_sets(dtype)
    together = {
        rows[0].model: [r.text for r in rows] for rows in summarize_many(int8_set, dialogues, SETTINGS)
    }
    assert together["original"] != together["lora"]  # the adapter matters
    for name in ("original", "lora", "full"):
        alone = next(summarize_many(int8_set, dialogues, SETTINGS, names=(name,)))
        assert [r.text for r in alone] == together[name]


def _fields(rows: list[Summary]) -> list[tuple]:
    """A summary list without its wall times (the only field that may differ between runs)."""
    return [dataclasses.astuple(dataclasses.replace(r, seconds=0.0)) for r in rows]


def test_concurrent_groups_give_the_same_summaries_as_one_after_another(int8_set, dialogues) -> None:
    one_by_one = {
        rows[0].model: _fields(rows)
        for rows in summarize_many(int8_set, dialogues, SETTINGS, concurrent=False)
    }
    at_once = {
        rows[0].model: _fields(rows)
        for rows in summarize_many(int8_set, dialogues, SETTINGS, concurrent=True)
    }
    assert at_once == one_by_one
    assert set(at_once) == {"original", "lora", "full"}


def test_concurrent_groups_overlap_and_stream_in_the_order_they_finish(
    int8_set, dialogues, monkeypatch
) -> None:
    import core.generation as generation

    real = generation._generate
    both_running = threading.Barrier(2, timeout=30)  # broken unless the two calls overlap

    def generate(group, *args, **kwargs):
        both_running.wait()
        if group[0].name == "original":  # the shared-base batch finishes last
            time.sleep(0.3)
        return real(group, *args, **kwargs)

    monkeypatch.setattr(generation, "_generate", generate)
    monkeypatch.setattr(generation, "available_cores", lambda: 2)  # one thread per call: both fit
    # The default (what the app's compare calls): no ``concurrent`` argument.
    order = [rows[0].model for rows in summarize_many(int8_set, dialogues[:1], SETTINGS)]
    assert order == ["full", "original", "lora"]  # plan order would be original, lora, full


def test_groups_run_one_after_another_when_the_cores_are_taken(int8_set, dialogues, monkeypatch) -> None:
    import core.generation as generation

    real, running, most = generation._generate, [], []

    def generate(group, *args, **kwargs):
        running.append(group[0].name)
        most.append(len(running))
        time.sleep(0.1)  # long enough for a second call to start, were it allowed to
        try:
            return real(group, *args, **kwargs)
        finally:
            running.remove(group[0].name)

    monkeypatch.setattr(generation, "_generate", generate)
    monkeypatch.setattr(generation, "available_cores", lambda: 1)
    order = [rows[0].model for rows in summarize_many(int8_set, dialogues[:1], SETTINGS)]
    assert order == ["original", "lora", "full"] and max(most) == 1


def test_concurrent_workers_fit_the_cores_at_the_thread_count() -> None:
    assert concurrent_workers(2, cores=2, threads=1) == 2
    assert concurrent_workers(3, cores=2, threads=1) == 2
    assert concurrent_workers(2, cores=2, threads=2) == 1  # two threads each already fill the cores
    assert concurrent_workers(1, cores=16, threads=1) == 1
    assert concurrent_workers(2, cores=1, threads=4) == 1


def test_concurrent_groups_are_sized_at_the_models_thread_count_not_the_callers(
    int8_set, dialogues, monkeypatch
) -> None:
    import core.generation as generation

    real, asked = generation.concurrent_workers, []

    def workers(groups, **kwargs):
        asked.append(kwargs.get("threads"))
        return real(groups, cores=2, **kwargs)

    monkeypatch.setattr(generation, "concurrent_workers", workers)
    monkeypatch.setattr(
        generation, "_generate", lambda group, prompts, *a, **k: ([[""] * len(prompts)] * len(group), False)
    )

    def request() -> None:  # a server thread started before the models loaded has every core
        torch.set_num_threads(2)
        list(summarize_many(int8_set, dialogues[:1], SETTINGS, concurrent=True))

    worker = threading.Thread(target=request)
    worker.start()
    worker.join(timeout=120)
    assert DEFAULT_CPU_THREADS != 2  # otherwise this test could not tell the two counts apart
    assert asked == [DEFAULT_CPU_THREADS]
    assert generation.configured_threads(list(int8_set.models.values())) == DEFAULT_CPU_THREADS
    assert generation.configured_threads([]) is None


@pytest.mark.parametrize("dtype", ["int8", "float32-int8"])
@pytest.mark.parametrize("beams", [1, 3])  # beam search expands the rows' encoder states too
def test_batched_report_equals_one_dialogue_at_a_time_with_int8_weights(
    dtype, dialogues, beams, model_sets
) -> None:
    int8_set = model_sets(dtype)
    settings = dataclasses.replace(SETTINGS, num_beams=beams)
    batched = {
        rows[0].model: [r.text for r in rows] for rows in summarize_many(int8_set, dialogues, settings)
    }
    for i, dialogue in enumerate(dialogues):
        one = {s.model: s.text for s in summarize(int8_set, dialogue, settings)}
        assert one == {name: texts[i] for name, texts in batched.items()}


def test_cpu_batches_encode_each_row_at_its_own_length(int8_set, dialogues, monkeypatch) -> None:
    """The encoder never sees padding on a CPU: one call per row, at that row's token count."""
    shared = int8_set.models["original"]
    tokenizer = shared.tokenizer
    encoder = shared.model.get_encoder()
    seen: list[tuple[int, int]] = []
    hook = encoder.register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        next(summarize_many(int8_set, dialogues, SETTINGS, names=("original", "lora")))
    finally:
        hook.remove()
    lengths = sorted(
        len(tokenizer(build_prompt(fit_dialogue(tokenizer, d).dialogue))["input_ids"]) for d in dialogues
    )
    assert len(set(lengths)) > 1  # the batch really holds padding
    assert sorted(seen) == sorted([(1, n) for n in lengths] * 2)  # original and LoRA rows


def test_rows_encoded_apart_equal_batch_1_encoding_with_each_rows_adapter(int8_set, dialogues) -> None:
    shared = int8_set.models["original"]
    model, tokenizer = shared.model, shared.tokenizer
    prompts = [build_prompt(d) for d in dialogues[:2]]
    encoded = tokenizer(prompts * 2, return_tensors="pt", padding=True)
    names = [BASE_ADAPTER, BASE_ADAPTER, LORA_ADAPTER, LORA_ADAPTER]
    with torch.inference_mode():
        states = encode_rows_apart(model, encoded, names).last_hidden_state
        assert states.shape[:2] == encoded["input_ids"].shape
        for row, name in enumerate(names):
            alone = tokenizer(prompts[row % 2], return_tensors="pt")
            start = torch.zeros((1, 1), dtype=torch.long)
            # What a batch-1 generate's encoder computes for this row (peft's public forward).
            expected = model(
                **alone, decoder_input_ids=start, adapter_names=[name]
            ).encoder_last_hidden_state[0]
            length = expected.shape[0]
            assert torch.equal(states[row, :length], expected)
            assert not states[row, length:].any()  # padding: zeros the decoder never attends to
    assert not torch.equal(states[0], states[2])  # the LoRA rows went through the adapter


def test_original_and_lora_share_the_base_weights_in_memory(int8_set) -> None:
    shared = int8_set.models["original"].model
    full = int8_set.models["full"].model

    def storages(model) -> set[int]:
        tensors = [*model.parameters(), *model.buffers()]
        return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}

    base = {
        t.untyped_storage().data_ptr()
        for n, t in [*shared.named_parameters(), *shared.named_buffers()]
        if "lora_" not in n and t.numel()
    }
    assert base <= storages(shared) and base.isdisjoint(storages(full))
    lora_bytes = sum(p.numel() * p.element_size() for n, p in shared.named_parameters() if "lora_" in n)
    base_bytes = sum(t.numel() * t.element_size() for t in [*full.parameters(), *full.buffers()])
    assert lora_bytes < 0.2 * base_bytes  # the LoRA row costs its adapter, not a second model


def test_bench_model_has_flan_t5_base_shape() -> None:
    from transformers import T5ForConditionalGeneration

    from bench.fixtures import BASE_PARAMETERS, base_config, untie_lm_head

    with torch.device("meta"):
        model = T5ForConditionalGeneration(base_config())
        untie_lm_head(model)
    assert model.lm_head.weight is not model.shared.weight
    assert sum(p.numel() for p in model.parameters()) == BASE_PARAMETERS


def test_floor_counts_per_token_weights_and_one_time_compute(int8_set) -> None:
    from bench.floor import floor_seconds, model_work

    model = int8_set.models["full"].model
    work = model_work(model, input_tokens=100)
    decoder = [
        t
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if n.startswith(("decoder.block", "decoder.final", "lm_head"))
        and "relative_attention_bias" not in n
        and "EncDecAttention.k" not in n
        and "EncDecAttention.v" not in n
        and not n.endswith("scales")
    ]
    assert work.per_token_params == sum(t.numel() for t in decoder)
    assert work.per_token_bytes_served < 4 * work.per_token_params  # int8 weights are held
    encoder = [
        t
        for n, t in model.encoder.named_parameters()
        if t.dim() == 2 and "embed" not in n and "relative_attention_bias" not in n
    ]
    assert work.once_flops > 2 * 100 * sum(t.numel() for t in encoder)  # + attention + cross k/v
    slow, fast = floor_seconds(work, 50, 1e9, 1e9), floor_seconds(work, 50, 2e9, 2e9)
    assert slow == pytest.approx(2 * fast)


@pytest.mark.parametrize("dtype", ["float32", "float32-int8", "bfloat16", "int8"])
def test_floor_rates_the_dtype_the_encoder_computes_in_not_the_one_it_stores(dtype, model_sets) -> None:
    from bench.floor import served_matmul_dtype

    model = model_sets(dtype).models["lora"].model  # peft-wrapped: read through it
    inner = model.get_base_model()
    ids = torch.tensor([[5, 6, 7, 1]])
    with torch.no_grad():
        states = inner.encoder(input_ids=ids).last_hidden_state
    assert served_matmul_dtype(model) == states.dtype
    if dtype == "float32-int8":  # stored in bf16, computed in fp32: the rate must be fp32's
        stored = {t.dtype for n, t in inner.encoder.named_buffers() if n.endswith("SelfAttention.k.weight")}
        assert stored == {torch.bfloat16} and served_matmul_dtype(model) == torch.float32


def test_the_served_dtype_shares_its_dtypes_measured_rate() -> None:
    from bench.floor import best_matmul_rates

    calls: list[tuple[torch.dtype, int]] = []
    speed = {torch.float32: 100.0, torch.bfloat16: 10.0}

    def rate(dtype: torch.dtype) -> float:
        calls.append((dtype, torch.get_num_threads()))
        return speed[dtype] * torch.get_num_threads() - len(calls)  # every reading differs

    threads = torch.get_num_threads()
    rates = best_matmul_rates((torch.float32, torch.bfloat16, torch.float32), [1, 2], rate)
    assert calls == [(torch.float32, 1), (torch.bfloat16, 1), (torch.float32, 2), (torch.bfloat16, 2)]
    assert rates == {torch.float32: 197.0, torch.bfloat16: 16.0}  # the best reading of each
    assert torch.get_num_threads() == threads


def test_p1s_ratio_is_left_out_where_nothing_grew_to_bound() -> None:
    from bench.__main__ import growth_ratio

    mib = 2**20
    assert growth_ratio(0.09 * mib, 2.34 * mib) == pytest.approx(0.09 / 2.34)  # where the bound acted
    assert growth_ratio(-0.87 * mib, -0.01 * mib) is None  # both noise: not a ratio of 87
    assert growth_ratio(0.23 * mib, 0.12 * mib) is None


def test_report_timings_take_each_batch_size_before_and_after_one_at_a_time(monkeypatch) -> None:
    """P4 under drift: a host that slows down during the run slows the batched side too."""
    import types

    import bench.worker as worker
    import core.data
    import train.evaluate

    clock = [0.0]
    calls: list[int] = []
    # Seconds per call, in call order: warm-up, batch 8, batch 4, one at a time, batch 4, batch 8.
    costs = iter([1.0, 10.0, 12.0, 100.0, 16.0, 30.0])

    def fake_generate_all(model_set, records, settings, cache, batch_size, progress):
        calls.append(batch_size)
        clock[0] += next(costs)
        return {}, {"full": []}, None

    model_set = types.SimpleNamespace(models={"full": types.SimpleNamespace(cpu_threads=2)})
    monkeypatch.setattr(worker, "_load", lambda spec, names, report: model_set)
    monkeypatch.setattr(worker, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(core.data, "load_split", lambda data, split, limit: ["d"] * limit)
    monkeypatch.setattr(train.evaluate, "generate_all", fake_generate_all)
    result = worker.task_eval({"data": "x", "dialogues": 3, "batch_sizes": [8, 4]})
    assert calls == [1, 8, 4, 1, 4, 8]
    assert result["one_at_a_time_s"] == 100.0
    assert result["batched_8_s"] == 20.0 and result["batched_8_runs"] == [10.0, 30.0]
    assert result["batched_4_s"] == 14.0 and result["batched_4_runs"] == [12.0, 16.0]


def test_bench_cli_rejects_unknown_figures(capsys) -> None:
    from bench.__main__ import main

    assert main(["--only", "P9"]) == 2
    assert "P9" in capsys.readouterr().out


def test_report_batches_are_length_sorted_but_results_keep_input_order(int8_set, data_dir, tmp_path) -> None:
    from core.data import load_split
    from train.evaluate import GenerationCache, generate_all

    records = load_split(data_dir, "validation", limit=5)
    assert len({len(r.dialogue) for r in records}) > 1
    batched, errors, _ = generate_all(
        int8_set, records, SETTINGS, GenerationCache(tmp_path / "b.jsonl"), batch_size=3, progress=False
    )
    single, _, _ = generate_all(
        int8_set, records, SETTINGS, GenerationCache(tmp_path / "s.jsonl"), batch_size=1, progress=False
    )
    assert not any(errors.values()) and batched == single


def test_cpu_models_use_eager_attention(int8_set) -> None:
    for name in ("original", "full"):
        config = int8_set.models[name].model.config
        assert config._attn_implementation == "eager"


def test_bench_children_return_their_last_json_line_and_fail_loudly(tmp_path) -> None:
    import os

    from bench.child import run_json_module

    result = tmp_path / "result.json"
    result.write_text('{"figure": 1.5}', encoding="utf-8")
    log = tmp_path / "bench.log"
    env = dict(os.environ)
    assert run_json_module("json.tool", ["--compact", str(result)], env, log, "ok run") == {"figure": 1.5}
    with pytest.raises(RuntimeError, match=r"json\.tool failed"):
        run_json_module("json.tool", [str(tmp_path / "missing.json")], env, log, "failing run")
    with pytest.raises(RuntimeError, match="exit 0"):  # ran, but printed no JSON line
        run_json_module("platform", [], env, log, "no result")
    text = log.read_text(encoding="utf-8")
    assert "=== ok run" in text and "=== failing run" in text and "missing.json" in text  # stderr kept


def test_bench_serving_memory_task_serves_each_dialogue_on_the_three_models(
    tiny_checkpoints, data_dir
) -> None:
    """P1S's worker (``python -m bench --only P1S``) on the tiny models: held RSS at load, half-way, end."""
    from bench.worker import task_serving_memory

    root = Path(tiny_checkpoints["original"]).parent
    assert {Path(tiny_checkpoints[n]).parent for n in ("full", "lora")} == {root}
    served = task_serving_memory({"root": str(root), "data": data_dir, "dtype": "auto", "dialogues": 4})
    assert served["dialogues"] == 4 and served["lengths"] == 4
    assert set(served["rss"]) == {"loaded", "half", "end"} and all(r > 0 for r in served["rss"].values())
    assert served["growth_per_dialogue"] == (served["rss"]["end"] - served["rss"]["half"]) / 2
