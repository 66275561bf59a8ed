"""Encoder states for each row of a batch at the row's own length (CPU batches, :mod:`core.generation`).

A batch pads every row to its longest dialogue; on a CPU the encoder's cost is its FLOPs, padding
included, so each row is encoded alone and only decoding runs batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutput

from core.adapter_rows import adapter_rows


def encode_rows_apart(
    model: Any, encoded: Mapping[str, torch.Tensor], adapter_names: Sequence[str] | None
) -> BaseModelOutput:
    """The encoder's states for each row of ``encoded``, computed at the row's own length.

    The result has ``encoded``'s padded shape, zeros where the attention mask is 0 (the decoder
    never attends there). ``adapter_names`` (one per row) picks each row's peft adapter.
    """
    encoder = model.get_encoder()
    mask = encoded["attention_mask"].bool()
    states: torch.Tensor | None = None
    for row in range(mask.shape[0]):
        keep = mask[row]
        ids = encoded["input_ids"][row][keep].unsqueeze(0)
        with adapter_rows(model, None if adapter_names is None else [adapter_names[row]]):
            hidden = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        if states is None:
            states = hidden.new_zeros(mask.shape[0], mask.shape[1], hidden.shape[-1])
        states[row, keep] = hidden[0]
    return BaseModelOutput(last_hidden_state=states)
