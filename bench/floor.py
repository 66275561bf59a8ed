"""The physical floor of one batch-1 generate, measured on this machine.

Greedy decoding must read every per-token weight once per generated token (memory-bound);
the encoder (and the decoder's cross-attention keys/values, computed once per input) is a
block of matrix products (compute-bound). So the floor is

    per-token weight bytes x tokens / memory read bandwidth  +  one-time FLOPs / matmul rate

with bandwidth and matmul rate measured here, in the same run, on the same threads. The
reference floor counts the model as shipped (fp32 weights, fp32 matmuls); a faster precision
can beat it, which is the point of choosing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Projections of the decoder that see only encoder states: computed once per input, not per token.
ONCE_PER_INPUT = ("EncDecAttention.k", "EncDecAttention.v")


def _best_seconds(fn: Callable[[], Any], repeats: int = 5, inner: int = 1) -> float:
    fn()  # warm-up: page faults, kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def memory_read_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second that a reduction streams from RAM (a buffer far beyond the caches)."""
    data = torch.rand(megabytes * 1024 * 1024 // 4)  # written first: untouched pages read as zeros
    seconds = _best_seconds(lambda: data.sum(), repeats)
    return data.numel() * data.element_size() / seconds


def matmul_rate(dtype: torch.dtype = torch.float32, rows: int = 256, repeats: int = 5) -> float:
    """FLOP/s of a dense (rows x 768) @ (768 x 2048) product - the encoder's shape."""
    a = torch.randn(rows, 768).to(dtype)
    b = torch.randn(2048, 768).to(dtype)
    seconds = _best_seconds(lambda: torch.nn.functional.linear(a, b), repeats, inner=4)
    return 2.0 * rows * 768 * 2048 / seconds


def best_matmul_rates(
    dtypes: Iterable[torch.dtype],
    thread_counts: Iterable[int],
    rate: Callable[[torch.dtype], float] = matmul_rate,
) -> dict[torch.dtype, float]:
    """The best :func:`matmul_rate` of each distinct dtype over ``thread_counts``.

    Each dtype is measured once per thread count, so the served dtype, when it is fp32 or bf16,
    gets the same figure as that dtype's own row: measuring it again gave 113 GFLOP/s against
    142 in one run, and the floor then counted the lower one.
    """
    threads = torch.get_num_threads()
    rates: dict[torch.dtype, float] = {}
    try:
        for count in thread_counts:
            torch.set_num_threads(count)
            for dtype in dict.fromkeys(dtypes):
                rates[dtype] = max(rates.get(dtype, 0.0), rate(dtype))
    finally:
        torch.set_num_threads(threads)
    return rates


def served_matmul_dtype(model: Any) -> torch.dtype:
    """The dtype the one-time (encoder) matrix products run in: that of the encoder's activations.

    Not the weights' storage dtype: at fp32 compute around int8 decoder layers the encoder's
    weights are stored in bf16 and upcast for each product, which runs at fp32's rate (bf16 is
    emulated on such CPUs, ~8x slower: taking its rate would make the floor look far higher).
    T5's norms hand the products their input in the norm weight's dtype.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.encoder.final_layer_norm.weight.dtype


@dataclass(frozen=True)
class ModelWork:
    """What one generate must move and compute, from a model's structure."""

    per_token_params: int  # decoder blocks (less cross-attention k/v) + final norm + lm_head
    per_token_bytes_served: int  # the same weights in the precision actually held
    once_flops: float  # encoder + cross-attention k/v projections over the input

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _tensors(module: Any) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]


def model_work(model: Any, input_tokens: int) -> ModelWork:
    """Count per-token decoder weights and one-time FLOPs of a T5 (plain or peft-wrapped)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    per_token = once_linear = 0
    served = 0
    for name, tensor in _tensors(inner):
        if "lora_" in name or not (name.startswith(("decoder.block", "decoder.final", "lm_head"))):
            continue
        if "relative_attention_bias" in name:  # an embedding: one row read per step
            continue
        if any(f"{part}." in name for part in ONCE_PER_INPUT):
            once_linear += tensor.numel() if tensor.dim() == 2 else 0
            continue
        served += tensor.numel() * tensor.element_size()
        if not name.endswith("scales"):  # int8 layers' per-row scales: bookkeeping, not weights
            per_token += tensor.numel()
    encoder_linear = sum(
        t.numel()
        for n, t in _tensors(inner.encoder)
        if t.dim() == 2 and not any(skip in n for skip in ("embed", "relative_attention_bias", "lora_"))
    )
    attention = 4.0 * config.num_layers * input_tokens**2 * config.num_heads * config.d_kv
    once = 2.0 * (encoder_linear + once_linear) * input_tokens + attention
    return ModelWork(per_token, served, once)


def floor_seconds(
    work: ModelWork, output_tokens: int, bandwidth: float, rate: float, bytes_per_param: float = 4.0
) -> float:
    """Seconds no implementation can beat on this machine at ``bytes_per_param`` weights."""
    return work.per_token_params * bytes_per_param * output_tokens / bandwidth + work.once_flops / rate
