"""Loading straight into the serving dtype keeps the weights, configs and outputs of the usual load.

``core.models.load_seq2seq`` reads safetensors one tensor at a time into the serving dtype
(``core.precision.read_safetensors``) instead of memory-mapping the fp32 file, and
``quantize_decoder`` frees each dense layer as it goes (python -m bench, P1: the load's peak).
"""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from core.models import load_seq2seq
from core.precision import int8_kernel_available, quantize_decoder, read_safetensors

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
