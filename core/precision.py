"""Fast CPU inference: int8 weights in the decoder, applied with bf16 activations.

Why: greedy decoding reads every decoder and ``lm_head`` weight once per generated token, so
on a CPU it is bound by memory traffic and per-call overhead, not arithmetic. Storing those
weights as int8 (one scale per output row) quarters the bytes of fp32, and PyTorch's
``_weight_int8pack_mm`` kernel multiplies bf16 activations by them directly. The encoder runs
once per dialogue on hundreds of tokens at a time, where dense matrix products are faster, so
it stays dense - as do the decoder's cross-attention key/value projections, which only see
encoder states.

The rest of the model computes in bf16 on CPUs with hardware bf16, in fp32 elsewhere: there an
int8 layer rounds its input to bf16 for the kernel and hands fp32 back, so the residual stream,
the norms and attention stay fp32 (on an AVX2 CPU without bf16 the kernel still beats fp32's
dense product, which streams four times the bytes; ``python -m bench``). There the other dense
weights are stored in bf16 too - the values the bf16 model serves - and upcast for each product
(:class:`Bf16StoredLinear`, :class:`Bf16StoredEmbedding`): half of fp32's memory for a few
percent of the encoder's time (P1).

Weight-only quantization keeps activations in floating point and treats every row of a batch
alike, so a row's summary does not depend on what it was batched with (unlike dynamic int8
activation quantization, whose scale is shared across the batch). LoRA matrices are never
quantized.

Loading straight into the serving dtype (:func:`read_safetensors`) and handing freed heap back
to the system (:func:`release_freed_memory`) keep the load's peak memory near what is served.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import logging
import math
import platform
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

QUANTIZE_ROWS = 1024  # rows converted at a time (a 768-wide block: 3 MB at fp32)

# Decoder projections that only ever see the encoder's states (hundreds of rows at once).
DENSE_IN_DECODER = ("EncDecAttention.k", "EncDecAttention.v")


# The dtype ``_weight_int8pack_mm`` is fast in: its fp32-activation path is ~4x slower on CPU.
KERNEL_DTYPE = torch.bfloat16

# Where dense weights are stored when the model computes in fp32 around int8 decoder layers.
STORAGE_DTYPE = torch.bfloat16

# safetensors' dtype names, for the tensors read in row blocks (floating weights only).
SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F64": torch.float64,
}

# T5's feed-forward rounds its ``wo`` input to ``wo.weight.dtype`` unless that is int8: a bf16
# stored ``wo`` would round the encoder's activations, so the encoder's ``wo`` stays fp32.
KEEP_FP32 = ("DenseReluDense.wo",)

# T5's token embedding tables (module names), stored in bf16 alongside the dense layers. They are
# converted after the load, not as read: transformers ties tables whose values match, which
# placeholders would fake.
TOKEN_TABLES = ("shared", "embed_tokens")


@lru_cache(maxsize=1)
def x86_cpu_flags() -> frozenset[str]:
    """This x86 CPU's feature flags (``/proc/cpuinfo``); empty elsewhere or when unreadable."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(
        flag
        for line in info.splitlines()
        if line.startswith("flags")
        for flag in line.partition(":")[2].split()
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX).

    Without it bf16 matrix products are emulated and slower than fp32.
    """
    return bool(x86_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def int8_weights_pay_off() -> bool:
    """Whether int8 decoder weights make batch-1 generation faster on this CPU.

    Measured (``python -m bench``, flan-t5-base shape) on x86 CPUs with AVX2: with hardware
    bf16 ~1.8x faster than fp32; on AVX2 alone (no bf16; fp32 compute around the int8 layers)
    2.58 s vs 3.03 s at one thread and 2.03 s vs 3.24 s at two, same process, where fp32's
    one-row product (MKL) runs on one core whatever the thread count. Unmeasured elsewhere
    (ARM, say), so off there.
    """
    return "avx2" in x86_cpu_flags() and int8_kernel_available()


@lru_cache(maxsize=1)
def int8_kernel_available() -> bool:
    """Whether ``torch._weight_int8pack_mm`` runs here (bf16 activations, int8 weights)."""
    try:
        x = torch.ones(1, 64, dtype=torch.bfloat16)
        out = torch._weight_int8pack_mm(
            x, torch.ones(8, 64, dtype=torch.int8), torch.ones(8, dtype=torch.bfloat16)
        )
    except (RuntimeError, AttributeError, NotImplementedError) as err:
        logger.info("int8 weight kernel unavailable: %s", err)
        return False
    return bool(out.shape == (1, 8) and float(out[0, 0]) == 64.0)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-D weight as int8 rows and one scale per row (in :data:`KERNEL_DTYPE`)."""
    return quantize_row_blocks(tuple(weight.shape), lambda start, stop: weight[start:stop], weight.device)


def quantize_row_blocks(
    shape: tuple[int, ...], rows: Callable[[int, int], torch.Tensor], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_rows` of a weight of ``shape`` handed over in blocks, ``rows(start, stop)``."""
    quantized = torch.empty(shape, dtype=torch.int8, device=device)
    scales = torch.empty(shape[0], dtype=torch.float32, device=device)
    # In row blocks: the whole layer at fp32 (lm_head: ~100 MB, times the temporaries) was
    # the load's peak (P1). Each row's scale and rounding are the same as in one piece.
    for start in range(0, shape[0], QUANTIZE_ROWS):
        stop = min(start + QUANTIZE_ROWS, shape[0])  # a safetensors slice does not clip
        block = rows(start, stop).float()
        scale = (block.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
        quantized[start:stop] = torch.round(block / scale[:, None]).clamp(-127, 127)
        scales[start:stop] = scale
    return quantized.contiguous(), scales.to(KERNEL_DTYPE)


class Int8WeightLinear(nn.Module):
    """A ``nn.Linear`` whose weight is stored as int8 with one scale per output feature.

    The product runs on bf16 activations (:data:`KERNEL_DTYPE`); the output comes back in the
    input's dtype, so a layer serves a bf16 model and an fp32 one alike. ``weight`` keeps the
    name (as an int8 buffer) because transformers' T5 inspects ``wo.weight.dtype`` and leaves
    activations alone when it is int8.
    """

    def __init__(self, linear: nn.Linear, quantized: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        # ``quantized``: this layer's (int8 rows, scales), made as the checkpoint was read
        # (read_safetensors); ``linear.weight`` is then only a placeholder of the right shape.
        weight, scales = quantized if quantized is not None else quantize_rows(linear.weight.detach())
        if weight.shape != linear.weight.shape:
            raise ValueError(f"int8 weight {tuple(weight.shape)} for a {tuple(linear.weight.shape)} layer")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(KERNEL_DTYPE)
        out = torch._weight_int8pack_mm(rows, self.weight, self.scales).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Bf16StoredLinear(nn.Module):
    """A ``nn.Linear`` whose weight is stored in bf16 and applied in its input's dtype.

    Why: on CPUs without hardware bf16 the model computes in fp32 (bf16 products are emulated
    there, several times slower), but its weights need not be stored at fp32: upcasting a bf16
    weight for each product costs a few percent of the encoder's products and halves its memory
    (python -m bench, P1). ``weight`` keeps the name (a bf16 buffer), as in :class:`Int8WeightLinear`.
    """

    def __init__(self, linear: nn.Linear, stored: torch.Tensor | None = None) -> None:
        super().__init__()
        # ``stored``: this layer's bf16 weight, made as the checkpoint was read (read_safetensors);
        # ``linear.weight`` is then only a placeholder of the right shape.
        weight = stored if stored is not None else linear.weight.detach().to(STORAGE_DTYPE)
        if weight.shape != linear.weight.shape:
            raise ValueError(f"bf16 weight {tuple(weight.shape)} for a {tuple(linear.weight.shape)} layer")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 weights"


class Bf16StoredEmbedding(nn.Module):
    """A ``nn.Embedding`` whose table is stored in bf16; the rows looked up come back in ``dtype``.

    The table is a buffer, not a parameter: transformers takes a model's dtype from its first
    floating parameter (the embedding's), and the model still computes in ``dtype``.
    """

    def __init__(self, embedding: nn.Embedding, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_embeddings = embedding.num_embeddings
        self.embedding_dim = embedding.embedding_dim
        self.padding_idx = embedding.padding_idx
        self.output_dtype = dtype
        self.register_buffer("weight", embedding.weight.detach().to(STORAGE_DTYPE))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, self.padding_idx).to(self.output_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bf16 table"


def checkpoint_path(path: str) -> str:
    """The checkpoint's name for a module path: peft names a layer it wraps
    ``base_model.model.<path>.base_layer``."""
    return path.removeprefix("base_model.model.").removesuffix(".base_layer")


def _quantizable(path: str) -> bool:
    if "lora_" in path:  # adapters are small and trained in full precision; keep them exact
        return False
    path = checkpoint_path(path)
    if path.endswith("lm_head"):
        return True
    in_decoder = ".decoder." in f".{path}"
    return in_decoder and not any(path.endswith(name) for name in DENSE_IN_DECODER)


def int8_layer_paths(model: Any) -> list[str]:
    """Module paths of the layers :func:`quantize_decoder` converts (a meta-device model will do)."""
    return [p for p, m in model.named_modules() if type(m) is nn.Linear and p and _quantizable(p)]


# Where read_safetensors leaves a layer's int8 form, keyed by module path, until quantize_decoder.
PREQUANTIZED_ATTRIBUTE = "_arena_int8_layers"
# Where it leaves a layer's bf16 weight, keyed by module path, until store_dense_in_bf16.
PRECAST_ATTRIBUTE = "_arena_bf16_layers"


def bf16_layer_paths(model: Any) -> list[str]:
    """Module paths of the dense layers :func:`store_dense_in_bf16` converts: every plain
    ``nn.Linear`` but the LoRA matrices, the int8 ones and T5's encoder ``wo`` (a meta-device
    model will do)."""
    return [
        p
        for p, m in model.named_modules()
        if type(m) is nn.Linear
        and p
        and "lora_" not in p
        and not _quantizable(p)
        and not checkpoint_path(p).endswith(KEEP_FP32)
    ]


def _replace_layers(
    model: Any, paths: list[str], read: dict[str, Any], make: Callable[[nn.Linear, Any], nn.Module], kind: str
) -> None:
    """Swap each layer at ``paths`` for ``make(layer, its form read from the file or None)``."""
    # Paths, not modules: holding the replaced layers (as a list of modules would) keeps every
    # dense weight alive until the end, so the load peaked at dense + compact (P1).
    for path in paths:
        dense = model.get_submodule(path)
        model.set_submodule(path, make(dense, read.pop(checkpoint_path(path), None)), strict=True)
        del dense  # the dense weight is freed here, and its pages handed back at once
        _trim_heap()
    if read:  # a layer read compact but not found: its placeholder must never serve
        raise ValueError(f"{kind} layers read but not in the model: {sorted(read)[:3]}")


def quantize_decoder(model: Any) -> int:
    """Swap the decoder's and ``lm_head``'s ``nn.Linear`` layers for int8-weight ones, in place.

    Works on a plain T5 and on a peft model (the LoRA wrapper keeps its adapters and gets an
    int8 base layer). Returns how many layers were converted. The model must already be in
    its compute dtype (bf16 or fp32): the layers hand their outputs back in it. Layers that
    :func:`read_safetensors` quantized as it read them take that int8 form (their dense weight
    is a placeholder); the others are converted from their weights here.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prequantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = getattr(inner, PREQUANTIZED_ATTRIBUTE, {})
    paths = int8_layer_paths(model)
    _replace_layers(model, paths, prequantized, Int8WeightLinear, "int8")
    converted = len(paths)
    logger.info("int8 weights in %d decoder layers", converted)
    return converted


def store_dense_in_bf16(model: Any) -> int:
    """Store the dense layers of :func:`bf16_layer_paths` and the token embedding tables in bf16,
    in place; the model keeps computing in its dtype (fp32). Call it after
    :func:`quantize_decoder`. Layers :func:`read_safetensors` cast as it read them take that
    weight. Returns how many layers were converted (the tables not counted).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    precast: dict[str, torch.Tensor] = getattr(inner, PRECAST_ATTRIBUTE, {})
    paths = bf16_layer_paths(model)
    _replace_layers(model, paths, precast, Bf16StoredLinear, "bf16")
    head = inner.get_output_embeddings()
    stored: dict[int, Bf16StoredEmbedding] = {}  # one per weight: a tied table stays one table
    # Every path, keyed by weight rather than module: transformers ties T5's shared, encoder and
    # decoder tables as three modules sharing one weight, and a checkpoint may hold them apart.
    for path, table in list(inner.named_modules(remove_duplicate=False)):
        if type(table) is not nn.Embedding or not path.endswith(TOKEN_TABLES):
            continue
        if head is not None and head.weight is table.weight:
            continue  # a tied head multiplies by the table: it needs it in the compute dtype
        if id(table.weight) not in stored:
            stored[id(table.weight)] = Bf16StoredEmbedding(table, table.weight.dtype)
        inner.set_submodule(path, stored[id(table.weight)], strict=True)
    _trim_heap()
    logger.info("bf16 storage for %d dense layers and %d embedding tables", len(paths), len(stored))
    return len(paths)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds no NaN or infinite value, without a temporary of its size
    (``isfinite`` allocates a copy and two masks: 160 MB for flan-t5's fp32 embedding table, the
    load's peak). A finite sum proves it, since any NaN or infinity makes the sum NaN or
    infinite; a sum that overflowed is checked element by element, a block at a time."""
    tensor = tensor.detach()
    if bool(torch.isfinite(tensor.sum())):
        return True
    return all(bool(torch.isfinite(block).all()) for block in tensor.reshape(-1).split(1 << 20))


def read_safetensors(
    directory: Path,
    dtype: torch.dtype,
    int8_layers: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    int8_paths: frozenset[str] = frozenset(),
    bf16_layers: dict[str, torch.Tensor] | None = None,
    bf16_paths: frozenset[str] = frozenset(),
) -> dict[str, torch.Tensor] | None:
    """A checkpoint's tensors, read one at a time and cast to ``dtype`` as each is read.

    Why: ``from_pretrained`` memory-maps the whole file, and every mapped page it touches counts
    in the process's resident memory until loading ends, so an fp32 checkpoint served in bf16
    peaked at fp32 + bf16 (python -m bench, P1). ``pread`` copies one tensor at a time instead:
    the peak is the served weights plus one fp32 tensor. Floating tensors are cast (T5 keeps no
    module in fp32 at bf16); others keep their dtype. Returns None when ``directory`` holds no
    safetensors weights (``.bin`` checkpoints load the usual way).

    With ``int8_layers`` (a dict to fill), the weight of each layer in ``int8_paths`` (module
    paths, from :func:`int8_layer_paths`) is quantized as it is read - from its value cast to
    ``dtype``, exactly as converting it after the load would - into ``int8_layers[path]``, and
    the state gets a placeholder of its shape that holds no memory: the dense decoder is never
    in memory at once (P1). Likewise ``bf16_layers`` gets the weights of the layers in
    ``bf16_paths`` (from :func:`bf16_layer_paths`) cast to bf16 instead of ``dtype``. A weight
    holding NaN or infinite values stays as it would be without these, for the load's
    finiteness check to name it.
    """
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    state: dict[str, torch.Tensor] = {}
    for name in files:
        with (
            safe_open(str(directory / name), framework="pt", device="cpu", backend="pread") as reader,
            open(directory / name, "rb") as file,
        ):
            layout, data_start = safetensors_layout(file)
            for key in reader.keys():  # noqa: SIM118 - safe_open is not iterable
                path = key.removesuffix(".weight")
                compact = int8_layers if path in int8_paths else bf16_layers if path in bf16_paths else None
                if compact is not None and layout[key]["dtype"] in SAFETENSORS_DTYPES:
                    # In row blocks, straight from the file: the layer is never whole at fp32 (P1).
                    shape = tuple(layout[key]["shape"])
                    rows = _finite_rows(file, layout[key], data_start, dtype)
                    try:
                        compact[path] = (
                            quantize_row_blocks(shape, rows)
                            if compact is int8_layers
                            else _cast_row_blocks(shape, rows, STORAGE_DTYPE)
                        )
                        state[key] = torch.zeros((), dtype=dtype).expand(shape)  # placeholder: no storage
                    except _NotFinite:  # kept dense, for the load's finiteness check to name it
                        state[key] = reader.get_tensor(key).to(dtype)
                else:
                    tensor = reader.get_tensor(key)
                    state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
                    del tensor
                _trim_heap()  # the fp32 read is freed: its pages go back before the next read
    return state


class _NotFinite(Exception):
    """A weight holds NaN or infinite values."""


def safetensors_layout(file: BinaryIO) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (name -> dtype, shape, data_offsets) and where its data starts.

    The format: an 8-byte little-endian header length, the JSON header, then the tensors' bytes.
    """
    (length,) = struct.unpack("<Q", file.read(8))
    return json.loads(file.read(length)), 8 + length


def _finite_rows(
    file: BinaryIO, entry: dict[str, Any], data_start: int, dtype: torch.dtype
) -> Callable[[int, int], torch.Tensor]:
    """Row blocks of one tensor, read from ``file`` as asked for and cast to ``dtype``; raises
    :class:`_NotFinite` on NaN/inf. (safetensors' own slices read the whole tensor per slice.)"""
    stored, shape = SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"])
    row_bytes = math.prod(shape[1:]) * stored.itemsize
    begin = data_start + entry["data_offsets"][0]

    def rows(start: int, stop: int) -> torch.Tensor:
        block = torch.empty((stop - start, *shape[1:]), dtype=stored)
        file.seek(begin + start * row_bytes)
        if file.readinto(block.view(torch.uint8).numpy()) != block.numel() * stored.itemsize:
            raise OSError(f"safetensors file ends inside a tensor ({entry})")
        block = block.to(dtype)
        if not all_finite(block):
            raise _NotFinite
        return block

    return rows


def _cast_row_blocks(
    shape: tuple[int, ...], rows: Callable[[int, int], torch.Tensor], dtype: torch.dtype
) -> torch.Tensor:
    cast = torch.empty(shape, dtype=dtype)
    for start in range(0, shape[0], QUANTIZE_ROWS):
        stop = min(start + QUANTIZE_ROWS, shape[0])
        cast[start:stop] = rows(start, stop)
    return cast


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Collect garbage and return freed heap pages to the system (glibc's ``malloc_trim``).

    Casting and quantizing free hundreds of MB in pieces that glibc otherwise keeps mapped
    (python -m bench, P1: ~230 MB per model); elsewhere (no glibc) only the collection runs.
    """
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
