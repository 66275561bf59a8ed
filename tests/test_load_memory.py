"""Loading straight into the serving dtype keeps the weights, configs and outputs of the usual load.

``core.models.load_seq2seq`` reads safetensors one tensor at a time into the serving dtype
(``core.precision.read_safetensors``) instead of memory-mapping the fp32 file, and
``quantize_decoder`` frees each dense layer as it goes (python -m bench, P1: the load's peak).
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from core import ONEDNN_CACHE_VARIABLES, ONEDNN_SHAPE_CACHE_ENTRIES
from core.config import PROJECT_ROOT
from core.models import ModelLoadError, load_seq2seq
from core.precision import (
    PRECAST_ATTRIBUTE,
    PREQUANTIZED_ATTRIBUTE,
    TOKEN_TABLES,
    Bf16StoredEmbedding,
    Int8WeightLinear,
    all_finite,
    bf16_layer_paths,
    cpu_has_native_bf16,
    int8_kernel_available,
    int8_layer_paths,
    quantize_decoder,
    read_safetensors,
    store_dense_in_bf16,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_direct_load_equals_from_pretrained(tiny_checkpoints, dtype) -> None:
    location = tiny_checkpoints["full"]
    ours = load_seq2seq(location, CPU, dtype)
    theirs = AutoModelForSeq2SeqLM.from_pretrained(location, dtype=dtype, attn_implementation="eager")
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for key, tensor in theirs_state.items():
        assert ours_state[key].dtype == tensor.dtype == dtype, key
        assert torch.equal(ours_state[key], tensor), key
    assert ours.generation_config.to_dict() == theirs.generation_config.to_dict()
    assert ours.config.to_dict() == theirs.config.to_dict()
    assert not ours.training


def test_read_safetensors_casts_floats_and_skips_other_formats(tiny_checkpoints, tmp_path: Path) -> None:
    state = read_safetensors(Path(tiny_checkpoints["full"]), torch.bfloat16)
    assert state and all(t.dtype == torch.bfloat16 for t in state.values())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert read_safetensors(bin_dir, torch.bfloat16) is None  # nothing to read: the usual path loads it


def test_missing_generation_config_falls_back_to_the_model_config(tiny_checkpoints, tmp_path: Path) -> None:
    copy = tmp_path / "full"
    shutil.copytree(tiny_checkpoints["full"], copy)
    (copy / "generation_config.json").unlink()
    ours = load_seq2seq(str(copy), CPU, torch.float32)
    theirs = AutoModelForSeq2SeqLM.from_pretrained(str(copy))
    assert ours.generation_config.to_dict() == theirs.generation_config.to_dict()


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
def test_quantizing_frees_each_dense_layer(tiny_checkpoints) -> None:
    model = load_seq2seq(tiny_checkpoints["full"], CPU, torch.bfloat16)
    dense = weakref.ref(model.decoder.block[0].layer[0].SelfAttention.q.weight)
    assert quantize_decoder(model) > 0
    gc.collect()
    assert dense() is None  # nothing kept the replaced layer (and its weight) alive


def _int8_layers(model) -> dict[str, Int8WeightLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Int8WeightLinear)}


def _full_checkpoint(tiny_checkpoints: dict[str, str], tied: bool, tmp_path: Path) -> str:
    """A copy of a full checkpoint whose config.json declares ``tied``: untied (as flan-t5 is),
    the tiny one, whose lm_head has its own values; tied, the mini's, as it ships."""
    location = tmp_path / "full"
    shutil.copytree(
        tiny_checkpoints["full"] if not tied else PROJECT_ROOT / "checkpoints/mini/full", location
    )
    config = json.loads((location / "config.json").read_text())
    config["tie_word_embeddings"] = tied
    (location / "config.json").write_text(json.dumps(config))
    return str(location)


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tied", [False, True])  # flan-t5 and the bench: untied; the mini: tied
def test_quantizing_as_read_equals_quantizing_after_the_load(
    tiny_checkpoints, dtype, tied, tmp_path: Path
) -> None:
    location = _full_checkpoint(tiny_checkpoints, tied, tmp_path)
    as_read = load_seq2seq(location, CPU, dtype, int8=True)
    pending = dict(getattr(as_read, PREQUANTIZED_ATTRIBUTE))
    paths = int8_layer_paths(as_read)
    # Every converted layer was quantized as it was read, but a head tied to the embeddings
    # (the mini's), whose weight the encoder needs dense.
    assert set(pending) == {p for p in paths if not (tied and p == "lm_head")}
    for path in pending:  # what the model holds until quantize_decoder is a placeholder, no bytes
        weight = as_read.get_submodule(path).weight
        assert weight.untyped_storage().nbytes() <= weight.element_size()
    after = load_seq2seq(location, CPU, dtype)
    assert quantize_decoder(as_read) == quantize_decoder(after) == len(paths)
    assert getattr(as_read, PREQUANTIZED_ATTRIBUTE) == {}  # handed over, nothing kept twice
    ours, theirs = _int8_layers(as_read), _int8_layers(after)
    assert ours.keys() == theirs.keys() == set(paths)
    for name, layer in theirs.items():
        assert torch.equal(ours[name].weight, layer.weight) and torch.equal(
            ours[name].scales, layer.scales
        ), name
    for name, tensor in after.state_dict().items():  # and the dense rest is the same model
        assert torch.equal(as_read.state_dict()[name], tensor), name


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
@pytest.mark.parametrize("tied", [False, True])
def test_bf16_storage_as_read_equals_converting_after_the_load(
    tiny_checkpoints, tied, tmp_path: Path
) -> None:
    location = _full_checkpoint(tiny_checkpoints, tied, tmp_path)
    as_read = load_seq2seq(location, CPU, torch.float32, int8=True, bf16_storage=True)
    pending = dict(getattr(as_read, PRECAST_ATTRIBUTE))
    paths = bf16_layer_paths(as_read)
    assert set(pending) == set(paths) and paths  # every one cast as it was read
    for path, weight in pending.items():
        assert weight.dtype == torch.bfloat16
        placeholder = as_read.get_submodule(path).weight
        assert placeholder.untyped_storage().nbytes() <= placeholder.element_size()  # no bytes
    after = load_seq2seq(location, CPU, torch.float32)
    for model in (as_read, after):
        quantize_decoder(model)
        assert store_dense_in_bf16(model) == len(paths)
    assert getattr(as_read, PRECAST_ATTRIBUTE) == {}  # handed over, nothing kept twice
    ours, theirs = as_read.state_dict(), after.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    tables = {
        n: type(m) for n, m in as_read.named_modules(remove_duplicate=False) if n.endswith(TOKEN_TABLES)
    }
    assert set(tables.values()) == {Bf16StoredEmbedding}  # the head is int8: the tables only looked up


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
def test_tables_a_checkpoint_holds_apart_stay_apart_in_bf16(tiny_checkpoints) -> None:
    # The tiny checkpoints hold shared, encoder and decoder tables with different values.
    dense = load_seq2seq(tiny_checkpoints["full"], CPU, torch.float32)
    model = load_seq2seq(tiny_checkpoints["full"], CPU, torch.float32, int8=True, bf16_storage=True)
    quantize_decoder(model)
    store_dense_in_bf16(model)
    for path in ("shared", "encoder.embed_tokens", "decoder.embed_tokens"):
        expected = dense.get_submodule(path).weight.detach().bfloat16()
        assert torch.equal(model.get_submodule(path).weight, expected), path
    assert not torch.equal(model.shared.weight, model.encoder.embed_tokens.weight)  # (apart indeed)


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
def test_one_table_in_the_checkpoint_stays_one_table_in_bf16(tiny_checkpoints, tmp_path: Path) -> None:
    # As flan-t5 and the bench's checkpoints are saved: shared.weight only, which transformers
    # ties to the encoder's and decoder's tables (three modules, one weight).
    from safetensors.torch import load_file, save_file

    location = tmp_path / "full"
    shutil.copytree(tiny_checkpoints["full"], location)
    tensors = load_file(location / "model.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if not k.endswith("embed_tokens.weight")},
        location / "model.safetensors",
        metadata={"format": "pt"},
    )
    dense = load_seq2seq(str(location), CPU, torch.float32)
    assert dense.encoder.embed_tokens.weight is dense.shared.weight  # tied by transformers
    model = load_seq2seq(str(location), CPU, torch.float32, int8=True, bf16_storage=True)
    quantize_decoder(model)
    store_dense_in_bf16(model)
    tables = [model.get_submodule(p) for p in ("shared", "encoder.embed_tokens", "decoder.embed_tokens")]
    assert all(type(t) is Bf16StoredEmbedding for t in tables)
    assert len({t.weight.untyped_storage().data_ptr() for t in tables}) == 1  # stored once, not thrice
    assert torch.equal(tables[0].weight, tensors["shared.weight"].bfloat16())


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
def test_quantizing_as_read_keeps_lora_layers_and_a_peft_models_paths(tiny_checkpoints) -> None:
    from core.models import attach_lora

    base = load_seq2seq(tiny_checkpoints["original"], CPU, torch.float32, int8=True)
    model, _ = attach_lora(base, tiny_checkpoints["lora"], tiny_checkpoints["original"])
    assert getattr(base, PREQUANTIZED_ATTRIBUTE)  # read as int8, pending
    paths = int8_layer_paths(model)
    assert quantize_decoder(model) == len(paths) > 0
    assert getattr(base, PREQUANTIZED_ATTRIBUTE) == {}  # every one found under peft's names
    wrapped = [n for n, m in _int8_layers(model).items() if n.endswith(".base_layer")]
    assert wrapped  # the LoRA-wrapped decoder layers got their int8 base from the read


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
@pytest.mark.parametrize(
    "name",
    [
        "decoder.block.0.layer.1.EncDecAttention.q.weight",  # int8
        "decoder.block.0.layer.1.EncDecAttention.k.weight",  # bf16
        "encoder.block.1.layer.0.SelfAttention.o.weight",  # bf16
    ],
)
def test_a_corrupt_weight_is_still_named_when_compacted_as_read(
    tiny_checkpoints, name, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "full"
    shutil.copytree(tiny_checkpoints["full"], copy)
    state = load_file(str(copy / "model.safetensors"))
    state[name][-1, 0] = float("nan")  # in the last row block
    save_file(state, str(copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=rf"{re.escape(name)} holds NaN"):
        load_seq2seq(str(copy), CPU, torch.float32, int8=True, bf16_storage=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_tells_overflowing_sums_from_nan_and_inf(dtype) -> None:
    big = torch.finfo(dtype).max
    finite = torch.full((3, 1 << 20), big, dtype=dtype)  # its sum overflows: checked block by block
    assert all_finite(finite) and all_finite(torch.zeros(4, 4, dtype=dtype))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for where in ((0, 0), (2, (1 << 20) - 1)):  # the first and the last block
            tensor = finite.clone()
            tensor[where] = bad
            assert not all_finite(tensor), (bad, where)
    opposite = torch.tensor([float("inf"), -float("inf")], dtype=dtype)  # a NaN sum
    assert not all_finite(opposite)
    assert not all_finite(torch.tensor([1.0, float("nan")], dtype=dtype))  # small: the sum says it


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
def test_an_int8_layer_read_but_missing_from_the_model_is_refused(tiny_checkpoints) -> None:
    model = load_seq2seq(tiny_checkpoints["full"], CPU, torch.float32, int8=True)
    pending = getattr(model, PREQUANTIZED_ATTRIBUTE)
    pending["decoder.block.9.layer.0.SelfAttention.q"] = next(iter(pending.values()))
    with pytest.raises(ValueError, match="not in the model"):
        quantize_decoder(model)


@pytest.mark.skipif(not int8_kernel_available(), reason="no int8 weight kernel in this torch")
def test_a_bf16_layer_read_but_missing_from_the_model_is_refused(tiny_checkpoints) -> None:
    model = load_seq2seq(tiny_checkpoints["full"], CPU, torch.float32, int8=True, bf16_storage=True)
    quantize_decoder(model)
    pending = getattr(model, PRECAST_ATTRIBUTE)
    pending["encoder.block.9.layer.0.SelfAttention.q"] = next(iter(pending.values()))
    with pytest.raises(ValueError, match="not in the model"):
        store_dense_in_bf16(model)


@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
def test_row_blocks_read_from_the_file_equal_safetensors_own_read(stored, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from core.precision import QUANTIZE_ROWS, _finite_rows, safetensors_layout

    torch.manual_seed(0)
    tensors = {
        "a": torch.randn(7, 3).to(stored),
        "b": torch.randn(QUANTIZE_ROWS + 5, 4).to(stored),  # a last block shorter than the rest
        "c": torch.arange(6, dtype=torch.int64),
    }
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    with (
        open(tmp_path / "m.safetensors", "rb") as file,
        safe_open(str(tmp_path / "m.safetensors"), "pt") as reader,
    ):
        layout, start = safetensors_layout(file)
        for key in ("a", "b"):
            assert layout[key]["shape"] == list(tensors[key].shape)
            rows = _finite_rows(file, layout[key], start, torch.float32)
            whole = reader.get_tensor(key).float()
            stop = whole.shape[0]
            assert torch.equal(torch.cat([rows(0, 4), rows(4, stop)]), whole)
            assert torch.equal(rows(stop - 1, stop), whole[-1:])


def test_int8_row_blocks_equal_converting_the_layer_in_one_piece() -> None:
    from core.precision import QUANTIZE_ROWS, Int8WeightLinear

    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 2 * QUANTIZE_ROWS + 7).to(torch.bfloat16)
    weight = dense.weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    whole = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    blocked = Int8WeightLinear(dense)
    assert torch.equal(blocked.weight, whole)
    assert torch.equal(blocked.scales, scales.to(torch.bfloat16))


# bf16 products over 200 input lengths, as dialogues of every length reach a served model.
SHAPES_PROBE = """
import sys
import core  # sets the oneDNN cache bounds, as every entry point of the project does first
import torch

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

torch.set_num_threads(1)
weight = torch.randn(2048, 768, dtype=torch.bfloat16)
with torch.inference_mode():
    torch.nn.functional.linear(torch.randn(50, 768, dtype=torch.bfloat16), weight)
    start = rss_mb()
    for length in range(51, 251):
        torch.nn.functional.linear(torch.randn(length, 768, dtype=torch.bfloat16), weight)
        heads = torch.randn(12, length, 64, dtype=torch.bfloat16)
        torch.bmm(heads, heads.transpose(1, 2))
print(round(rss_mb() - start))
"""


def _growth_mb(**variables: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ONEDNN_CACHE_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", SHAPES_PROBE],
        cwd=PROJECT_ROOT,
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="bf16 products go through oneDNN where the CPU has bf16"
)
def test_memory_stays_flat_over_many_input_lengths() -> None:
    """Importing ``core`` bounds oneDNN's per-shape caches: a served model's memory no longer grows
    with every new dialogue length (one served model grew 755 MB over 200 test dialogues before)."""
    bounded = _growth_mb()
    unbounded = _growth_mb(**dict.fromkeys(ONEDNN_CACHE_VARIABLES, "1024"))  # oneDNN's own
    assert unbounded > bounded + 100, "the probe no longer reaches oneDNN's caches: it measures nothing"
    assert bounded < 60, f"memory grew {bounded} MB over 200 input lengths (unbounded: {unbounded} MB)"


def test_an_operators_cache_setting_wins() -> None:
    env = {**os.environ, "LRU_CACHE_CAPACITY": "7"}
    env.pop("ONEDNN_PRIMITIVE_CACHE_CAPACITY", None)
    code = "import core, os; print(os.environ['LRU_CACHE_CAPACITY'], os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.split() == ["7", str(ONEDNN_SHAPE_CACHE_ENTRIES)]
