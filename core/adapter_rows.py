"""Each row of a batch through its own LoRA adapter (or none) on one shared peft model.

peft serves a mixed-adapter batch (``adapter_names=[...]``, ``"__base__"`` for no adapter) by
registering a forward pre-hook on every LoRA layer for the call; each layer call then receives
the row names and groups the rows by adapter in Python. While generating, that happens ~36 times
per token (LoRA on q and v of a T5), and the hook and the grouping cost 39 us a call against
25 us for the layer's int8 base product itself (python -m bench: P2).

:func:`adapter_rows` gives each LoRA layer the same arithmetic - peft's vanilla mixed-batch
forward, op for op, so outputs are bit-identical (tests/test_adapter_rows.py) - with the rows
and weights looked up once per call and no hooks. It covers vanilla LoRA on linear layers in eval
mode; anything else (LoRA on embeddings, trainable-token wrappers, merged or disabled adapters,
variants such as DoRA, training) goes through peft's own hooks, which decide what they support.

The rows are per thread: while any block is open on a model, its LoRA layers dispatch on the
calling thread's rows, so two threads may run blocks with different rows on one shared model at
the same time (the comparison's two groups encode on it at once: :mod:`core.generation`). peft's
hooks are not per thread: :func:`rows_per_thread` says which models that leaves out.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from core.models import BASE_ADAPTER


@dataclass(frozen=True)
class RowGroup:
    """The rows of a batch that one adapter applies to: None (every row), a slice (a run of
    rows: a view, no copy - how :mod:`core.generation` lays out a batch) or an index tensor."""

    adapter: str
    rows: slice | torch.Tensor | None


def row_groups(
    adapter_names: Sequence[str], repeat: int = 1, device: torch.device | None = None
) -> list[RowGroup]:
    """One group per adapter named (``__base__`` rows get none), each row repeated ``repeat``
    times in place, as ``generate`` repeats a row for each of its beams."""
    expanded = [name for name in adapter_names for _ in range(repeat)]
    groups = []
    for adapter in dict.fromkeys(expanded):
        if adapter == BASE_ADAPTER:
            continue
        rows = [i for i, name in enumerate(expanded) if name == adapter]
        index: slice | torch.Tensor | None
        if len(rows) == len(expanded):
            index = None
        elif rows == list(range(rows[0], rows[-1] + 1)):
            index = slice(rows[0], rows[-1] + 1)
        else:
            index = torch.tensor(rows, device=device)
        groups.append(RowGroup(adapter, index))
    return groups


@dataclass(frozen=True)
class LayerDelta:
    """One adapter's update in one LoRA layer, for the rows it applies to."""

    rows: slice | torch.Tensor | None  # as in RowGroup
    weight_a: torch.Tensor
    weight_b: torch.Tensor
    bias_b: torch.Tensor | None
    scaling: float


def layer_deltas(layer: Any, groups: Sequence[RowGroup]) -> list[LayerDelta]:
    """What ``layer`` adds for each group (peft skips an adapter a layer doesn't have)."""
    return [
        LayerDelta(
            group.rows,
            layer.lora_A[group.adapter].weight,
            layer.lora_B[group.adapter].weight,
            layer.lora_B[group.adapter].bias,
            layer.scaling[group.adapter],
        )
        for group in groups
        if group.adapter in layer.lora_A
    ]


def lora_rows_forward(
    base_layer: nn.Module, deltas: Sequence[LayerDelta], x: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """peft's vanilla ``_mixed_batch_forward`` of one LoRA linear layer, op for op, with the rows
    and weights looked up once per call instead of once per layer call. Dropout is left out: it
    is the identity in eval mode, the only mode served here."""
    result = base_layer(x, *args, **kwargs)
    for delta in deltas:
        if delta.rows is None:
            rows, out = x, result
        elif isinstance(delta.rows, slice):
            rows, out = x[delta.rows], result[delta.rows]  # views: the add lands in result
        else:
            rows, out = x.index_select(0, delta.rows), None
        hidden = F.linear(rows.to(delta.weight_a.dtype), delta.weight_a)  # lora_A: no bias
        update = F.linear(hidden, delta.weight_b, delta.bias_b)
        if delta.scaling != 1:  # alpha = r, the default: multiplying by 1 changes no bit
            update = update * delta.scaling
        update = update.to(result.dtype)
        if out is not None:
            out += update
        else:
            result[delta.rows] += update
    return result


@dataclass
class LoraLayers:
    """A peft model's LoRA layers, found in one walk over its modules."""

    layers: list[tuple[bool, nn.Module]]  # (in the encoder, layer)
    adapters: set[str]  # every adapter some layer has
    plain: bool  # every layer can take :func:`lora_rows_forward` (else: peft's own hooks)


def find_lora_layers(model: Any) -> LoraLayers:
    """The LoRA layers of ``model``, whether each sits in the encoder, and whether all are plain
    (vanilla LoRA on a linear layer, eval mode, not merged, no variant such as DoRA)."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    encoder_prefix: str | None = None
    found = LoraLayers([], set(), True)
    for path, module in model.named_modules():  # one walk per block (a generate call, a row)
        if module is encoder:
            encoder_prefix = path + "."
        if isinstance(module, AuxiliaryTrainingWrapper):
            found.plain = False
        if not isinstance(module, LoraLayer):
            continue
        found.adapters.update(module.lora_A.keys())
        found.plain = found.plain and (
            type(module) is LoraLinear
            and not module.training
            and not module.merged
            and not module.disable_adapters
            and not module.lora_variant
        )
        in_encoder = encoder_prefix is not None and path.startswith(encoder_prefix)
        found.layers.append((in_encoder, module))
    return found


def rows_per_thread(model: Any) -> bool:
    """Whether :func:`adapter_rows` blocks on ``model`` from different threads are independent:
    plain LoRA layers (or none); peft's hooks, the fallback for other kinds, are not."""
    return find_lora_layers(model).plain


# This thread's open blocks: what each LoRA layer adds for the thread's rows.
_thread = threading.local()
_NONE: dict[nn.Module, list[LayerDelta]] = {}


def _dispatch(layer: nn.Module, fallback: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A LoRA layer's forward while some block is open on its model: the calling thread's rows,
    or, from a thread with no block open, the layer's own forward."""
    deltas = getattr(_thread, "deltas", _NONE).get(layer)
    if deltas is None:
        return fallback(x, *args, **kwargs)
    return lora_rows_forward(layer.base_layer, deltas, x, *args, **kwargs)


@dataclass
class _Dispatching:
    """One model whose LoRA layers carry :func:`_dispatch`: set by the first open block (in any
    thread), removed by the last."""

    layers: list[nn.Module]
    before: list[Any]  # each layer's own ``forward`` attribute before (None: its class's)
    blocks: int = 0


# A cache of state that says so: which models dispatch, keyed by id (guarded by the lock).
_dispatching: dict[int, _Dispatching] = {}
_dispatching_lock = threading.Lock()


def _open_dispatch(model: Any, layers: list[nn.Module]) -> None:
    with _dispatching_lock:
        entry = _dispatching.get(id(model))
        if entry is None:
            before = [layer.__dict__.get("forward") for layer in layers]
            for layer, own in zip(layers, before, strict=True):
                fallback = own if own is not None else type(layer).forward.__get__(layer)
                layer.forward = functools.partial(_dispatch, layer, fallback)
            entry = _dispatching[id(model)] = _Dispatching(layers, before)
        entry.blocks += 1


def _close_dispatch(model: Any) -> None:
    with _dispatching_lock:
        entry = _dispatching[id(model)]
        entry.blocks -= 1
        if entry.blocks:
            return
        del _dispatching[id(model)]
        for layer, own in zip(entry.layers, entry.before, strict=True):
            if own is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = own


@contextlib.contextmanager
def adapter_rows(model: Any, adapter_names: Sequence[str] | None, num_beams: int = 1) -> Iterator[None]:
    """Within the block, row ``i`` of every batch through ``model`` (a peft model) uses adapter
    ``adapter_names[i]`` (``"__base__"``: none); the decoder sees each row ``num_beams`` times.
    ``adapter_names`` None (a model without adapters): the block changes nothing.

    Same results as passing ``adapter_names`` to peft (its mixed-adapter batches), cheaper per
    layer call. The rows hold for the calling thread only; other threads may open blocks of their
    own on the same model at the same time if :func:`rows_per_thread` says so (else hold the
    model's lock around the block).
    """
    if adapter_names is None:
        yield
        return
    names = list(adapter_names)
    lora = find_lora_layers(model)
    unknown = sorted({n for n in names if n != BASE_ADAPTER} - lora.adapters)
    if unknown:
        raise ValueError(f"no such LoRA adapter in the model: {', '.join(unknown)}")
    if not lora.plain:
        with model._enable_peft_forward_hooks(adapter_names=names, num_beams=num_beams):
            yield
        return
    layers = [layer for _, layer in lora.layers]
    device = next(model.parameters()).device
    encoder_groups = row_groups(names, 1, device)
    decoder_groups = row_groups(names, max(1, num_beams), device)
    if not hasattr(_thread, "deltas"):
        _thread.deltas = {}
    mine = _thread.deltas
    enclosing = {layer: mine.get(layer) for layer in layers}  # this thread's enclosing block's
    _open_dispatch(model, layers)
    try:
        for in_encoder, layer in lora.layers:
            mine[layer] = layer_deltas(layer, encoder_groups if in_encoder else decoder_groups)
        yield
    finally:
        for layer, deltas in enclosing.items():
            if deltas is None:
                mine.pop(layer, None)
            else:
                mine[layer] = deltas
        _close_dispatch(model)
